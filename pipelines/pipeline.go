package pipelines

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/console"
	"github.com/sluicehq/sluice/internal/journal"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/ratelog"
	"github.com/sluicehq/sluice/internal/secret"
	"github.com/sluicehq/sluice/rules"
)

// Journal record kinds.
const (
	kindMessage byte = 'M' // a message as received, appended before the broker acknowledges it
	kindEvents  byte = 'E' // what the rules derived from a message (or from time), for the sinks
)

// pipeline takes the messages matching its topics into its journal, runs its
// rules over them, and feeds its sinks.
//
//	ingest --Append M--> journal --reader "rules"--> shard workers --Write E--> journal
//	                     journal --reader "sink:<name>" (one per sink)--> sink
//
// A message is acknowledged to its publisher once its M record is durable.
// The rules reader dispatches messages to workers by their partition key
// (derived from the rules' series keys, see rules.Partition), so every
// reading of a series, for every rule, is evaluated in order by one worker,
// which holds the series' state.
// Each sink reads the journal through its own cursor: a slow or dead sink
// neither blocks the others nor loses its backlog, and a segment is deleted
// once every cursor has passed it.
type pipeline struct {
	name    string
	filters []*rules.Filter
	// set is the rule set in force; a reload swaps it, and each worker
	// moves to it between two messages, carrying over the state of the
	// rules that did not change.
	set atomic.Pointer[rules.Set]
	// part spreads messages over the shards; a reload keeps it (a rule set
	// that needs another is refused).
	part    rules.Partition
	limits  rules.Limits
	journal *journal.Journal
	// maxBytes is the journal's bound.
	maxBytes int64
	// waitDurable: an acknowledged message must be durable first (every
	// mode but none, for QoS 1 and 2).
	waitDurable bool

	counters counters
	// recordFields, when set, is the only record fields the sinks read
	// (see recordFields); a cluster's records carry every field.
	recordFields []string
	// origin names the journal in event ids (identify): where a message
	// was accepted.
	origin  string
	streams map[sluice.Stream]bool // streams some sink of the pipeline consumes
	sinks   []*sinkReader
	// cluster, set when sluice runs as a cluster, is this node's part of
	// the pipeline (cluster.go); the rest of the fields then serve only
	// ingest (the journal) and the sinks.
	cluster   *clusterPipeline
	shards    []chan work
	tracker   tracker
	processor *journal.Reader

	// tap, deadLetters and alerts feed the operator's console: the tail
	// costs an atomic load per message while nobody watches.
	tap         *console.Tap
	deadLetters *console.DeadLetters
	alerts      *console.Alerts

	log     *slog.Logger
	rlog    *ratelog.Logger
	metrics *metrics.Metrics
	// redact takes the configured secrets out of dead letters' reasons
	// (a sink's server may echo a credential in its error).
	redact *secret.Redactor
	wg     sync.WaitGroup
}

type work struct {
	seq uint64
	msg *sluice.Message
}

func (p *pipeline) matches(topic string) bool {
	for _, f := range p.filters {
		if f.Match(topic, nil) {
			return true
		}
	}
	return false
}

// accept appends a message to the journal and returns once it is safe
// (durable as configured, for QoS 1 and 2). While the journal is full it
// waits, or, with refuse, returns sluice.ErrBusy at once. While the
// journal cannot write it returns sluice.ErrStorage at once.
func (p *pipeline) accept(ctx context.Context, msg *sluice.Message, refuse bool) error {
	buf := getEncodeBuf()
	defer putEncodeBuf(buf)
	data := msg.AppendBinary(*buf)
	*buf = data
	var err error
	var seq uint64
	if refuse {
		seq, err = p.journal.TryAppend(ctx, kindMessage, data, msg, false)
	} else {
		seq, err = p.journal.Append(ctx, kindMessage, data, msg, false)
	}
	if err == nil {
		err = p.safe(ctx, msg, seq)
	}
	return ingestError(err)
}

