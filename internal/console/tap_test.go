package console

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/rules"
)

func boilerMessage(device string, temp string) (*sluice.Message, []sluice.Event) {
	msg := &sluice.Message{Topic: "plant/north/" + device + "/telemetry", Payload: []byte(`{"temperature":` + temp + `}`), Received: time.Now()}
	rec := &sluice.Record{Rule: "boiler", Topic: msg.Topic, Tags: []sluice.Tag{{Key: "device", Value: device}}}
	return msg, []sluice.Event{{Stream: sluice.StreamRecords, Message: msg, Record: rec}}
}

// TestTapNeverWaits: a watch that does not read loses what does not fit,
// counted (on the watch and in the metric), and the publisher goes on.
func TestTapNeverWaits(t *testing.T) {
	dropped := prometheus.NewCounter(prometheus.CounterOpts{Name: "dropped"})
	hub := NewHub(dropped)
	if hub.Tap.Watched() {
		t.Fatal("watched with no watch")
	}
	w := hub.Tap.Watch(Filter{}, 4)
	if !hub.Tap.Watched() {
		t.Fatal("not watched with a watch")
	}
	for i := range 10 {
		msg, events := boilerMessage("b7", "90")
		_ = i
		hub.Tap.Publish("telemetry", msg, events, rules.Outcome{Matched: 1}, nil)
	}
	if len(w.C) != 4 || w.Dropped() != 6 || counterValue(dropped) != 6 {
		t.Fatalf("buffered %d, dropped %d (metric %v): want 4 and 6", len(w.C), w.Dropped(), counterValue(dropped))
	}
	w.Close()
	w.Close()
	if hub.Tap.Watched() {
		t.Fatal("watched after the watch closed")
	}
}

