package bench

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/sluicehq/sluice/examples"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/pipelines"
)

// The built-in bench configurations, one per job (config/<job>.yaml.tmpl,
// with the rules of config/<job>/): the full job runs the example rules
// (examples/rules), as the demo does, and a tenth for the whole fleet;
// the influx job its one rule.
//
//go:embed config
var configFiles embed.FS

// Jobs of the built-in configuration (Config.Job).
const (
	JobFull   = "full"   // 10 rules; InfluxDB, Kafka, alerts to Kafka, InfluxDB and MQTT
	JobInflux = "influx" // 1 rule naming the topic levels; InfluxDB (3 fields, 3 tags)
)

// jobs describes each job: what the report calls it and which sinks it
// has, so the bench knows where to count the readings.
var jobs = map[string]struct {
	describe string
	kafka    bool // a Kafka sink of records (and alerts): counted by a consumer
	examples bool // the example rules run too
}{
	JobFull:   {"built-in config (10 rules; Kafka, InfluxDB, alerts", true, true},
	JobInflux: {"influx job (1 rule naming the topic levels; InfluxDB, 3 fields and 3 tags", false, false},
}

// Kafka topics and InfluxDB database of the built-in configuration.
const (
	recordsTopic = "sluice.records"
	alertsTopic  = "sluice.alerts"
	database     = "sluice"
)

// benchConfig is what the template is filled with.
type benchConfig struct {
	Job                           string
	LogLevel, DataDir, Durability string
	MaxConnections                int
	InfluxURL, Database           string
	KafkaBrokers                  string
	RecordsTopic, AlertsTopic     string
	// Batch and BatchInterval, when set, are the batch size and interval
	// of the record sinks (InfluxDB and Kafka); otherwise sluice's
	// defaults.
	Batch         int
	BatchInterval time.Duration
	// Series: the rules are the series check's (config/series), in place
	// of the job's (-scale -series), forgetting a series SeriesTTL after
	// its last reading.
	Series    bool
	SeriesTTL time.Duration
}

// writeBenchConfig writes the built-in configuration of c.Job and its rules
// to dir and returns the configuration file's path.
func writeBenchConfig(dir string, c benchConfig) (string, error) {
	rulesDir := filepath.Join(dir, "rules")
	if err := os.MkdirAll(rulesDir, 0o755); err != nil {
		return "", err
	}
	copyRules := func(fsys fs.FS, from string) error {
		names, err := fs.Glob(fsys, from+"/*.yaml*")
		if err != nil {
			return err
		}
		for _, n := range names {
			if strings.HasSuffix(n, "_test.yaml") {
				continue
			}
			b, err := fs.ReadFile(fsys, n)
			if err != nil {
				return err
			}
			name := filepath.Base(n)
			if base, ok := strings.CutSuffix(name, ".tmpl"); ok {
				// A rules template, with [[ ]] (rules use {{ }} themselves).
				t, err := template.New(name).Delims("[[", "]]").Parse(string(b))
				if err != nil {
					return err
				}
				var out bytes.Buffer
				err = t.Execute(&out, map[string]string{
					"TTL": c.SeriesTTL.String(), "Window": (c.SeriesTTL * 2 / 3).String(),
				})
				if err != nil {
					return err
				}
				name, b = base, out.Bytes()
			}
			if err := os.WriteFile(filepath.Join(rulesDir, name), b, 0o644); err != nil {
				return err
			}
		}
		return nil
	}
	rules := "config/" + c.Job
	if c.Series {
		rules = "config/series"
	} else if jobs[c.Job].examples {
		if err := copyRules(examples.Files, "rules"); err != nil {
			return "", fmt.Errorf("example rules: %w", err)
		}
	}
	if err := copyRules(configFiles, rules); err != nil {
		return "", fmt.Errorf("bench rules: %w", err)
	}
	tmpl, err := template.ParseFS(configFiles, "config/"+c.Job+".yaml.tmpl")
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, c); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "sluice.yaml")
	return path, os.WriteFile(path, b.Bytes(), 0o644)
}

// sluiceStack is sluice running in this process.
type sluiceStack struct {
	svc     *pipelines.Service
	metrics *metrics.Metrics
	cfg     *pipelines.Config
	addr    string
	kinds   map[string]string // sink name → kafka, influxdb, mqtt, file
}

