package pipelines

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/sluicehq/sluice"
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

// job is an event on its way to a sink, and the pipeline it came from (whose
// dead-letter sinks take it if it fails for good).
type job struct {
	ev   sluice.Event
	from *pipeline
}

// writer batches events for one sink and writes them, retrying retryable
// failures with backoff for as long as it takes, and sending events that fail
// for good to their pipeline's dead letters. Only the writer's goroutine
// touches the sink.
type writer struct {
	name    string
	stream  sluice.Stream
	sink    Sink
	cfg     SinkConfig
	in      chan job
	log     *slog.Logger
	rlog    *ratelog.Logger
	metrics *metrics.Metrics

	done chan struct{}
	once sync.Once
}

func newWriter(cfg SinkConfig, sink Sink, log *slog.Logger, m *metrics.Metrics) *writer {
	stream, _ := sluice.ParseStream(cfg.Stream)
	log = log.With("sink", cfg.Name)
	return &writer{
		name: cfg.Name, stream: stream, sink: sink, cfg: cfg,
		in:  make(chan job, cfg.Batch.Queue),
		log: log, rlog: ratelog.New(log, 10*time.Second, nil), metrics: m,
		done: make(chan struct{}),
	}
}

// enqueue hands an event to the writer, waiting while its queue is full.
func (w *writer) enqueue(ctx context.Context, j job) error {
	select {
	case w.in <- j:
		w.metrics.SinkQueueDepth.WithLabelValues(w.name).Set(float64(len(w.in)))
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run batches and writes until the input is closed and drained. ctx ends
// only when shutdown has run out of time: then what cannot be written is
// failed back to its acks.
func (w *writer) run(ctx context.Context) {
	defer close(w.done)
	batch := make([]job, 0, w.cfg.Batch.Size)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	flush := func() {
		timer.Stop()
		if len(batch) > 0 {
			w.write(ctx, batch)
			batch = batch[:0]
		}
		w.metrics.SinkQueueDepth.WithLabelValues(w.name).Set(float64(len(w.in)))
	}
	for {
		select {
		case j, ok := <-w.in:
			if !ok {
				flush()
				return
			}
			if len(batch) == 0 {
				timer.Reset(w.cfg.Batch.Interval)
			}
			batch = append(batch, j)
			if len(batch) >= w.cfg.Batch.Size {
				flush()
			}
		case <-timer.C:
			flush()
		}
	}
}

// close stops the writer's input; run drains what is queued and returns.
func (w *writer) close() { w.once.Do(func() { close(w.in) }) }

// write writes jobs until each is written, failed for good, or shutdown runs
// out of time.
func (w *writer) write(ctx context.Context, jobs []job) {
	events := make([]sluice.Event, len(jobs))
	for attempt := 0; len(jobs) > 0; attempt++ {
		events = events[:len(jobs)]
		for i := range jobs {
			events[i] = jobs[i].ev
		}
		start := time.Now()
		err := w.sink.Write(ctx, events)
		w.metrics.SinkLatency.WithLabelValues(w.name).Observe(time.Since(start).Seconds())
		if err == nil {
			w.written(jobs)
			return
		}

		var retry, permanent []job
		var be *sluice.BatchError
		switch {
		case errors.As(err, &be):
			var ok []job
			for i, j := range jobs {
				e, failed := be.Errs[i]
				switch {
				case !failed:
					ok = append(ok, j)
				case sluice.IsPermanent(e):
					permanent = append(permanent, j)
					err = e
				default:
					retry = append(retry, j)
					err = e
				}
			}
			w.written(ok)
		case sluice.IsPermanent(err):
			permanent = jobs
		default:
			retry = jobs
		}

		if len(permanent) > 0 {
			w.metrics.SinkFailures.WithLabelValues(w.name, "permanent").Inc()
			if len(jobs) > 1 {
				// A whole batch can be refused for one bad event (a 400
				// from InfluxDB, a batch too large): write each alone, so
				// only the bad ones go to the dead letters.
				for _, j := range permanent {
					w.write(ctx, []job{j})
				}
			} else {
				w.failed(ctx, permanent[0], err)
			}
		}
		if len(retry) == 0 {
			return
		}
		w.metrics.SinkFailures.WithLabelValues(w.name, "retryable").Inc()
		delay := backoff(w.cfg.Retry, attempt, sluice.RetryAfter(err))
		w.rlog.Warn("retry", "sink write failed; retrying", "events", len(retry), "in", delay.Round(time.Millisecond), "error", err)
		select {
		case <-time.After(delay):
			w.metrics.SinkRetries.WithLabelValues(w.name).Inc()
			jobs = retry
		case <-ctx.Done():
			for _, j := range retry {
				j.ev.Ack.Done(fmt.Errorf("sink %q: not written before shutdown: %w", w.name, err))
			}
			return
		}
	}
}

func (w *writer) written(jobs []job) {
	if len(jobs) == 0 {
		return
	}
	w.metrics.SinkWritten.WithLabelValues(w.name).Add(float64(len(jobs)))
	w.metrics.SinkBatches.WithLabelValues(w.name).Inc()
	for _, j := range jobs {
		j.ev.Ack.Done(nil)
	}
}

// failed handles an event the sink refused for good: it goes to its
// pipeline's dead-letter sinks, if any; otherwise it is logged and its ack
// reports the error.
func (w *writer) failed(ctx context.Context, j job, err error) {
	w.rlog.Warn("permanent", "sink refused an event for good", "stream", j.ev.Stream, "topic", j.ev.Message.Topic, "error", err)
	if w.stream == sluice.StreamDeadLetters || j.from == nil {
		j.ev.Ack.Done(fmt.Errorf("sink %q: %w", w.name, err))
		return
	}
	j.from.deadLetter(ctx, j.ev, &sluice.DeadLetter{Stage: "sink", Sink: w.name, Reason: err.Error()})
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