// TestTapCostsNothingUnwatched: the hot path's check allocates nothing.
func TestTapCostsNothingUnwatched(t *testing.T) {
	hub := NewHub(nil)
	msg, events := boilerMessage("b7", "90")
	allocs := testing.AllocsPerRun(1000, func() {
		if hub.Tap.Watched() {
			hub.Tap.Publish("telemetry", msg, events, rules.Outcome{}, nil)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per message with nobody watching", allocs)
	}
	var none *Tap
	if none.Watched() {
		t.Fatal("a nil tap is watched")
	}
}

func TestTapFilters(t *testing.T) {
	hub := NewHub(nil)
	cases := []struct {
		name   string
		filter Filter
		want   []string // devices shown, of b7, b8 in north and b7 in pipeline other
	}{
		{"all", Filter{}, []string{"b7", "b8", "other b7"}},
		{"pipeline", Filter{Pipeline: "other"}, []string{"other b7"}},
		{"topic", Filter{Topic: rules.MustFilter("plant/+/b8/#")}, []string{"b8"}},
		{"device", Filter{Device: "b7", Pipeline: "telemetry"}, []string{"b7"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := hub.Tap.Watch(c.filter, 10)
			defer w.Close()
			for _, p := range []struct{ pipeline, device string }{{"telemetry", "b7"}, {"telemetry", "b8"}, {"other", "b7"}} {
				msg, events := boilerMessage(p.device, "90")
				hub.Tap.Publish(p.pipeline, msg, events, rules.Outcome{}, nil)
			}
			var got []string
			for len(w.C) > 0 {
				ev := <-w.C
				d, _ := ev.Events[0].Record.Tag("device")
				if ev.Pipeline != "telemetry" {
					d = ev.Pipeline + " " + d
				}
				got = append(got, d)
			}
			if strings.Join(got, ",") != strings.Join(c.want, ",") {
				t.Fatalf("shown %q, want %q", got, c.want)
			}
		})
	}
}

// TestTailSaysWhatItDropped: a client of the tail that stops reading slows
// nothing down; when it reads again, the stream says how many messages it
// missed.
func TestTailSaysWhatItDropped(t *testing.T) {
	dropped := prometheus.NewCounter(prometheus.CounterOpts{Name: "dropped"})
	hub := NewHub(dropped)
	set, err := rules.Parse("r.yaml", []byte("rules:\n  - name: boiler\n    match: plant/+site/+device/telemetry\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := New(Options{Hub: hub, Backend: fakeBackend{set: set}})
	public, private := http.NewServeMux(), http.NewServeMux()
	s.Mount(public, private)
	srv := httptest.NewServer(private)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/v1/tail", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := bufio.NewReader(resp.Body)
	if line, _ := body.ReadString('\n'); !strings.Contains(line, "watching every message") {
		t.Fatalf("first line %q", line)
	}
	// Publish, without reading, until the tail has had to drop some: the
	// socket's buffers fill, then the watch's.
	msg, events := boilerMessage("b7", strings.Repeat("1", 4000))
	deadline := time.Now().Add(60 * time.Second)
	for counterValue(dropped) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("nothing dropped")
		}
		hub.Tap.Publish("telemetry", msg, events, rules.Outcome{Matched: 1}, set)
	}
	found := make(chan string, 1)
	go func() {
		readUntil(body, func(line string) bool {
			if strings.HasPrefix(line, `data: {"dropped": `) {
				found <- line
				return true
			}
			return false
		})
	}()
	// One more message after the drops brings the count.
	for {
		hub.Tap.Publish("telemetry", msg, events, rules.Outcome{Matched: 1}, set)
		select {
		case line := <-found:
			if !strings.Contains(line, `"dropped": `) {
				t.Fatalf("dropped line %q", line)
			}
			return
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the stream never said what it dropped")
		}
	}
}

func readUntil(r *bufio.Reader, stop func(string) bool) {
	for {
		line, err := r.ReadString('\n')
		if err != nil || stop(strings.TrimSpace(line)) {
			return
		}
	}
}

// fakeBackend serves one pipeline's rules and nothing else.
type fakeBackend struct{ set *rules.Set }

var _ Backend = fakeBackend{}

func (f fakeBackend) Pipelines() []PipelineInfo { return []PipelineInfo{{Name: "telemetry"}} }
func (f fakeBackend) Rules(p string) *rules.Set {
	if p != "telemetry" {
		return nil
	}
	return f.set
}
func (f fakeBackend) DecodeLimits() rules.Limits { return rules.Limits{} }
func (f fakeBackend) Messages(context.Context, string, time.Time, func(uint64, *sluice.Message) error) (time.Time, error) {
	return time.Time{}, errors.New("no journal")
}
func (f fakeBackend) Recent(context.Context, string, *rules.Filter, int) ([]*sluice.Message, error) {
	return nil, errors.New("no journal")
}
func (f fakeBackend) Resend(context.Context, string, *sluice.Message, []sluice.Event) error {
	return errors.New("no sinks")
}
func (f fakeBackend) ReloadRules() error { return nil }

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}

// BenchmarkTapUnwatched is what the console costs a rules worker per
// message while nobody watches the tail: the check before Publish.
func BenchmarkTapUnwatched(b *testing.B) {
	hub := NewHub(nil)
	msg, events := boilerMessage("b7", "90")
	b.ReportAllocs()
	for b.Loop() {
		if hub.Tap.Watched() {
			hub.Tap.Publish("telemetry", msg, events, rules.Outcome{}, nil)
		}
	}
}

// BenchmarkTapWatchedElsewhere: someone watches another device.
func BenchmarkTapWatchedElsewhere(b *testing.B) {
	hub := NewHub(nil)
	defer hub.Tap.Watch(Filter{Device: "b8"}, 16).Close()
	msg, events := boilerMessage("b7", "90")
	b.ReportAllocs()
	for b.Loop() {
		if hub.Tap.Watched() {
			hub.Tap.Publish("telemetry", msg, events, rules.Outcome{}, nil)
		}
	}
}
