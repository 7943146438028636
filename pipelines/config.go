package pipelines

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"reflect"
	"runtime"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/admin"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/keyfile"
	"github.com/sluicehq/sluice/rules"
	"github.com/sluicehq/sluice/sinks/alertmanager"
	"github.com/sluicehq/sluice/sinks/file"
	"github.com/sluicehq/sluice/sinks/influxdb"
	"github.com/sluicehq/sluice/sinks/kafka"
	"github.com/sluicehq/sluice/sinks/mqtt"
	"github.com/sluicehq/sluice/sinks/webhook"
)

// Config is sluice.yaml. docs/configuration.md describes every key.
type Config struct {
	Log    LogConfig     `yaml:"log"`
	Broker ingest.Config `yaml:"broker"`
	// Sources are ways in beside the broker: HTTP ingest, external MQTT
	// brokers, CoAP, OPC UA.
	Sources   []SourceConfig   `yaml:"sources"`
	Pipelines []PipelineConfig `yaml:"pipelines"`
	Sinks     []SinkConfig     `yaml:"sinks"`
	// WatchRules reloads rules when their files change (default true);
	// SIGHUP reloads them either way.
	WatchRules *bool `yaml:"watch_rules"`
	// Decode bounds payload decompression, against decompression bombs.
	Decode DecodeConfig `yaml:"decode"`
	// DataDir holds the journals and the broker's state (default "data",
	// next to the config file).
	DataDir string `yaml:"data_dir"`
	// ShutdownTimeout bounds how long a stop waits for the sinks to write
	// what the journals hold (default 30s); the rest stays in the journals
	// for the next start.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// Encryption encrypts what sluice keeps on disk: the journals and the
	// broker's state.
	Encryption EncryptionConfig `yaml:"encryption"`
	// Admin is the HTTP listener for metrics, health and status.
	Admin AdminConfig `yaml:"admin"`
	// Cluster, when set, makes this sluice one node of a cluster on Kafka
	// (docs/scaling.md).
	Cluster *ClusterConfig `yaml:"cluster"`

	// dir is the directory of the config file; relative rule paths are
	// resolved against it.
	dir string
	// doc locates keys in the config file, for problems found after
	// loading (a partition_by the rules do not allow).
	doc *conf.Doc
}

// EncryptionConfig turns on encryption at rest.
type EncryptionConfig struct {
	// KeyFile holds a 32-byte AES-256 key (hex, base64 or raw; mode 0600);
	// `sluice keygen FILE` makes one. Relative to the config file.
	KeyFile string `yaml:"key_file"`
}

// AdminConfig is the admin listener's configuration (internal/admin).
type AdminConfig = admin.Config

// LogConfig sets up logging.
type LogConfig struct {
	// Level is debug, info (default), warn or error.
	Level string `yaml:"level"`
	// Format is text (default) or json.
	Format string `yaml:"format"`
}

// DecodeConfig bounds what decoding a payload may produce.
type DecodeConfig struct {
	// MaxSize is the most bytes a decompression step may output (default
	// 1 MiB).
	MaxSize int `yaml:"max_size"`
	// MaxRatio is the most a payload may expand, once past 64 KiB (default 100).
	MaxRatio int `yaml:"max_ratio"`
}

// PipelineConfig routes messages from topics through rules to sinks.
type PipelineConfig struct {
	Name string `yaml:"name"`
	// Topics are MQTT topic filters; a message goes to every pipeline whose
	// filters match its topic.
	Topics []string `yaml:"topics"`
	// Rules are rule files, directories or globs, relative to the config file.
	Rules []string `yaml:"rules"`
	// Sinks are the names of the sinks this pipeline writes to. Each sink
	// receives the stream it is configured for.
	Sinks []string `yaml:"sinks"`
	// Workers evaluate rules in parallel. Messages are spread over them by
	// the partition key, so every reading of a series, for every rule, is
	// evaluated in order by one worker. Default: the number of CPUs.
	Workers int `yaml:"workers"`
	// PartitionBy states the partition key: the name of a topic level
	// (as the rules' matches name it), "topic", or "none" (one worker).
	// Default: derived from the rules' series keys (docs/configuration.md).
	PartitionBy string `yaml:"partition_by"`
	// Queue bounds the messages handed to the workers at a time (default
	// 1024); the rest waits in the journal.
	Queue int `yaml:"queue"`
	// Durability is when a QoS 1/2 message is acknowledged: process (the
	// default: written to the OS, survives a crash of sluice), fsync (on
	// disk, survives a power loss), none (in memory: a restart loses what
	// the sinks have not written).
	Durability string `yaml:"durability"`
	// Journal bounds the pipeline's journal and says what happens when it
	// is full.
	Journal JournalConfig `yaml:"journal"`
}

