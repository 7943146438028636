package pipelines

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/cluster"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/journal"
	"github.com/sluicehq/sluice/internal/secret"
	"github.com/sluicehq/sluice/rules"
	"github.com/sluicehq/sluice/sinks/kafka"
)

// ClusterConfig makes this sluice one node of a cluster on Kafka. Nodes with
// the same config (but their own node name and data_dir) share the work of
// the pipelines: docs/scaling.md.
type ClusterConfig struct {
	// Node names this node, unique in the cluster (default: the host name).
	Node string `yaml:"node"`
	// Roles are what this node does (default all three): ingest (the
	// broker and the journal; every message goes on to Kafka), rules
	// (evaluates the partitions the consumer group gives it) and sinks
	// (writes what the rules derived to the sinks). MQTT sinks that
	// publish on the embedded broker run on every ingest node.
	Roles []string `yaml:"roles"`
	// Brokers are the Kafka bootstrap brokers, host:port.
	Brokers []string `yaml:"brokers"`
	// TLS and SASL are as in the Kafka sink.
	TLS  *secret.TLS       `yaml:"tls"`
	SASL *kafka.SASLConfig `yaml:"sasl"`
	// TopicPrefix prefixes the topics the cluster uses:
	// <prefix>.<pipeline>.ingest, .events and .state (default "sluice").
	TopicPrefix string `yaml:"topic_prefix"`
	// Group prefixes the consumer groups (default: the topic prefix).
	Group string `yaml:"group"`
	// Partitions of each topic, the most nodes a pipeline's rules spread
	// over (default 12). Fixed once the topics exist.
	Partitions int `yaml:"partitions"`
	// ReplicationFactor of the topics sluice creates (default: the
	// brokers' default).
	ReplicationFactor int `yaml:"replication_factor"`
	// Retention of the ingest and events topics (default 7 days): how long
	// a node or sink may be down before what waits for it is lost.
	Retention time.Duration `yaml:"retention"`
	// Ack is when a device's QoS 1/2 message is acknowledged: journal
	// (default: in this node's journal; it goes on to Kafka right after)
	// or kafka (once Kafka has it: a node lost with its disk loses nothing
	// acknowledged, for a Kafka round trip per publish).
	Ack string `yaml:"ack"`
	// CommitInterval is how often a rules node commits its outputs, its
	// state and its input offsets, in one transaction (default 100ms).
	CommitInterval time.Duration `yaml:"commit_interval"`
	// SessionTimeout is how long the group waits for a node that stopped
	// answering before its partitions go to the others (default 10s).
	SessionTimeout time.Duration `yaml:"session_timeout"`
}

// The roles a node can take.
const (
	roleIngest = "ingest"
	roleRules  = "rules"
	roleSinks  = "sinks"
)

func (c *ClusterConfig) setDefaults() {
	if c.Node == "" {
		c.Node, _ = os.Hostname()
	}
	if len(c.Roles) == 0 {
		c.Roles = []string{roleIngest, roleRules, roleSinks}
	}
	if c.TopicPrefix == "" {
		c.TopicPrefix = "sluice"
	}
	if c.Group == "" {
		c.Group = c.TopicPrefix
	}
	if c.Partitions == 0 {
		c.Partitions = 12
	}
	if c.Retention == 0 {
		c.Retention = 7 * 24 * time.Hour
	}
	if c.Ack == "" {
		c.Ack = "journal"
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = 100 * time.Millisecond
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 10 * time.Second
	}
}

// Validate checks the settings.
func (c *ClusterConfig) Validate() error {
	var p conf.Problems
	if c.Node == "" {
		p.Addf("node", "cannot be empty (the host name could not be read): name this node")
	} else if strings.ContainsAny(c.Node, " /\\") {
		p.Addf("node", "%q: a node name may not hold spaces or slashes", c.Node)
	}
	for i, r := range c.Roles {
		if !slices.Contains([]string{roleIngest, roleRules, roleSinks}, r) {
			p.Addf(fmt.Sprintf("roles[%d]", i), "%q: want ingest, rules or sinks", r)
		}
	}
	if len(c.Brokers) == 0 {
		p.Missing("brokers")
	}
	for i, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			p.Addf(fmt.Sprintf("brokers[%d]", i), "%q is not host:port", b)
		}
	}
	if c.TLS != nil {
		p.Nest("tls", c.TLS.Validate())
	}
	if c.SASL != nil {
		p.Nest("sasl", c.SASL.Validate())
	}
	if c.Partitions < 1 || c.Partitions > 10000 {
		p.Addf("partitions", "%d: want 1 to 10000", c.Partitions)
	}
	if c.ReplicationFactor < 0 || c.ReplicationFactor > 32767 {
		p.Addf("replication_factor", "%d: want 1 or more (leave it out for the brokers' default)", c.ReplicationFactor)
	}
	switch c.Ack {
	case "journal", "kafka":
	default:
		p.Addf("ack", "%q: want journal or kafka", c.Ack)
	}
	if c.CommitInterval < time.Millisecond {
		p.Addf("commit_interval", "%v: want at least 1ms", c.CommitInterval)
	}
	if c.SessionTimeout < time.Second {
		p.Addf("session_timeout", "%v: want at least 1s", c.SessionTimeout)
	}
	if c.Retention < time.Minute {
		p.Addf("retention", "%v: want at least 1m", c.Retention)
	}
	return p.Err()
}

