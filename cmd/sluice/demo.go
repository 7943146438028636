package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/sluicehq/sluice/examples"
	"github.com/sluicehq/sluice/internal/console"
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
	demoAdmin  = "127.0.0.1:9880"
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
	mqttAddr := fs.String("mqtt", demoMQTT, "the broker's `address` (port 0: a free one)")
	influxAddr := fs.String("influx", demoInflux, "influxd's `address` (port 0: a free one)")
	kafkaPort := fs.Int("kafka", demoKafka, "the Kafka stand-in's `port` on 127.0.0.1 (0: a free one)")
	adminAddr := fs.String("admin", demoAdmin, "the admin listener's `address` (port 0: a free one)")
	fs.Usage = commandUsage(fs, "demo [flags]", "Runs the demo: influxd, the Kafka stand-in, sluice with the example rules and simulated devices.")
	if code, ok := parseNoArgs(fs, args); !ok {
		return code
	}
	o := demoOptions{devices: *devices, interval: *interval, data: *data, influxd: *influxBin, logLevel: *logLevel, nodes: *nodes, cycle: *cycle,
		mqtt: *mqttAddr, influx: *influxAddr, kafka: *kafkaPort, admin: *adminAddr}
	if *nodes > 1 && (o.mqtt != demoMQTT || o.influx != demoInflux || o.kafka != demoKafka || o.admin != demoAdmin) {
		fmt.Fprintln(stderr, "sluice demo: -mqtt, -influx, -kafka and -admin are for the one-node demo, not -nodes")
		return exitUsage
	}
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
	// Where the one-node demo's services listen.
	mqtt, influx, admin string
	kafka               int
}

func runDemo(ctx context.Context, o demoOptions, stdout, stderr io.Writer) error {
	dataDir, err := filepath.Abs(o.data)
	if err != nil {
		return err
	}
	confDir := filepath.Join(dataDir, "config")
	services, err := startDemoServices(ctx, o, dataDir, confDir, stdout)
	if err != nil {
		return err
	}
	defer services.stop()

	cfgPath := filepath.Join(confDir, "demo", "sluice.yaml")
	cfg, err := pipelines.Load(cfgPath)
	if err != nil {
		return err
	}
	cfg.Log.Level = o.logLevel
	cfg.DataDir = filepath.Join(dataDir, "sluice")
	services.aim(cfg, o)
	m := metrics.New()
	m.BuildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	log := newLogger(cfg, stderr)
	svc, err := pipelines.New(cfg, pipelines.Options{Logger: log, Metrics: m})
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		return fmt.Errorf("%w (sluice demo -mqtt picks another address)", err)
	}
	adminAddr, stopAdmin, err := startAdmin(cfg, svc, m, log)
	if err != nil {
		svc.Close(context.Background())
		return fmt.Errorf("%w (sluice demo -admin picks another address)", err)
	}
	mqttAddr := svc.Broker().Addr(cfg.Broker.Listeners[0].Name)
	mqttHost, mqttPort, _ := net.SplitHostPort(mqttAddr)
	defer func() {
		fmt.Fprintln(stdout, "Stopping sluice (draining to the sinks; Ctrl-C again stops at once, the rest stays in the journal) ...")
		if err := closeService(svc, cfg.ShutdownTimeout, stopNowContext(ctx), log); err != nil {
			fmt.Fprintln(stderr, "sluice:", err)
		}
		stopAdmin()
	}()

	sim := simulator.New(simulator.Config{Broker: mqttAddr, Devices: o.devices, Interval: o.interval,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan struct{})
	go func() { sim.Run(simCtx); close(simDone) }()
	defer func() {
		stopSim()
		<-simDone
	}()

	fmt.Fprintf(stdout, `
sluice demo: %[1]d simulated devices publish to plant/<site>/<line>/<device>/telemetry on %[2]s.
Rules: %[5]s (boilers, pumps, cold chain). Ctrl-C stops everything.
The demo broker takes anonymous clients, on loopback only; docs/security.md
shows a production setup (TLS, client certificates, passwords, ACLs).

Watch it:
  alerts:    mosquitto_sub -h %[3]s -p %[4]s -t 'sluice/alerts/#' -v
  telemetry: mosquitto_sub -h %[3]s -p %[4]s -t 'plant/#' -v
  InfluxDB:  curl -sG %[6]s/query --data-urlencode db=sluice \
               --data-urlencode "q=SELECT * FROM boiler ORDER BY time DESC LIMIT 5"
  alerts in InfluxDB: --data-urlencode "q=SELECT * FROM alerts ORDER BY time DESC LIMIT 5"
  Kafka:     topics sluice.records and sluice.alerts on %[7]s
  metrics:   curl -s http://%[8]s/metrics | grep ^sluice_     (health: /readyz)
  status:    sluice status -admin %[8]s
  console:   http://%[8]s/console/   (or sluice tail / alerts / deadletters -admin %[8]s)

`, o.devices, mqttAddr, mqttHost, mqttPort, filepath.Join(confDir, "rules"), services.influxURL, services.kafkaAddr, adminAddr)

	kinds := sinkKinds(cfg)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastIn float64
	var lastFiring string
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout)
			return nil
		case <-tick.C:
			now := time.Now()
			s := summarize(m, kinds)
			fmt.Fprintln(stdout, s.line(now, s.in-lastIn))
			lastIn = s.in
			// The series firing, each time they change.
			firing := svc.Console().Alerts.Firing()
			if key := firingKey(firing); key != lastFiring {
				lastFiring = key
				printFiring(stdout, firingViews(firing), now)
			}
		}
	}
}

