// Package dashboards holds sluice's Grafana dashboards (json/) and the
// provisioning files (provisioning/) the docker-compose stack mounts into
// Grafana.
package dashboards
