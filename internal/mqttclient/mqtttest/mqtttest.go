// Package mqtttest starts a remote MQTT broker for tests: a mochi-mqtt
// server of its own on 127.0.0.1, apart from sluice's embedded broker, that
// the MQTT sink (remote mode) and the MQTT source connect to over TCP or
// TLS. It records every message published to it, can require passwords,
// can answer MQTT 5 clients the way a 3.1.1-only broker does, and can be
// stopped and started again on the same port.
package mqtttest

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Refusal is how the broker answers an MQTT 5 CONNECT.
type Refusal int

const (
	// AcceptV5 accepts MQTT 5.
	AcceptV5 Refusal = iota
	// RefuseV5AsV3 answers as a 3.1.1-only broker: a 3.1.1 CONNACK with
	// return code 0x01 (unacceptable protocol version), then closes.
	RefuseV5AsV3
	// RefuseV5 answers with an MQTT 5 CONNACK, reason 0x84 (unsupported
	// protocol version).
	RefuseV5
)

// Options configure a Broker.
type Options struct {
	// Addr is where to listen; default 127.0.0.1:0. Give a stopped
	// broker's Addr to start it again on the same port.
	Addr string
	// TLS, when set, serves TLS.
	TLS *tls.Config
	// WebSocket serves MQTT over WebSocket (ws://, or wss:// with TLS)
	// instead of plain TCP.
	WebSocket bool
	// Users, when set, are the only username/password pairs let in.
	Users map[string]string
	// V5 says how MQTT 5 clients are answered.
	V5 Refusal
	// Deny, when set, refuses publishes to the topics it returns true for
	// (an ACL: MQTT 5 publishers get reason 0x87, not authorized).
	Deny func(topic string) bool
}

// Message is a message the broker received.
type Message struct {
	Topic    string
	Payload  []byte
	QoS      byte
	ClientID string
	Props    packets.Properties
}

// Broker is a running remote broker.
type Broker struct {
	Server *mqtt.Server
	// Addr is host:port; URL is mqtt://Addr or mqtts://Addr.
	Addr string
	URL  string

	mu     sync.Mutex
	got    []Message
	notify chan struct{}
	once   sync.Once
}

// Start starts a broker, stopped when the test ends.
func Start(t testing.TB, o Options) *Broker {
	t.Helper()
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	// The address must be bound now to know the port: bind it, and hand
	// mochi a listener on the same address (SO_REUSEADDR lets a stopped
	// broker's port be taken again at once).
	ln, err := listen(o.Addr)
	if err != nil {
		t.Fatalf("mqtttest: listen on %s: %v", o.Addr, err)
	}
	addr := ln.Addr().String()
	ln.Close()

	s := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	b := &Broker{Server: s, Addr: addr, URL: "mqtt://" + addr, notify: make(chan struct{}, 1)}
	switch {
	case o.WebSocket && o.TLS != nil:
		b.URL = "wss://" + addr + "/mqtt"
	case o.WebSocket:
		b.URL = "ws://" + addr + "/mqtt"
	case o.TLS != nil:
		b.URL = "mqtts://" + addr
	}
	must(t, s.AddHook(&hook{server: s, users: o.Users, v5: o.V5, deny: o.Deny}, nil))
	must(t, s.Subscribe("#", 1, func(cl *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		b.mu.Lock()
		b.got = append(b.got, Message{Topic: pk.TopicName, Payload: bytes.Clone(pk.Payload), QoS: pk.FixedHeader.Qos, ClientID: pk.Origin, Props: pk.Properties})
		b.mu.Unlock()
		select {
		case b.notify <- struct{}{}:
		default:
		}
	}))
	lc := listeners.Config{ID: "remote", Address: addr, TLSConfig: o.TLS}
	if o.WebSocket {
		must(t, s.AddListener(listeners.NewWebsocket(lc)))
	} else {
		must(t, s.AddListener(listeners.NewTCP(lc)))
	}
	must(t, s.Serve())
	t.Cleanup(b.Stop)
	if !o.WebSocket {
		return b // mochi's TCP listener is bound by now
	}
	// Its WebSocket listener binds in the background. (Probe it only: a
	// probe of the TCP listener would race, in mochi, with Close.)
	Eventually(t, 10*time.Second, "the broker listening on "+addr, func() bool {
		var c net.Conn
		var err error
		if o.TLS != nil {
			c, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		} else {
			c, err = net.Dial("tcp", addr)
		}
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return b
}

func listen(addr string) (net.Listener, error) {
	var err error
	for range 50 { // the port of a broker just stopped may linger a moment
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, err
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("mqtttest: %v", err)
	}
}

// Stop stops the broker; its sessions are gone. Safe to call twice.
func (b *Broker) Stop() {
	b.once.Do(func() {
		// Stop accepting, and wait for the connections being set up, before
		// mochi's Close: it closes a channel those read unguarded.
		s := b.Server
		s.Listeners.CloseAll(func(id string) {
			for _, cl := range s.Clients.GetByListener(id) {
				s.DisconnectClient(cl, packets.ErrServerShuttingDown)
			}
		})
		s.Close()
	})
}

// Received returns what the broker has received so far.
func (b *Broker) Received() []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Message(nil), b.got...)
}

