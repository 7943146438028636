package ingest

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"

	"github.com/sluicehq/sluice/internal/testsvc"
)

func stateKey(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// gate lets every client in and refuses the filter "#" (no one may
// subscribe to everything), though it lets any topic be delivered.
type gate struct{ mqtt.HookBase }

func (g *gate) ID() string { return "test-gate" }
func (g *gate) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}
func (g *gate) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (g *gate) OnACLCheck(_ *mqtt.Client, topic string, write bool) bool {
	return write || topic != "#"
}

// serve starts a mochi server on 127.0.0.1:0 with the state store at path
// and returns it, its address and a function that closes it (it is closed
// when the test ends, if not before).
func serve(t *testing.T, path string, key []byte) (*mqtt.Server, string, func() error) {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(&gate{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddHook(newStateStore(path, key, nil), nil); err != nil {
		t.Fatal(err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: "127.0.0.1:0"})
	if err := srv.AddListener(tcp); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	stop := sync.OnceValue(srv.Close)
	t.Cleanup(func() { stop() })
	return srv, tcp.Address(), stop
}

// inbox collects what a client receives.
type inbox struct {
	mu  sync.Mutex
	got []*paho.Publish
}

func (in *inbox) add(pr paho.PublishReceived) (bool, error) {
	in.mu.Lock()
	in.got = append(in.got, pr.Packet)
	in.mu.Unlock()
	return true, nil
}

// wait waits for n messages and returns them as "topic payload".
func (in *inbox) wait(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		in.mu.Lock()
		if len(in.got) >= n {
			var out []string
			for _, p := range in.got {
				out = append(out, p.Topic+" "+string(p.Payload))
			}
			in.mu.Unlock()
			return out
		}
		in.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	t.Fatalf("received %d messages, want %d", len(in.got), n)
	return nil
}

// waitFor waits for a message on topic and returns the messages received
// before it, as "topic payload".
func (in *inbox) waitFor(t *testing.T, topic string) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		in.mu.Lock()
		for i, p := range in.got {
			if p.Topic == topic {
				var before []string
				for _, q := range in.got[:i] {
					before = append(before, q.Topic+" "+string(q.Payload))
				}
				in.mu.Unlock()
				return before
			}
		}
		in.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("nothing on %q", topic)
	return nil
}

// persistent connects an MQTT 5 client whose session outlives the
// connection by an hour, and reports whether the broker had its session.
func persistent(t *testing.T, addr, id string, in *inbox) (*paho.Client, bool) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: id,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){in.add}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	expiry := uint32(3600)
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: false,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	return c, ca.SessionPresent
}

