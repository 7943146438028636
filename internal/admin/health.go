package admin

import (
	"time"

	"github.com/sluicehq/sluice/internal/secret"
)

// Config configures the admin HTTP listener: /metrics (Prometheus),
// /healthz, /readyz, /api/v1/status (what `sluice status` reads) and,
// opt-in, /debug/pprof.
type Config struct {
	// Address is host:port; the listener is off without one. Keep it on
	// loopback or a management network, or set a token.
	Address string `yaml:"address"`
	// Token, when set, is required as "Authorization: Bearer <token>" on
	// every path but /healthz and /readyz (probes carry no credentials).
	Token secret.String `yaml:"token"`
	// Pprof serves Go's profiler at /debug/pprof/ (default false).
	Pprof bool `yaml:"pprof"`
	// SinkDownAfter is how long a sink may fail every write before
	// /readyz reports it (default 30s).
	SinkDownAfter time.Duration `yaml:"sink_down_after"`
	// JournalFullRatio is how full a pipeline's journal (of its max_bytes)
	// may get before /readyz reports it (default 0.9).
	JournalFullRatio float64 `yaml:"journal_full_ratio"`
	// WriteRules lets the console's playground save a rule file it edited
	// (one of the files the pipelines load; default false: the console
	// writes nothing).
	WriteRules bool `yaml:"write_rules"`
}

// Health is the state /readyz and `sluice status` report.
type Health struct {
	// Ready is true when the broker is listening and every sink is writing
	// or buffering within its bounds; Problems says what is not, when not.
	Ready    bool
	Problems []string
	// Notes are what an operator should know that does not stop sluice
	// from working: damage found in a journal (the records lost are
	// skipped), whether ready or not.
	Notes     []string
	Listeners []ListenerHealth
	Pipelines []PipelineHealth
}

// ListenerHealth is one broker listener.
type ListenerHealth struct {
	Name, Address string
}

// PipelineHealth is one pipeline: its journal and its sinks.
type PipelineHealth struct {
	Name         string
	JournalBytes int64
	MaxBytes     int64
	// Full is true when the journal is at its bound: publishers wait
	// (overflow block) or old records go (drop_oldest).
	Full bool
	// WriteError is why the journal cannot write, while it cannot (a full
	// disk): publishes are refused until a write succeeds again.
	WriteError string
	// Damaged is how many records the journal lost to damage on disk since
	// start (skipped; see Health.Notes).
	Damaged uint64
	Sinks   []SinkHealth
	// Cluster is this node's part of the pipeline, in a cluster.
	Cluster *ClusterHealth
}

// SinkHealth is one sink as one pipeline feeds it.
type SinkHealth struct {
	Name  string
	Ready bool
	// FailingFor is how long every write has failed (0 while they succeed);
	// LastError is the latest failure.
	FailingFor   time.Duration
	LastError    string
	Backlog      uint64 // journal records not yet written
	BacklogBytes int64
	BacklogAge   time.Duration // age of the oldest of them
}

// ClusterHealth is a node's part of a cluster pipeline, for status.
type ClusterHealth struct {
	Node  string   `json:"node"`
	Roles []string `json:"roles"`
	// Ready is false until the topics are checked and the clients started.
	Ready     bool   `json:"ready"`
	LastError string `json:"last_error,omitempty"`
	// Partitions this node evaluates (rules role).
	Partitions []int32 `json:"partitions"`
	// Forwarded is the journal seq up to which messages are in Kafka;
	// Journal the last seq in the journal (ingest role).
	Forwarded uint64 `json:"forwarded_seq"`
	Journal   uint64 `json:"journal_seq"`
	// Lag is the events waiting in Kafka for this node's sinks.
	Lag int64 `json:"sink_lag"`
}
