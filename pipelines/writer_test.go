package pipelines

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/journal"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/rules"
)

// fakeSink stands in for a destination: the writer is under test, not the
// sink. It refuses a whole batch for good when the batch holds a "poison"
// payload (as InfluxDB refuses a batch with one bad point), and fails the
// first failFirst calls with a retryable error.
type fakeSink struct {
	mu        sync.Mutex
	failFirst int
	calls     int
	written   []string
}

var _ Sink = (*fakeSink)(nil)

func (f *fakeSink) Connect(context.Context) error { return nil }
func (f *fakeSink) Close(context.Context) error   { return nil }

func (f *fakeSink) Write(_ context.Context, batch []sluice.Event) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls <= f.failFirst {
		return sluice.Retryable(errors.New("connection refused"), 0)
	}
	for _, e := range batch {
		if e.Stream != sluice.StreamDeadLetters && strings.Contains(string(e.Message.Payload), "poison") {
			return sluice.Permanent(fmt.Errorf("400: field type conflict"))
		}
	}
	for _, e := range batch {
		f.written = append(f.written, string(e.Message.Payload))
	}
	return nil
}

func (f *fakeSink) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.written...)
}

type harness struct {
	pipe   *pipeline
	sink   *fakeSink
	dlSink *fakeSink
	ctx    context.Context
}

// newHarness builds a pipeline with an in-memory journal and no rules: a raw
// sink fed straight from the journal's messages, and optionally a
// dead-letter sink.
func newHarness(t *testing.T, sink Sink, withDeadLetters bool) *harness {
	t.Helper()
	return newHarnessBatch(t, sink, withDeadLetters, BatchConfig{Size: 10, Interval: 5 * time.Millisecond})
}

