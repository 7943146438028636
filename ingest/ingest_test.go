package ingest_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/testsvc"
)

// holdingHandler stands in for the pipelines (ingest is under test): it
// keeps each message until the test releases it with a result.
type holdingHandler struct {
	mu      sync.Mutex
	msgs    []*sluice.Message
	refuse  []bool
	got     chan struct{}
	release chan error
}

var _ ingest.Handler = (*holdingHandler)(nil)

func (h *holdingHandler) Handle(ctx context.Context, msg *sluice.Message, refuse bool) error {
	h.mu.Lock()
	h.msgs = append(h.msgs, msg)
	h.refuse = append(h.refuse, refuse)
	h.mu.Unlock()
	h.got <- struct{}{}
	select {
	case err := <-h.release:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *holdingHandler) wait(t *testing.T) (*sluice.Message, bool) {
	t.Helper()
	select {
	case <-h.got:
	case <-time.After(10 * time.Second):
		t.Fatal("no message reached the handler")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.msgs[len(h.msgs)-1], h.refuse[len(h.refuse)-1]
}

func start(t *testing.T) (*ingest.Broker, *holdingHandler, string) {
	t.Helper()
	h := &holdingHandler{got: make(chan struct{}, 100), release: make(chan error, 100)}
	b := ingest.New(ingest.Config{Listeners: []ingest.ListenerConfig{{Name: "tcp", Address: "127.0.0.1:0", AllowAnonymous: true}}},
		h, slog.New(slog.DiscardHandler), metrics.New())
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	return b, h, b.Addr("tcp")
}

// publishAsync publishes and reports the reason code (or -1 on error).
func publishAsync(c *testsvc.Client, p *paho.Publish) <-chan int {
	rc := make(chan int, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := c.Client.Publish(ctx, p)
		switch {
		case resp != nil:
			rc <- int(resp.ReasonCode)
		case err != nil:
			rc <- -1
		default:
			rc <- 0
		}
	}()
	return rc
}

func TestPubackWaitsForTheHandler(t *testing.T) {
	_, h, addr := start(t)
	c := testsvc.MQTT(t, addr, "device-7")
	rc := publishAsync(c, &paho.Publish{Topic: "plant/a/b", QoS: 1, Payload: []byte(`{"t":1}`),
		Properties: &paho.PublishProperties{ContentType: "application/json", User: paho.UserProperties{{Key: "unit", Value: "C"}}}})
	msg, refuse := h.wait(t)
	if !refuse {
		t.Error("an MQTT 5 QoS 1 publish may be refused (quota exceeded) rather than wait")
	}
	if msg.Topic != "plant/a/b" || string(msg.Payload) != `{"t":1}` || msg.ClientID != "device-7" || msg.QoS != 1 ||
		msg.ContentType != "application/json" || len(msg.UserProperties) != 1 || msg.UserProperties[0] != (sluice.Property{Key: "unit", Value: "C"}) ||
		msg.Received.IsZero() {
		t.Fatalf("message %+v", msg)
	}
	select {
	case code := <-rc:
		t.Fatalf("PUBACK (reason %d) before the message was safe", code)
	case <-time.After(200 * time.Millisecond):
	}
	h.release <- nil
	select {
	case code := <-rc:
		if code != 0 {
			t.Fatalf("reason %#x", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no PUBACK after the ack")
	}
}

func TestFullJournalIsQuotaExceeded(t *testing.T) {
	_, h, addr := start(t)
	c := testsvc.MQTT(t, addr, "d")
	rc := publishAsync(c, &paho.Publish{Topic: "x", QoS: 1, Payload: []byte(`{}`)})
	h.wait(t)
	h.release <- sluice.ErrBusy
	if code := <-rc; code != 0x97 {
		t.Fatalf("reason %#x, want 0x97 (quota exceeded)", code)
	}
}

func TestOwnPublishesAreNotIngested(t *testing.T) {
	b, h, addr := start(t)
	sub := testsvc.MQTT(t, addr, "sub")
	sub.Subscribe(t, "alerts/#")
	if err := b.Publish("alerts/x", []byte("a"), false, 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish("alerts/end", []byte("e"), false, 1); err != nil {
		t.Fatal(err)
	}
	if got := sub.WaitFor(t, "alerts/end", 10*time.Second); len(got) != 1 || string(got[0].Payload) != "a" {
		t.Fatalf("subscriber got %v", got)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.msgs) != 0 {
		t.Fatalf("sluice's own publishes reached the pipelines: %v", h.msgs[0].Topic)
	}
}

func TestStopIngestDrainsThenRejects(t *testing.T) {
	b, h, addr := start(t)
	c := testsvc.MQTT(t, addr, "d")
	first := publishAsync(c, &paho.Publish{Topic: "t", QoS: 1, Payload: []byte("1")})
	h.wait(t)

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		stopped <- b.StopIngest(ctx)
	}()
	select {
	case <-stopped:
		t.Fatal("StopIngest returned while a publish was still waiting for its sinks")
	case <-time.After(200 * time.Millisecond):
	}
	h.release <- nil
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if code := <-first; code != 0 {
		t.Fatalf("in-flight publish: reason %#x", code)
	}

	// After StopIngest, a publish is not acknowledged (the client keeps it).
	late := publishAsync(c, &paho.Publish{Topic: "t", QoS: 1, Payload: []byte("2")})
	select {
	case code := <-late:
		t.Fatalf("publish after StopIngest acknowledged (reason %d)", code)
	case <-time.After(300 * time.Millisecond):
	}
	if len(h.got) != 0 {
		t.Fatal("publish after StopIngest reached the pipelines")
	}
}

func TestStopIngestGivesUpAtTheDeadline(t *testing.T) {
	b, h, addr := start(t)
	c := testsvc.MQTT(t, addr, "d")
	rc := publishAsync(c, &paho.Publish{Topic: "t", QoS: 1, Payload: []byte("1")})
	h.wait(t) // never released
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := b.StopIngest(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("StopIngest: %v, want the deadline", err)
	}
	select {
	case code := <-rc:
		t.Fatalf("a publish that never reached its sinks was acknowledged (reason %d)", code)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestListenerInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	b := ingest.New(ingest.Config{Listeners: []ingest.ListenerConfig{{Name: "main", Address: l.Addr().String(), AllowAnonymous: true}}},
		&holdingHandler{got: make(chan struct{}, 1), release: make(chan error)}, slog.New(slog.DiscardHandler), metrics.New())
	err = b.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), `listener "main"`) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("got %v", err)
	}
}
