// Package pipelines wires sluice together: it loads the configuration,
// builds the broker, the journals, the rule sets and the sinks, routes each
// message from ingest to the pipelines whose topics match, and owns the order
// in which everything starts and stops. It is composition only: decoding and
// rules live in rules, destinations in sinks, the broker in ingest, the
// journal in internal/journal.
package pipelines

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/console"
	"github.com/sluicehq/sluice/internal/journal"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/secret"
	"github.com/sluicehq/sluice/rules"
	"github.com/sluicehq/sluice/sinks/alertmanager"
	"github.com/sluicehq/sluice/sinks/file"
	"github.com/sluicehq/sluice/sinks/influxdb"
	"github.com/sluicehq/sluice/sinks/kafka"
	"github.com/sluicehq/sluice/sinks/mqtt"
	"github.com/sluicehq/sluice/sinks/webhook"
)

// Options are what a Service is given rather than configured with.
type Options struct {
	Logger  *slog.Logger
	Metrics *metrics.Metrics
	// Console is what the pipelines feed for the operator's console (live
	// tail, dead letters, alerts firing); New makes one if nil.
	Console *console.Hub
	// DrainTimeout bounds how long Close waits for the sinks to catch up
	// with the journals (default 30s). What is left stays in the journal
	// for the next start (except in durability none).
	DrainTimeout time.Duration
}

// Service is a running sluice: broker, pipelines and sinks.
type Service struct {
	cfg       *Config
	log       *slog.Logger
	metrics   *metrics.Metrics
	console   *console.Hub
	broker    *ingest.Broker
	sources   []source
	pipelines []*pipeline
	sinks     map[string]Sink
	// connected[name] is closed once the sink's first connection attempt
	// has ended, however it ended: its writes wait for it.
	connected map[string]chan struct{}
	// runners are the sinks with work of their own, run while the
	// pipelines run.
	runners []runner
	drain   time.Duration
	lock    *dirLock
	// redact takes the configured secrets out of text sluice sends out
	// (dead letters; the admin listener's answers).
	redact *secret.Redactor
	// serving is true from when the broker listens until shutdown begins.
	serving atomic.Bool

	// runCtx ends when the pipelines must stop (after draining); watchCtx
	// when shutdown begins.
	runCtx    context.Context
	stopRun   context.CancelFunc
	watchCtx  context.Context
	stopWatch context.CancelFunc
	wg        sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// New builds a Service from a validated config: it compiles the rules, opens
// (and recovers) the journals, and creates the sinks and the broker. It does
// no network I/O.
func New(cfg *Config, opts Options) (*Service, error) {
	sets, err := cfg.CompileRules()
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.Console == nil {
		opts.Console = console.NewHub(opts.Metrics.TailDropped)
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = cfg.ShutdownTimeout
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 30 * time.Second
	}
	key, err := cfg.Key()
	if err != nil {
		return nil, err
	}
	lock, err := lockDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: opts.Logger, metrics: opts.Metrics, console: opts.Console, drain: opts.DrainTimeout, sinks: map[string]Sink{},
		connected: map[string]chan struct{}{}, lock: lock, redact: secret.NewRedactor(cfg)}
	s.runCtx, s.stopRun = context.WithCancel(context.Background())
	s.watchCtx, s.stopWatch = context.WithCancel(context.Background())
	brokerCfg := cfg.Broker
	brokerCfg.StatePath = filepath.Join(cfg.DataDir, "broker.db")
	brokerCfg.StateKey = key
	for _, pc := range cfg.Pipelines {
		// A pipeline that must survive a power loss wants the sessions
		// and queued messages to as well.
		brokerCfg.StateSync = brokerCfg.StateSync || pc.Durability == "fsync"
	}
	if c := cfg.Cluster; c != nil && !c.has(roleIngest) {
		// A node without the ingest role takes no messages.
		off := false
		brokerCfg.Enabled, brokerCfg.Persistence, brokerCfg.Listeners = &off, &off, nil
	}
	s.broker = ingest.New(brokerCfg, s, opts.Logger, opts.Metrics)

	users := map[string]int{}
	for _, pc := range cfg.Pipelines {
		for _, name := range pc.Sinks {
			users[name]++
		}
	}
	for _, sc := range cfg.Sinks {
		stream, _ := sluice.ParseStream(sc.Stream)
		var sink Sink
		switch {
		case sc.Kafka != nil:
			sink = kafka.New(*sc.Kafka, sc.Batch.Size)
		case sc.InfluxDB != nil:
			sink = influxdb.New(*sc.InfluxDB, stream)
		case sc.MQTT != nil:
			sink = mqtt.New(*sc.MQTT, stream, s.broker, mqtt.WithName(sc.Name), mqtt.WithLogger(opts.Logger.With("sink", sc.Name)))
		case sc.File != nil:
			sink = file.New(*sc.File)
		case sc.Webhook != nil:
			sink = webhook.New(*sc.Webhook)
		case sc.Alertmanager != nil:
			sink = alertmanager.New(*sc.Alertmanager, alertmanager.Options{Name: sc.Name, Logger: opts.Logger.With("sink", sc.Name), Metrics: opts.Metrics})
		}
		if r, ok := sink.(runner); ok {
			s.runners = append(s.runners, r)
		}
		if users[sc.Name] > 1 {
			sink = &lockedSink{Sink: sink}
		}
		s.sinks[sc.Name] = sink
		s.connected[sc.Name] = make(chan struct{})
		opts.Metrics.InitSink(sc.Name)
	}

	for _, sc := range cfg.Sources {
		if c := cfg.Cluster; c != nil && !c.has(roleIngest) {
			break
		}
		src, err := s.newSource(sc)
		if err != nil {
			lock.unlock()
			return nil, err
		}
		s.sources = append(s.sources, src)
	}

	limits := rules.Limits{MaxSize: cfg.Decode.MaxSize, MaxRatio: cfg.Decode.MaxRatio}
	for i := range cfg.Pipelines {
		pc := &cfg.Pipelines[i]
		p, err := s.newPipeline(pc, sets[pc.Name], limits, key)
		if err != nil {
			s.closeJournals()
			s.lock.unlock()
			return nil, err
		}
		s.pipelines = append(s.pipelines, p)
	}
	return s, nil
}

