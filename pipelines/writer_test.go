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
	pipe     *pipeline
	main, dl *writer
	sink     *fakeSink
	dlSink   *fakeSink
	metrics  *metrics.Metrics
}

func newHarness(t *testing.T, sink *fakeSink, withDeadLetters bool) *harness {
	t.Helper()
	m := metrics.New()
	log := slog.New(slog.DiscardHandler)
	h := &harness{sink: sink, dlSink: &fakeSink{}, metrics: m}
	mk := func(name, stream string, s Sink) *writer {
		cfg := SinkConfig{Name: name, Stream: stream, Batch: BatchConfig{Size: 10, Interval: 5 * time.Millisecond, Queue: 100},
			Retry: RetryConfig{Initial: time.Millisecond, Max: 5 * time.Millisecond}}
		return newWriter(cfg, s, log, m)
	}
	h.main = mk("main", "raw", sink)
	writers := map[string]*writer{"main": h.main}
	sinks := []string{"main"}
	if withDeadLetters {
		h.dl = mk("bad", "dead_letters", h.dlSink)
		writers["bad"] = h.dl
		sinks = append(sinks, "bad")
	}
	h.pipe = newPipeline(context.Background(), PipelineConfig{Name: "p", Topics: []string{"#"}, Sinks: sinks, Workers: 1, Queue: 10},
		&rules.Set{}, writers, log, m)
	for _, w := range writers {
		go w.run(context.Background())
	}
	h.pipe.start()
	t.Cleanup(func() {
		h.pipe.stop()
		h.main.close()
		<-h.main.done
		if h.dl != nil {
			h.dl.close()
			<-h.dl.done
		}
	})
	return h
}

// publish sends payloads through the pipeline and returns each one's ack result.
func (h *harness) publish(t *testing.T, payloads ...string) []error {
	t.Helper()
	results := make([]chan error, len(payloads))
	for i, p := range payloads {
		results[i] = make(chan error, 1)
		ack := sluice.NewAck(func(err error) { results[i] <- err })
		ack.Add(1)
		if err := h.pipe.enqueue(context.Background(), &sluice.Message{Topic: "t", Payload: []byte(p)}, ack); err != nil {
			t.Fatal(err)
		}
		ack.Done(nil)
	}
	errs := make([]error, len(payloads))
	for i, ch := range results {
		select {
		case errs[i] = <-ch:
		case <-time.After(30 * time.Second):
			t.Fatalf("message %d never acknowledged", i)
		}
	}
	return errs
}

func TestWriterIsolatesPoisonIntoDeadLetters(t *testing.T) {
	h := newHarness(t, &fakeSink{}, true)
	errs := h.publish(t, "a", "b", "poison", "c", "d")
	for i, err := range errs {
		if err != nil {
			t.Errorf("message %d acked with %v; it was written or dead-lettered", i, err)
		}
	}
	if got := strings.Join(h.sink.got(), ","); got != "a,b,c,d" {
		// order inside a refused batch is kept when retried one by one
		t.Errorf("written %q, want a,b,c,d", got)
	}
	dl := h.dlSink.got()
	if len(dl) != 1 || dl[0] != "poison" {
		t.Fatalf("dead letters %q, want the poison message only", dl)
	}
}

func TestWriterWithoutDeadLetterSinkFailsTheAck(t *testing.T) {
	h := newHarness(t, &fakeSink{}, false)
	errs := h.publish(t, "a", "poison")
	if errs[0] != nil {
		t.Errorf("good message acked with %v", errs[0])
	}
	if errs[1] == nil || !strings.Contains(errs[1].Error(), "field type conflict") {
		t.Errorf("poison acked with %v, want the sink's reason", errs[1])
	}
}

func TestWriterRetriesUntilWritten(t *testing.T) {
	h := newHarness(t, &fakeSink{failFirst: 3}, true)
	errs := h.publish(t, "a", "b")
	for i, err := range errs {
		if err != nil {
			t.Errorf("message %d: %v", i, err)
		}
	}
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
