// Package clustertest proves sluice's cluster with real processes: three
// `sluice run` nodes on a three-broker Kafka (kfake, in the test process)
// and a real influxd, MQTT devices spread over the nodes, a node killed
// with SIGKILL mid-load, restarted, and a fourth added. Its only code is
// the test (cluster_test.go); it is a package of its own so that `go test
// ./...` runs it in parallel with the rest.
package clustertest