func (s *Service) newPipeline(pc *PipelineConfig, set *rules.Set, limits rules.Limits, key []byte) (*pipeline, error) {
	log := s.log.With("pipeline", pc.Name)
	part, notes, err := s.cfg.Partition(pc, set)
	if err != nil {
		return nil, err
	}
	workers := pc.Workers
	if part.Single() {
		workers = 1
	}
	log.Info("rules partitioned", "by", part.String(), "workers", workers)
	for _, n := range notes {
		log.Info(n)
	}
	jopts := journal.Options{
		Dir:          filepath.Join(s.cfg.DataDir, "journal", pc.Name),
		SegmentBytes: int64(pc.Journal.SegmentBytes),
		MaxBytes:     int64(pc.Journal.MaxBytes),
		MaxAge:       pc.Journal.MaxAge,
		Retain:       pc.Journal.Retention,
		Key:          key,
		MessageKind:  kindMessage,
		ValueSize:    journalValueSize,
		Logger:       log.With("component", "journal"),
		// Every reader uses a record's value when it has one, but a
		// cluster's forwarder, which sends the bytes on.
		ValueOnly: s.cfg.Cluster == nil,
	}
	switch c := s.cfg.Cluster; {
	case c != nil && !c.has(roleIngest):
		// Nothing is journaled on a node that takes no messages.
		jopts.Mode, jopts.Dir = journal.Memory, ""
	case pc.Durability == "none":
		jopts.Mode, jopts.Dir = journal.Memory, ""
	case pc.Durability == "fsync":
		jopts.Mode = journal.Fsync
	default:
		jopts.Mode = journal.Process
	}
	if pc.Journal.Overflow == "drop_oldest" {
		jopts.Overflow = journal.DropOldest
	}
	if jopts.Dir != "" {
		if err := os.MkdirAll(jopts.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("pipeline %q: journal: %w", pc.Name, err)
		}
	}
	j, err := journal.Open(jopts)
	if err != nil {
		return nil, fmt.Errorf("pipeline %q: open journal %s: %w", pc.Name, jopts.Dir, err)
	}
	if r := j.Stats().Recovered; r.CutBytes > 0 || r.CorruptSegments > 0 {
		log.Warn("journal recovered from an unclean stop", "records", r.Records, "cut_bytes", r.CutBytes,
			"corrupt_segments", r.CorruptSegments, "corrupt_records", r.CorruptRecords)
	}
	p := &pipeline{
		name: pc.Name, part: part, limits: limits, journal: j, waitDurable: jopts.Mode != journal.Memory, maxBytes: jopts.MaxBytes,
		streams: map[sluice.Stream]bool{}, log: log, metrics: s.metrics, redact: s.redact,
		rlog: newRateLog(log), tap: s.console.Tap, deadLetters: s.console.DeadLetters, alerts: s.console.Alerts,
	}
	p.set.Store(set)
	s.metrics.InitPipeline(pc.Name)
	for _, t := range pc.Topics {
		p.filters = append(p.filters, rules.MustFilter(t))
	}
	per := max(1, pc.Queue/workers)
	for range workers {
		p.shards = append(p.shards, make(chan work, per))
	}
	for _, name := range pc.Sinks {
		stream, _ := sluice.ParseStream(s.cfg.sink(name).Stream)
		p.streams[stream] = true
	}
	if s.cfg.Cluster == nil {
		p.recordFields = recordFields(s.cfg, pc)
	}
	node := "sluice"
	if s.cfg.Cluster != nil {
		node = s.cfg.Cluster.Node
	}
	if p.origin, err = journalOrigin(node, jopts.Dir); err != nil {
		j.Close()
		return nil, err
	}
	// Readers are made before anything is appended, so no record is
	// reclaimed before every one of them has seen it.
	before := readerPositions(j)
	if s.cfg.Cluster != nil {
		if p.cluster, err = s.newCluster(p, pc); err != nil {
			j.Close()
			return nil, err
		}
		keep := map[string]bool{}
		if p.cluster.forward != nil {
			carryCursor(p.cluster.forward, before, "rules")
			keep[p.cluster.forward.Name()] = true
		}
		retireReaders(j, log, keep)
		return p, nil
	}
	p.processor = j.Reader("rules")
	carryCursor(p.processor, before, "cluster")
	keep := map[string]bool{p.processor.Name(): true}
	for _, name := range pc.Sinks {
		r := j.Reader("sink:" + name)
		keep[r.Name()] = true
		p.sinks = append(p.sinks, newSinkReader(*s.cfg.sink(name), s.sinks[name], s.connected[name], p, r, log, s.metrics))
	}
	retireReaders(j, log, keep)
	return p, nil
}

