package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/internal/childproc"
	"github.com/sluicehq/sluice/internal/influxd"
)

// Config is one benchmark invocation: the load, what it runs against, and
// where the report goes.
type Config struct {
	// Broker, when set, is any MQTT broker (host:port) to publish to: only
	// publishing and acknowledgements are measured. Otherwise sluice runs
	// in this process, from ConfigFile or, by default, from the built-in
	// bench configuration with the real services (the Kafka stand-in and
	// influxd).
	Broker     string
	ConfigFile string
	// Job is the built-in configuration run: JobFull (default) or
	// JobInflux, the simplest job.
	Job string
	// Baseline runs the same load against the bare embedded broker first,
	// so that the report gives sluice as a ratio of it.
	Baseline bool
	// Scale measures connections instead of throughput: Load.Devices
	// devices connect (idle, or publishing at Load.Rate) and the report
	// gives the memory each costs and the connect rate.
	Scale bool
	// Settle is how long connected devices are left before memory is
	// measured (scale).
	Settle time.Duration
	// SeriesTTL is how long the series check's rules keep a series after
	// its last reading (default 15s).
	SeriesTTL time.Duration
	Load      Load
	// Out is the folder for report.md, report.csv, progress.csv, the
	// configuration used and profiles.
	Out string
	// DataDir is the work folder (sluice's journal, influxd's data); empty:
	// a temporary folder, removed afterwards.
	DataDir string
	// Influxd is the influxd binary (default influxd.Binary()).
	Influxd string
	// Durability of the built-in configuration's pipeline, and the batch
	// size of its record sinks (0: sluice's default).
	Durability    string
	Batch         int
	BatchInterval time.Duration
	// LogLevel of sluice (and the baseline broker).
	LogLevel string
	// Drain bounds the wait, after the load, for the sinks to catch up.
	Drain time.Duration
	// CPUProfile, when set, is a file for a CPU profile of the process
	// under test during the sluice run.
	CPUProfile string
	// MemProfile, when set, is a file for a heap profile written at the end
	// of the sluice run: its alloc_space and alloc_objects samples count
	// every allocation since the process started (run with Baseline off to
	// see sluice's alone).
	MemProfile string
	// Trace, when set, is a file for an execution trace of the process
	// under test: TraceSeconds of the sluice run, from 10 s into the load
	// (go tool trace; -pprof=sched shows where goroutines waited to run).
	Trace        string
	TraceSeconds int
	// Cluster adds a run of sluice as a cluster of three nodes on the
	// Kafka stand-in, after the one-node run: an ingest node (this
	// process), a rules node and a sinks node (child processes running
	// SluiceBinary), so the report gives each node's CPU per message next
	// to one node's.
	Cluster      bool
	SluiceBinary string
	// Spawn makes the command that runs the load side in a child process
	// (see ChildEnv); nil runs it in this process, where its CPU and memory
	// count with sluice's.
	Spawn func() *exec.Cmd
}

