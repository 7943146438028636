// Package bench is `sluice bench`: a load generator and measurement harness
// for sluice and for any MQTT broker. docs/performance.md says how to run it
// and what it measured.
//
// # What runs where
//
//	orchestrator (Run)          the process under test: sluice (pipelines.Service) in process,
//	                            or the bare embedded broker (the baseline); progress and report
//	load side (LoadSide)        a child process (ChildEnv): the device fleet, the Kafka stand-in
//	                            (internal/devkafka), a Kafka consumer, a proxy in front of influxd
//	influxd                     its own process (internal/influxd)
//
// So the CPU time (getrusage) and peak RSS (VmHWM, reset per run) of the
// process under test are sluice's alone. The orchestrator calls the load
// side through net/rpc over the child's stdin and stdout, or directly when
// it runs in process (Config.Spawn nil).
//
// # A run
//
// The fleet (fleet.go) connects Load.Devices devices, each on its own
// connection, on plant/<site>/<line>/<device>/telemetry, with the payloads
// the example rules expect (payload.go): flat, nested, gzip-compressed JSON
// or arrays of readings. The lean client (mqtt.go) keeps a window of QoS 1/2
// messages in flight per device and writes many packets per system call;
// paho.golang is the alternative (Load.Client). A run publishes at a fixed
// rate or as fast as the broker acknowledges, for a duration or a count.
//
// Each reading carries its device's sequence number (seq) and its publish
// time in microseconds (sent_us). The devices record which readings were
// acknowledged; the Kafka consumer which arrived; their difference is the
// loss, per reading. InfluxDB is counted with a query (the built-in
// configuration makes sent_us the point's time, unique per device). The
// latencies are from sent_us to the device's PUBACK, to the record read
// from Kafka, and to InfluxDB's acknowledgement of the write (seen by the
// proxy).
//
// The baseline (baseline.go) is mochi-mqtt, the broker sluice embeds, with a
// hook that counts publishes and nothing else: the same load against it in
// the same invocation gives sluice's throughput as a ratio of the broker's.
// The scale mode connects many idle (or slow) devices and reports the RSS
// each costs and the connect rate.
package bench