// readerPositions returns where the journal's saved readers are.
func readerPositions(j *journal.Journal) map[string]uint64 {
	at := map[string]uint64{}
	for _, r := range j.Stats().Readers {
		at[r.Name] = r.Acked
	}
	return at
}

// carryCursor starts a processor cursor new to the journal where the other
// mode's processor stopped (a node moved into a cluster, or out of one):
// the messages before it were processed already.
func carryCursor(r *journal.Reader, before map[string]uint64, other string) {
	if _, had := before[r.Name()]; had {
		return
	}
	if at, ok := before[other]; ok {
		r.Ack(at)
	}
}

// retireReaders forgets the journal's readers this configuration does not
// use (a sink taken out of the config): a cursor nobody reads would hold
// the journal's segments for ever, and publishers would wait once it is
// full.
func retireReaders(j *journal.Journal, log *slog.Logger, keep map[string]bool) {
	for _, r := range j.Stats().Readers {
		if keep[r.Name] {
			continue
		}
		log.Warn("journal: a reader the config no longer has is removed; what it had not read is not delivered to it", "reader", r.Name, "records", r.Lag)
		j.RemoveReader(r.Name)
	}
}

// Redactor takes the configured secrets (tokens, passwords, keys) out of
// text: the admin listener's answers go through it, as logs do through the
// logger sluice run makes (a server may echo a credential in an error).
func (s *Service) Redactor() *secret.Redactor { return s.redact }

