// Package dashboards builds sluice's Grafana dashboards as code, with the
// Grafana Foundation SDK, and holds what the docker-compose stack mounts into
// Grafana: the generated JSON (json/) and the provisioning files
// (provisioning/).
//
//   - Health: sluice's own metrics (Prometheus data source sluice-prometheus).
//   - Fleet: the telemetry the rules wrote to InfluxDB (Flux, sluice-influxdb).
//   - Alerts: the alert transitions written to InfluxDB's "alerts" measurement.
//
// The JSON files are generated, never edited: change the Go code and run
//
//	go generate ./dashboards
//
// The tests fail when the committed JSON differs from what the code builds,
// when a Flux query returns no rows from a real InfluxDB that the real
// pipeline has written to, and when a metric a panel uses is not exported.
package dashboards

//go:generate go run ./internal/gen -dir json