// admit returns once the journal would take a message, without writing it
// (see accept for what it returns): for a message that goes into several
// pipelines' journals or none (Service.Handle).
func (p *pipeline) admit(ctx context.Context, refuse bool) error {
	return ingestError(p.journal.Admit(ctx, refuse))
}

// put writes an admitted message to the journal, its bound aside, and
// returns its seq; safe then waits for it.
func (p *pipeline) put(msg *sluice.Message) (uint64, error) {
	buf := getEncodeBuf()
	defer putEncodeBuf(buf)
	*buf = msg.AppendBinary(*buf)
	seq, err := p.journal.Write(kindMessage, *buf, msg)
	return seq, ingestError(err)
}

// safe returns once the message written at seq may be acknowledged:
// durable as the pipeline's durability says (QoS 1 and 2), and in Kafka
// when a cluster acknowledges so.
func (p *pipeline) safe(ctx context.Context, msg *sluice.Message, seq uint64) error {
	if msg.QoS == 0 {
		return nil
	}
	if p.waitDurable {
		if err := p.journal.WaitDurable(ctx, seq); err != nil {
			return ingestError(err)
		}
	}
	if p.cluster != nil && p.cluster.cfg.Ack == "kafka" {
		// Acknowledged once Kafka has it.
		return p.cluster.waitForwarded(ctx, seq)
	}
	return nil
}

// ingestError turns a journal's refusal into what ingest tells a
// publisher: sluice.ErrBusy (full), sluice.ErrStorage (its writes fail).
func ingestError(err error) error {
	switch {
	case errors.Is(err, journal.ErrFull):
		return sluice.ErrBusy
	case errors.Is(err, journal.ErrWriteFailing):
		return storageError{err}
	}
	return err
}

// storageError is a journal's write failure, as ingest knows it:
// sluice.ErrStorage, saying why.
type storageError struct{ err error }

func (e storageError) Error() string   { return e.err.Error() }
func (e storageError) Unwrap() []error { return []error{sluice.ErrStorage, e.err} }

// encodeBufs holds the buffers messages and events are encoded into for
// the journal, which copies what it keeps: a buffer per concurrent writer
// rather than an allocation per message (a tenth of the bytes allocated
// under load, sluice bench -memprofile).
var encodeBufs = sync.Pool{New: func() any { return new([]byte) }}

func getEncodeBuf() *[]byte {
	b := encodeBufs.Get().(*[]byte)
	*b = (*b)[:0]
	return b
}

// putEncodeBuf returns b to the pool unless a large record grew it.
func putEncodeBuf(b *[]byte) {
	if cap(*b) <= 64<<10 {
		encodeBufs.Put(b)
	}
}

// start starts the rules processor, its workers and the sink readers.
func (p *pipeline) start(ctx context.Context) {
	if p.cluster != nil {
		p.wg.Go(func() { p.cluster.run(ctx) })
		return
	}
	p.tracker.init(p.processor, p.journal)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.tracker.run(ctx)
	}()
	for _, shard := range p.shards {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.work(shard)
		}()
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.dispatch(ctx)
	}()
	for _, s := range p.sinks {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			s.run(ctx)
		}()
	}
}

// dispatch reads the journal's messages in order and hands each to the
// worker of its shard. It stops, closing the shards, when ctx ends.
func (p *pipeline) dispatch(ctx context.Context) {
	var names sluice.Names // for messages read back from the files
	defer func() {
		for _, s := range p.shards {
			close(s)
		}
	}()
	for {
		e, err := p.processor.Next(ctx)
		if err != nil {
			return
		}
		if e.Kind != kindMessage {
			p.tracker.skip(e.Seq)
			continue
		}
		msg, ok := e.Value.(*sluice.Message)
		if !ok {
			if msg, err = names.Message(e.Data); err != nil {
				p.rlog.Error("journal", "unreadable message in the journal; skipped", "seq", e.Seq, "error", err)
				p.tracker.skip(e.Seq)
				continue
			}
		}
		p.tracker.add(e.Seq)
		select {
		case p.shards[shardOf(p.part.Key(msg.Topic), len(p.shards))] <- work{e.Seq, msg}:
		case <-ctx.Done():
			return
		}
	}
}