// Console returns what the pipelines feed the operator's console.
func (s *Service) Console() *console.Hub { return s.console }

// Broker returns the embedded broker (to find a listener's address).
func (s *Service) Broker() *ingest.Broker { return s.broker }

// Start starts connecting the sinks, starts the pipelines (which first
// replay what their journals hold from before), and then the broker:
// nothing is accepted before there is somewhere to put it, the journal. The
// sinks connect in the background, each within connectTimeout at most, and
// a sink's writes wait for its attempt to end: Start never waits for a
// sink, and a sink that cannot be reached (or never answers) keeps its
// backlog in the journal until it comes back.
func (s *Service) Start(ctx context.Context) error {
	s.connectSinks()
	for _, r := range s.runners {
		s.wg.Go(func() { r.Run(s.runCtx) })
	}
	for _, p := range s.pipelines {
		if st := p.journal.Stats(); p.processor != nil && st.Last > p.processor.Acked() {
			p.log.Info("replaying the journal", "records", st.Last-p.processor.Acked())
		}
		p.start(s.runCtx)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.reportJournals(s.watchCtx)
	}()
	watchRules := s.cfg.WatchRules == nil || *s.cfg.WatchRules
	if watchRules || len(s.cfg.Broker.Files()) > 0 {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.watchFiles(s.watchCtx, watchRules)
		}()
	}
	if err := s.broker.Start(ctx); err != nil {
		s.Close(ctx)
		return s.cfg.explainStart(err)
	}
	for _, name := range s.broker.Listeners() {
		s.log.Info("listening for MQTT", "listener", name, "address", s.broker.Addr(name))
	}
	for i, src := range s.sources {
		if err := src.Start(ctx); err != nil {
			s.Close(ctx)
			return s.cfg.explainStart(fmt.Errorf("source %q: %w", s.cfg.Sources[i].Name, err), i)
		}
	}
	s.serving.Store(true)
	return nil
}

// runner is a sink with work of its own besides writes (the alertmanager
// sink sends the alerts still firing again, on a timer). Run blocks until
// ctx ends, which is after the sinks have drained.
type runner interface {
	Run(ctx context.Context)
}

// connectTimeout bounds a sink's first connection attempt, whatever its own
// timeouts say.
const connectTimeout = 30 * time.Second

// connectSinks connects each sink in a goroutine of its own, ended by
// shutdown, and closes its connected channel when the attempt ends.
func (s *Service) connectSinks() {
	for name, sink := range s.sinks {
		s.wg.Go(func() {
			defer close(s.connected[name])
			ctx, cancel := context.WithTimeout(s.watchCtx, connectTimeout)
			defer cancel()
			start := time.Now()
			if err := sink.Connect(ctx); err != nil {
				if s.watchCtx.Err() == nil {
					s.log.Warn("sink not reachable yet; its events wait in the journal", "sink", name, "error", err)
				}
				return
			}
			s.log.Info("sink connected", "sink", name, "in", time.Since(start).Round(time.Millisecond))
		})
	}
}

// Run starts the service and blocks until ctx ends, then shuts it down.
func (s *Service) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return s.Close(context.Background())
}