// startSluice starts sluice from a configuration file, logging to logw.
// dataDir, when set, replaces the file's data_dir.
func startSluice(ctx context.Context, path, dataDir, logLevel string, logw io.Writer) (*sluiceStack, error) {
	cfg, err := pipelines.Load(path)
	if err != nil {
		return nil, err
	}
	if dataDir != "" {
		cfg.DataDir = dataDir
	}
	if logLevel != "" {
		cfg.Log.Level = logLevel
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	log := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: level}))
	m := metrics.New()
	svc, err := pipelines.New(cfg, pipelines.Options{Logger: log, Metrics: m})
	if err != nil {
		return nil, err
	}
	if err := svc.Start(ctx); err != nil {
		return nil, err
	}
	s := &sluiceStack{svc: svc, metrics: m, cfg: cfg, kinds: map[string]string{}}
	for i := range cfg.Sinks {
		s.kinds[cfg.Sinks[i].Name] = cfg.Sinks[i].Type()
	}
	for _, l := range cfg.Broker.Listeners {
		if l.Type == "tcp" {
			s.addr = svc.Broker().Addr(l.Name)
			break
		}
	}
	if s.addr == "" {
		svc.Close(ctx)
		return nil, fmt.Errorf("%s: the bench needs a plain TCP listener (type tcp)", path)
	}
	return s, nil
}

func (s *sluiceStack) close(ctx context.Context) error { return s.svc.Close(ctx) }

// sluiceNumbers are what sluice's own metrics say at one moment.
type sluiceNumbers struct {
	received    float64            // PUBLISH packets taken in
	written     map[string]float64 // events written, by sink kind
	alerts      float64            // alert transitions
	deadLetters float64
	backlog     float64     // the largest reader backlog (records)
	series      float64     // series the rules hold state for, all rules
	ack         [4]bucketed // p50, p95, p99, and the highest bucket used
	// writes is each sink's sluice_sink_write_seconds (one batch write,
	// request to acknowledgement), by sink name: p50, p95, p99, highest.
	writes map[string][4]bucketed
}

// bucketed is a quantile read from a Prometheus histogram: within a bucket,
// or past the last one (over: at least d).
type bucketed struct {
	D    time.Duration
	Over bool
}

func (b bucketed) String() string {
	if b.Over {
		return "> " + ms(b.D)
	}
	return ms(b.D)
}

func (s *sluiceStack) numbers() sluiceNumbers {
	n := sluiceNumbers{written: map[string]float64{}, writes: map[string][4]bucketed{}}
	families, err := s.metrics.Registry.Gather()
	if err != nil {
		return n
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetName() {
			case "sluice_messages_received_total":
				n.received += m.GetCounter().GetValue()
			case "sluice_sink_events_written_total":
				n.written[s.kinds[labelOf(m, "sink")]] += m.GetCounter().GetValue()
			case "sluice_alert_transitions_total":
				n.alerts += m.GetCounter().GetValue()
			case "sluice_dead_letters_total":
				n.deadLetters += m.GetCounter().GetValue()
			case "sluice_rule_active_series":
				n.series += m.GetGauge().GetValue()
			case "sluice_backlog_records":
				n.backlog = math.Max(n.backlog, m.GetGauge().GetValue())
			case "sluice_ack_latency_seconds":
				n.ack = quantiles(m.GetHistogram())
			case "sluice_sink_write_seconds":
				if m.GetHistogram().GetSampleCount() > 0 {
					n.writes[labelOf(m, "sink")] = quantiles(m.GetHistogram())
				}
			}
		}
	}
	return n
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// quantiles are a histogram's p50, p95, p99 and the top of its highest
// bucket used.
func quantiles(h *dto.Histogram) (q [4]bucketed) {
	for i, f := range []float64{0.5, 0.95, 0.99, 1} {
		q[i] = promQuantile(h, f)
	}
	return q
}

// promQuantile estimates a quantile from a Prometheus histogram as
// histogram_quantile does: linearly within the bucket it falls in.
func promQuantile(h *dto.Histogram, q float64) bucketed {
	total := float64(h.GetSampleCount())
	if total == 0 {
		return bucketed{}
	}
	rank := q * total
	lower, prev := 0.0, 0.0
	for _, b := range h.GetBucket() {
		upper, count := b.GetUpperBound(), float64(b.GetCumulativeCount())
		if count >= rank && count > prev {
			v := lower + (upper-lower)*(rank-prev)/(count-prev)
			return bucketed{D: time.Duration(v * float64(time.Second))}
		}
		lower, prev = upper, count
	}
	return bucketed{D: time.Duration(lower * float64(time.Second)), Over: true}
}
