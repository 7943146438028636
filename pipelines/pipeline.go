package pipelines

import (
	"context"
	"errors"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/ratelog"
	"github.com/sluicehq/sluice/rules"
)

// pipeline routes the messages matching its topics through its rules to its
// sinks. Messages are sharded by topic over the workers, so the messages of
// one device keep their order and its rule state stays on one worker.
type pipeline struct {
	name    string
	filters []*rules.Filter
	// set is the rule set in force; a reload swaps it, and each worker
	// moves to it between two messages, carrying over the state of the
	// rules that did not change.
	set      atomic.Pointer[rules.Set]
	limits   rules.Limits
	byStream map[sluice.Stream][]*writer
	shards   []chan item
	wg       sync.WaitGroup

	log     *slog.Logger
	rlog    *ratelog.Logger
	metrics *metrics.Metrics
	// ctx ends when shutdown has run out of time.
	ctx context.Context
}

type item struct {
	msg *sluice.Message
	ack *sluice.Ack
}

func newPipeline(ctx context.Context, cfg PipelineConfig, set *rules.Set, writers map[string]*writer, log *slog.Logger, m *metrics.Metrics) *pipeline {
	log = log.With("pipeline", cfg.Name)
	p := &pipeline{
		name: cfg.Name, byStream: map[sluice.Stream][]*writer{},
		log: log, rlog: ratelog.New(log, 10*time.Second, nil), metrics: m, ctx: ctx,
	}
	p.set.Store(set)
	for _, t := range cfg.Topics {
		p.filters = append(p.filters, rules.MustFilter(t))
	}
	for _, name := range cfg.Sinks {
		w := writers[name]
		p.byStream[w.stream] = append(p.byStream[w.stream], w)
	}
	per := max(1, cfg.Queue/cfg.Workers)
	for range cfg.Workers {
		p.shards = append(p.shards, make(chan item, per))
	}
	return p
}

func (p *pipeline) matches(topic string) bool {
	for _, f := range p.filters {
		if f.Match(topic, nil) {
			return true
		}
	}
	return false
}

// enqueue hands a message to the worker of its shard, waiting while that
// worker's queue is full.
func (p *pipeline) enqueue(ctx context.Context, msg *sluice.Message, ack *sluice.Ack) error {
	h := fnv.New32a()
	h.Write([]byte(msg.Topic))
	shard := p.shards[h.Sum32()%uint32(len(p.shards))]
	select {
	case shard <- item{msg, ack}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pipeline) start() {
	for _, shard := range p.shards {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.work(shard)
		}()
	}
}

// stop closes the queues and waits for the workers to hand on what is queued.
func (p *pipeline) stop() {
	for _, s := range p.shards {
		close(s)
	}
	p.wg.Wait()
}

func (p *pipeline) queued() int {
	n := 0
	for _, s := range p.shards {
		n += len(s)
	}
	return n
}

// tickEvery is how often time-driven rules (absent series, re-notifications,
// evictions) are evaluated.
const tickEvery = time.Second

func (p *pipeline) work(shard chan item) {
	set := p.set.Load()
	ev := set.NewEvaluator(nil, p.limits)
	out := make([]sluice.Event, 0, 8)
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	rep := stateReporter{metrics: p.metrics, series: map[string]int{}, evicted: map[string]uint64{}}
	defer rep.report(nil) // a stopped worker holds no series
	for {
		select {
		case it, ok := <-shard:
			if !ok {
				return
			}
			if s := p.set.Load(); s != set {
				set, ev = s, s.NewEvaluator(ev, p.limits)
			}
			out = out[:0]
			p.process(ev, it, &out)
		case now := <-tick.C:
			if s := p.set.Load(); s != set {
				set, ev = s, s.NewEvaluator(ev, p.limits)
			}
			out = ev.Tick(now, out[:0])
			p.emit(out, nil)
			rep.report(ev.Stats())
		}
	}
}

