package pipelines

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/journal"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/ratelog"
)

// Sink writes batches of events to one destination. Write returns nil when
// every event was written, a *sluice.BatchError naming the events that
// failed, or an error for the whole batch; errors are classified with
// sluice.Permanent and sluice.Retryable (unclassified errors are retried).
type Sink interface {
	Connect(ctx context.Context) error
	Write(ctx context.Context, batch []sluice.Event) error
	Close(ctx context.Context) error
}

// lockedSink serialises a sink shared by several pipelines.
type lockedSink struct {
	mu sync.Mutex
	Sink
}

func (l *lockedSink) Write(ctx context.Context, batch []sluice.Event) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.Sink.Write(ctx, batch)
}

// sinkReader feeds one sink from one pipeline's journal: it reads through
// its own cursor, batches the events of the sink's stream (a batch is written
// when it holds batch.size events or batch.interval after its first), writes
// them, retrying retryable failures with backoff for as long as it takes,
// sends events refused for good to the pipeline's dead letters, and then
// moves its cursor.
type sinkReader struct {
	name   string
	stream sluice.Stream
	sink   Sink
	// connected is closed once the sink's first connection attempt ended:
	// the first write waits for it.
	connected <-chan struct{}
	cfg       SinkConfig
	reader    cursor
	pipe      *pipeline
	log       *slog.Logger
	rlog      *ratelog.Logger
	metrics   *metrics.Metrics

	// names decodes what is read back from the files (run's goroutine),
	// making the names that repeat from record to record once.
	names sluice.Names

	// failingSince is when the sink's writes began to fail (Unix ns), 0
	// while they succeed; lastErr is the latest failure.
	failingSince atomic.Int64
	lastErr      atomic.Pointer[string]
}

// cursor is where a sink reads its events: its journal reader on one node,
// its consumer of the pipeline's events topic in a cluster.
type cursor interface {
	Next(ctx context.Context) (journal.Entry, error)
	Ack(seq uint64)
	Acked() uint64
}

func newSinkReader(cfg SinkConfig, sink Sink, connected <-chan struct{}, p *pipeline, from cursor, log *slog.Logger, m *metrics.Metrics) *sinkReader {
	stream, _ := sluice.ParseStream(cfg.Stream)
	log = log.With("sink", cfg.Name)
	return &sinkReader{
		name: cfg.Name, stream: stream, sink: sink, connected: connected, cfg: cfg, pipe: p,
		reader: from, log: log, rlog: newRateLog(log), metrics: m,
	}
}

// events returns what a journal record holds for this sink.
func (s *sinkReader) events(e journal.Entry) ([]sluice.Event, error) {
	switch {
	case e.Kind == kindMessage && s.stream == sluice.StreamRaw:
		msg, ok := e.Value.(*sluice.Message)
		if !ok {
			var err error
			if msg, err = s.names.Message(e.Data); err != nil {
				return nil, err
			}
		}
		return []sluice.Event{{Stream: sluice.StreamRaw, Message: msg}}, nil
	case e.Kind == kindEvents && s.stream != sluice.StreamRaw:
		all, ok := e.Value.([]sluice.Event)
		if !ok {
			// Read back from the files: a record without events of this
			// sink's stream is passed over undecoded (most records, for
			// an alerts sink).
			if streams, known := sluice.EventStreams(e.Data); known && streams&(1<<s.stream) == 0 {
				return nil, nil
			}
			var err error
			if all, err = s.names.Events(e.Data); err != nil {
				return nil, err
			}
		}
		return s.mine(all), nil
	}
	return nil, nil
}

// mine returns the events of the sink's stream: all of them (nearly
// always, records being one stream), or a copy of those.
func (s *sinkReader) mine(all []sluice.Event) []sluice.Event {
	n := 0
	for i := range all {
		if all[i].Stream == s.stream {
			n++
		}
	}
	if n == len(all) || n == 0 {
		return all[:n]
	}
	mine := make([]sluice.Event, 0, n)
	for _, ev := range all {
		if ev.Stream == s.stream {
			mine = append(mine, ev)
		}
	}
	return mine
}

// run reads, batches and writes until ctx ends. What was read but not
// written stays in the journal: the cursor moves only past what is written.
//
// Reading and writing overlap: while one batch is being written (a round
// trip to Kafka or InfluxDB), the next is read from the journal and built,
// and one more may wait; so a sink's throughput is not its write latency
// plus the time to build a batch, one after the other. Batches are written
// and acknowledged in order, by one writer.
func (s *sinkReader) run(ctx context.Context) {
	var (
		batch    []sluice.Event
		last     uint64 // the last record whose events are all in the batch
		deadline context.Context
		cancel   context.CancelFunc = func() {}
	)
	defer func() { cancel() }()
	w := s.startWriter(ctx)
	defer w.stop()
	flush := func() {
		cancel()
		deadline = nil
		w.enqueue(batch, last)
		batch = w.spare()
	}
	for {
		next := ctx
		if deadline != nil {
			next = deadline
		}
		e, err := s.reader.Next(next)
		if err != nil {
			if deadline != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				flush() // the batch interval is up
				continue
			}
			return
		}
		events, err := s.events(e)
		if err != nil {
			s.rlog.Error("journal", "unreadable record in the journal; skipped", "seq", e.Seq, "error", err)
		}
		events = s.unexpired(events)
		last = e.Seq
		if len(events) == 0 {
			if len(batch) == 0 {
				// Nothing for this sink: the cursor moves past it, after
				// the batches in flight.
				w.skip(last)
			}
			continue
		}
		if len(batch) == 0 {
			deadline, cancel = s.batchDeadline(ctx)
		}
		batch = append(batch, events...)
		if len(batch) >= s.cfg.Batch.Size {
			flush()
		}
	}
}