// TestStateSurvivesRestart: a subscriber with a persistent session
// subscribes and goes away; messages are published for it and a message
// retained; the broker stops and starts again on the same file. The
// subscriber gets its messages, the retained message is still there, and a
// subscription the broker refused stays refused. With a key, the file
// shows none of the payloads, topics or client ids.
func TestStateSurvivesRestart(t *testing.T) {
	for _, tt := range []struct {
		name string
		key  []byte
	}{{"plain", nil}, {"encrypted", stateKey(7)}} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "broker.db")
			srv, addr, stop := serve(t, path, tt.key)

			const id = "dashboard-7f3a"
			c, _ := persistent(t, addr, id, &inbox{})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
				{Topic: "status/#", QoS: 1}, {Topic: "#", QoS: 1}}})
			if sa == nil { // paho also returns an error when one filter was refused
				t.Fatal(err)
			}
			if sa.Reasons[0] != 1 || sa.Reasons[1] < 0x80 {
				t.Fatalf("subscribe reasons %v, want status/# granted and # refused", sa.Reasons)
			}
			c.Disconnect(&paho.Disconnect{})
			time.Sleep(50 * time.Millisecond) // let the broker see the client go

			for i := range 3 {
				must(t, srv.Publish("status/line1", fmt.Appendf(nil, "queued-payload-%d", i), false, 1))
			}
			must(t, srv.Publish("config/line1", []byte("retained-setpoint-90"), true, 1))
			must(t, stop())

			file, err := os.ReadFile(path)
			must(t, err)
			// Payloads are base64 in mochi's JSON: look for both forms.
			for _, s := range []string{"queued-payload-0", "retained-setpoint-90", "status/line1", "config/line1", id} {
				raw := bytes.Contains(file, []byte(s))
				b64 := bytes.Contains(file, []byte(base64.StdEncoding.EncodeToString([]byte(s))))
				if found := raw || b64; found != (tt.key == nil) {
					t.Fatalf("%q in the file: %v", s, found)
				}
			}

			srv, addr, _ = serve(t, path, tt.key)
			in := &inbox{}
			_, present := persistent(t, addr, id, in)
			if !present {
				t.Fatal("session not present after the restart")
			}
			// The queued messages are sent again as the client connects;
			// what is published now may overtake them.
			got := in.wait(t, 3)
			sort.Strings(got) // mochi's resend order within a second is arbitrary
			if want := []string{"status/line1 queued-payload-0", "status/line1 queued-payload-1", "status/line1 queued-payload-2"}; !slices.Equal(got, want) {
				t.Fatalf("after the restart got %q, want %q", got, want)
			}
			// The subscription the broker refused was not restored.
			must(t, srv.Publish("other/x", []byte("must not arrive"), false, 1))
			must(t, srv.Publish("status/end", []byte("end"), false, 1))
			if got := in.waitFor(t, "status/end"); len(got) != 3 {
				t.Fatalf("after the restart got %q", got)
			}

			late := testsvc.MQTT(t, addr, "late")
			late.Subscribe(t, "config/#")
			if got := late.WaitFor(t, "config/line1", 10*time.Second); len(got) != 0 {
				t.Fatalf("before the retained message: %v", got)
			}
			if r := late.Received(); string(r[0].Payload) != "retained-setpoint-90" || !r[0].Retain {
				t.Fatalf("retained after restart: %q retain %v", r[0].Payload, r[0].Retain)
			}
		})
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// openStore opens the state store at path as AddHook would.
func openStore(t testing.TB, path string, key []byte) (*stateStore, error) {
	t.Helper()
	h := newStateStore(path, key, nil)
	if err := h.Init(nil); err != nil {
		return nil, err
	}
	t.Cleanup(func() { h.Stop() })
	return h, nil
}

func TestStateKeyMismatch(t *testing.T) {
	dir := t.TempDir()
	encrypted, plain := filepath.Join(dir, "encrypted.db"), filepath.Join(dir, "plain.db")
	for path, key := range map[string][]byte{encrypted: stateKey(1), plain: nil} {
		h, err := openStore(t, path, key)
		must(t, err)
		h.OnRetainMessage(mqtt.New(nil).NewClient(nil, "t", "c", false), packets.Packet{TopicName: "a", Payload: []byte("x")}, 1)
		must(t, h.Stop())
	}
	tests := []struct {
		name, path string
		key        []byte
		says       string
	}{
		{"wrong key", encrypted, stateKey(2), "another key"},
		{"no key", encrypted, nil, "encrypted"},
		{"key for a plain file", plain, stateKey(1), "not encrypted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
			err := srv.AddHook(newStateStore(tt.path, tt.key, nil), nil)
			if !errors.Is(err, errStateKey) || !strings.Contains(err.Error(), tt.says) || !strings.Contains(err.Error(), tt.path) {
				t.Fatalf("AddHook: %v", err)
			}
		})
	}
	// The right key still opens it: a failed open changed nothing.
	h, err := openStore(t, encrypted, stateKey(1))
	must(t, err)
	if msgs, err := h.StoredRetainedMessages(); err != nil || len(msgs) != 1 || string(msgs[0].Payload) != "x" {
		t.Fatalf("retained %v, %v", msgs, err)
	}
}