// JournalConfig bounds a pipeline's journal: what it holds for sinks that
// are behind.
type JournalConfig struct {
	// MaxBytes bounds the journal's size (default 1GiB; 64MiB for
	// durability none).
	MaxBytes conf.Bytes `yaml:"max_bytes"`
	// MaxAge bounds the age of the oldest record a sink still needs
	// (default none).
	MaxAge time.Duration `yaml:"max_age"`
	// Retention keeps the messages of the last while in the journal after
	// every reader is done with them, for sluice replay (default none),
	// within max_bytes: they give way first when the journal needs room.
	Retention time.Duration `yaml:"retention"`
	// Overflow is what happens at a bound: block (the default: publishers
	// wait; MQTT 5 publishers are told "quota exceeded") or drop_oldest
	// (the oldest records go, counted and logged).
	Overflow string `yaml:"overflow"`
	// SegmentBytes is the size of the journal's files (default 8MiB).
	SegmentBytes conf.Bytes `yaml:"segment_bytes"`
}

// SinkConfig is one sink: what it consumes, how it batches, and exactly one
// of the destination sections.
type SinkConfig struct {
	Name string `yaml:"name"`
	// Stream is what the sink consumes: records, alerts, raw or
	// dead_letters. Default: alerts for mqtt, webhook and alertmanager,
	// records otherwise.
	Stream   string           `yaml:"stream"`
	Batch    BatchConfig      `yaml:"batch"`
	Retry    RetryConfig      `yaml:"retry"`
	Kafka    *kafka.Config    `yaml:"kafka"`
	InfluxDB *influxdb.Config `yaml:"influxdb"`
	MQTT     *mqtt.Config     `yaml:"mqtt"`
	File     *file.Config     `yaml:"file"`
	Webhook  *webhook.Config  `yaml:"webhook"`
	// Alertmanager takes alerts only.
	Alertmanager *alertmanager.Config `yaml:"alertmanager"`
}

// BatchConfig is a sink's batching policy: a batch is written when it holds
// Size events, or Interval after its first event, whichever comes first.
type BatchConfig struct {
	Size     int           `yaml:"size"`
	Interval time.Duration `yaml:"interval"`
}

// RetryConfig is a sink's retry policy for retryable failures: exponential
// backoff with full jitter from Initial up to Max, for as long as it takes.
type RetryConfig struct {
	Initial time.Duration `yaml:"initial"`
	Max     time.Duration `yaml:"max"`
}

// Type names the sink's destination section.
func (s *SinkConfig) Type() string {
	switch {
	case s.Kafka != nil:
		return "kafka"
	case s.InfluxDB != nil:
		return "influxdb"
	case s.MQTT != nil:
		return "mqtt"
	case s.File != nil:
		return "file"
	case s.Webhook != nil:
		return "webhook"
	case s.Alertmanager != nil:
		return "alertmanager"
	}
	return ""
}

// sink returns the sink named name.
func (c *Config) sink(name string) *SinkConfig {
	for i := range c.Sinks {
		if c.Sinks[i].Name == name {
			return &c.Sinks[i]
		}
	}
	return nil
}