// batchWriter writes a sinkReader's batches in order, in a goroutine of
// its own, and moves the cursor past each once written.
type batchWriter struct {
	s     *sinkReader
	queue chan pendingBatch
	// free holds the slices of batches written, emptied, for the next
	// batches (a batch of batch.size events is a slice of hundreds of
	// KiB: made anew for every batch, it was a tenth of what sluice
	// allocated at 20,000 msg/s).
	free   chan []sluice.Event
	queued atomic.Int32 // batches enqueued and not yet acknowledged
	// stopped is set once a write was cut short by the end of ctx: the
	// cursor must then stay before that batch, so nothing more is
	// acknowledged, not even a record with nothing for the sink.
	stopped atomic.Bool
	done    chan struct{}
}

// pendingBatch is a batch to write (possibly none) and the last record
// whose events it holds.
type pendingBatch struct {
	events []sluice.Event
	last   uint64
}

func (s *sinkReader) startWriter(ctx context.Context) *batchWriter {
	w := &batchWriter{s: s, queue: make(chan pendingBatch, 1), free: make(chan []sluice.Event, 3), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		select {
		case <-s.connected:
		case <-ctx.Done():
			w.stopped.Store(true)
		}
		for p := range w.queue {
			// After a write cut short by the end of ctx the cursor stays
			// where it is: the rest of the queue is left for the next
			// start, but taken off the queue so enqueue never blocks.
			if !w.stopped.Load() && len(p.events) > 0 && !s.write(ctx, p.events) {
				w.stopped.Store(true)
			}
			if !w.stopped.Load() {
				s.reader.Ack(p.last)
			}
			w.queued.Add(-1)
			w.recycle(p.events)
		}
	}()
	return w
}

// recycle keeps a written batch's slice for a next batch. The sink's Write
// has returned: nothing holds its events any more.
func (w *batchWriter) recycle(events []sluice.Event) {
	if cap(events) == 0 {
		return
	}
	clear(events) // its messages and records may go
	select {
	case w.free <- events[:0]:
	default:
	}
}

// spare returns an empty slice for a batch: one written before, or none
// yet (append makes it).
func (w *batchWriter) spare() []sluice.Event {
	select {
	case b := <-w.free:
		return b
	default:
		return nil
	}
}

// enqueue hands a batch over; it waits while one batch is being written
// and another already waits.
func (w *batchWriter) enqueue(events []sluice.Event, last uint64) {
	w.queued.Add(1)
	w.queue <- pendingBatch{events, last}
}

// skip moves the cursor past a record with nothing for the sink: at once
// when no batch is in flight, else after them.
func (w *batchWriter) skip(last uint64) {
	if w.queued.Load() == 0 {
		if !w.stopped.Load() {
			w.s.reader.Ack(last)
		}
		return
	}
	w.enqueue(nil, last)
}

// stop waits for the batches handed over to be written (or given up, when
// ctx ended).
func (w *batchWriter) stop() {
	close(w.queue)
	<-w.done
}

// batchDeadline returns the context a batch waits under for more events:
// it ends batch.interval after the batch's first event.
func (s *sinkReader) batchDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.Batch.Interval)
}

