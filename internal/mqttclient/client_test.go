package mqttclient_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/mqttclient"
	"github.com/sluicehq/sluice/internal/mqttclient/mqtttest"
	"github.com/sluicehq/sluice/internal/secret"
	"github.com/sluicehq/sluice/internal/secret/secrettest"
)

const wait = 60 * time.Second // generous: the machine is shared

func start(t *testing.T, cfg mqttclient.Config, o mqttclient.Options) *mqttclient.Client {
	t.Helper()
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c, err := mqttclient.New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// inbox collects what a subscribing client receives, acknowledging it
// unless reject says otherwise.
type inbox struct {
	mu     sync.Mutex
	got    []*mqttclient.Message
	reject func(*mqttclient.Message) bool
}

func (b *inbox) take(m *mqttclient.Message) {
	if b.reject != nil && b.reject(m) {
		m.Reject(errors.New("not now"))
		return
	}
	b.mu.Lock()
	b.got = append(b.got, m)
	b.mu.Unlock()
	m.Ack()
}

func (b *inbox) payloads() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, m := range b.got {
		out = append(out, string(m.Payload))
	}
	return out
}

func outgoing(topic string, from, to int, qos byte) []*mqttclient.Outgoing {
	var out []*mqttclient.Outgoing
	for i := from; i < to; i++ {
		out = append(out, &mqttclient.Outgoing{Topic: topic, Payload: fmt.Appendf(nil, "%s#%d", topic, i), QoS: qos})
	}
	return out
}

func names(msgs []*mqttclient.Outgoing) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, string(m.Payload))
	}
	return out
}

// TestTransportsAndProtocols publishes through one client and receives
// through another, over TCP, TLS, WebSocket and WebSocket over TLS, in MQTT
// 5 and 3.1.1: every message arrives, in order, and is acknowledged.
func TestTransportsAndProtocols(t *testing.T) {
	ca := secrettest.NewCA(t, "remote")
	cert := ca.Server(t, "127.0.0.1")
	serverTLS := &tls.Config{Certificates: []tls.Certificate{cert.TLS}, MinVersion: tls.VersionTLS12}
	for _, tr := range []struct {
		name string
		o    mqtttest.Options
	}{
		{"tcp", mqtttest.Options{}},
		{"tls", mqtttest.Options{TLS: serverTLS}},
		{"ws", mqtttest.Options{WebSocket: true}},
		{"wss", mqtttest.Options{WebSocket: true, TLS: serverTLS}},
	} {
		for _, proto := range []string{mqttclient.Protocol5, mqttclient.Protocol311} {
			t.Run(tr.name+"/"+proto, func(t *testing.T) {
				r := mqtttest.Start(t, tr.o)
				base := mqttclient.Config{URL: r.URL, Protocol: proto}
				if tr.o.TLS != nil {
					base.TLS = &secret.TLS{CAFile: ca.CertFile}
				}
				in := &inbox{}
				sub := base
				sub.ClientID = "sub"
				start(t, sub, mqttclient.Options{Subscriptions: []mqttclient.Subscription{{Filter: "t/#", QoS: 2}}, OnMessage: in.take})
				pub := base
				pub.ClientID = "pub"
				p := start(t, pub, mqttclient.Options{})

				msgs := append(outgoing("t/a", 0, 20, 1), outgoing("t/b", 0, 10, 2)...)
				for i, err := range p.Publish(context.Background(), msgs) {
					if err != nil {
						t.Errorf("publish %s: %v", msgs[i].Payload, err)
					}
				}
				mqtttest.Eventually(t, wait, "every message received", func() bool { return len(in.payloads()) == len(msgs) })
				var gotA, gotB []string
				for _, p := range in.payloads() {
					if strings.HasPrefix(p, "t/a") {
						gotA = append(gotA, p)
					} else {
						gotB = append(gotB, p)
					}
				}
				if !slices.Equal(gotA, names(msgs[:20])) || !slices.Equal(gotB, names(msgs[20:])) {
					t.Errorf("received out of order:\n%q\n%q", gotA, gotB)
				}
				mqtttest.Eventually(t, wait, "all acknowledged", func() bool {
					s, ok := r.Session("sub")
					return ok && s.Inflight == 0
				})
				if s, _ := r.Session("pub"); (proto == mqttclient.Protocol5) != (s.Protocol == 5) {
					t.Errorf("publisher connected with protocol %d", s.Protocol)
				}
			})
		}
	}
}