// SetDefaults fills in what was left out.
func (c *Config) SetDefaults() {
	l := &c.Load
	if l.Devices == 0 {
		l.Devices = 100
	}
	if l.MQTT == 0 {
		l.MQTT = 5
	}
	if l.Shape == "" {
		l.Shape = ShapeFlat
	}
	if l.Size == 0 {
		l.Size = 256
	}
	if l.Readings == 0 {
		l.Readings = 10
	}
	if l.Duration == 0 && l.Messages == 0 && !c.Scale {
		l.Duration = 60 * time.Second
	}
	if l.Inflight == 0 {
		l.Inflight = 32
	}
	if l.Client == "" {
		l.Client = "lean"
	}
	if l.ConnectConcurrency == 0 {
		l.ConnectConcurrency = 64
	}
	if l.KeepAlive == 0 {
		l.KeepAlive = 60 * time.Second
	}
	if c.Scale {
		l.Idle = l.Rate == 0 && l.Series == 0
		if len(l.Sources) == 0 && l.Devices > 5000 {
			// Two runs of tens of thousands of connections outrun one
			// address's ephemeral ports (the first run's wait in TIME_WAIT).
			l.Sources = LoopbackSources(4)
		}
	}
	if c.Settle == 0 {
		c.Settle = 10 * time.Second
	}
	if c.SeriesTTL == 0 {
		c.SeriesTTL = 15 * time.Second
	}
	if c.Out == "" {
		c.Out = filepath.Join("reports", "bench")
	}
	if c.Durability == "" {
		c.Durability = "process"
	}
	if c.Job == "" {
		c.Job = JobFull
	}
	if c.LogLevel == "" {
		c.LogLevel = "warn"
	}
	if c.Drain == 0 {
		c.Drain = 5 * time.Minute
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	l := &c.Load
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if l.Devices < 1 {
		bad("devices: want at least 1")
	}
	if l.QoS > 2 {
		bad("qos: want 0, 1 or 2")
	}
	if l.MQTT != 3 && l.MQTT != 5 {
		bad("mqtt: want 3 (3.1.1) or 5")
	}
	switch l.Shape {
	case ShapeFlat, ShapeNested, ShapeGzip, ShapeArray, ShapeMixed:
	default:
		bad("shape %q: want flat, nested, gzip, array or mixed", l.Shape)
	}
	if l.Size < 64 {
		bad("size: want at least 64 bytes")
	}
	if l.Client != "lean" && l.Client != "paho" {
		bad("client %q: want lean or paho", l.Client)
	}
	if l.Client == "paho" && l.MQTT != 5 {
		bad("client paho speaks MQTT 5 only")
	}
	if l.Inflight < 1 || l.Inflight > 1024 {
		bad("inflight: want 1 to 1024 (sluice's receive maximum)")
	}
	if l.Rate < 0 || l.Duration < 0 || l.Messages < 0 || l.Ramp < 0 {
		bad("rate, duration, messages and ramp must not be negative")
	}
	for _, s := range l.Sources {
		if net.ParseIP(s) == nil {
			bad("source %q is not an IP address", s)
		}
	}
	if c.Broker != "" && c.ConfigFile != "" {
		bad("-broker and -c exclude each other")
	}
	if c.Batch < 0 || c.BatchInterval < 0 {
		bad("batch and batch-interval must not be negative")
	}
	if _, ok := jobs[c.Job]; !ok {
		bad("job %q: want full or influx", c.Job)
	}
	if c.Cluster && c.Job != JobFull {
		bad("-cluster runs the full job only")
	}
	if l.Series < 0 {
		bad("series must not be negative")
	}
	if l.Series > 0 && (!c.Scale || c.Broker != "" || l.Client != "lean" || c.Cluster) {
		bad("-series is a check of sluice's memory: with -scale, the lean client, and neither -broker nor -cluster")
	}
	switch c.Durability {
	case "process", "fsync", "none":
	default:
		bad("durability %q: want process, fsync or none", c.Durability)
	}
	return errors.Join(errs...)
}

// LoopbackSources returns n loopback addresses, 127.0.0.1 to 127.0.0.n,
// for fleets larger than one address's ephemeral ports.
func LoopbackSources(n int) []string {
	var s []string
	for i := 1; i <= n && i < 255; i++ {
		s = append(s, fmt.Sprintf("127.0.0.%d", i))
	}
	return s
}

// bench is one invocation under way.
type bench struct {
	cfg      Config
	out, err io.Writer
	side     loader
	child    *remoteSide
	work     string
	influx   *influxd.Server
	kafka    []string // the Kafka stand-in's brokers, once started
	report   *Report
	log      *slog.Logger
}

// Run runs the benchmark and writes its report; progress goes to stdout,
// logs to stderr. It returns the report (also when a run failed part way).
func Run(ctx context.Context, cfg Config, stdout, stderr io.Writer) (*Report, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &bench{cfg: cfg, out: stdout, err: stderr}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	b.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	b.report = newReport(&cfg, raiseNoFile())
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	b.work = cfg.DataDir
	if b.work == "" {
		dir, err := os.MkdirTemp("", "sluice-bench-")
		if err != nil {
			return nil, err
		}
		b.work = dir
		defer os.RemoveAll(dir)
	}
	if cfg.Spawn != nil {
		child, err := spawnLoadSide(cfg.Spawn(), stderr)
		if err != nil {
			return nil, err
		}
		b.child, b.side = child, child
		b.report.Separate = true
	} else {
		side := NewLoadSide(ctx, b.log)
		defer side.close()
		b.side = side
	}
	err := b.runAll(ctx)
	if b.child != nil {
		if cerr := b.child.close(); cerr != nil && err == nil {
			err = fmt.Errorf("load side: %w", cerr)
		}
	}
	if b.influx != nil {
		b.influx.Stop()
	}
	if werr := b.report.write(cfg.Out); werr != nil {
		err = errors.Join(err, werr)
	}
	fmt.Fprintln(stdout)
	b.report.markdown(stdout)
	fmt.Fprintf(stdout, "\nReport: %s\n", filepath.Join(cfg.Out, "report.md"))
	return b.report, err
}

func (b *bench) runAll(ctx context.Context) error {
	// The bare broker holds nothing per series: no baseline for -series.
	if b.cfg.Baseline && b.cfg.Load.Series == 0 {
		if err := b.runBaseline(ctx); err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if b.cfg.Broker != "" {
		return b.runBroker(ctx)
	}
	if err := b.runSluice(ctx); err != nil || !b.cfg.Cluster {
		return err
	}
	return b.runCluster(ctx)
}

func (b *bench) runBaseline(ctx context.Context) error {
	level := slog.LevelWarn
	_ = level.UnmarshalText([]byte(b.cfg.LogLevel))
	bl, err := startBaseline(slog.New(slog.NewTextHandler(b.err, &slog.HandlerOptions{Level: max(level, slog.LevelWarn)})))
	if err != nil {
		return err
	}
	defer bl.close()
	name := "baseline"
	if b.cfg.Scale {
		return b.scale(ctx, name, "bare mochi broker", bl.addr)
	}
	r := &RunResult{Name: name, Target: "bare mochi broker, counting hook"}
	p := probe{
		line: func() string { return fmt.Sprintf("in %s", count(bl.received())) },
		done: func(LoadProgress) bool { return true },
	}
	if err := b.drive(ctx, r, bl.addr, p); err != nil {
		return err
	}
	r.BrokerIn = bl.received()
	b.report.add(r)
	return nil
}

func (b *bench) runBroker(ctx context.Context) error {
	if b.cfg.Scale {
		return b.scale(ctx, "broker", b.cfg.Broker, b.cfg.Broker)
	}
	r := &RunResult{Name: "broker", Target: b.cfg.Broker}
	if err := b.drive(ctx, r, b.cfg.Broker, probe{}); err != nil {
		return err
	}
	b.report.add(r)
	return nil
}

// runSluice runs the load against sluice in this process: from the
// built-in configuration, with the Kafka stand-in and influxd, or from the
// user's.
func (b *bench) runSluice(ctx context.Context) error {
	builtIn := b.cfg.ConfigFile == ""
	path := b.cfg.ConfigFile
	target := path
	if builtIn {
		var err error
		if path, err = b.startServices(ctx); err != nil {
			return err
		}
		defer b.side.CloseServices(Empty{}, &Empty{})
		target = "sluice, " + jobs[b.cfg.Job].describe + "; durability " + b.cfg.Durability
		if b.cfg.Load.Series > 0 {
			target += "; the series check's 2 rules in place of the job's"
		}
		if b.cfg.Batch > 0 {
			target += fmt.Sprintf("; record batches of %d", b.cfg.Batch)
		}
		if b.cfg.BatchInterval > 0 {
			target += fmt.Sprintf("; record batch interval %v", b.cfg.BatchInterval)
		}
		target += ")"
	}
	stack, err := startSluice(ctx, path, filepath.Join(b.work, "sluice-data"), b.cfg.LogLevel, b.err)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := stack.close(cctx); err != nil {
			b.log.Warn("sluice stopped with an error", "error", err)
		}
	}()
	if b.cfg.Scale && b.cfg.Load.Series > 0 {
		return b.series(ctx, stack, target)
	}
	if b.cfg.Scale {
		return b.scale(ctx, "sluice", target, stack.addr)
	}
	r := &RunResult{Name: "sluice", Target: target}
	kafka := builtIn && jobs[b.cfg.Job].kafka
	var caught time.Time
	p := probe{
		line: func() string {
			n := stack.numbers()
			return fmt.Sprintf("in %s backlog %s", count(int64(n.received)), count(int64(n.backlog)))
		},
		done: func(lp LoadProgress) bool {
			if !stack.svc.CaughtUp() {
				caught = time.Time{}
				return false
			}
			if !builtIn {
				return true
			}
			if caught.IsZero() {
				caught = time.Now()
			}
			// The sinks have acknowledged everything; give the Kafka
			// consumer until it has read as much (without Kafka, the
			// InfluxDB proxy until it has seen as many points), or 10s
			// without news.
			want := lp.Fleet.AckedReadings
			if b.cfg.Load.QoS == 0 {
				want = lp.Fleet.SentReadings
			}
			arrived := lp.InfluxPoints
			if kafka {
				arrived = lp.Kafka.Unique
			}
			return arrived >= want || time.Since(caught) > 10*time.Second
		},
		influxd:      builtIn,
		kafka:        kafka,
		profile:      b.cfg.CPUProfile,
		memProfile:   b.cfg.MemProfile,
		trace:        b.cfg.Trace,
		traceSeconds: b.cfg.TraceSeconds,
	}
	if err := b.drive(ctx, r, stack.addr, p); err != nil {
		return err
	}
	n := stack.numbers()
	r.BrokerIn = int64(n.received)
	r.AlertsSluice = int64(n.alerts)
	r.DeadLetters = int64(n.deadLetters)
	r.SluiceAck = n.ack
	r.SinkWrites = n.writes
	r.SinkWritten = n.written
	if builtIn {
		r.Counted, r.KafkaCounted = true, kafka
		if r.InfluxCount, err = b.influxCount(); err != nil {
			r.Problems = append(r.Problems, "InfluxDB count: "+err.Error())
		}
	}
	b.report.add(r)
	return nil
}

// runCluster runs the load against sluice as a cluster of two nodes on the
// Kafka stand-in: an ingest node in this process (the devices publish to
// it) and a node for the rules and the sinks, a `sluice run` child process.
// Both processes' CPU is measured, for the cost of the Kafka hop.
func (b *bench) runCluster(ctx context.Context) error {
	path, err := b.startServices(ctx)
	if err != nil {
		return err
	}
	defer b.side.CloseServices(Empty{}, &Empty{})
	base, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	node := func(name, roles string) (string, error) {
		text := strings.Replace(string(base), "data_dir: "+filepath.Join(b.work, "sluice-data"), "data_dir: "+filepath.Join(b.work, "cluster-"+name), 1)
		text += fmt.Sprintf("\ncluster:\n  node: %s\n  roles: [%s]\n  brokers: [\"%s\"]\n  partitions: 12\n",
			name, roles, strings.Join(b.kafka, `", "`))
		p := filepath.Join(filepath.Dir(path), "cluster-"+name+".yaml")
		return p, os.WriteFile(p, []byte(text), 0o644)
	}
	ingestPath, err := node("ingest", "ingest")
	if err != nil {
		return err
	}
	bin := b.cfg.SluiceBinary
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return err
		}
	}
	// The rules node and the sinks node run as child processes, each
	// measured on its own.
	var peers []peer
	for _, pr := range []struct{ name, roles string }{{"rules", "rules"}, {"sinks", "sinks"}} {
		path, err := node(pr.name, pr.roles)
		if err != nil {
			return err
		}
		logf, err := os.Create(filepath.Join(b.cfg.Out, "cluster-"+pr.name+"-node.log"))
		if err != nil {
			return err
		}
		defer logf.Close()
		cmd := exec.Command(bin, "run", "-c", path)
		cmd.Stdout, cmd.Stderr = logf, logf
		done, err := childproc.Start(cmd, syscall.SIGKILL) // it dies with the bench
		if err != nil {
			return fmt.Errorf("cluster: %s node: %w", pr.name, err)
		}
		defer func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(time.Minute):
				cmd.Process.Kill()
				<-done
			}
		}()
		peers = append(peers, peer{Name: pr.name, Roles: pr.roles, pid: cmd.Process.Pid})
	}
	stack, err := startSluice(ctx, ingestPath, filepath.Join(b.work, "cluster-ingest"), b.cfg.LogLevel, b.err)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := stack.close(cctx); err != nil {
			b.log.Warn("sluice stopped with an error", "error", err)
		}
	}()
	r := &RunResult{Name: "cluster", Target: "sluice as three nodes on the Kafka stand-in: ingest (this process), rules, sinks (child processes); built-in config"}
	p := probe{
		line: func() string {
			n := stack.numbers()
			return fmt.Sprintf("in %s", count(int64(n.received)))
		},
		// Done when every reading is in Kafka and InfluxDB has taken as
		// many points: the sinks node has caught up.
		done: func(lp LoadProgress) bool {
			want := lp.Fleet.AckedReadings
			if b.cfg.Load.QoS == 0 {
				want = lp.Fleet.SentReadings
			}
			return lp.Kafka.Unique >= want && lp.InfluxPoints >= want
		},
		influxd: true,
		kafka:   true,
		peers:   peers,
	}
	if b.cfg.CPUProfile != "" {
		// The ingest node's profile, next to the one node's.
		p.profile = strings.TrimSuffix(b.cfg.CPUProfile, ".prof") + "-cluster-ingest.prof"
	}
	if err := b.drive(ctx, r, stack.addr, p); err != nil {
		return err
	}
	n := stack.numbers()
	r.BrokerIn = int64(n.received)
	r.Counted, r.KafkaCounted = true, true
	if r.InfluxCount, err = b.influxCount(); err != nil {
		r.Problems = append(r.Problems, "InfluxDB count: "+err.Error())
	}
	b.report.add(r)
	return nil
}