// Handle takes a message from ingest into the journal of every pipeline
// whose topics match, and returns once it is safe in all of them (durable as
// each pipeline's durability says, for QoS 1 and 2). With refuse (an MQTT 5
// publisher, which can be told), a full journal returns sluice.ErrBusy at
// once; otherwise the publisher waits for room.
//
// A message for several pipelines goes into all their journals or none:
// each journal admits it (has room, or waits for it) before it is written
// to any. Otherwise a journal full after another took the message would
// refuse it, and the publisher's resend would be a duplicate in the other.
func (s *Service) Handle(ctx context.Context, msg *sluice.Message, refuse bool) error {
	var match [4]*pipeline // most messages go to one pipeline, some to a few
	to := match[:0]
	for _, p := range s.pipelines {
		if p.matches(msg.Topic) {
			to = append(to, p)
		}
	}
	switch len(to) {
	case 0:
		s.metrics.Unrouted.Inc()
		return nil
	case 1:
		return pipelineErr(to[0], to[0].accept(ctx, msg, refuse))
	}
	return acceptAll(ctx, msg, refuse, to)
}

// acceptAll takes a message into the journals of several pipelines, all or
// none: every journal admits it, then it is written to each, then waited
// for in each.
func acceptAll(ctx context.Context, msg *sluice.Message, refuse bool, to []*pipeline) error {
	for _, p := range to {
		if err := p.admit(ctx, refuse); err != nil {
			return pipelineErr(p, err)
		}
	}
	var written [4]uint64
	seqs := written[:0]
	for _, p := range to {
		seq, err := p.put(msg)
		if err != nil {
			return pipelineErr(p, err)
		}
		seqs = append(seqs, seq)
	}
	for i, p := range to {
		if err := p.safe(ctx, msg, seqs[i]); err != nil {
			return pipelineErr(p, err)
		}
	}
	return nil
}

// pipelineErr names the pipeline in an error of its journal (not in
// sluice.ErrBusy, which ingest turns into a reason code).
func pipelineErr(p *pipeline, err error) error {
	if err == nil || errors.Is(err, sluice.ErrBusy) {
		return err
	}
	return fmt.Errorf("pipeline %q: %w", p.name, err)
}

// Close shuts down in order: ingest stops accepting (publishes it holds
// finish their journal append); the rules and the sinks catch up with the
// journals, for up to the drain timeout or until ctx ends (a second Ctrl-C:
// stop now); then clients are disconnected, the cursors are saved and
// everything is closed. What was not written stays in the journals for the
// next start. Close is safe to call more than once.
func (s *Service) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.closeErr = s.shutdown(ctx)
	})
	return s.closeErr
}

func (s *Service) shutdown(stopNow context.Context) error {
	ctx, cancel := context.WithTimeout(stopNow, s.drain)
	defer cancel()
	s.serving.Store(false)
	s.stopWatch()
	var errs []error
	// Every way in stops taking messages; what they hold finishes its
	// journal append.
	var wg sync.WaitGroup
	srcErrs := make([]error, len(s.sources))
	for i, src := range s.sources {
		wg.Go(func() { srcErrs[i] = src.Close(ctx) })
	}
	if err := s.broker.StopIngest(ctx); err != nil {
		errs = append(errs, err)
	}
	wg.Wait()
	errs = append(errs, srcErrs...)
	// Let the rules and the sinks catch up.
	tick := time.NewTicker(20 * time.Millisecond)
drain:
	for !s.CaughtUp() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			if stopNow.Err() != nil {
				s.log.Warn("shutdown: stopping without waiting for the sinks; the rest stays in the journal for the next start")
			} else {
				s.log.Warn("shutdown: the sinks did not catch up within shutdown_timeout; the rest stays in the journal for the next start", "shutdown_timeout", s.drain)
			}
			break drain
		}
	}
	tick.Stop()
	s.stopRun()
	for _, p := range s.pipelines {
		p.wg.Wait()
	}
	s.wg.Wait()
	// Closing is not draining: it gets its own few seconds, even when the
	// drain took its whole timeout or the caller asked to stop at once.
	ctx, cancelClose := context.WithTimeout(context.WithoutCancel(stopNow), closeTimeout)
	defer cancelClose()
	if err := s.broker.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, s.closeJournals())
	for name, sink := range s.sinks {
		if err := sink.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("sink %q: close: %w", name, err))
		}
	}
	errs = append(errs, s.lock.unlock())
	return errors.Join(errs...)
}