// WaitFor waits until the broker has received at least n messages whose
// topic keep accepts (all when keep is nil), and returns them.
func (b *Broker) WaitFor(t testing.TB, n int, keep func(Message) bool, deadline time.Duration) []Message {
	t.Helper()
	timeout := time.After(deadline)
	for {
		var got []Message
		for _, m := range b.Received() {
			if keep == nil || keep(m) {
				got = append(got, m)
			}
		}
		if len(got) >= n {
			return got
		}
		select {
		case <-b.notify:
		case <-time.After(100 * time.Millisecond):
		case <-timeout:
			t.Fatalf("mqtttest: %d of %d messages within %v", len(got), n, deadline)
		}
	}
}

// Session describes a client's session on the broker.
type Session struct {
	Connected bool
	// Protocol is 4 for MQTT 3.1.1, 5 for MQTT 5.
	Protocol byte
	// Inflight counts the QoS 1/2 messages sent to the client and not
	// acknowledged by it.
	Inflight int
}

// Session returns the session of clientID, if there is one.
func (b *Broker) Session(clientID string) (Session, bool) {
	cl, ok := b.Server.Clients.Get(clientID)
	if !ok {
		return Session{}, false
	}
	return Session{
		Connected: !cl.Closed(),
		Protocol:  cl.Properties.ProtocolVersion,
		Inflight:  cl.State.Inflight.Len(),
	}, true
}

// Eventually polls cond until it holds, failing the test after deadline.
func Eventually(t testing.TB, deadline time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("not within %v: %s", deadline, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type hook struct {
	mqtt.HookBase
	server *mqtt.Server
	users  map[string]string
	v5     Refusal
	deny   func(string) bool
}

func (h *hook) ID() string { return "mqtttest" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if cl.Properties.ProtocolVersion != 5 || h.v5 == AcceptV5 {
		return nil
	}
	if h.v5 == RefuseV5AsV3 {
		cl.Properties.ProtocolVersion = 4 // the CONNACK goes out in 3.1.1's format
	}
	if err := h.server.SendConnack(cl, packets.ErrUnsupportedProtocolVersion, false, nil); err != nil {
		return fmt.Errorf("refuse MQTT 5: %w", err)
	}
	return packets.ErrUnsupportedProtocolVersion
}

func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if h.users == nil {
		return true
	}
	pw, ok := h.users[string(pk.Connect.Username)]
	return ok && pk.Connect.PasswordFlag && pw == string(pk.Connect.Password)
}

func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	return !write || h.deny == nil || !h.deny(topic)
}