// Load reads and validates a config file. Errors name file, line and key.
// Rule files are not compiled here; see CompileRules.
func Load(path string) (*Config, error) {
	var c Config
	doc, err := conf.DecodeFile(path, &c)
	if err != nil {
		return nil, err
	}
	c.dir, c.doc = filepath.Dir(path), doc
	c.resolve()
	return &c, nil
}

// Parse decodes config text; name is used in errors and dir resolves rule
// paths.
func Parse(name string, data []byte, dir string) (*Config, error) {
	var c Config
	doc, err := conf.DecodeIn(dir, name, data, &c)
	if err != nil {
		return nil, err
	}
	c.dir, c.doc = dir, doc
	c.resolve()
	return &c, nil
}

// resolve makes the file paths of the config absolute against its folder.
func (c *Config) resolve() {
	c.Broker.Resolve(c.dir)
	for i := range c.Sources {
		c.Sources[i].resolve(c.dir)
	}
	// Every other file a config names has a key ending in _file:
	// passwords, ACLs, certificates and keys of listeners, sources, sinks
	// and the cluster, the encryption key.
	walkFileKeys(reflect.ValueOf(c).Elem(), "", func(_ string, file reflect.Value) {
		file.SetString(conf.Path(c.dir, file.String()))
	})
	c.DataDir = conf.Path(c.dir, c.DataDir)
	for i := range c.Sinks {
		if f := c.Sinks[i].File; f != nil {
			f.Path = conf.Path(c.dir, f.Path)
		}
	}
}

// Key loads the encryption key; nil without encryption.
func (c *Config) Key() ([]byte, error) {
	if c.Encryption.KeyFile == "" {
		return nil, nil
	}
	return keyfile.Load(c.Encryption.KeyFile)
}

// RulePaths returns a pipeline's rule paths resolved against the config
// file's directory.
func (c *Config) RulePaths(p *PipelineConfig) []string {
	paths := make([]string, len(p.Rules))
	for i, r := range p.Rules {
		if filepath.IsAbs(r) || c.dir == "" {
			paths[i] = r
		} else {
			paths[i] = filepath.Join(c.dir, r)
		}
	}
	return paths
}

// existingRulePaths returns the rule paths of pipeline i that name files
// or folders, and a problem at the config's line for each that does not.
func (c *Config) existingRulePaths(i int) ([]string, conf.ErrorList) {
	var paths []string
	var missing conf.ErrorList
	for j, path := range c.RulePaths(&c.Pipelines[i]) {
		if m, err := filepath.Glob(path); err == nil && len(m) == 0 && c.doc != nil {
			missing = append(missing, c.doc.ErrorAt(fmt.Sprintf("pipelines[%d].rules[%d]", i, j), 0, 0,
				"no such file or folder: "+path+" (rule paths are relative to the config file)"))
			continue
		}
		paths = append(paths, path)
	}
	return paths, missing
}

// Partition returns the partition key of a pipeline with the rule set set,
// and notes for people on what it costs. A partition_by that would split
// some rule's series is an error at its line.
func (c *Config) Partition(p *PipelineConfig, set *rules.Set) (rules.Partition, []string, error) {
	part, notes, err := set.Partition(p.PartitionBy)
	if err != nil {
		for i := range c.Pipelines {
			if &c.Pipelines[i] == p && c.doc != nil {
				return part, nil, c.doc.ErrorAt(fmt.Sprintf("pipelines[%d].partition_by", i), 0, 0, err.Error())
			}
		}
		return part, nil, fmt.Errorf("pipeline %q: partition_by: %w", p.Name, err)
	}
	for i, n := range notes {
		notes[i] = fmt.Sprintf("pipeline %q: %s", p.Name, n)
	}
	return part, notes, nil
}