// closeTimeout bounds the last steps of a shutdown: disconnecting clients,
// saving cursors, closing sinks.
const closeTimeout = 5 * time.Second

// CaughtUp reports whether the rules and every sink have finished with
// everything in the journals.
func (s *Service) CaughtUp() bool {
	for _, p := range s.pipelines {
		if !p.drained() {
			return false
		}
	}
	return true
}

func (s *Service) closeJournals() error {
	var errs []error
	for _, p := range s.pipelines {
		if err := p.journal.Close(); err != nil {
			errs = append(errs, fmt.Errorf("pipeline %q: close journal: %w", p.name, err))
		}
	}
	return errors.Join(errs...)
}

// reportJournals publishes the journals' state as metrics every second: the
// backlog of each sink (records, bytes, age), the bytes held, and records
// dropped by drop_oldest.
func (s *Service) reportJournals(ctx context.Context) {
	dropped, droppedMessages, damaged := map[string]uint64{}, map[string]uint64{}, map[string]uint64{}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		for _, p := range s.pipelines {
			if p.cluster != nil {
				h := p.cluster.health()
				s.metrics.ClusterPartitions.WithLabelValues(p.name).Set(float64(len(h.Partitions)))
				s.metrics.ClusterUnforwarded.WithLabelValues(p.name).Set(float64(h.Journal - min(h.Forwarded, h.Journal)))
				s.metrics.ClusterSinkLag.WithLabelValues(p.name).Set(float64(h.Lag))
			}
			st := p.journal.Stats()
			s.metrics.JournalBytes.WithLabelValues(p.name).Set(float64(st.Bytes))
			if st.Dropped > dropped[p.name] {
				s.metrics.JournalDropped.WithLabelValues(p.name).Add(float64(st.Dropped - dropped[p.name]))
				dropped[p.name] = st.Dropped
			}
			if st.DroppedMessages > droppedMessages[p.name] {
				s.metrics.JournalDroppedMessages.WithLabelValues(p.name).Add(float64(st.DroppedMessages - droppedMessages[p.name]))
				droppedMessages[p.name] = st.DroppedMessages
			}
			if st.Damaged > damaged[p.name] {
				s.metrics.JournalCorrupt.WithLabelValues(p.name).Add(float64(st.Damaged - damaged[p.name]))
				damaged[p.name] = st.Damaged
			}
			for _, r := range st.Readers {
				s.metrics.Backlog.WithLabelValues(p.name, r.Name).Set(float64(r.Lag))
				s.metrics.BacklogBytes.WithLabelValues(p.name, r.Name).Set(float64(r.LagBytes))
				s.metrics.BacklogAge.WithLabelValues(p.name, r.Name).Set(r.OldestAge.Seconds())
			}
		}
		// A sink fed by several pipelines is ready only if it is in all.
		ready := map[string]bool{}
		for _, p := range s.Health(time.Now()).Pipelines {
			for _, sh := range p.Sinks {
				r, seen := ready[sh.Name]
				ready[sh.Name] = sh.Ready && (r || !seen)
			}
		}
		for name, r := range ready {
			v := 0.0
			if r {
				v = 1
			}
			s.metrics.SinkReady.WithLabelValues(name).Set(v)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// Rules returns the compiled rule set in force in a pipeline (nil if unknown).
func (s *Service) Rules(pipeline string) *rules.Set {
	for _, p := range s.pipelines {
		if p.name == pipeline {
			return p.set.Load()
		}
	}
	return nil
}

// JournalStats returns the state of a pipeline's journal.
func (s *Service) JournalStats(pipeline string) (journal.Stats, bool) {
	for _, p := range s.pipelines {
		if p.name == pipeline {
			return p.journal.Stats(), true
		}
	}
	return journal.Stats{}, false
}
