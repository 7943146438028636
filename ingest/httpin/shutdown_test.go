package httpin_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/ingest/httpin"
)

// gate holds messages to topics under slow/ in the handler until released,
// then hands them to the service: a request that stays in flight.
type gate struct {
	next    ingest.Handler
	entered chan struct{}
	release chan struct{}
}

var _ ingest.Handler = (*gate)(nil)

func (g *gate) Handle(ctx context.Context, msg *sluice.Message, refuse bool) error {
	if strings.HasPrefix(msg.Topic, "slow/") {
		g.entered <- struct{}{}
		select {
		case <-g.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.next.Handle(ctx, msg, refuse)
}

func newGate() (*gate, func(ingest.Handler) ingest.Handler) {
	g := &gate{entered: make(chan struct{}, 1), release: make(chan struct{})}
	return g, func(h ingest.Handler) ingest.Handler { g.next = h; return g }
}

// nopHandler accepts everything, for tests that publish nothing.
type nopHandler struct{}

var _ ingest.Handler = nopHandler{}

func (nopHandler) Handle(context.Context, *sluice.Message, bool) error { return nil }

// TestShutdownFinishesInFlight: Close stops accepting connections and
// takes no new request, while the request in flight finishes with 202 and
// its message reaches the sink.
func TestShutdownFinishesInFlight(t *testing.T) {
	g, wrap := newGate()
	e := startEnv(t, envOptions{cfg: httpin.Config{AllowAnonymous: true, Tokens: []httpin.Token{}}, wrap: wrap})
	addr := e.src.Addr()

	inflight := make(chan response, 1)
	go func() {
		r, err := send(e.client, "POST", e.base+"/v1/publish/slow/a", "", []byte("t=1"))
		if err != nil {
			r.raw = err.Error()
		}
		inflight <- r
	}()
	<-g.entered

	// A connection accepted before Close, with no request yet: Close
	// leaves it open (for a while). A request it sends then is not taken:
	// net/http closes a connection whose request it reads while shutting
	// down, without an answer; one that reached the handler just before
	// is answered 503. Either way, no 202: the client sends it again.
	early, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	waitFor(t, "the early connection to be accepted", func() bool { return e.metric("sluice_broker_connections", "listener", "http") >= 2 })

	closed := make(chan error, 1)
	go func() { closed <- e.src.Close(context.Background()) }()
	waitFor(t, "the listener to close", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})

	early.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := early.Write([]byte("POST /v1/publish/late HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")); err != nil {
		t.Logf("the early connection was closed: %v", err)
	} else if resp, err := http.ReadResponse(bufio.NewReader(early), nil); err != nil {
		t.Logf("the early connection was closed: %v", err)
	} else if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a request during shutdown: %d, want 503 with Retry-After", resp.StatusCode)
	}

	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) with a request in flight", err)
	default:
	}
	close(g.release)
	if r := <-inflight; r.status != 202 {
		t.Fatalf("the request in flight: %d %s, want 202", r.status, r.raw)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	e.waitRecord(t, "slow/a")
	if err := e.src.Close(context.Background()); err != nil {
		t.Fatalf("Close again: %v", err)
	}
}

// TestShutdownGivesUp: when Close's context ends first, the request in
// flight is cancelled (no 202: its client sends it again) and Close says so.
func TestShutdownGivesUp(t *testing.T) {
	g, wrap := newGate()
	e := startEnv(t, envOptions{cfg: httpin.Config{AllowAnonymous: true, Tokens: []httpin.Token{}}, wrap: wrap})
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", e.base+"/v1/publish/slow/b", strings.NewReader("t=1"))
		resp, err := e.client.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	<-g.entered
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := e.src.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v, want the deadline exceeded", err)
	}
	if status := <-done; status == 202 {
		t.Fatal("a cancelled request was answered 202")
	}
	if n := e.messages(t); n != 0 {
		t.Fatalf("the pipeline took %d messages", n)
	}
}

// TestMaxInflight: beyond max_inflight requests at once, a request is
// answered 429 at once.
func TestMaxInflight(t *testing.T) {
	g, wrap := newGate()
	e := startEnv(t, envOptions{cfg: httpin.Config{AllowAnonymous: true, Tokens: []httpin.Token{}, MaxInflight: 1}, wrap: wrap})
	first := make(chan response, 1)
	go func() {
		r, err := send(e.client, "POST", e.base+"/v1/publish/slow/c", "", []byte("t=1"))
		if err != nil {
			r.raw = err.Error()
		}
		first <- r
	}()
	<-g.entered
	r := e.do(t, "POST", "/v1/publish/fast/c", "", []byte("t=1"))
	if r.status != 429 || r.header.Get("Retry-After") != "1" || !strings.Contains(r.errorText(), "max_inflight") {
		t.Fatalf("a second request: %d %s, want 429", r.status, r.raw)
	}
	close(g.release)
	if r := <-first; r.status != 202 {
		t.Fatalf("the first request: %d %s", r.status, r.raw)
	}
	if r := e.do(t, "POST", "/v1/publish/fast/c", "", []byte("t=1")); r.status != 202 {
		t.Fatalf("after the first: %d %s", r.status, r.raw)
	}
	if got := e.metric("sluice_broker_connections_refused_total", "listener", "http", "reason", "limit"); got != 1 {
		t.Errorf("refused{reason=limit} = %v, want 1", got)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