// has reports whether the node takes role.
func (c *ClusterConfig) has(role string) bool { return slices.Contains(c.Roles, role) }

// conn returns how to reach Kafka.
func (c *ClusterConfig) conn(log *slog.Logger) (cluster.Conn, error) {
	conn := cluster.Conn{Brokers: c.Brokers, ClientID: "sluice-" + c.Node, Log: log}
	if c.TLS != nil {
		tc, err := c.TLS.Load()
		if err != nil {
			return conn, fmt.Errorf("cluster: %w", err)
		}
		conn.TLS = tc
	}
	if c.SASL != nil {
		m, err := saslMechanism(c.SASL)
		if err != nil {
			return conn, fmt.Errorf("cluster: sasl: %w", err)
		}
		conn.SASL = m
	}
	return conn, nil
}

func saslMechanism(c *kafka.SASLConfig) (sasl.Mechanism, error) {
	user, pass := c.Username, c.Password.Reveal()
	switch c.Mechanism {
	case "PLAIN":
		return plain.Auth{User: user, Pass: pass}.AsMechanism(), nil
	case "SCRAM-SHA-256":
		return scram.Auth{User: user, Pass: pass}.AsSha256Mechanism(), nil
	case "SCRAM-SHA-512":
		return scram.Auth{User: user, Pass: pass}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("unknown mechanism %q", c.Mechanism)
}

// clusterPipeline is one node's part of a pipeline in a cluster: by role,
// the forwarder of its journal to the ingest topic, the rule workers of the
// partitions it owns, and the consumers of the events topic for its sinks.
type clusterPipeline struct {
	p      *pipeline
	cfg    *ClusterConfig
	conn   cluster.Conn
	topics cluster.Topics
	spec   cluster.TopicSpec
	log    *slog.Logger

	// sinks are the sinks this node writes for the pipeline: shared ones
	// (a consumer group per sink) with the sinks role, and the embedded
	// broker's MQTT sinks (a group per node) with the ingest role.
	sinks []clusterSink
	// forward reads the journal for the forwarder (ingest role).
	forward *journal.Reader

	mu        sync.Mutex
	ready     bool // topics ensured, everything started
	lastErr   string
	forwarder *cluster.Forwarder
	stream    *cluster.Stream
	consumers []*cluster.Consumer
	producer  *cluster.Producer
}

type clusterSink struct {
	cfg     *SinkConfig
	perNode bool
	cursor  *lazyCursor
}

// newCluster sets up p's part of a cluster pipeline; New does no I/O, so
// the topics are checked and the clients started by run.
func (s *Service) newCluster(p *pipeline, pc *PipelineConfig) (*clusterPipeline, error) {
	c := s.cfg.Cluster
	conn, err := c.conn(p.log)
	if err != nil {
		return nil, err
	}
	cp := &clusterPipeline{
		p: p, cfg: c, conn: conn, log: p.log.With("node", c.Node),
		topics: cluster.TopicsFor(c.TopicPrefix, pc.Name),
		spec: cluster.TopicSpec{Partitions: int32(c.Partitions), ReplicationFactor: int16(c.ReplicationFactor),
			MaxMessageBytes: max(8<<20, 4*int(s.cfg.Broker.Limits.MaxPacketSize)), Retention: c.Retention},
	}
	if cp.spec.ReplicationFactor == 0 {
		cp.spec.ReplicationFactor = -1
	}
	if c.has(roleIngest) {
		cp.forward = p.journal.Reader("cluster")
	}
	for _, name := range pc.Sinks {
		sc := s.cfg.sink(name)
		perNode := sc.MQTT != nil && sc.MQTT.Remote == nil
		if (perNode && c.has(roleIngest)) || (!perNode && c.has(roleSinks)) {
			lc := &lazyCursor{ready: make(chan struct{})}
			cp.sinks = append(cp.sinks, clusterSink{cfg: sc, perNode: perNode, cursor: lc})
			p.sinks = append(p.sinks, newSinkReader(*sc, s.sinks[name], s.connected[name], p, lc, p.log, s.metrics))
		}
	}
	return cp, nil
}

// lazyCursor is a sink's cursor until its consumer exists (Kafka may not be
// reachable at start): Next waits for it.
type lazyCursor struct {
	ready chan struct{}
	c     *cluster.Consumer
}

func (l *lazyCursor) set(c *cluster.Consumer) {
	l.c = c
	close(l.ready)
}

func (l *lazyCursor) consumer() *cluster.Consumer {
	select {
	case <-l.ready:
		return l.c
	default:
		return nil
	}
}

func (l *lazyCursor) Next(ctx context.Context) (journal.Entry, error) {
	select {
	case <-l.ready:
		return l.c.Next(ctx)
	case <-ctx.Done():
		return journal.Entry{}, ctx.Err()
	}
}

func (l *lazyCursor) Ack(seq uint64) {
	if c := l.consumer(); c != nil {
		c.Ack(seq)
	}
}

func (l *lazyCursor) Acked() uint64 {
	if c := l.consumer(); c != nil {
		return c.Acked()
	}
	return 0
}

// journalOrigin names the journal in the ingest records it forwards, so
// the rules side can tell a message sent again from a new one: the node's
// name and an id kept in the journal's folder (a new folder, or a journal
// in memory, is a new origin: its seqs start again).
func journalOrigin(node, dir string) (string, error) {
	var id [6]byte
	rand.Read(id[:])
	fresh := node + "/" + hex.EncodeToString(id[:])
	if dir == "" {
		return fresh, nil
	}
	path := filepath.Join(dir, "origin")
	if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err := os.WriteFile(path, []byte(fresh+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("cluster: %w", err)
	}
	return fresh, nil
}

// run ensures the topics exist (retrying while Kafka cannot be reached:
// the journal holds what comes in meanwhile), then runs this node's part
// until ctx ends.
func (cp *clusterPipeline) run(ctx context.Context) {
	pause := time.Second
	for {
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := cluster.EnsureTopics(actx, cp.conn, cp.topics, cp.spec)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		cp.setErr(err)
		cp.log.Warn("cluster: Kafka not ready; messages wait in the journal", "error", err, "retry_in", pause)
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return
		}
		pause = min(2*pause, 30*time.Second)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	if cp.forward != nil {
		f, err := cluster.NewForwarder(cp.conn, cp.topics.Ingest, cp.forward, kindMessage, cp.p.part.Key, cp.p.origin, cp.spec.MaxMessageBytes)
		if err != nil {
			cp.setErr(err)
			return
		}
		cp.mu.Lock()
		cp.forwarder = f
		cp.mu.Unlock()
		wg.Go(func() { f.Run(ctx) })
	}
	if cp.cfg.has(roleRules) {
		st := cluster.NewStream(cluster.StreamConfig{
			Conn: cp.conn, Topics: cp.topics,
			Group:           cp.cfg.Group + "." + cp.p.name + ".rules",
			TransactionalID: cp.cfg.Group + "." + cp.p.name + "." + cp.cfg.Node,
			CommitInterval:  cp.cfg.CommitInterval, TickEvery: tickEvery,
			Workers: len(cp.p.shards), SessionTimeout: cp.cfg.SessionTimeout, MaxRecordBytes: cp.spec.MaxMessageBytes,
			Transaction: func(committed bool) {
				result := "committed"
				if !committed {
					result = "aborted"
				}
				cp.p.metrics.ClusterTransactions.WithLabelValues(cp.p.name, result).Inc()
			},
			Restored: func(_ int, took time.Duration) {
				cp.p.metrics.ClusterRestore.WithLabelValues(cp.p.name).Observe(took.Seconds())
			},
			Events: func(assigned, revoked []int32) {
				if len(assigned) > 0 {
					cp.log.Info("cluster: partitions taken over", "partitions", assigned)
				}
				if len(revoked) > 0 {
					cp.log.Info("cluster: partitions handed over", "partitions", revoked)
				}
			},
		}, &clusterTask{p: cp.p, maxBytes: cp.spec.MaxMessageBytes - 1024})
		cp.mu.Lock()
		cp.stream = st
		cp.mu.Unlock()
		wg.Go(func() {
			if err := st.Run(ctx); err != nil {
				cp.setErr(err)
				cp.log.Error("cluster: rule workers stopped", "error", err)
			}
		})
	}
	if len(cp.sinks) > 0 && cp.p.streams[sluice.StreamDeadLetters] {
		pr, err := cluster.NewProducer(cp.conn, cp.topics.Events)
		if err != nil {
			cp.setErr(err)
			return
		}
		cp.mu.Lock()
		cp.producer = pr
		cp.mu.Unlock()
		defer pr.Close()
	}
	for i, sk := range cp.sinks {
		group := cp.cfg.Group + "." + cp.p.name + ".sink." + sk.cfg.Name
		if sk.perNode {
			group += "." + cp.cfg.Node
		}
		c, err := cluster.NewConsumer(cp.conn, cp.topics.Events, group, kindEvents)
		if err != nil {
			cp.setErr(err)
			return
		}
		cp.mu.Lock()
		cp.consumers = append(cp.consumers, c)
		cp.mu.Unlock()
		sk.cursor.set(c)
		r := cp.p.sinks[i]
		wg.Go(func() {
			r.run(ctx)
			// What the sink wrote is committed; the rest goes to the
			// sink's next owner.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			c.Close(cctx)
		})
	}
	cp.mu.Lock()
	cp.ready, cp.lastErr = true, ""
	cp.mu.Unlock()
	cp.log.Info("cluster: pipeline running", "roles", cp.cfg.Roles, "topics", cp.topics.Ingest)
	<-ctx.Done()
}

func (cp *clusterPipeline) setErr(err error) {
	cp.mu.Lock()
	cp.lastErr = err.Error()
	cp.mu.Unlock()
}

// waitForwarded returns once the message at seq is in Kafka (ack: kafka).
func (cp *clusterPipeline) waitForwarded(ctx context.Context, seq uint64) error {
	for {
		cp.mu.Lock()
		f := cp.forwarder
		cp.mu.Unlock()
		if f != nil {
			return f.Wait(ctx, seq)
		}
		// Kafka not reached yet: the forwarder starts once it is.
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// deadLetter sends a dead letter of a sink to the events topic, where the
// pipeline's dead-letter sinks read it.
func (cp *clusterPipeline) deadLetter(ctx context.Context, msg *sluice.Message, d []sluice.Event) {
	cp.mu.Lock()
	pr := cp.producer
	cp.mu.Unlock()
	err := errors.New("no connection to Kafka")
	if pr != nil {
		err = pr.Produce(ctx, []byte(cp.p.part.Key(msg.Topic)), sluice.AppendEvents(nil, msg, d))
	}
	if err != nil {
		cp.p.rlog.Error("cluster", "cannot record a dead letter", "sink", d[0].DeadLetter.Sink, "error", err)
	}
}

// drained reports whether what this node holds is done: the journal
// forwarded to Kafka, and every event its sinks read written.
func (cp *clusterPipeline) drained() bool {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.forward != nil && cp.forwarder != nil && cp.forwarder.Forwarded() < cp.p.journal.Stats().Last {
		return false
	}
	if cp.forward != nil && cp.forwarder == nil && cp.p.journal.Stats().Last > cp.forward.Acked() {
		return false
	}
	for _, c := range cp.consumers {
		if c.Pending() > 0 {
			return false
		}
	}
	return true
}

func (cp *clusterPipeline) health() *ClusterHealth {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	h := &ClusterHealth{Node: cp.cfg.Node, Roles: cp.cfg.Roles, Ready: cp.ready, LastError: cp.lastErr}
	if cp.stream != nil {
		h.Partitions = cp.stream.Owned()
	}
	if cp.forward != nil {
		h.Journal = cp.p.journal.Stats().Last
		h.Forwarded = cp.forward.Acked()
	}
	for _, c := range cp.consumers {
		h.Lag += c.Lag()
	}
	return h
}

// clusterTask evaluates the partitions the group gives this node: an
// evaluator per partition, holding the state of the partition's series.
type clusterTask struct {
	p        *pipeline
	maxBytes int // the largest events record
}

func (t *clusterTask) Open(part int32, state []cluster.KV) (cluster.Partition, error) {
	set := t.p.set.Load()
	w := &partitionWorker{p: t.p, part: part, set: set, maxBytes: t.maxBytes, ev: t.p.evaluator(set, nil), rep: stateReporter{metrics: t.p.metrics},
		firing: firingReporter{slot: t.p.alerts.Slot(t.p.name)}}
	w.ev.TrackChanges()
	dropped := 0
	for _, kv := range state {
		ok, err := w.ev.Restore(kv.Key, kv.Value)
		if err != nil {
			t.p.rlog.Error("cluster", "unreadable series state; the series starts afresh", "partition", part, "error", err)
		}
		if !ok {
			dropped++
		}
	}
	if dropped > 0 {
		t.p.log.Info("cluster: state of rules that changed or went was not restored", "partition", part, "series", dropped)
	}
	return w, nil
}

// partitionWorker evaluates one partition.
type partitionWorker struct {
	p    *pipeline
	part int32
	set  *rules.Set
	ev   *rules.Evaluator
	out  []sluice.Event
	rep  stateReporter
	// firing keeps the partition's firing series on the console's board.
	firing firingReporter
	// maxBytes bounds an events record: the outputs of a message that
	// would not fit are a dead letter instead.
	maxBytes int
}

func (w *partitionWorker) current() {
	if s := w.p.set.Load(); s != w.set {
		w.set, w.ev = s, w.p.evaluator(s, w.ev)
		w.ev.TrackChanges()
	}
}

func (w *partitionWorker) Process(rec *kgo.Record, emit cluster.Emit) {
	w.current()
	msg, err := sluice.DecodeMessage(rec.Value)
	if err != nil {
		w.p.rlog.Error("cluster", "unreadable message in the ingest topic; skipped", "partition", w.part, "offset", rec.Offset, "error", err)
		return
	}
	if !msg.Expires.IsZero() && msg.Expired(time.Now()) {
		w.p.metrics.Expired.WithLabelValues(w.p.name, "rules").Inc()
		return
	}
	var o rules.Outcome
	w.out, o = w.ev.Eval(msg, w.out[:0])
	w.p.count(o)
	n := len(w.out)
	if w.p.streams[sluice.StreamRaw] {
		w.out = append(w.out, sluice.Event{Stream: sluice.StreamRaw, Message: msg})
	}
	origin, seq := cluster.Origin(rec)
	identify(origin, seq, w.out)
	w.emit(msg, w.out, rec.Key, emit)
	if w.p.tap.Watched() { // after emit: it redacts the dead letters' reasons
		w.p.tap.Publish(w.p.name, msg, w.out[:n], o, w.set)
	}
	w.firing.report(w.ev)
}

func (w *partitionWorker) Tick(now time.Time, emit cluster.Emit) {
	w.current()
	w.out = w.ev.Tick(now, w.out[:0])
	identify("", 0, w.out)
	for i := range w.out {
		e := w.out[i : i+1]
		w.emit(e[0].Message, e, []byte(w.p.part.Key(e[0].Message.Topic)), emit)
		if w.p.tap.Watched() {
			w.p.tap.Publish(w.p.name, e[0].Message, e, rules.Outcome{}, nil)
		}
	}
	w.rep.report(w.ev.Stats())
	w.firing.report(w.ev)
}

func (w *partitionWorker) emit(msg *sluice.Message, events []sluice.Event, key []byte, emit cluster.Emit) {
	keep := w.p.keep(msg, events)
	if len(keep) == 0 {
		return
	}
	b := sluice.AppendEvents(nil, msg, keep)
	if len(b) > w.maxBytes {
		d := []sluice.Event{{Stream: sluice.StreamDeadLetters, Message: msg, DeadLetter: &sluice.DeadLetter{Stage: "rule",
			Reason: fmt.Sprintf("what the rules derived from this message takes %d bytes, more than a record of the events topic may (%d)", len(b), w.maxBytes)}}}
		if keep = w.p.keep(msg, d); len(keep) == 0 {
			return
		}
		b = sluice.AppendEvents(nil, &sluice.Message{Topic: msg.Topic, ClientID: msg.ClientID, Received: msg.Received}, keep)
	}
	emit(key, b, nil)
}

func (w *partitionWorker) Checkpoint(put func(key, value []byte)) { w.ev.Changes(put) }

func (w *partitionWorker) Close() {
	w.rep.report(nil)
	w.firing.slot.Close()
}
