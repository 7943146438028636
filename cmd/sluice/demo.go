package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/sluicehq/sluice/examples"
	"github.com/sluicehq/sluice/internal/devkafka"
	"github.com/sluicehq/sluice/internal/influxd"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/simulator"
	"github.com/sluicehq/sluice/pipelines"
)

// The demo's documented default ports.
const (
	demoMQTT   = "127.0.0.1:1883"
	demoInflux = "127.0.0.1:8086"
	demoKafka  = 9092
)

// cmdDemo runs the whole product on one machine: a real influxd, the
// in-process Kafka stand-in, sluice with the example rules, and a simulated
// fleet. It prints a live summary every second until Ctrl-C.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("demo", stderr)
	devices := fs.Int("devices", 36, "simulated devices")
	interval := fs.Duration("interval", time.Second, "time between two readings of a device")
	data := fs.String("data", ".demo", "`folder` for the demo's InfluxDB data, Kafka data and config")
	influxBin := fs.String("influxd", "", "influxd `binary` (default: .tools/bin/influxd, built by make tools)")
	logLevel := fs.String("log-level", "warn", "sluice's log level (debug, info, warn, error)")
	nodes := fs.Int("nodes", 1, "run a cluster of this many sluice nodes on Kafka (docs/scaling.md)")
	cycle := fs.Duration("cycle", time.Minute, "with -nodes: stop a node, and start it again, every this long (0: never)")
	fs.Usage = commandUsage(fs, "demo [flags]", "Runs the demo: influxd, the Kafka stand-in, sluice with the example rules and simulated devices.")
	if code, ok := parseNoArgs(fs, args); !ok {
		return code
	}
	o := demoOptions{devices: *devices, interval: *interval, data: *data, influxd: *influxBin, logLevel: *logLevel, nodes: *nodes, cycle: *cycle}
	run := runDemo
	if *nodes > 1 {
		run = runClusterDemo
	}
	if err := run(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "sluice demo:", err)
		return exitFailure
	}
	return exitOK
}

type demoOptions struct {
	devices  int
	interval time.Duration
	data     string
	influxd  string
	logLevel string
	nodes    int           // cluster nodes (runClusterDemo)
	cycle    time.Duration // how often the cluster demo stops or starts a node
}

func runDemo(ctx context.Context, o demoOptions, stdout, stderr io.Writer) error {
	dataDir, err := filepath.Abs(o.data)
	if err != nil {
		return err
	}
	confDir := filepath.Join(dataDir, "config")
	stop, err := startDemoServices(ctx, o, dataDir, confDir, stdout)
	if err != nil {
		return err
	}
	defer stop()

	cfgPath := filepath.Join(confDir, "demo", "sluice.yaml")
	cfg, err := pipelines.Load(cfgPath)
	if err != nil {
		return err
	}
	cfg.Log.Level = o.logLevel
	cfg.DataDir = filepath.Join(dataDir, "sluice")
	m := metrics.New()
	m.BuildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	log := newLogger(cfg, stderr)
	svc, err := pipelines.New(cfg, pipelines.Options{Logger: log, Metrics: m})
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		return fmt.Errorf("%w (is port 1883 taken by another MQTT broker?)", err)
	}
	stopAdmin, err := startAdmin(cfg, svc, m, log)
	if err != nil {
		svc.Close(context.Background())
		return fmt.Errorf("%w (is port 9880 taken?)", err)
	}
	defer func() {
		fmt.Fprintln(stdout, "Stopping sluice (draining to the sinks; Ctrl-C again stops at once, the rest stays in the journal) ...")
		if err := closeService(svc, cfg.ShutdownTimeout, stopNowContext(ctx), log); err != nil {
			fmt.Fprintln(stderr, "sluice:", err)
		}
		stopAdmin()
	}()

	sim := simulator.New(simulator.Config{Broker: demoMQTT, Devices: o.devices, Interval: o.interval,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan struct{})
	go func() { sim.Run(simCtx); close(simDone) }()
	defer func() {
		stopSim()
		<-simDone
	}()

	fmt.Fprintf(stdout, `
sluice demo: %d simulated devices publish to plant/<site>/<line>/<device>/telemetry on %s.
Rules: %s (boilers, pumps, cold chain). Ctrl-C stops everything.
The demo broker takes anonymous clients, on loopback only; docs/security.md
shows a production setup (TLS, client certificates, passwords, ACLs).

Watch it:
  alerts:    mosquitto_sub -h 127.0.0.1 -p 1883 -t 'sluice/alerts/#' -v
  telemetry: mosquitto_sub -h 127.0.0.1 -p 1883 -t 'plant/#' -v
  InfluxDB:  curl -sG http://%s/query --data-urlencode db=sluice \
               --data-urlencode "q=SELECT * FROM boiler ORDER BY time DESC LIMIT 5"
  alerts in InfluxDB: --data-urlencode "q=SELECT * FROM alerts ORDER BY time DESC LIMIT 5"
  Kafka:     topics sluice.records and sluice.alerts on 127.0.0.1:%d
  metrics:   curl -s http://%s/metrics | grep ^sluice_     (health: /readyz)
  status:    sluice status -admin %s

`, o.devices, demoMQTT, filepath.Join(confDir, "rules"), demoInflux, demoKafka, cfg.Admin.Address, cfg.Admin.Address)

	kinds := sinkKinds(cfg)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastIn float64
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout)
			return nil
		case <-tick.C:
			s := summarize(m, kinds)
			fmt.Fprintf(stdout, "%s  in %4.0f msg/s (%d total) | influxdb %d points | kafka %d records | alerts %d firing, %d transitions | dead letters %d\n",
				time.Now().Format("15:04:05"), s.in-lastIn, int64(s.in), int64(s.points), int64(s.records),
				int64(s.firing-s.resolved), int64(s.firing+s.resolved), int64(s.deadLetters))
			lastIn = s.in
		}
	}
}