// client returns a client with a session that outlives its connection
// (MQTT 5, expiry 3600), or an ephemeral one.
func client(srv *mqtt.Server, id string, ephemeral bool) *mqtt.Client {
	cl := srv.NewClient(nil, "tcp", id, false)
	cl.Properties.ProtocolVersion = 5
	if !ephemeral {
		cl.Properties.Props.SessionExpiryInterval = 3600
		cl.Properties.Props.SessionExpiryIntervalFlag = true
	}
	return cl
}

func publish(id uint16, topic string) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: id, TopicName: topic, Payload: []byte("p")}
}

// An ended session leaves nothing behind; only what a restart would use is
// written.
func TestStateKeepsOnlyLiveSessions(t *testing.T) {
	for _, key := range [][]byte{nil, stateKey(3)} {
		t.Run(fmt.Sprintf("key=%v", key != nil), func(t *testing.T) {
			h, err := openStore(t, filepath.Join(t.TempDir(), "broker.db"), key)
			must(t, err)
			srv := mqtt.New(nil)
			// "a:b" shares the plain-key prefix "SUB_a:" with "a".
			a, ab, eph := client(srv, "a", false), client(srv, "a:b", false), client(srv, "e", true)
			for _, cl := range []*mqtt.Client{a, ab, eph} {
				h.OnSessionEstablished(cl, packets.Packet{})
				h.OnSubscribed(cl, packets.Packet{Filters: packets.Subscriptions{{Filter: "x/#"}, {Filter: "secret/#"}}}, []byte{1, 0x87})
				h.OnQosPublish(cl, publish(7, "x/1"), 0, 0)
			}
			h.OnQosPublish(a, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 9}, 0, 0)

			clients, subs, inflight := stored(t, h)
			if clients != "a a:b" || subs != "a x/# a:b x/#" || inflight != "a 7 a:b 7" {
				t.Fatalf("stored clients %q, subscriptions %q, in flight %q", clients, subs, inflight)
			}
			// A restored session expires as its client asked (mochi's
			// bolt hook drops the flag: the broker's maximum applies).
			cs, err := h.StoredClients()
			must(t, err)
			for _, c := range cs {
				if c.ID == "a" && (!c.Properties.SessionExpiryIntervalFlag || c.Properties.SessionExpiryInterval != 3600) {
					t.Fatalf("session expiry not kept: %+v", c.Properties)
				}
			}
			h.OnClientExpired(a)
			h.OnDisconnect(eph, nil, true)
			if clients, subs, inflight := stored(t, h); clients != "a:b" || subs != "a:b x/#" || inflight != "a:b 7" {
				t.Fatalf("after a expired and e disconnected: clients %q, subscriptions %q, in flight %q", clients, subs, inflight)
			}
			// The PUBACK of a QoS 1 message a:b publishes with the id of
			// the one in flight to it does not end that one.
			ab.State.Inflight.Set(publish(7, "x/1"))
			h.OnQosComplete(ab, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 7})
			if _, _, inflight := stored(t, h); inflight != "a:b 7" {
				t.Fatalf("after a:b's own publish with id 7: in flight %q", inflight)
			}
			ab.State.Inflight.Delete(7) // the client acknowledges it
			h.OnQosComplete(ab, publish(7, "x/1"))
			h.OnUnsubscribed(ab, packets.Packet{Filters: packets.Subscriptions{{Filter: "x/#"}}})
			if _, subs, inflight := stored(t, h); subs != "" || inflight != "" {
				t.Fatalf("subscriptions %q, in flight %q", subs, inflight)
			}
			// The same client id connecting for an ephemeral session ends
			// what its persistent one left.
			again := client(srv, "a:b", true)
			h.OnSessionEstablished(again, packets.Packet{})
			h.OnSubscribed(again, packets.Packet{Filters: packets.Subscriptions{{Filter: "y/#"}}}, []byte{1})
			if clients, subs, inflight := stored(t, h); clients != "" || subs != "" || inflight != "" {
				t.Fatalf("after an ephemeral session of a:b: clients %q, subscriptions %q, in flight %q", clients, subs, inflight)
			}
		})
	}
}