// startServices starts influxd (once), then the Kafka stand-in, its
// consumer and the InfluxDB proxy on the load side, and writes the
// built-in configuration pointing at them.
func (b *bench) startServices(ctx context.Context) (string, error) {
	if b.influx == nil {
		fmt.Fprintln(b.out, "Starting influxd ...")
		s, err := influxd.Start(ctx, influxd.Options{Binary: b.cfg.Influxd, Dir: filepath.Join(b.work, "influxdb"),
			UnlimitedTags: b.cfg.Load.Series > 0})
		if err != nil {
			return "", fmt.Errorf("influxd: %w", err)
		}
		b.influx = s
	}
	if _, err := b.influx.Query("", fmt.Sprintf("DROP DATABASE %q", database)); err != nil {
		return "", err
	}
	if err := b.influx.CreateDatabase(database); err != nil {
		return "", err
	}
	args := ServicesArgs{InfluxURL: b.influx.URL, Devices: b.cfg.Load.Devices}
	if jobs[b.cfg.Job].kafka {
		args.RecordsTopic, args.AlertsTopic = recordsTopic, alertsTopic
	}
	var svc ServicesReply
	if err := b.side.Services(args, &svc); err != nil {
		return "", err
	}
	b.kafka = svc.KafkaBrokers
	path, err := writeBenchConfig(filepath.Join(b.work, "config"), benchConfig{
		Job: b.cfg.Job, LogLevel: b.cfg.LogLevel, DataDir: filepath.Join(b.work, "sluice-data"), Durability: b.cfg.Durability,
		MaxConnections: max(10000, b.cfg.Load.Devices+1000),
		InfluxURL:      svc.InfluxURL, Database: database,
		KafkaBrokers: strings.Join(svc.KafkaBrokers, ", "), RecordsTopic: recordsTopic, AlertsTopic: alertsTopic,
		Batch: b.cfg.Batch, BatchInterval: b.cfg.BatchInterval, Series: b.cfg.Scale && b.cfg.Load.Series > 0, SeriesTTL: b.cfg.SeriesTTL,
	})
	if err != nil {
		return "", err
	}
	if text, err := os.ReadFile(path); err == nil {
		_ = os.WriteFile(filepath.Join(b.cfg.Out, "sluice.yaml"), text, 0o644)
	}
	return path, nil
}