// CompileRules compiles every pipeline's rules and returns them by pipeline
// name, or every error in every rule file (and a partition_by the rules do
// not allow).
func (c *Config) CompileRules() (map[string]*rules.Set, error) {
	sets := map[string]*rules.Set{}
	var all conf.ErrorList
	var other []error
	for i := range c.Pipelines {
		p := &c.Pipelines[i]
		if len(p.Rules) == 0 {
			sets[p.Name] = &rules.Set{}
			continue
		}
		paths, missing := c.existingRulePaths(i)
		all = append(all, missing...)
		set, err := rules.Load(paths...)
		if err == nil && len(missing) > 0 {
			continue
		}
		if err != nil {
			var list conf.ErrorList
			if errors.As(err, &list) {
				all = append(all, list...)
			} else {
				other = append(other, fmt.Errorf("pipeline %q: %w", p.Name, err))
			}
			continue
		}
		if _, _, err := c.Partition(p, set); err != nil {
			var e *conf.Error
			if errors.As(err, &e) {
				all = append(all, e)
			} else {
				other = append(other, err)
			}
			continue
		}
		sets[p.Name] = set
	}
	if len(all) > 0 || len(other) > 0 {
		if len(all) > 0 {
			other = append(other, all)
		}
		return nil, errors.Join(other...)
	}
	return sets, nil
}