// stored lists what h holds, sorted: client ids; "client filter"; "client
// packet-id".
func stored(t *testing.T, h *stateStore) (clients, subs, inflight string) {
	t.Helper()
	cs, err := h.StoredClients()
	must(t, err)
	ss, err := h.StoredSubscriptions()
	must(t, err)
	ms, err := h.StoredInflightMessages()
	must(t, err)
	var c, s, m []string
	for _, x := range cs {
		c = append(c, x.ID)
	}
	for _, x := range ss {
		s = append(s, x.Client+" "+x.Filter)
	}
	for _, x := range ms {
		m = append(m, fmt.Sprint(x.Client, " ", x.PacketID))
	}
	sort.Strings(c)
	sort.Strings(s)
	sort.Strings(m)
	return strings.Join(c, " "), strings.Join(s, " "), strings.Join(m, " ")
}

// A value moved to another key, or altered, fails the load.
func TestStateTampered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broker.db")
	h, err := openStore(t, path, stateKey(4))
	must(t, err)
	inline := mqtt.New(nil).NewClient(nil, "t", "inline", true)
	h.OnRetainMessage(inline, packets.Packet{TopicName: "a", Payload: []byte("on a")}, 1)
	h.OnRetainMessage(inline, packets.Packet{TopicName: "b", Payload: []byte("on b")}, 1)
	ka, kb := h.retainedKey("a"), h.retainedKey("b")
	must(t, h.Stop())

	for _, tt := range []struct {
		name   string
		change func(b *bbolt.Bucket) error
	}{
		{"swapped", func(b *bbolt.Bucket) error {
			va, vb := bytes.Clone(b.Get(ka)), bytes.Clone(b.Get(kb))
			return errors.Join(b.Put(ka, vb), b.Put(kb, va))
		}},
		{"flipped", func(b *bbolt.Bucket) error {
			v := bytes.Clone(b.Get(ka))
			v[len(v)-20] ^= 1
			return b.Put(ka, v)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "broker.db")
			b, _ := os.ReadFile(path)
			must(t, os.WriteFile(p, b, 0o600))
			db, err := bbolt.Open(p, 0o600, nil)
			must(t, err)
			must(t, db.Update(func(tx *bbolt.Tx) error { return tt.change(tx.Bucket([]byte(stateBucket))) }))
			must(t, db.Close())
			h, err := openStore(t, p, stateKey(4))
			must(t, err)
			if msgs, err := h.StoredRetainedMessages(); err == nil || !strings.Contains(err.Error(), "fails authentication") {
				t.Fatalf("loaded %d retained messages, %v", len(msgs), err)
			}
		})
	}
}

// A file mochi's bolt hook wrote (an earlier sluice) carries over: the
// packet ids it dropped are restored from the keys, and the subscription it
// stored although the broker refused it is not restored.
func TestStateReadsMochiBoltFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broker.db")
	old := &bolt.Hook{}
	old.SetOpts(slog.New(slog.DiscardHandler), nil)
	must(t, old.Init(&bolt.Options{Path: path}))
	srv := mqtt.New(nil)
	cl := client(srv, "dev", false)
	old.OnSessionEstablished(cl, packets.Packet{})
	old.OnSubscribed(cl, packets.Packet{Filters: packets.Subscriptions{{Filter: "x/#"}, {Filter: "secret/#"}}}, []byte{1, 0x87})
	old.OnQosPublish(cl, publish(42, "x/1"), 0, 0)
	must(t, old.Stop())

	if _, err := openStore(t, path, stateKey(1)); !errors.Is(err, errStateKey) {
		t.Fatalf("opened a plain file with a key: %v", err)
	}
	h, err := openStore(t, path, nil)
	must(t, err)
	if clients, subs, inflight := stored(t, h); clients != "dev" || subs != "dev x/#" || inflight != "dev 42" {
		t.Fatalf("clients %q, subscriptions %q, in flight %q", clients, subs, inflight)
	}
	h.OnQosComplete(cl, publish(42, "x/1")) // mochi's key, found and removed
	if _, _, inflight := stored(t, h); inflight != "" {
		t.Fatalf("in flight %q", inflight)
	}
}