// shardOf maps a partition key to one of n shards (FNV-1a, without the
// allocation of hash/fnv's interface).
func shardOf(key string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

func newRateLog(log *slog.Logger) *ratelog.Logger { return ratelog.New(log, 10*time.Second, nil) }

// tickEvery is how often time-driven rules (absent series, re-notifications,
// evictions) are evaluated.
const tickEvery = time.Second

func (p *pipeline) work(shard chan work) {
	wk := p.newWorker()
	defer wk.close()
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	for {
		select {
		case w, ok := <-shard:
			if !ok {
				return
			}
			wk.message(w)
		case now := <-tick.C:
			wk.tick(now)
		}
	}
}

// worker is one shard's rule evaluation: its evaluator (the state of its
// series) and what it reports.
type worker struct {
	p      *pipeline
	set    *rules.Set
	ev     *rules.Evaluator
	out    []sluice.Event
	rep    stateReporter
	firing firingReporter
}

func (p *pipeline) newWorker() *worker {
	set := p.set.Load()
	return &worker{p: p, set: set, ev: p.evaluator(set, nil), out: make([]sluice.Event, 0, 8),
		rep: stateReporter{metrics: p.metrics}, firing: firingReporter{slot: p.alerts.Slot(p.name)}}
}

func (wk *worker) close() {
	wk.rep.report(nil) // a stopped worker holds no series
	wk.firing.slot.Close()
}

// current moves the worker to the rules in force, after a reload.
func (wk *worker) current() {
	if s := wk.p.set.Load(); s != wk.set {
		wk.set, wk.ev = s, wk.p.evaluator(s, wk.ev)
	}
}

// message evaluates one message and records what came of it.
func (wk *worker) message(w work) {
	p := wk.p
	wk.current()
	if !w.msg.Expires.IsZero() && w.msg.Expired(time.Now()) {
		p.metrics.Expired.WithLabelValues(p.name, "rules").Inc()
		p.tracker.done(w.seq, 0)
		return
	}
	var o rules.Outcome
	wk.out, o = wk.ev.Eval(w.msg, wk.out[:0])
	p.count(o)
	identify(p.origin, w.seq, wk.out)
	seq := p.record(w.msg, wk.out)
	if p.tap.Watched() { // after record: it redacts the dead letters' reasons
		p.tap.Publish(p.name, w.msg, wk.out, o, wk.set)
	}
	wk.firing.report(wk.ev)
	p.tracker.done(w.seq, seq)
}

// tick runs what time alone decides (absent series, re-notifications,
// evictions) and reports the worker's state.
func (wk *worker) tick(now time.Time) {
	p := wk.p
	wk.current()
	wk.out = wk.ev.Tick(now, wk.out[:0])
	identify(p.origin, 0, wk.out)
	for i := range wk.out {
		// Each alert raised by time stands alone, with its series' topic
		// as its message.
		e := wk.out[i : i+1]
		p.record(e[0].Message, e)
		if p.tap.Watched() {
			p.tap.Publish(p.name, e[0].Message, e, rules.Outcome{}, nil)
		}
	}
	wk.rep.report(wk.ev.Stats())
	wk.firing.report(wk.ev)
}

// evaluator makes an evaluator of set, taking over the state of from, that
// times its rules into the evaluation-time histogram.
func (p *pipeline) evaluator(set *rules.Set, from *rules.Evaluator) *rules.Evaluator {
	ev := set.NewEvaluator(from, p.limits)
	rs := set.Rules()
	obs := make([]prometheus.Observer, len(rs))
	for i, r := range rs {
		p.metrics.InitRule(r)
		obs[i] = p.metrics.RuleSeconds.WithLabelValues(r)
	}
	ev.TimeRules(func(rule int, d time.Duration) { obs[rule].Observe(d.Seconds()) })
	ev.KeepFields(p.recordFields)
	return ev
}

// recordFields returns the record fields the sinks of a pipeline read,
// when they read only some: every sink of its records is an InfluxDB sink
// with a fields list. Records then carry those fields alone, into the
// journal and to the sinks: a reading of twenty fields of which the sinks
// write three is not journaled, decoded and filtered whole (sluice bench
// -job influx). Nil: every field.
func recordFields(cfg *Config, pc *PipelineConfig) []string {
	var names []string
	for _, name := range pc.Sinks {
		sc := cfg.sink(name)
		if sc.Stream != sluice.StreamRecords.String() {
			continue
		}
		if sc.InfluxDB == nil {
			return nil
		}
		some, all := sc.InfluxDB.RecordFields()
		if all {
			return nil
		}
		names = append(names, some...)
	}
	if names == nil {
		return nil // no sink of records: nothing to save
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// counters are the pipeline's metrics counted for every message, looked
// up once (a lookup by label values, with its hashing and locking, was
// ~75 ns a counter and several a message).
type counters struct {
	once                                 sync.Once
	routed, decoded, unmatched, filtered prometheus.Counter
	records                              sync.Map // rule → prometheus.Counter
}

// ctr returns the pipeline's counters, looked up the first time.
func (p *pipeline) ctr() *counters {
	c := &p.counters
	c.once.Do(func() {
		m := p.metrics
		c.routed = m.Routed.WithLabelValues(p.name)
		c.decoded = m.Decoded.WithLabelValues(p.name)
		c.unmatched = m.Dropped.WithLabelValues(p.name, "unmatched")
		c.filtered = m.Dropped.WithLabelValues(p.name, "filtered")
	})
	return c
}

// recordsOf is the counter of the records of rule.
func (p *pipeline) recordsOf(rule string) prometheus.Counter {
	if c, ok := p.counters.records.Load(rule); ok {
		return c.(prometheus.Counter)
	}
	c, _ := p.counters.records.LoadOrStore(rule, p.metrics.Records.WithLabelValues(p.name, rule))
	return c.(prometheus.Counter)
}

func (p *pipeline) count(o rules.Outcome) {
	c := p.ctr()
	c.routed.Inc()
	switch {
	case o.Matched == 0:
		c.unmatched.Inc()
	case o.Filtered == o.Matched:
		c.filtered.Inc()
	}
	if o.Matched > o.Undecoded {
		c.decoded.Inc()
	}
}

// record writes what the rules derived from msg to the journal, for the
// sinks: the events of streams some sink consumes. It returns the record's
// seq, or 0 when there was nothing to write.
func (p *pipeline) record(msg *sluice.Message, events []sluice.Event) uint64 {
	keep := p.keep(msg, events)
	if len(keep) == 0 {
		return 0
	}
	buf := getEncodeBuf()
	defer putEncodeBuf(buf)
	*buf = sluice.AppendEvents(*buf, msg, keep)
	seq, err := p.journal.Write(kindEvents, *buf, keep)
	if err != nil {
		// Only a closing journal refuses a write; the message is replayed
		// from its M record on the next start.
		p.rlog.Error("journal", "cannot record the rules' output", "error", err)
		return 0
	}
	return seq
}

// identify gives each event its stable id (sluice.Event.ID), the same
// however often the event is written: an alert transition's is its
// episode's with the status and notification; any other event's names its
// message (the journal that accepted it, and its seq there) and its place
// among the message's events.
func identify(origin string, seq uint64, events []sluice.Event) {
	var buf [96]byte
	var base []byte
	for i := range events {
		e := &events[i]
		if a := e.Alert; a != nil {
			e.ID = a.Episode + "-" + a.Status + "-" + strconv.Itoa(a.Notification)
			continue
		}
		if base == nil {
			base = strconv.AppendUint(append(append(buf[:0], origin...), ':'), seq, 10)
			base = append(base, ':')
		}
		e.ID = string(strconv.AppendInt(base, int64(i), 10))
	}
}

// keep counts what the rules derived from msg, logs its dead letters, and
// returns the events of the streams some sink consumes.
func (p *pipeline) keep(msg *sluice.Message, events []sluice.Event) []sluice.Event {
	keep := make([]sluice.Event, 0, len(events))
	for i := range events {
		e := &events[i]
		switch e.Stream {
		case sluice.StreamRecords:
			p.recordsOf(e.Record.Rule).Inc()
		case sluice.StreamAlerts:
			p.metrics.Alerts.WithLabelValues(e.Alert.Rule, e.Alert.Severity, e.Alert.Status).Inc()
			p.alerts.Transition(p.name, e.Alert)
		case sluice.StreamDeadLetters:
			e.DeadLetter.Reason = p.redact.Redact(e.DeadLetter.Reason)
			p.metrics.RuleErrors.WithLabelValues(e.DeadLetter.Rule).Inc()
			p.metrics.DeadLetters.WithLabelValues(p.name, e.DeadLetter.Stage).Inc()
			p.deadLetters.Add(p.name, msg, e.DeadLetter)
			p.rlog.Warn("rule:"+e.DeadLetter.Rule, "message not processed", "rule", e.DeadLetter.Rule,
				"stage", e.DeadLetter.Stage, "topic", msg.Topic, "reason", e.DeadLetter.Reason)
		}
		if p.streams[e.Stream] {
			keep = append(keep, *e)
		}
	}
	return keep
}

// deadLetter records a dead letter for an event a sink refused for good:
// the pipeline's dead-letter sinks pick it up from the journal. Without
// one, it is logged and counted only.
func (p *pipeline) deadLetter(ctx context.Context, e sluice.Event, dl *sluice.DeadLetter) {
	dl.Reason = p.redact.Redact(dl.Reason)
	p.metrics.DeadLetters.WithLabelValues(p.name, dl.Stage).Inc()
	p.deadLetters.Add(p.name, e.Message, dl)
	if !p.streams[sluice.StreamDeadLetters] {
		return
	}
	d := []sluice.Event{{Stream: sluice.StreamDeadLetters, Message: e.Message, DeadLetter: dl}}
	if p.cluster != nil {
		p.cluster.deadLetter(ctx, e.Message, d)
		return
	}
	seq, err := p.journal.Write(kindEvents, sluice.AppendEvents(nil, e.Message, d), d)
	if err == nil {
		err = p.journal.WaitDurable(ctx, seq)
	}
	if err != nil {
		p.rlog.Error("journal", "cannot record a dead letter", "sink", dl.Sink, "error", err)
	}
}

// drained reports whether the rules and every sink have caught up with
// the journal.
func (p *pipeline) drained() bool {
	if p.cluster != nil {
		return p.cluster.drained()
	}
	last := p.journal.Stats().Last
	if p.processor.Acked() < last {
		return false
	}
	for _, s := range p.sinks {
		if s.reader.Acked() < last {
			return false
		}
	}
	return true
}

// tracker acknowledges the rules reader's progress: a message is done when
// the workers have processed it and the record of its events (if any) is
// durable. Workers finish out of order; the cursor moves past a message only
// when every message before it is done too.
type tracker struct {
	reader  *journal.Reader
	journal *journal.Journal

	mu      sync.Mutex
	pending []uint64          // messages dispatched and not yet done, in order
	events  map[uint64]uint64 // message seq done -> its events' seq (0: none)
	last    uint64            // last seq the reader returned
	maxE    uint64            // highest events seq among messages done
	wake    chan struct{}
}

func (t *tracker) init(r *journal.Reader, j *journal.Journal) {
	t.reader, t.journal = r, j
	t.events = map[uint64]uint64{}
	t.wake = make(chan struct{}, 1)
}

func (t *tracker) add(seq uint64) {
	t.mu.Lock()
	t.pending = append(t.pending, seq)
	t.last = seq
	t.mu.Unlock()
}

// skip notes a record that needs no processing (an events record).
func (t *tracker) skip(seq uint64) {
	t.mu.Lock()
	t.last = seq
	t.mu.Unlock()
	t.signal()
}

func (t *tracker) done(seq, events uint64) {
	t.mu.Lock()
	t.events[seq] = events
	t.mu.Unlock()
	t.signal()
}

func (t *tracker) signal() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// watermark returns how far the reader may be acknowledged, and the events
// record that must be durable first.
func (t *tracker) watermark() (uint64, uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.pending) > 0 {
		e, ok := t.events[t.pending[0]]
		if !ok {
			break
		}
		delete(t.events, t.pending[0])
		t.maxE = max(t.maxE, e)
		t.pending = t.pending[1:]
	}
	if len(t.pending) > 0 {
		return t.pending[0] - 1, t.maxE
	}
	return t.last, t.maxE
}

// run acknowledges progress as it happens, until ctx ends (and once more).
func (t *tracker) run(ctx context.Context) {
	for {
		select {
		case <-t.wake:
		case <-ctx.Done():
			t.flush(context.Background())
			return
		}
		t.flush(ctx)
	}
}

func (t *tracker) flush(ctx context.Context) {
	upto, events := t.watermark()
	if upto <= t.reader.Acked() {
		return
	}
	if events > 0 && t.journal.WaitDurable(ctx, events) != nil {
		return
	}
	t.reader.Ack(upto)
}

// firingReporter keeps one evaluator's firing series on the console's
// board, asking the evaluator again only when they changed (a comparison
// per message otherwise).
type firingReporter struct {
	slot *console.FiringSlot
	ev   *rules.Evaluator
	gen  uint64
	buf  []*sluice.Alert
}

func (f *firingReporter) report(ev *rules.Evaluator) {
	if ev == f.ev && ev.AlertGeneration() == f.gen {
		return
	}
	f.ev, f.gen = ev, ev.AlertGeneration()
	f.buf = ev.Firing(f.buf[:0])
	f.slot.Set(f.buf)
	clear(f.buf) // the slot holds its own copy
}

// stateReporter turns one worker's rule state into metrics. Workers report
// the change since their last report, so the gauges sum over workers, and a
// rule that a reload removed is taken out.
type stateReporter struct {
	metrics *metrics.Metrics
	last    map[string]rules.RuleStats // by rule
}

func (r *stateReporter) report(stats []rules.RuleStats) {
	if r.last == nil {
		r.last = make(map[string]rules.RuleStats, len(stats))
	}
	m := r.metrics
	seen := make(map[string]bool, len(stats))
	for _, s := range stats {
		seen[s.Rule] = true
		prev := r.last[s.Rule]
		if d := s.Series - prev.Series; d != 0 {
			m.RuleSeries.WithLabelValues(s.Rule).Add(float64(d))
		}
		if d := counterDelta(s.Evictions, prev.Evictions); d > 0 {
			m.RuleEvicted.WithLabelValues(s.Rule).Add(float64(d))
		}
		if d := counterDelta(s.Evaluated, prev.Evaluated); d > 0 {
			m.RuleEvals.WithLabelValues(s.Rule).Add(float64(d))
		}
		if d := counterDelta(s.Passed, prev.Passed); d > 0 {
			m.RulePassed.WithLabelValues(s.Rule).Add(float64(d))
		}
		if s.Severity != prev.Severity && prev.Firing != 0 {
			m.AlertsFiring.WithLabelValues(s.Rule, prev.Severity).Sub(float64(prev.Firing))
			prev.Firing = 0
		}
		if d := s.Firing - prev.Firing; d != 0 {
			m.AlertsFiring.WithLabelValues(s.Rule, s.Severity).Add(float64(d))
		}
		r.last[s.Rule] = s
	}
	for rule, prev := range r.last {
		if !seen[rule] {
			m.RuleSeries.WithLabelValues(rule).Sub(float64(prev.Series))
			if prev.Firing != 0 {
				m.AlertsFiring.WithLabelValues(rule, prev.Severity).Sub(float64(prev.Firing))
			}
			delete(r.last, rule)
		}
	}
}

// counterDelta is how much a counter grew since it read before; a counter
// that went back (its rule changed in a reload and started again) grew by
// all it holds.
func counterDelta(now, before uint64) uint64 {
	if now >= before {
		return now - before
	}
	return now
}