// SetDefaults fills in what the operator left out.
func (c *Config) SetDefaults() {
	if c.Cluster != nil {
		c.Cluster.setDefaults()
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	c.Broker.SetDefaults()
	for i := range c.Sources {
		src := &c.Sources[i]
		if src.HTTP != nil && src.HTTP.MaxBodyBytes == 0 {
			src.HTTP.MaxBodyBytes = c.Broker.Limits.MaxPacketSize
		}
		src.setDefaults()
	}
	if c.Decode.MaxSize == 0 {
		c.Decode.MaxSize = 1 << 20
	}
	if c.Decode.MaxRatio == 0 {
		c.Decode.MaxRatio = 100
	}
	if c.DataDir == "" {
		c.DataDir = "data"
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.Admin.SinkDownAfter == 0 {
		c.Admin.SinkDownAfter = 30 * time.Second
	}
	if c.Admin.JournalFullRatio == 0 {
		c.Admin.JournalFullRatio = 0.9
	}
	for i := range c.Pipelines {
		p := &c.Pipelines[i]
		if p.Workers == 0 {
			p.Workers = runtime.GOMAXPROCS(0)
		}
		if p.Queue == 0 {
			p.Queue = 1024
		}
		if p.Durability == "" {
			p.Durability = "process"
		}
		if p.Journal.MaxBytes == 0 {
			p.Journal.MaxBytes = 1 << 30
			if p.Durability == "none" {
				p.Journal.MaxBytes = 64 << 20
			}
		}
		if p.Journal.Overflow == "" {
			p.Journal.Overflow = "block"
		}
		if p.Journal.SegmentBytes == 0 {
			p.Journal.SegmentBytes = 8 << 20
		}
	}
	for i := range c.Sinks {
		s := &c.Sinks[i]
		// Sinks that reach people get alerts unless told otherwise.
		alerting := s.MQTT != nil || s.Webhook != nil || s.Alertmanager != nil
		if s.Stream == "" {
			s.Stream = "records"
			if alerting {
				s.Stream = "alerts"
			}
		}
		stream, _ := sluice.ParseStream(s.Stream)
		if s.Batch.Size == 0 {
			// Writes are synchronous, one batch at a time: large batches
			// keep up with a fleet (5000 is what InfluxDB recommends per
			// write; sluice bench delivered 1.3x the readings per second
			// with 5000 as with 500). A batch that does not fill is
			// written after batch.interval all the same.
			s.Batch.Size = 5000
			if alerting {
				s.Batch.Size = 64
			}
		}
		if s.Batch.Interval == 0 {
			// The wait a batch that does not fill adds to latency: at
			// 20,000 msg/s, 100ms made the median publish-to-InfluxDB
			// 153 ms, 20ms 51 ms, for 4% more CPU (sluice bench).
			s.Batch.Interval = 20 * time.Millisecond
			if alerting {
				s.Batch.Interval = 10 * time.Millisecond
			}
		}
		if s.Retry.Initial == 0 {
			s.Retry.Initial = 100 * time.Millisecond
		}
		if s.Retry.Max == 0 {
			s.Retry.Max = 30 * time.Second
		}
		switch {
		case s.Kafka != nil:
			s.Kafka.SetDefaults()
		case s.InfluxDB != nil:
			s.InfluxDB.SetDefaults(stream)
		case s.MQTT != nil:
			s.MQTT.SetDefaults(stream)
		case s.File != nil:
			s.File.SetDefaults()
		case s.Webhook != nil:
			s.Webhook.SetDefaults()
		case s.Alertmanager != nil:
			s.Alertmanager.SetDefaults()
		}
	}
}

// Validate checks the whole configuration; every problem is reported.
func (c *Config) Validate() error {
	var p conf.Problems
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		p.Addf("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		p.Addf("log.format", "%q: want text or json", c.Log.Format)
	}
	p.Nest("broker", c.Broker.Validate())
	if !c.Broker.IsEnabled() {
		if len(c.Sources) == 0 {
			p.Addf("broker.enabled", "the embedded broker is disabled and there are no sources: nothing could reach the pipelines")
		}
		for i, src := range c.Sources {
			if src.MQTT != nil && src.MQTT.Inject {
				p.Addf(fmt.Sprintf("sources[%d].mqtt.inject", i), "needs the embedded broker, which is disabled (broker.enabled: false)")
			}
		}
		for i, sk := range c.Sinks {
			if sk.MQTT != nil && sk.MQTT.Remote == nil {
				p.Addf(fmt.Sprintf("sinks[%d].mqtt", i), "publishes through the embedded broker, which is disabled: give it a remote broker (remote: {url: ...})")
			}
		}
	}
	ways := map[string]bool{} // broker listeners and sources share the metrics' listener label
	for _, l := range c.Broker.Listeners {
		ways[l.Name] = true
	}
	for i := range c.Sources {
		src := &c.Sources[i]
		at := fmt.Sprintf("sources[%d]", i)
		p.Nest(at, src.validate())
		if src.Name != "" && ways[src.Name] {
			p.Addf(at+".name", "%q is already the name of a broker listener or another source", src.Name)
		}
		ways[src.Name] = true
	}
	if c.Decode.MaxSize < 0 {
		p.Addf("decode.max_size", "must be positive")
	}
	if c.Decode.MaxRatio < 0 {
		p.Addf("decode.max_ratio", "must be positive")
	}
	if c.ShutdownTimeout < 0 {
		p.Addf("shutdown_timeout", "must be positive")
	}
	if a := c.Admin.Address; a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			p.Addf("admin.address", "%q: want host:port", a)
		}
	}
	if c.Admin.SinkDownAfter < 0 {
		p.Addf("admin.sink_down_after", "must be positive")
	}
	if r := c.Admin.JournalFullRatio; r <= 0 || r > 1 {
		p.Addf("admin.journal_full_ratio", "%v: want a ratio above 0 and at most 1", r)
	}

	sinks := map[string]*SinkConfig{}
	for i := range c.Sinks {
		s := &c.Sinks[i]
		at := fmt.Sprintf("sinks[%d]", i)
		p.Nest(at, s.validate())
		if s.Name != "" {
			if _, dup := sinks[s.Name]; dup {
				p.Addf(at+".name", "sink name %q is used twice", s.Name)
			}
			sinks[s.Name] = s
		}
	}

	if len(c.Pipelines) == 0 {
		p.Missing("pipelines")
	}
	names := map[string]bool{}
	for i := range c.Pipelines {
		pc := &c.Pipelines[i]
		at := fmt.Sprintf("pipelines[%d]", i)
		if pc.Name == "" {
			p.Missing(at + ".name")
		} else if names[pc.Name] {
			p.Addf(at+".name", "pipeline name %q is used twice", pc.Name)
		}
		names[pc.Name] = true
		if len(pc.Topics) == 0 {
			p.Missing(at + ".topics")
		}
		for j, t := range pc.Topics {
			if _, err := rules.ParseFilter(t); err != nil {
				p.Addf(fmt.Sprintf("%s.topics[%d]", at, j), "%v", err)
			}
		}
		if len(pc.Sinks) == 0 {
			p.Missing(at + ".sinks")
		}
		for j, name := range pc.Sinks {
			if _, ok := sinks[name]; !ok {
				p.Addf(fmt.Sprintf("%s.sinks[%d]", at, j), "no sink is named %q", name)
			}
		}
		if pc.Workers < 1 {
			p.Addf(at+".workers", "must be at least 1")
		}
		if pc.Queue < 1 {
			p.Addf(at+".queue", "must be at least 1")
		}
		switch pc.Durability {
		case "process", "fsync", "none":
		default:
			p.Addf(at+".durability", "%q: want process, fsync or none", pc.Durability)
		}
		switch pc.Journal.Overflow {
		case "block", "drop_oldest":
		default:
			p.Addf(at+".journal.overflow", "%q: want block or drop_oldest", pc.Journal.Overflow)
		}
		if pc.Journal.MaxBytes < 0 || pc.Journal.MaxAge < 0 || pc.Journal.Retention < 0 {
			p.Addf(at+".journal", "bounds must not be negative")
		}
		if pc.Journal.SegmentBytes < 64<<10 {
			p.Addf(at+".journal.segment_bytes", "must be at least 64KiB")
		}
		if pc.Journal.MaxBytes > 0 && pc.Journal.MaxBytes/2 < pc.Journal.SegmentBytes { // 2*SegmentBytes may overflow
			p.Addf(at+".journal.max_bytes", "must be at least two segments of %v", pc.Journal.SegmentBytes)
		}
	}
	if c.Cluster != nil {
		p.Nest("cluster", c.Cluster.Validate())
	}
	return p.Err()
}