// startDemoServices writes the demo's config and rules to confDir and
// starts what the demo's sinks write to: influxd and the Kafka stand-in, on
// their documented ports. stop stops them.
func startDemoServices(ctx context.Context, o demoOptions, dataDir, confDir string, stdout io.Writer) (stop func(), err error) {
	if err := writeExamples(confDir); err != nil {
		return nil, fmt.Errorf("write demo config: %w", err)
	}
	fmt.Fprintf(stdout, "Starting InfluxDB 1.8 (influxd) on %s ...\n", demoInflux)
	influx, err := influxd.Start(ctx, influxd.Options{Binary: o.influxd, Dir: filepath.Join(dataDir, "influxdb"), Addr: demoInflux})
	if err != nil {
		return nil, fmt.Errorf("influxd: %w (is port 8086 taken by another InfluxDB?)", err)
	}
	stopInflux := func() {
		fmt.Fprintln(stdout, "Stopping influxd ...")
		influx.Stop()
	}
	if err := influx.CreateDatabase("sluice"); err != nil {
		stopInflux()
		return nil, err
	}
	fmt.Fprintf(stdout, "Starting the Kafka stand-in on 127.0.0.1:%d (kfake, in-process: a development stand-in, not a real Kafka) ...\n", demoKafka)
	kafka, err := devkafka.Start(devkafka.Options{Port: demoKafka, Topics: []string{"sluice.records", "sluice.alerts"}})
	if err != nil {
		stopInflux()
		return nil, fmt.Errorf("%w (is port %d taken by another Kafka?)", err, demoKafka)
	}
	return func() {
		kafka.Close()
		stopInflux()
	}, nil
}

// writeExamples copies the embedded demo config and example rules to dir.
func writeExamples(dir string) error {
	return fs.WalkDir(examples.Files, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(dir, path)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := examples.Files.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}

func sinkKinds(cfg *pipelines.Config) map[string]string {
	kinds := map[string]string{}
	for i := range cfg.Sinks {
		kinds[cfg.Sinks[i].Name] = cfg.Sinks[i].Type()
	}
	return kinds
}

type summary struct {
	in, points, records, firing, resolved, deadLetters float64
}

// summarize reads the demo's live numbers off the metrics registry.
func summarize(m *metrics.Metrics, kinds map[string]string) summary {
	var s summary
	families, err := m.Registry.Gather()
	if err != nil {
		return s
	}
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			v := mt.GetCounter().GetValue()
			switch f.GetName() {
			case "sluice_messages_received_total":
				s.in += v
			case "sluice_sink_events_written_total":
				switch kinds[label(mt, "sink")] {
				case "influxdb":
					s.points += v
				case "kafka":
					s.records += v
				}
			case "sluice_alert_transitions_total":
				if label(mt, "status") == "firing" {
					s.firing += v
				} else {
					s.resolved += v
				}
			case "sluice_dead_letters_total":
				s.deadLetters += v
			}
		}
	}
	return s
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// cmdSimulate publishes simulated plant telemetry to any broker until
// interrupted (the docker-compose stack uses it as its device fleet).
func cmdSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("simulate", stderr)
	broker := fs.String("broker", demoMQTT, "MQTT broker `host:port`")
	devices := fs.Int("devices", 36, "simulated devices")
	interval := fs.Duration("interval", time.Second, "time between two readings of a device")
	fs.Usage = commandUsage(fs, "simulate [flags]", "Publishes simulated plant telemetry to an MQTT broker until interrupted.")
	if code, ok := parseNoArgs(fs, args); !ok {
		return code
	}
	sim := simulator.New(simulator.Config{Broker: *broker, Devices: *devices, Interval: *interval,
		Logger: slog.New(slog.NewTextHandler(stderr, nil))})
	fmt.Fprintf(stdout, "simulating %d devices on %s; Ctrl-C stops\n", *devices, *broker)
	done := make(chan struct{})
	go func() { sim.Run(ctx); close(done) }()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-done:
			fmt.Fprintf(stdout, "published %d readings (%d failed)\n", sim.Published(), sim.Failed())
			return exitOK
		case <-tick.C:
			fmt.Fprintf(stdout, "published %d readings (%d failed)\n", sim.Published(), sim.Failed())
		}
	}
}