// newHarnessBatch is newHarness with the main sink's batching policy.
func newHarnessBatch(t *testing.T, sink Sink, withDeadLetters bool, batch BatchConfig) *harness {
	t.Helper()
	m := metrics.New()
	log := slog.New(slog.DiscardHandler)
	j, err := journal.Open(journal.Options{Mode: journal.Memory})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{dlSink: &fakeSink{}}
	h.sink, _ = sink.(*fakeSink)
	p := &pipeline{name: "p", journal: j, streams: map[sluice.Stream]bool{}, log: log, rlog: newRateLog(log), metrics: m,
		shards: []chan work{make(chan work, 4)}}
	p.set.Store(&rules.Set{})
	p.processor = j.Reader("rules")
	mk := func(name, stream string, s Sink, batch BatchConfig) *sinkReader {
		cfg := SinkConfig{Name: name, Stream: stream, Batch: batch,
			Retry: RetryConfig{Initial: time.Millisecond, Max: 5 * time.Millisecond}}
		st, _ := sluice.ParseStream(stream)
		p.streams[st] = true
		connected := make(chan struct{})
		close(connected)
		return newSinkReader(cfg, s, connected, p, p.journal.Reader("sink:"+cfg.Name), log, m)
	}
	p.sinks = append(p.sinks, mk("main", "raw", sink, batch))
	if withDeadLetters {
		p.sinks = append(p.sinks, mk("bad", "dead_letters", h.dlSink, BatchConfig{Size: 10, Interval: 5 * time.Millisecond}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.ctx, h.pipe = ctx, p
	p.start(ctx)
	t.Cleanup(func() {
		cancel()
		p.wg.Wait()
		j.Close()
	})
	return h
}

// publish puts payloads in the journal, then waits until every reader has
// finished with them.
func (h *harness) publish(t *testing.T, payloads ...string) {
	t.Helper()
	for _, p := range payloads {
		if err := h.pipe.accept(h.ctx, &sluice.Message{Topic: "t", Payload: []byte(p), QoS: 1, Received: time.Now()}, false); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for !h.pipe.drained() {
		if time.Now().After(deadline) {
			t.Fatalf("the sinks did not finish: %+v", h.pipe.journal.Stats().Readers)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWriterIsolatesPoisonIntoDeadLetters(t *testing.T) {
	h := newHarness(t, &fakeSink{}, true)
	h.publish(t, "a", "b", "poison", "c", "d")
	if got := strings.Join(h.sink.got(), ","); got != "a,b,c,d" {
		// order inside a refused batch is kept when retried one by one
		t.Errorf("written %q, want a,b,c,d", got)
	}
	dl := h.dlSink.got()
	if len(dl) != 1 || dl[0] != "poison" {
		t.Fatalf("dead letters %q, want the poison message only", dl)
	}
}

// TestWriterBisectsARefusedBatch writes a batch of 256 events, some of them
// poison, to a sink that refuses a whole batch holding any poison without
// saying which (as InfluxDB does for some errors, and Kafka for a
// partition's records): the writer finds each poison by writing halves, in
// O(log n) writes per poison, not one write per event as before.
func TestWriterBisectsARefusedBatch(t *testing.T) {
	for _, poisons := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d poison", poisons), func(t *testing.T) {
			const n = 256
			sink := &fakeSink{}
			// One batch: written when it holds n events, long before the
			// interval.
			h := newHarnessBatch(t, sink, true, BatchConfig{Size: n, Interval: time.Hour})
			var payloads, want []string
			for i := range n {
				p := fmt.Sprint(i)
				if i%(n/poisons) == 37 {
					p = "poison " + p
				} else {
					want = append(want, p)
				}
				payloads = append(payloads, p)
			}
			h.publish(t, payloads...)
			if got := h.sink.got(); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("written %d events, want the %d good ones in order", len(got), len(want))
			}
			if dl := h.dlSink.got(); len(dl) != poisons {
				t.Errorf("dead letters %q, want the %d poison", dl, poisons)
			}
			// Each poison costs at most two writes per halving (8 of 256).
			if max := 1 + poisons*2*8; sink.calls > max {
				t.Errorf("%d writes, want at most %d", sink.calls, max)
			}
		})
	}
}

// namingSink refuses the poison events of a batch by name, each with an
// error of its own, and writes the others (as InfluxDB's partial write).
type namingSink struct {
	fakeSink
}

func (f *namingSink) Write(_ context.Context, batch []sluice.Event) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	bad := map[int]error{}
	for i, e := range batch {
		if strings.Contains(string(e.Message.Payload), "poison") {
			bad[i] = sluice.Permanent(fmt.Errorf("refused %s", e.Message.Payload))
			continue
		}
		f.written = append(f.written, string(e.Message.Payload))
	}
	if len(bad) > 0 {
		return &sluice.BatchError{Errs: bad}
	}
	return nil
}

// TestWriterDeadLettersNamedEvents: events a sink refuses by name go to the
// dead letters as they are, with no further write.
func TestWriterDeadLettersNamedEvents(t *testing.T) {
	sink := &namingSink{}
	h := newHarnessBatch(t, sink, true, BatchConfig{Size: 6, Interval: time.Hour})
	h.publish(t, "a", "poison 1", "b", "poison 2", "c", "d")
	if got := strings.Join(sink.got(), ","); got != "a,b,c,d" {
		t.Errorf("written %q, want a,b,c,d", got)
	}
	if dl := strings.Join(h.dlSink.got(), ","); dl != "poison 1,poison 2" {
		t.Errorf("dead letters %q, want the two poison", dl)
	}
	if sink.calls != 1 {
		t.Errorf("%d writes, want 1", sink.calls)
	}
}

func TestWriterWithoutDeadLetterSinkGoesOn(t *testing.T) {
	h := newHarness(t, &fakeSink{}, false)
	h.publish(t, "a", "poison", "b")
	if got := strings.Join(h.sink.got(), ","); got != "a,b" {
		t.Errorf("written %q, want a,b: the poison is counted and the rest goes on", got)
	}
}

func TestWriterRetriesUntilWritten(t *testing.T) {
	h := newHarness(t, &fakeSink{failFirst: 3}, true)
	h.publish(t, "a", "b")
	if got := strings.Join(h.sink.got(), ","); got != "a,b" {
		t.Errorf("written %q, want a,b exactly once", got)
	}
	if len(h.dlSink.got()) != 0 {
		t.Errorf("retryable failures were dead-lettered")
	}
}

func TestBackoff(t *testing.T) {
	cfg := RetryConfig{Initial: 100 * time.Millisecond, Max: time.Second}
	for n := range 40 {
		d := backoff(cfg, n, 0)
		if d <= 0 || d > cfg.Max {
			t.Fatalf("attempt %d: %v outside (0, %v]", n, d, cfg.Max)
		}
	}
	if d := backoff(cfg, 0, 5*time.Second); d != 5*time.Second {
		t.Fatalf("Retry-After not honoured: %v", d)
	}
}