// write writes events until each is written or failed for good; false if
// ctx ended first.
func (s *sinkReader) write(ctx context.Context, events []sluice.Event) bool {
	for attempt := 0; len(events) > 0; attempt++ {
		if attempt > 0 {
			if events = s.unexpired(events); len(events) == 0 {
				return true
			}
		}
		start := time.Now()
		err := s.sink.Write(ctx, events)
		s.metrics.SinkLatency.WithLabelValues(s.name).Observe(time.Since(start).Seconds())
		if err == nil {
			s.failingSince.Store(0)
			s.written(events)
			return true
		}

		var retry []sluice.Event
		var refused []refusal
		var be *sluice.BatchError
		switch {
		case errors.As(err, &be):
			var ok []sluice.Event
			group := map[error]int{} // refused[group[err]] holds err's events
			for i, e := range events {
				ierr, failed := be.Errs[i]
				switch {
				case !failed:
					ok = append(ok, e)
				case sluice.IsPermanent(ierr):
					refused = refuse(refused, group, e, ierr)
				default:
					retry = append(retry, e)
					err = ierr
				}
			}
			s.written(ok)
		case sluice.IsPermanent(err):
			refused = []refusal{{err: err, events: events}}
		default:
			retry = events
		}
		for _, r := range refused {
			s.metrics.SinkFailures.WithLabelValues(s.name, "permanent").Inc()
			if !s.refused(ctx, r) {
				return false
			}
		}
		if len(retry) == 0 {
			s.failingSince.Store(0)
			return true
		}
		msg := err.Error()
		s.lastErr.Store(&msg)
		s.failingSince.CompareAndSwap(0, start.UnixNano())
		s.metrics.SinkFailures.WithLabelValues(s.name, "retryable").Inc()
		delay := backoff(s.cfg.Retry, attempt, sluice.RetryAfter(err))
		s.rlog.Warn("retry", "sink write failed; retrying", "events", len(retry), "in", delay.Round(time.Millisecond), "error", err)
		select {
		case <-time.After(delay):
			s.metrics.SinkRetries.WithLabelValues(s.name).Inc()
			events = retry
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// refusal is events a write refused for good with one error value. A sink
// names an event it knows to be bad with an error of its own; it gives one
// error value to all the events of a request refused as a whole, when the
// remote did not say which of them is bad (InfluxDB's "field type
// conflict" between two points of a batch, Kafka refusing a partition's
// records together), or returns that error for the whole batch.
type refusal struct {
	err    error
	events []sluice.Event
}

// refuse adds e, refused with err, to the refusal of the events refused
// with the same error value (group indexes refusals by error).
func refuse(refusals []refusal, group map[error]int, e sluice.Event, err error) []refusal {
	if !reflect.TypeOf(err).Comparable() {
		return append(refusals, refusal{err, []sluice.Event{e}})
	}
	if i, ok := group[err]; ok {
		refusals[i].events = append(refusals[i].events, e)
		return refusals
	}
	group[err] = len(refusals)
	return append(refusals, refusal{err, []sluice.Event{e}})
}

// refused deals with events refused for good together: one alone goes to
// the dead letters; of several, the bad ones are found by writing each half
// again (and each half of a half refused again ...), so that a bad event
// costs O(log n) writes of a batch of n, the good events are written with
// few requests, and only the bad ones are dead-lettered. It returns false
// if ctx ended first.
func (s *sinkReader) refused(ctx context.Context, r refusal) bool {
	if len(r.events) == 1 {
		s.failed(ctx, r.events[0], r.err)
		return true
	}
	half := len(r.events) / 2
	return s.write(ctx, r.events[:half]) && s.write(ctx, r.events[half:])
}

// unexpired returns the events whose message has not expired (an MQTT 5
// publisher's message expiry interval, passed while they waited in the
// journal or for retries): those are not delivered, and counted.
func (s *sinkReader) unexpired(events []sluice.Event) []sluice.Event {
	var now time.Time // read only for a message that can expire: this runs for every record
	expired := 0
	for i := range events {
		if events[i].Message.Expires.IsZero() {
			continue
		}
		if now.IsZero() {
			now = time.Now()
		}
		if events[i].Message.Expired(now) {
			expired++
		}
	}
	if expired == 0 {
		return events
	}
	s.metrics.Expired.WithLabelValues(s.pipe.name, "sink:"+s.name).Add(float64(expired))
	keep := make([]sluice.Event, 0, len(events)-expired)
	for _, e := range events {
		if !e.Message.Expired(now) {
			keep = append(keep, e)
		}
	}
	return keep
}

func (s *sinkReader) written(events []sluice.Event) {
	if len(events) == 0 {
		return
	}
	s.metrics.SinkWritten.WithLabelValues(s.name).Add(float64(len(events)))
	s.metrics.SinkBatches.WithLabelValues(s.name).Inc()
	now := time.Now()
	for i := range events {
		s.metrics.AckLatency.Observe(now.Sub(events[i].Message.Received).Seconds())
	}
}

// failed handles an event the sink refused for good: it goes to the
// pipeline's dead letters (a dead-letter sink's own failures are logged).
func (s *sinkReader) failed(ctx context.Context, e sluice.Event, err error) {
	s.rlog.Warn("permanent", "sink refused an event for good", "stream", e.Stream, "topic", e.Message.Topic, "error", err)
	if s.stream == sluice.StreamDeadLetters {
		return
	}
	s.pipe.deadLetter(ctx, e, &sluice.DeadLetter{Stage: "sink", Sink: s.name, Reason: fmt.Sprint(err)})
}

// backoff returns the delay before retry attempt n (0-based): exponential
// from the initial delay up to the maximum, with full jitter, and never less
// than what the remote asked for.
func backoff(cfg RetryConfig, n int, asked time.Duration) time.Duration {
	d := cfg.Initial << min(n, 30)
	if d <= 0 || d > cfg.Max {
		d = cfg.Max
	}
	d = time.Duration(rand.Int64N(int64(d)) + 1)
	return max(d, asked)
}