// BenchmarkState measures what the store costs per QoS 1 message:
// "deliver", one in flight to a persistent session, stored then removed
// on its PUBACK; "ingest", one a device publishes, for which mochi records
// its PUBACK in flight and removes it at once. "mochi-bolt" is mochi's bolt
// hook, for comparison.
func BenchmarkState(b *testing.B) {
	type hook interface {
		OnQosPublish(*mqtt.Client, packets.Packet, int64, int)
		OnQosComplete(*mqtt.Client, packets.Packet)
	}
	stores := []struct {
		name string
		open func(b *testing.B) hook
	}{
		{"plain", func(b *testing.B) hook {
			h, err := openStore(b, filepath.Join(b.TempDir(), "broker.db"), nil)
			must(b, err)
			return h
		}},
		{"key", func(b *testing.B) hook {
			h, err := openStore(b, filepath.Join(b.TempDir(), "broker.db"), stateKey(1))
			must(b, err)
			return h
		}},
		{"mochi-bolt", func(b *testing.B) hook {
			h := &bolt.Hook{}
			h.SetOpts(slog.New(slog.DiscardHandler), nil)
			must(b, h.Init(&bolt.Options{Path: filepath.Join(b.TempDir(), "broker.db"), Options: &bbolt.Options{NoSync: true}}))
			b.Cleanup(func() { h.Stop() })
			return h
		}},
	}
	deliver := publish(1, "plant/site/line/device/telemetry")
	deliver.Payload = bytes.Repeat([]byte("x"), 256)
	ingest := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 1}
	for _, flow := range []struct {
		name string
		pk   packets.Packet
	}{{"deliver", deliver}, {"ingest", ingest}} {
		for _, st := range stores {
			b.Run(flow.name+"/"+st.name, func(b *testing.B) {
				h := st.open(b)
				cl := client(mqtt.New(nil), "dashboard", false)
				pk := flow.pk
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					pk.PacketID = uint16(i%60000 + 1)
					h.OnQosPublish(cl, pk, 0, 0)
					h.OnQosComplete(cl, pk)
				}
			})
		}
	}
}

// TestStateKeepsANewerSessionOfTheSameID: a client ends a clean session
// and at once connects again with a persistent one; the hooks of the new
// connection may run before the end of the old one. The persistent
// session stored must stay (the old connection's end removed it).
func TestStateKeepsANewerSessionOfTheSameID(t *testing.T) {
	h, err := openStore(t, filepath.Join(t.TempDir(), "broker.db"), nil)
	must(t, err)
	srv := mqtt.New(nil)
	old, now := client(srv, "dev", true), client(srv, "dev", false)
	srv.Clients.Add(now)
	h.current = srv.Clients.Get
	h.OnSessionEstablished(old, packets.Packet{})
	h.OnSessionEstablished(now, packets.Packet{})
	h.OnSubscribed(now, packets.Packet{Filters: packets.Subscriptions{{Filter: "cmd/#"}}}, []byte{1})
	h.OnDisconnect(old, nil, true)
	if clients, subs, _ := stored(t, h); clients != "dev" || subs != "dev cmd/#" {
		t.Fatalf("after the old connection ended: stored clients %q, subscriptions %q; want the new session", clients, subs)
	}
	// The new connection's own end (clean) removes it.
	srv.Clients.Delete("dev")
	h.OnDisconnect(now, nil, true)
	if clients, _, _ := stored(t, h); clients != "" {
		t.Fatalf("after the session ended: stored clients %q", clients)
	}
}