func (s *SinkConfig) validate() error {
	var p conf.Problems
	if s.Name == "" {
		p.Missing("name")
	}
	stream, err := sluice.ParseStream(s.Stream)
	if err != nil {
		p.Addf("stream", "%v", err)
	}
	n := 0
	for _, set := range []bool{s.Kafka != nil, s.InfluxDB != nil, s.MQTT != nil, s.File != nil, s.Webhook != nil, s.Alertmanager != nil} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		p.Addf("", "a sink needs one of kafka, influxdb, mqtt, file, webhook or alertmanager")
	case n > 1:
		p.Addf("", "a sink has exactly one of kafka, influxdb, mqtt, file, webhook or alertmanager; make one sink per destination")
	}
	if s.InfluxDB != nil && err == nil && stream != sluice.StreamRecords && stream != sluice.StreamAlerts {
		p.Addf("stream", "the influxdb sink writes records or alerts, not %s", s.Stream)
	}
	if s.Webhook != nil && err == nil && stream == sluice.StreamRaw {
		p.Addf("stream", "the webhook sink posts JSON: records, alerts or dead_letters, not raw")
	}
	if s.Alertmanager != nil && err == nil && stream != sluice.StreamAlerts {
		p.Addf("stream", "the alertmanager sink sends alerts, not %s", s.Stream)
	}
	if s.Batch.Size < 1 {
		p.Addf("batch.size", "must be at least 1")
	}
	if s.Batch.Interval < 0 {
		p.Addf("batch.interval", "must not be negative")
	}
	if s.Retry.Initial <= 0 || s.Retry.Max < s.Retry.Initial {
		p.Addf("retry", "want 0 < initial <= max")
	}
	switch {
	case s.Kafka != nil:
		p.Nest("kafka", s.Kafka.Validate())
	case s.InfluxDB != nil:
		p.Nest("influxdb", s.InfluxDB.Validate())
	case s.MQTT != nil:
		p.Nest("mqtt", s.MQTT.Validate())
	case s.File != nil:
		p.Nest("file", s.File.Validate())
	case s.Webhook != nil:
		p.Nest("webhook", s.Webhook.Validate())
	case s.Alertmanager != nil:
		p.Nest("alertmanager", s.Alertmanager.Validate())
	}
	return p.Err()
}
