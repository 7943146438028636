package bench

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/rules/decode"
)

// TestMain lets this test binary be the load-side child of TestBenchShort.
func TestMain(m *testing.M) {
	if os.Getenv(ChildEnv) != "" {
		if err := ServeChild(context.Background(), os.Stdin, os.Stdout, os.Stderr); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestBenchShort is the short form of `sluice bench` that make test runs:
// a few seconds of load, with every payload shape, against the bare broker
// and against sluice with the built-in configuration (real influxd, the
// Kafka stand-in), the load generator in a child process. It asserts that
// nothing acknowledged is lost: every reading is counted in Kafka (by a
// consumer) and in InfluxDB (by a count query). It never asserts a speed.
func TestBenchShort(t *testing.T) {
	var out testsvc.LogBuffer
	cfg := Config{
		Baseline: true,
		Load: Load{
			Devices: 12, QoS: 1, Shape: ShapeMixed, Readings: 5,
			Rate: 400, Duration: 3 * time.Second, Inflight: 8,
		},
		Out:     t.TempDir(),
		DataDir: t.TempDir(),
		Drain:   3 * time.Minute,
		Spawn:   func() *exec.Cmd { return exec.Command(os.Args[0], "-test.run=^$") },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	report, err := Run(ctx, cfg, &out, &out)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	if len(report.Runs) != 2 {
		t.Fatalf("got %d runs, want baseline and sluice\n%s", len(report.Runs), out.String())
	}
	for _, run := range report.Runs {
		f := run.Load.Fleet
		if f.Acked == 0 || f.Connected != 12 {
			t.Errorf("%s: %d devices connected, %d messages acknowledged: the load did not run\n%s", run.Name, f.Connected, f.Acked, out.String())
		}
		if n := report.Lost(run); n != 0 {
			t.Errorf("%s: lost %d acknowledged (of %d readings acknowledged)\n%s", run.Name, n, f.AckedReadings, out.String())
		}
	}
	s := report.Runs[1]
	if !s.Counted || s.Load.Kafka.Unique < s.Load.Fleet.AckedReadings || s.InfluxCount < s.Load.Fleet.AckedReadings {
		t.Errorf("sluice: %d readings acknowledged; Kafka has %d, InfluxDB %d\n%s",
			s.Load.Fleet.AckedReadings, s.Load.Kafka.Unique, s.InfluxCount, out.String())
	}
	for _, name := range []string{"report.md", "report.csv", "progress.csv", "sluice.yaml"} {
		if _, err := os.Stat(cfg.Out + "/" + name); err != nil {
			t.Errorf("report file: %v", err)
		}
	}
}

// TestBenchShortInfluxJob is the short form of `sluice bench -job influx`,
// the simplest job: no Kafka; every acknowledged reading is counted in
// InfluxDB.
func TestBenchShortInfluxJob(t *testing.T) {
	var out testsvc.LogBuffer
	cfg := Config{
		Job:     JobInflux,
		Load:    Load{Devices: 6, QoS: 1, Rate: 300, Duration: 2 * time.Second, Inflight: 8},
		Out:     t.TempDir(),
		DataDir: t.TempDir(),
		Drain:   3 * time.Minute,
		Spawn:   func() *exec.Cmd { return exec.Command(os.Args[0], "-test.run=^$") },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	report, err := Run(ctx, cfg, &out, &out)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	if len(report.Runs) != 1 {
		t.Fatalf("got %d runs, want sluice alone\n%s", len(report.Runs), out.String())
	}
	s := report.Runs[0]
	if s.Load.Fleet.Acked == 0 || !s.Counted || s.KafkaCounted {
		t.Fatalf("sluice: %d acknowledged, counted %v, in Kafka %v: want a load counted in InfluxDB alone\n%s",
			s.Load.Fleet.Acked, s.Counted, s.KafkaCounted, out.String())
	}
	if n := report.Lost(s); n != 0 || s.InfluxCount < s.Load.Fleet.AckedReadings {
		t.Errorf("sluice: %d readings acknowledged, InfluxDB has %d (lost %d)\n%s", s.Load.Fleet.AckedReadings, s.InfluxCount, n, out.String())
	}
	var md strings.Builder
	report.markdown(&md)
	if strings.Contains(md.String(), "Kafka (consumer)") {
		t.Errorf("the report has a Kafka latency without Kafka:\n%s", md.String())
	}
}

// TestSeriesShort is the short form of `sluice bench -scale -series`:
// series appear once each, sluice holds their state, then forgets it after
// the rules' ttl, and the report says what memory that took.
func TestSeriesShort(t *testing.T) {
	var out testsvc.LogBuffer
	cfg := Config{
		Baseline: true, Scale: true, Job: JobInflux, SeriesTTL: 2 * time.Second,
		Load:    Load{Devices: 4, QoS: 1, Series: 2000, Inflight: 8},
		Out:     t.TempDir(),
		DataDir: t.TempDir(),
		Drain:   3 * time.Minute,
		Spawn:   func() *exec.Cmd { return exec.Command(os.Args[0], "-test.run=^$") },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	report, err := Run(ctx, cfg, &out, &out)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	if len(report.Runs) != 0 || len(report.Series) != 1 {
		t.Fatalf("%d runs, %d series checks: want the series check alone (no baseline)\n%s", len(report.Runs), len(report.Series), out.String())
	}
	s := report.Series[0]
	// Both rules hold each series (the first may expire before the last
	// appear).
	if s.Series != 2000 || s.Held <= 2000 || s.Held > 2*2000 || len(s.Problems) > 0 {
		t.Errorf("%d series acknowledged, at most %d held by the two rules, problems %q: want 2000, up to 4000, none\n%s",
			s.Series, s.Held, s.Problems, out.String())
	}
	if s.IdleRSS == 0 || s.HeldRSS == 0 || s.AfterRSS == 0 || s.PeakRSS < s.HeldRSS {
		t.Errorf("RSS before %d, held %d, after %d, peak %d: not measured", s.IdleRSS, s.HeldRSS, s.AfterRSS, s.PeakRSS)
	}
	var md strings.Builder
	report.markdown(&md)
	if !strings.Contains(md.String(), "## Series") {
		t.Errorf("no series table:\n%s", md.String())
	}
}

// TestClients publishes a counted load with each client, QoS and protocol
// version to the bare broker and checks that every message is acknowledged
// once and counted by the broker's hook.
func TestClients(t *testing.T) {
	for _, tc := range []struct {
		name   string
		client string
		qos    byte
		mqtt   int
	}{
		{"lean qos0 mqtt3", "lean", 0, 3},
		{"lean qos1 mqtt3", "lean", 1, 3},
		{"lean qos1 mqtt5", "lean", 1, 5},
		{"lean qos2 mqtt3", "lean", 2, 3},
		{"lean qos2 mqtt5", "lean", 2, 5},
		{"paho qos1", "paho", 1, 5},
		{"paho qos2", "paho", 2, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bl, err := startBaseline(slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			defer bl.close()
			const messages = 3000
			load := Load{Devices: 6, QoS: tc.qos, MQTT: tc.mqtt, Shape: ShapeFlat, Size: 200, Messages: messages,
				Inflight: 16, Client: tc.client, ConnectConcurrency: 4, KeepAlive: time.Minute}
			f := newFleet(load, bl.addr)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res := f.run(ctx)
			if err := f.firstError(); err != nil {
				t.Fatal(err)
			}
			if res.Sent != messages {
				t.Errorf("sent %d, want %d", res.Sent, messages)
			}
			if tc.qos == 0 {
				// Nothing to wait for at QoS 0 but the broker's count.
				waitFor(t, func() bool { return bl.received() == messages }, "the broker to count every message")
				return
			}
			if res.Acked != messages || res.Errors != 0 || res.Refused != 0 {
				t.Errorf("acked %d, errors %d, refused %d; want %d acked", res.Acked, res.Errors, res.Refused, messages)
			}
			if got := bl.received(); got != res.Acked {
				t.Errorf("the broker counted %d messages, the devices had %d acknowledged", got, res.Acked)
			}
			var bitsSet int64
			for i := range load.Devices {
				for s := uint64(0); s < uint64(messages); s++ {
					if hasSeq(f.ackedSet(i), s) {
						bitsSet++
					}
				}
			}
			if bitsSet != res.AckedReadings {
				t.Errorf("%d readings marked acknowledged, %d counted", bitsSet, res.AckedReadings)
			}
			if res.AckLatency.N != uint64(res.Acked) {
				t.Errorf("%d latencies for %d acknowledgements", res.AckLatency.N, res.Acked)
			}
		})
	}
}

// TestScaleShort connects a small idle fleet to the bare broker, in
// process, and checks the connection report.
func TestScaleShort(t *testing.T) {
	var out testsvc.LogBuffer
	cfg := Config{
		Baseline: true, Scale: true, Settle: 500 * time.Millisecond,
		Load: Load{Devices: 150, Sources: LoopbackSources(2)},
		Out:  t.TempDir(), DataDir: t.TempDir(),
	}
	// Only the baseline's run (no sluice, no influxd).
	cfg.SetDefaults()
	b := &bench{cfg: cfg, out: &out, err: &out, report: newReport(&cfg, raiseNoFile())}
	b.log = slog.New(slog.NewTextHandler(&out, nil))
	side := NewLoadSide(context.Background(), b.log)
	defer side.close()
	b.side = side
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := b.runBaseline(ctx); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(b.report.Scale) != 1 {
		t.Fatalf("no scale result\n%s", out.String())
	}
	s := b.report.Scale[0]
	if s.Connected != 150 || s.Load.Fleet.ConnectErr != 0 {
		t.Errorf("connected %d, failed %d; want 150 and 0\n%s", s.Connected, s.Load.Fleet.ConnectErr, out.String())
	}
	if s.connectRate() <= 0 || s.RSS == 0 {
		t.Errorf("connect rate %v, RSS %d: not measured", s.connectRate(), s.RSS)
	}
	var md strings.Builder
	b.report.markdown(&md)
	if !strings.Contains(md.String(), "## Connections") {
		t.Errorf("no connections table:\n%s", md.String())
	}
}

// TestPayloads checks each shape decodes, with sluice's own decoder, into
// readings that carry the fields the rules and the counting need, at about
// the size asked for.
func TestPayloads(t *testing.T) {
	chain, err := decode.ParseChain([]string{"auto"})
	if err != nil {
		t.Fatal(err)
	}
	dec := decode.NewDecoder(decode.Limits{})
	spec := payloadSpec{size: 256, readings: 4}
	start := time.Now()
	for _, shape := range shapes {
		for i := range 8 {
			t.Run(shape+"/"+kinds[i%4], func(t *testing.T) {
				d := newDevice(i, shape)
				var last int64
				for m := range 3 {
					now := start.Add(time.Duration(m) * time.Millisecond)
					payload, first, n := d.message(nil, now, now.Sub(start), spec)
					if shape != ShapeGzip && (len(payload) < n*(spec.size-16) || len(payload) > n*(spec.size+16)) {
						t.Errorf("payload of %d readings is %d bytes, want about %d each: %s", n, len(payload), spec.size, payload)
					}
					readings, err := dec.Decode(chain, payload, decode.Options{})
					if err != nil {
						t.Fatalf("decode %s: %v", payload, err)
					}
					if len(readings) != n {
						t.Fatalf("%d readings, want %d", len(readings), n)
					}
					for k, r := range readings {
						got := map[string]any{}
						for _, f := range r {
							got[f.Name] = f.Value
						}
						if got["kind"] != d.kind || got["seq"] != float64(first)+float64(k) {
							t.Errorf("reading %d: kind %v seq %v, want %s %d", k, got["kind"], got["seq"], d.kind, first+uint64(k))
						}
						us, ok := got["sent_us"].(float64)
						if !ok || int64(us) <= last {
							t.Errorf("reading %d: sent_us %v does not rise past %d", k, got["sent_us"], last)
						}
						last = int64(us)
						need := map[string][]string{"boiler": {"temperature", "pressure"}, "pump": {"vibration", "rpm", "flow"},
							"coldchain": {"temperature", "door_open"}, "motor": {"vibration_rms", "winding_temp", "current"}}[d.kind]
						for _, name := range need {
							if _, ok := got[name]; !ok {
								t.Errorf("reading %d has no %s: %v", k, name, got)
							}
						}
					}
				}
			})
		}
	}
}

func TestHistQuantiles(t *testing.T) {
	var r recorder
	for i := 1; i <= 1000; i++ {
		r.record(time.Duration(i) * time.Millisecond)
	}
	h := r.snapshot()
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, 1000 * time.Millisecond}} {
		got := h.Quantile(tc.q)
		if d := got - tc.want; d < -tc.want/25 || d > tc.want/25 {
			t.Errorf("p%v = %v, want %v ± 4%%", tc.q*100, got, tc.want)
		}
	}
	var merged Hist
	merged.Merge(h)
	merged.Merge(h)
	if merged.N != 2000 || merged.Max != time.Second {
		t.Errorf("merged: %d samples, max %v", merged.N, merged.Max)
	}
	for _, v := range []int64{0, 1, 63, 64, 65, 1000, 1 << 20, 1<<40 + 12345} {
		if mid := bucketMid(bucketOf(v)); mid < v-v/30-1 || mid > v+v/30+1 {
			t.Errorf("value %d falls in a bucket around %d", v, mid)
		}
	}
}

// waitFor polls cond with a generous deadline (the machine may be busy).
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
