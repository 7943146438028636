package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/internal/bench"
)

// cmdBench runs the load generator and measurement harness
// (internal/bench; docs/performance.md). Started with bench.ChildEnv set,
// it is the harness's load-side child instead.
func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if os.Getenv(bench.ChildEnv) != "" {
		if err := bench.ServeChild(ctx, os.Stdin, os.Stdout, stderr); err != nil {
			fmt.Fprintln(stderr, "sluice bench (load side):", err)
			return exitFailure
		}
		return exitOK
	}
	var cfg bench.Config
	l := &cfg.Load
	fs := newFlags("bench", stderr)
	fs.StringVar(&cfg.Broker, "broker", "", "benchmark any MQTT broker at `host:port` (publish and count acknowledgements only); default: sluice in this process")
	fs.StringVar(&cfg.Job, "job", "full", "the built-in configuration's `job`: full (10 rules; Kafka, InfluxDB, alerts) or influx (the simplest: one rule naming the topic levels, InfluxDB with 3 fields and 3 tags)")
	fs.StringVar(&cfg.ConfigFile, "c", "", "run sluice from this configuration `file` (its sinks must be reachable); default: the built-in bench configuration with the Kafka stand-in and influxd")
	fs.BoolVar(&cfg.Baseline, "baseline", true, "run the same load against the bare embedded broker first, for the ratio")
	fs.BoolVar(&cfg.Cluster, "cluster", false, "after the one-node run, run sluice as a cluster of three nodes on the Kafka stand-in (ingest here; rules and sinks each in a child process) and report each node's CPU per message: the cost of the Kafka hop")
	fs.BoolVar(&cfg.Scale, "scale", false, "connection-scale mode: connect -devices idle devices (or slow ones, with -rate) and measure memory per connection and connect rate")
	fs.Int64Var(&l.Series, "series", 0, "with -scale: publish this many `series`, one message each (a device level never used before), and measure the memory they take and give back once they expire")
	fs.IntVar(&l.Devices, "devices", 100, "simulated `devices`, one connection each")
	qos := fs.Int("qos", 1, "QoS of every publish: 0, 1 or 2")
	fs.IntVar(&l.MQTT, "mqtt", 5, "MQTT `version`: 3 (3.1.1) or 5")
	fs.StringVar(&l.Shape, "shape", "flat", "payload `shape`: flat, nested, gzip, array or mixed")
	fs.IntVar(&l.Size, "size", 256, "`bytes` of JSON per reading")
	fs.IntVar(&l.Readings, "readings", 10, "readings per message for -shape array (and mixed)")
	fs.Float64Var(&l.Rate, "rate", 0, "messages per second offered by the whole fleet; 0: as fast as acknowledged")
	fs.DurationVar(&l.Duration, "duration", 0, "how long to publish once all devices are connected (default 60s; unused with -messages)")
	fs.Int64Var(&l.Messages, "messages", 0, "publish this many messages in all instead of for a duration")
	fs.DurationVar(&l.Ramp, "ramp", 0, "spread the connections over this `duration` (default: as fast as they go)")
	fs.IntVar(&l.Inflight, "inflight", 32, "QoS 1/2 messages a device may have unacknowledged")
	fs.StringVar(&l.Client, "client", "lean", "MQTT client: lean (built in) or paho (paho.golang)")
	sources := fs.String("sources", "", "connect from these local addresses (comma-separated), or from 127.0.0.1..127.0.0.N given a number N")
	fs.DurationVar(&l.KeepAlive, "keepalive", 0, "MQTT keep-alive; an idle device pings that often (default 60s)")
	fs.DurationVar(&cfg.Settle, "settle", 0, "with -scale: how long connected devices settle before memory is measured (default 10s)")
	fs.StringVar(&cfg.Out, "out", "reports/bench", "`folder` for report.md, report.csv, progress.csv and the configuration used")
	fs.StringVar(&cfg.DataDir, "data", "", "work `folder` (journal, InfluxDB data); default: a temporary one, removed afterwards")
	fs.StringVar(&cfg.Influxd, "influxd", "", "influxd `binary` (default: .tools/bin/influxd, built by make tools)")
	fs.StringVar(&cfg.Durability, "durability", "process", "the built-in configuration's durability: process, fsync or none")
	fs.IntVar(&cfg.Batch, "batch", 0, "batch `size` of the built-in configuration's record sinks (InfluxDB, Kafka); default: sluice's")
	fs.DurationVar(&cfg.BatchInterval, "batch-interval", 0, "batch `interval` of the built-in configuration's record sinks; default: sluice's")
	fs.StringVar(&cfg.LogLevel, "log-level", "warn", "sluice's log level")
	fs.DurationVar(&cfg.Drain, "drain", 0, "how long to wait after the load for the sinks to catch up (default 5m)")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the process under test during the sluice run to `file`")
	fs.StringVar(&cfg.MemProfile, "memprofile", "", "write a heap profile to `file` when the sluice run ends, or with -scale while its devices are connected (allocations since start: use with -baseline=false)")
	fs.StringVar(&cfg.Trace, "trace", "", "write an execution trace of the process under test to `file`: -trace-seconds of the sluice run, from 10s into the load (go tool trace -pprof=sched: where goroutines waited to run)")
	fs.IntVar(&cfg.TraceSeconds, "trace-seconds", 5, "length of the -trace, in seconds")
	inproc := fs.Bool("inproc", false, "run the load generator in this process (its CPU and memory then count as sluice's)")
	if code, ok := parseNoArgs(fs, args); !ok {
		return code
	}
	if *qos < 0 || *qos > 2 {
		fmt.Fprintln(stderr, "sluice bench: -qos: want 0, 1 or 2")
		return exitUsage
	}
	l.QoS = byte(*qos)
	if *sources != "" {
		if n, err := strconv.Atoi(*sources); err == nil {
			l.Sources = bench.LoopbackSources(n)
		} else {
			l.Sources = strings.Split(*sources, ",")
		}
	}
	if !*inproc {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintln(stderr, "sluice bench: cannot find its own binary to run the load side:", err, "(use -inproc)")
			return exitFailure
		}
		// A test binary is not sluice: started again, it would run the
		// tests rather than a load side.
		if !strings.HasSuffix(filepath.Base(exe), ".test") {
			cfg.Spawn = func() *exec.Cmd { return exec.Command(exe, "bench") }
		}
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "sluice bench:", err)
		return exitUsage
	}
	report, err := bench.Run(ctx, cfg, stdout, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "sluice bench:", err)
		return exitFailure
	}
	for _, run := range report.Runs {
		if n := report.Lost(run); n > 0 {
			fmt.Fprintf(stderr, "sluice bench: %s lost %d acknowledged readings\n", run.Name, n)
			return exitFailure
		}
	}
	return exitOK
}