// influxCount counts the record points in InfluxDB: every measurement's
// seq field (alert points have none).
func (b *bench) influxCount() (int64, error) {
	body, err := b.influx.Query(database, "SELECT count(seq) FROM /.*/")
	if err != nil {
		return 0, err
	}
	var resp struct {
		Results []struct {
			Series []struct {
				Values [][]any `json:"values"`
			} `json:"series"`
		} `json:"results"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&resp); err != nil {
		return 0, fmt.Errorf("count query: %w", err)
	}
	var n int64
	for _, r := range resp.Results {
		for _, s := range r.Series {
			for _, v := range s.Values {
				if len(v) == 2 {
					if c, ok := v[1].(json.Number); ok {
						k, _ := c.Int64()
						n += k
					}
				}
			}
		}
	}
	return n, nil
}

// probe is what drive asks of the target.
type probe struct {
	// line adds the target's numbers to the progress line.
	line func() string
	// done says, once the load is over, whether the run is complete (the
	// sinks have caught up); nil: at once.
	done func(LoadProgress) bool
	// influxd: measure influxd's CPU too (and show the InfluxDB rate);
	// kafka: show the Kafka consumer's rate.
	influxd, kafka bool
	// profile is a CPU profile file.
	profile string
	// memProfile is a heap profile file, written when the run ends.
	memProfile string
	// trace is an execution trace file (see Config.Trace).
	trace        string
	traceSeconds int
	// peers are other processes under test (a cluster's other nodes):
	// their CPU and peak memory are measured too.
	peers []peer
}

// drive runs one load against addr, prints a progress line every second,
// waits for the target to finish (up to Drain) and fills in r.
func (b *bench) drive(ctx context.Context, r *RunResult, addr string, p probe) error {
	runtime.GC()
	debug.FreeOSMemory()
	_ = resetPeak()
	influxPID := 0
	if p.influxd {
		influxPID = childNamed("influxd")
	}
	cpu0, icpu0, busy0 := cpuSelf(), cpuOf(influxPID), machineBusy()
	pcpu0 := make([]time.Duration, len(p.peers))
	for i, pr := range p.peers {
		pcpu0[i] = cpuOf(pr.pid)
	}
	if p.profile != "" {
		f, err := os.Create(p.profile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	if p.memProfile != "" {
		defer func() {
			if err := writeHeapProfile(p.memProfile); err != nil {
				r.Problems = append(r.Problems, "heap profile: "+err.Error())
			}
		}()
	}
	start := time.Now()
	if err := b.side.StartLoad(StartArgs{Addr: addr, Load: b.cfg.Load}, &Empty{}); err != nil {
		return err
	}
	if p.trace != "" {
		stop := traceLater(p.trace, 10*time.Second, time.Duration(max(p.traceSeconds, 1))*time.Second, func(err error) {
			r.Problems = append(r.Problems, "trace: "+err.Error())
		})
		defer stop()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last LoadProgress
	lastCPU, lastAt := cpu0, start
	var loadEnd time.Time
	stopped := false
loop:
	for {
		select {
		case <-tick.C:
		case <-ctx.Done():
			if !stopped {
				b.side.StopLoad(Empty{}, &Empty{})
				stopped = true
			}
			if !loadEnd.IsZero() {
				r.Problems = append(r.Problems, "interrupted while the sinks caught up")
				break loop
			}
			<-tick.C
		}
		var lp LoadProgress
		if err := b.side.Progress(Empty{}, &lp); err != nil {
			return err
		}
		now, cpu := time.Now(), cpuSelf()
		s := sample{
			Run: r.Name, T: now.Sub(start), Phase: lp.Fleet.Phase, Connected: lp.Fleet.Connected,
			Sent: lp.Fleet.Sent - last.Fleet.Sent, Acked: lp.Fleet.Acked - last.Fleet.Acked,
			Kafka: lp.Kafka.Unique - last.Kafka.Unique, Influx: lp.InfluxPoints - last.InfluxPoints,
			Cores: (cpu - lastCPU).Seconds() / now.Sub(lastAt).Seconds(), RSS: memoryOf(0).RSS,
		}
		if loadEnd.IsZero() && lp.Fleet.Phase == "done" {
			loadEnd = now
		}
		if !loadEnd.IsZero() {
			s.Phase = "catching up"
		}
		if p.line != nil {
			s.Extra = p.line()
		}
		b.report.samples = append(b.report.samples, s)
		fmt.Fprintln(b.out, s.line(b.cfg.Load.Devices, p.influxd, p.kafka))
		last, lastCPU, lastAt = lp, cpu, now
		if loadEnd.IsZero() {
			continue
		}
		if p.done == nil || p.done(lp) {
			break
		}
		if time.Since(loadEnd) > b.cfg.Drain {
			r.Problems = append(r.Problems, fmt.Sprintf("the sinks did not catch up within %v of the load's end", b.cfg.Drain))
			break
		}
	}
	if !loadEnd.IsZero() {
		r.Drain = time.Since(loadEnd)
	}
	r.Wall = time.Since(start)
	r.CPU = cpuSelf() - cpu0
	r.PeakRSS = memoryOf(0).Peak
	if influxPID > 0 {
		r.InfluxdCPU = cpuOf(influxPID) - icpu0
	}
	var peersCPU time.Duration
	for i, pr := range p.peers {
		pr.CPU, pr.PeakRSS = cpuOf(pr.pid)-pcpu0[i], memoryOf(pr.pid).Peak
		r.Peers = append(r.Peers, pr)
		peersCPU += pr.CPU
	}
	busy := machineBusy() - busy0
	if err := b.side.Finish(Empty{}, &r.Load); err != nil {
		return err
	}
	if b.child == nil {
		// In process, the load side's CPU and memory are the process's:
		// they are in r.CPU and r.PeakRSS and cannot be told apart.
		r.Load.CPU, r.Load.PeakRSS = 0, 0
	}
	// What else ran on the machine meanwhile (a shared machine is noisy).
	r.OthersCPU = max(0, busy-r.CPU-peersCPU-r.Load.CPU-r.InfluxdCPU)
	if r.Load.ConnectErr != "" {
		r.Problems = append(r.Problems, fmt.Sprintf("%d connections failed; the first: %s", r.Load.Fleet.ConnectErr, r.Load.ConnectErr))
	}
	if r.Load.TailErr != "" {
		r.Problems = append(r.Problems, "Kafka consumer: "+r.Load.TailErr)
	}
	return ctx.Err()
}

// scale connects the fleet and measures what the connections cost the
// process under test.
func (b *bench) scale(ctx context.Context, name, target, addr string) error {
	r := &ScaleResult{Name: name, Target: target}
	measure := name != "broker" // an external broker's memory is not ours to read
	var ms runtime.MemStats
	settle := func() (rss int64, heap uint64, goroutines int) {
		runtime.GC()
		debug.FreeOSMemory()
		runtime.ReadMemStats(&ms)
		return memoryOf(0).RSS, ms.HeapInuse + ms.StackInuse, runtime.NumGoroutine()
	}
	rss0, heap0, g0 := settle()
	r.IdleRSS = rss0
	start := time.Now()
	if err := b.side.StartLoad(StartArgs{Addr: addr, Load: b.cfg.Load}, &Empty{}); err != nil {
		return err
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var connectedAt time.Time
	var last LoadProgress
	for {
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
		var lp LoadProgress
		if err := b.side.Progress(Empty{}, &lp); err != nil {
			return err
		}
		fmt.Fprintf(b.out, "%-8s %5.0fs %-10s connected %s (%s/s)  failed %s  sent %s  rss %s\n", name,
			time.Since(start).Seconds(), lp.Fleet.Phase, count(lp.Fleet.Connected), count(lp.Fleet.Connected-last.Fleet.Connected),
			count(lp.Fleet.ConnectErr), count(lp.Fleet.Sent), mb(memoryOf(0).RSS))
		last = lp
		if lp.Fleet.Phase != "connecting" && connectedAt.IsZero() {
			connectedAt = time.Now()
		}
		if ctx.Err() != nil || lp.Fleet.Phase == "done" || (!connectedAt.IsZero() && time.Since(connectedAt) >= b.cfg.Settle) {
			break
		}
	}
	if measure {
		r.RawRSS = memoryOf(0).RSS
		rss1, heap1, g1 := settle()
		r.RSS = rss1
		if b.cfg.MemProfile != "" && name == "sluice" {
			// What the connections hold, while they are connected.
			if err := writeHeapProfile(b.cfg.MemProfile); err != nil {
				r.Problems = append(r.Problems, "heap profile: "+err.Error())
			}
		}
		if n := last.Fleet.Connected; n > 0 {
			r.PerConn = float64(rss1-rss0) / float64(n)
			r.HeapPerConn = (float64(heap1) - float64(heap0)) / float64(n)
			r.GoroutinesPerConn = float64(g1-g0) / float64(n)
		}
	}
	b.side.StopLoad(Empty{}, &Empty{})
	if err := b.side.Finish(Empty{}, &r.Load); err != nil {
		return err
	}
	r.Connected = r.Load.Fleet.Connected
	if r.Load.ConnectErr != "" {
		r.Problems = append(r.Problems, fmt.Sprintf("%d connections failed; the first: %s", r.Load.Fleet.ConnectErr, r.Load.ConnectErr))
	}
	b.report.addScale(r)
	return ctx.Err()
}

// writeHeapProfile writes the heap profile (allocations since the process
// started, and what is in use now) to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// traceLater writes an execution trace of length d to path, starting after
// wait; stop ends it early and waits for the file to be written. A failure
// is passed to fail, from stop's goroutine.
func traceLater(path string, wait, d time.Duration, fail func(error)) (stop func()) {
	done, cancel := make(chan struct{}), make(chan struct{})
	var err error
	go func() {
		defer close(done)
		select {
		case <-time.After(wait):
		case <-cancel:
			return
		}
		f, e := os.Create(path)
		if e != nil {
			err = e
			return
		}
		if e := trace.Start(f); e != nil {
			f.Close()
			err = e
			return
		}
		select {
		case <-time.After(d):
		case <-cancel:
		}
		trace.Stop()
		err = f.Close()
	}()
	return func() {
		close(cancel)
		<-done
		if err != nil {
			fail(err)
		}
	}
}