// line is the summary's line: the points of the records and of the alerts
// apart (an alert transition is a point in InfluxDB and a record in Kafka
// too).
func (s summary) line(now time.Time, rate float64) string {
	return fmt.Sprintf("%s  in %4.0f msg/s (%d total) | influxdb %d points + %d alert points | kafka %d records + %d alerts | alerts %d firing, %d transitions | dead letters %d",
		now.Format("15:04:05"), rate, int64(s.in), int64(s.points), int64(s.alertPoints), int64(s.records), int64(s.alertRecords),
		int64(s.firing-s.resolved), int64(s.firing+s.resolved), int64(s.deadLetters))
}

// firingKey identifies the set of series firing.
func firingKey(firing []console.Firing) string {
	var b strings.Builder
	for _, f := range firing {
		fmt.Fprintf(&b, "%s\x00%s\x00%s\x00%s\n", f.Pipeline, f.Alert.Rule, f.Alert.Series, f.Alert.Since)
	}
	return b.String()
}

func firingViews(firing []console.Firing) []alertView {
	views := make([]alertView, len(firing))
	for i, f := range firing {
		a := f.Alert
		views[i] = alertView{Pipeline: f.Pipeline, Rule: a.Rule, Severity: a.Severity, Status: a.Status, Device: a.Device,
			Series: a.Series, Value: a.Value, Message: a.Message, Time: a.Time, Since: a.Since}
	}
	return views
}

// demoServices are what the demo's sinks write to.
type demoServices struct {
	influxURL string // http://host:port
	kafkaAddr string // host:port
	stop      func()
}

// aim points the demo config's sinks at the services, and its listeners
// where the demo was told to listen.
func (d *demoServices) aim(cfg *pipelines.Config, o demoOptions) {
	for i := range cfg.Sinks {
		s := &cfg.Sinks[i]
		if s.InfluxDB != nil {
			s.InfluxDB.URL = d.influxURL
		}
		if s.Kafka != nil {
			s.Kafka.Brokers = []string{d.kafkaAddr}
		}
	}
	if len(cfg.Broker.Listeners) > 0 && o.mqtt != "" {
		cfg.Broker.Listeners[0].Address = o.mqtt
	}
	if o.admin != "" {
		cfg.Admin.Address = o.admin
	}
}

// startDemoServices writes the demo's config and rules to confDir and
// starts what the demo's sinks write to: influxd and the Kafka stand-in, on
// their documented ports (or those given).
func startDemoServices(ctx context.Context, o demoOptions, dataDir, confDir string, stdout io.Writer) (*demoServices, error) {
	if err := writeExamples(confDir); err != nil {
		return nil, fmt.Errorf("write demo config: %w", err)
	}
	if o.influx == "" {
		o.influx = demoInflux
	}
	fmt.Fprintf(stdout, "Starting InfluxDB 1.8 (influxd) on %s ...\n", o.influx)
	influx, err := influxd.Start(ctx, influxd.Options{Binary: o.influxd, Dir: filepath.Join(dataDir, "influxdb"), Addr: o.influx})
	if err != nil {
		return nil, fmt.Errorf("influxd: %w (is the port taken by another InfluxDB? sluice demo -influx picks another address)", err)
	}
	fmt.Fprintf(stdout, "influxd is process %d, at %s; it stops with the demo, however the demo ends.\n", influx.PID(), influx.URL)
	stopInflux := func() {
		fmt.Fprintln(stdout, "Stopping influxd ...")
		influx.Stop()
	}
	if err := influx.CreateDatabase("sluice"); err != nil {
		stopInflux()
		return nil, err
	}
	kafka, err := devkafka.Start(devkafka.Options{Port: o.kafka, Topics: []string{"sluice.records", "sluice.alerts"}})
	if err != nil {
		stopInflux()
		return nil, fmt.Errorf("%w (is port %d taken by another Kafka? sluice demo -kafka picks another port)", err, o.kafka)
	}
	fmt.Fprintf(stdout, "Started the Kafka stand-in on %s (kfake, in-process: a development stand-in, not a real Kafka).\n", kafka.Addrs()[0])
	return &demoServices{influxURL: influx.URL, kafkaAddr: kafka.Addrs()[0], stop: func() {
		kafka.Close()
		stopInflux()
	}}, nil
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

// sinkKind is what a sink is and what it writes.
type sinkKind struct{ typ, stream string }

func sinkKinds(cfg *pipelines.Config) map[string]sinkKind {
	kinds := map[string]sinkKind{}
	for i := range cfg.Sinks {
		kinds[cfg.Sinks[i].Name] = sinkKind{cfg.Sinks[i].Type(), cfg.Sinks[i].Stream}
	}
	return kinds
}

type summary struct {
	in, points, alertPoints, records, alertRecords, firing, resolved, deadLetters float64
}

// summarize reads the demo's live numbers off the metrics registry.
func summarize(m *metrics.Metrics, kinds map[string]sinkKind) summary {
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
				k := kinds[label(mt, "sink")]
				switch {
				case k.typ == "influxdb" && k.stream == "alerts":
					s.alertPoints += v
				case k.typ == "influxdb":
					s.points += v
				case k.typ == "kafka" && k.stream == "alerts":
					s.alertRecords += v
				case k.typ == "kafka":
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