func (p *pipeline) process(ev *rules.Evaluator, it item, out *[]sluice.Event) {
	p.metrics.Routed.WithLabelValues(p.name).Inc()
	for _, w := range p.byStream[sluice.StreamRaw] {
		p.send(w, sluice.Event{Stream: sluice.StreamRaw, Message: it.msg, Ack: it.ack})
	}
	var o rules.Outcome
	*out, o = ev.Eval(it.msg, *out)
	var partErr error
	switch {
	case o.Matched == 0:
		p.metrics.Dropped.WithLabelValues(p.name, "unmatched").Inc()
	case o.Failed == o.Matched:
		partErr = sluice.ErrBadPayload
	case o.Filtered+o.Failed == o.Matched && o.Filtered > 0:
		p.metrics.Dropped.WithLabelValues(p.name, "filtered").Inc()
	}
	p.emit(*out, it.ack)
	it.ack.Done(partErr) // the pipeline's own part
}

// emit hands what the rules produced to the sinks of each event's stream,
// as parts of ack (nil for what time alone produced).
func (p *pipeline) emit(events []sluice.Event, ack *sluice.Ack) {
	for i := range events {
		e := events[i]
		e.Ack = ack
		switch e.Stream {
		case sluice.StreamDeadLetters:
			p.metrics.RuleErrors.WithLabelValues(e.DeadLetter.Rule).Inc()
			p.rlog.Warn("rule:"+e.DeadLetter.Rule, "message not processed", "rule", e.DeadLetter.Rule,
				"stage", e.DeadLetter.Stage, "topic", e.Message.Topic, "reason", e.DeadLetter.Reason)
			ack.Add(1)
			p.deadLetter(p.ctx, e, e.DeadLetter)
			continue
		case sluice.StreamRecords:
			p.metrics.Records.WithLabelValues(p.name, e.Record.Rule).Inc()
		case sluice.StreamAlerts:
			p.metrics.Alerts.WithLabelValues(e.Alert.Rule, e.Alert.Severity, e.Alert.Status).Inc()
		}
		for _, w := range p.byStream[e.Stream] {
			p.send(w, e)
		}
	}
}

// send hands an event to a sink writer as one more part of its ack.
func (p *pipeline) send(w *writer, e sluice.Event) {
	e.Ack.Add(1)
	if err := w.enqueue(p.ctx, job{ev: e, from: p}); err != nil {
		e.Ack.Done(err)
	}
}

// deadLetter sends a dead letter to the pipeline's dead-letter sinks. It
// completes one part of ev's ack: when there is nowhere to send it, with the
// failure, so an MQTT 5 publisher learns of it.
func (p *pipeline) deadLetter(ctx context.Context, ev sluice.Event, dl *sluice.DeadLetter) {
	p.metrics.DeadLetters.WithLabelValues(p.name, dl.Stage).Inc()
	sinks := p.byStream[sluice.StreamDeadLetters]
	if len(sinks) == 0 {
		if dl.Stage == "sink" {
			ev.Ack.Done(errors.New(dl.Reason))
		} else {
			ev.Ack.Done(nil) // the rule failure is reported by the pipeline's own part
		}
		return
	}
	d := sluice.Event{Stream: sluice.StreamDeadLetters, Message: ev.Message, DeadLetter: dl, Ack: ev.Ack}
	for _, w := range sinks {
		d.Ack.Add(1)
		if err := w.enqueue(ctx, job{ev: d}); err != nil {
			d.Ack.Done(err)
		}
	}
	ev.Ack.Done(nil)
}

// stateReporter turns one worker's rule state into metrics. Workers report
// the change since their last report, so the gauges sum over workers, and a
// rule that a reload removed is taken out.
type stateReporter struct {
	metrics *metrics.Metrics
	series  map[string]int
	evicted map[string]uint64
}

func (r *stateReporter) report(stats []rules.RuleStats) {
	seen := make(map[string]bool, len(stats))
	for _, s := range stats {
		seen[s.Rule] = true
		if d := s.Series - r.series[s.Rule]; d != 0 {
			r.metrics.RuleSeries.WithLabelValues(s.Rule).Add(float64(d))
		}
		if s.Evictions > r.evicted[s.Rule] { // a changed rule starts again from 0
			r.metrics.RuleEvicted.WithLabelValues(s.Rule).Add(float64(s.Evictions - r.evicted[s.Rule]))
		}
		r.series[s.Rule], r.evicted[s.Rule] = s.Series, s.Evictions
	}
	for rule, n := range r.series {
		if !seen[rule] {
			r.metrics.RuleSeries.WithLabelValues(rule).Sub(float64(n))
			delete(r.series, rule)
			delete(r.evicted, rule)
		}
	}
}