// TestRejectRedelivers rejects a message once: it is not acknowledged, the
// connection is dropped, and the remote sends it (and those after it) again.
func TestRejectRedelivers(t *testing.T) {
	for _, proto := range []string{mqttclient.Protocol5, mqttclient.Protocol311} {
		t.Run(proto, func(t *testing.T) {
			r := mqtttest.Start(t, mqtttest.Options{})
			var once sync.Once
			in := &inbox{reject: func(m *mqttclient.Message) bool {
				rejected := false
				if string(m.Payload) == "t/a#3" {
					once.Do(func() { rejected = true })
				}
				return rejected
			}}
			start(t, mqttclient.Config{URL: r.URL, ClientID: "sub", Protocol: proto, Reconnect: mqttclient.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}},
				mqttclient.Options{Subscriptions: []mqttclient.Subscription{{Filter: "t/#", QoS: 1}}, OnMessage: in.take})
			for i := range 10 {
				if err := r.Server.Publish("t/a", fmt.Appendf(nil, "t/a#%d", i), false, 1); err != nil {
					t.Fatal(err)
				}
			}
			mqtttest.Eventually(t, wait, "every message taken", func() bool {
				got := map[string]bool{}
				for _, p := range in.payloads() {
					got[p] = true
				}
				return len(got) == 10
			})
			mqtttest.Eventually(t, wait, "all acknowledged", func() bool {
				s, ok := r.Session("sub")
				return ok && s.Connected && s.Inflight == 0
			})
		})
	}
}

// TestPublishFailures: a topic the remote refuses fails for good, without
// holding up the rest; without a connection everything fails and can be
// retried.
func TestPublishFailures(t *testing.T) {
	r := mqtttest.Start(t, mqtttest.Options{Deny: func(topic string) bool { return topic == "secret/x" }})
	p := start(t, mqttclient.Config{URL: r.URL, ClientID: "pub", ConnectTimeout: time.Second,
		Reconnect: mqttclient.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}}, mqttclient.Options{})
	msgs := []*mqttclient.Outgoing{
		{Topic: "ok/x", Payload: []byte("1"), QoS: 1},
		{Topic: "secret/x", Payload: []byte("2"), QoS: 1},
		{Topic: "ok/x", Payload: []byte("3"), QoS: 1},
		{Topic: "secret/x", Payload: []byte("4"), QoS: 1},
	}
	errs := p.Publish(context.Background(), msgs)
	if errs[0] != nil || errs[2] != nil {
		t.Errorf("allowed topic failed: %v, %v", errs[0], errs[2])
	}
	for _, i := range []int{1, 3} {
		if !mqttclient.IsPermanent(errs[i]) || !strings.Contains(fmt.Sprint(errs[i]), "not authorized") {
			t.Errorf("denied topic: %v, want a permanent 'not authorized'", errs[i])
		}
	}

	r.Stop()
	mqtttest.Eventually(t, wait, "publishing failing as not connected", func() bool {
		err := p.Publish(context.Background(), msgs[:1])[0]
		if err == nil || mqttclient.IsPermanent(err) {
			t.Fatalf("publish with the remote down: %v, want a retryable error", err)
		}
		return errors.Is(err, mqttclient.ErrNotConnected)
	})
	r2 := mqtttest.Start(t, mqtttest.Options{Addr: r.Addr})
	mqtttest.Eventually(t, wait, "publishing again once the remote is back", func() bool {
		return p.Publish(context.Background(), msgs[:1])[0] == nil
	})
	if got := r2.WaitFor(t, 1, func(m mqtttest.Message) bool { return m.Topic == "ok/x" }, wait); string(got[0].Payload) != "1" {
		t.Errorf("remote received %q", got[0].Payload)
	}
}
