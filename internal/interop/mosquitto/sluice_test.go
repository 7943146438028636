package mosquitto_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

// Sluice is a sluice service run from a sluice.yaml in the test's folder.
type Sluice struct {
	*pipelines.Service
	// Out is the file a config's file sink writes to ({out} in the config).
	Out     string
	Metrics *metrics.Metrics
	logs    *testsvc.LogBuffer
}

// startSluice writes config to sluice.yaml, with {data_dir} and {out}
// replaced by folders of the test's own, and runs it (pipelines.Load, New,
// Start), until the test ends. Its log is shown if the test failed.
func startSluice(t *testing.T, name, config string) *Sluice {
	t.Helper()
	return startSluiceIn(t, t.TempDir(), name, config)
}

// startSluiceIn is startSluice in dir: a sluice started again in the same
// dir finds its journal, and appends to the same file sink.
func startSluiceIn(t *testing.T, dir, name, config string) *Sluice {
	t.Helper()
	s := &Sluice{Out: filepath.Join(dir, "out.jsonl"), Metrics: metrics.New(), logs: &testsvc.LogBuffer{}}
	config = strings.NewReplacer("{data_dir}", filepath.Join(dir, "data"), "{out}", s.Out).Replace(config)
	path := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := pipelines.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelInfo})).With("sluice", name)
	svc, err := pipelines.New(cfg, pipelines.Options{Logger: log, Metrics: s.Metrics})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	s.Service = svc
	t.Cleanup(func() {
		s.Close(t)
		if t.Failed() {
			t.Logf("sluice %s log:\n%s", name, s.logs)
		}
	})
	return s
}

// Close stops sluice (it may be called again).
func (s *Sluice) Close(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := s.Service.Close(ctx); err != nil {
		t.Errorf("sluice: close: %v", err)
	}
}

// Logs is what sluice has logged so far.
func (s *Sluice) Logs() string { return s.logs.String() }

// Lines returns the lines the file sink has written so far.
func (s *Sluice) Lines() []string {
	data, err := os.ReadFile(s.Out)
	if err != nil || len(data) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

// WaitLines waits until the file sink has written at least n lines.
func (s *Sluice) WaitLines(t *testing.T, n int) []string {
	t.Helper()
	eventually(t, fmt.Sprintf("%d lines in the file sink", n), func() bool { return len(s.Lines()) >= n })
	return s.Lines()
}

// WaitCaughtUp waits until every pipeline's sinks have written all the
// journal holds.
func (s *Sluice) WaitCaughtUp(t *testing.T) {
	t.Helper()
	eventually(t, "sluice's sinks caught up with the journal", s.CaughtUp)
}

// eventually polls cond until it holds, failing the test after wait.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("not within %v: %s", wait, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// reading is the payload every device publishes: which device, and the
// how-manieth of its messages.
type reading struct {
	Dev string `json:"dev"`
	Seq int    `json:"seq"`
}

func (r reading) payload() []byte { return fmt.Appendf(nil, `{"dev":%q,"seq":%d}`, r.Dev, r.Seq) }

func parse(t *testing.T, payload string) reading {
	t.Helper()
	var r reading
	if err := json.Unmarshal([]byte(payload), &r); err != nil || r.Dev == "" {
		t.Fatalf("not a reading: %q (%v)", payload, err)
	}
	return r
}

// stream is what devices publish: for each device, its topic and n
// readings, seq 0 to n-1.
type stream struct {
	devices []string
	n       int
	// qos are the QoS devices publish at, in turn (device i at
	// qos[i%len(qos)]); default 1.
	qos []byte
}

func (s stream) qosOf(i int) byte {
	if len(s.qos) == 0 {
		return 1
	}
	return s.qos[i%len(s.qos)]
}

func (s stream) topic(dev string) string { return "plant/north/" + dev + "/telemetry" }
func (s stream) total() int              { return len(s.devices) * s.n }

// publish publishes the stream, interleaving the devices, each from its
// own client connected to addr (with user and password, when given);
// each publish must be acknowledged with success.
func (s stream) publish(t *testing.T, addr, user, password string) {
	t.Helper()
	s.publishRange(t, addr, user, password, 0, s.n)
}

// publishRange publishes the readings from seq from to seq to (excluded),
// from clients that disconnect when done.
func (s stream) publishRange(t *testing.T, addr, user, password string, from, to int) {
	t.Helper()
	clients := make([]*testsvc.Client, len(s.devices))
	for i, dev := range s.devices {
		clients[i] = connect(t, testsvc.MQTTOptions{Addr: addr, ClientID: dev, Username: user, Password: password})
	}
	for seq := from; seq < to; seq++ {
		for i, dev := range s.devices {
			if rc := clients[i].Publish(t, s.topic(dev), s.qosOf(i), reading{dev, seq}.payload()); rc != 0 {
				t.Fatalf("%s: publish %d: reason 0x%02x", dev, seq, rc)
			}
		}
	}
	for _, c := range clients {
		c.Disconnect(&paho.Disconnect{})
	}
}

// accountFor checks that payloads hold every reading of each device dev,
// seq 0 to want[dev]-1, at least once, and that their first arrivals are
// in order. It returns how many came more than once, and how many never.
func accountFor(t *testing.T, what string, payloads []string, want map[string]int) (dups, lost int) {
	t.Helper()
	next := map[string]int{}
	seen := map[reading]bool{}
	for _, p := range payloads {
		r := parse(t, p)
		switch {
		case seen[r]:
			dups++
		case r.Seq != next[r.Dev]:
			t.Errorf("%s: %s seq %d arrived first where %d was due", what, r.Dev, r.Seq, next[r.Dev])
			var seqs []int
			for _, p := range payloads {
				if q := parse(t, p); q.Dev == r.Dev {
					seqs = append(seqs, q.Seq)
				}
			}
			t.Logf("%s: %s arrived in the order %v", what, r.Dev, seqs)
			return dups, lost
		default:
			seen[r] = true
			next[r.Dev]++
		}
	}
	for dev, n := range want {
		if next[dev] != n {
			lost += n - next[dev]
			t.Errorf("%s: %d of %s's %d messages arrived", what, next[dev], dev, n)
		}
	}
	return dups, lost
}

// distinct counts the different payloads.
func distinct(payloads []string) int {
	set := map[string]bool{}
	for _, p := range payloads {
		set[p] = true
	}
	return len(set)
}

// checkExactlyOnce checks that payloads are the stream's messages, each
// once, in order per device.
func (s stream) checkExactlyOnce(t *testing.T, what string, payloads []string) {
	t.Helper()
	if len(payloads) != s.total() {
		t.Errorf("%s: %d messages, want exactly %d", what, len(payloads), s.total())
	}
	next := map[string]int{}
	for _, p := range payloads {
		r := parse(t, p)
		if r.Seq != next[r.Dev] {
			t.Errorf("%s: %s seq %d where %d was due (out of order, lost or twice)", what, r.Dev, r.Seq, next[r.Dev])
			return
		}
		next[r.Dev]++
	}
	for _, dev := range s.devices {
		if next[dev] != s.n {
			t.Errorf("%s: %d of %s's %d messages", what, next[dev], dev, s.n)
		}
	}
}

// devices names n devices.
func devices(n int) []string {
	var d []string
	for i := range n {
		d = append(d, fmt.Sprintf("dev-%02d", i))
	}
	return d
}

// connect connects an MQTT 5 client (paho.golang, clean start) for the
// test.
func connect(t *testing.T, o testsvc.MQTTOptions) *testsvc.Client {
	t.Helper()
	c, ca, err := testsvc.Connect(o)
	if err != nil {
		t.Fatalf("connect %s to %s: %v", o.ClientID, o.Addr, err)
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	if ca.ReasonCode != 0 {
		t.Fatalf("connect %s to %s: refused, reason 0x%02x", o.ClientID, o.Addr, ca.ReasonCode)
	}
	return c
}

// received is a message a subscriber received.
type received struct {
	Topic, Payload string
	QoS            byte
}

// subscriber is an MQTT 5 client (paho.golang) with a persistent session
// (expiry 1h) that subscribes to one filter at QoS 1 and keeps every
// message it receives, across reconnects. It acknowledges each at once.
type subscriber struct {
	t              *testing.T
	addr, id, filt string

	mu     sync.Mutex
	cli    *paho.Client
	got    []received
	notify chan struct{}
}

// subscribe connects a subscriber and subscribes. The client id must be
// new to the broker.
//
// It connects without clean start even the first time: mosquitto 2.0.11
// does not restore, after a restart, a session begun with clean start
// (expiry or not) whose client was connected when it stopped.
func subscribe(t *testing.T, addr, id, filter string) *subscriber {
	t.Helper()
	s := &subscriber{t: t, addr: addr, id: id, filt: filter, notify: make(chan struct{}, 1)}
	s.connect(false)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	sa, err := s.client().Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if err != nil || len(sa.Reasons) != 1 || sa.Reasons[0] != 1 {
		t.Fatalf("subscriber %s: subscribe %q: %v %v", id, filter, err, sa)
	}
	t.Cleanup(func() {
		if c := s.client(); c != nil {
			c.Disconnect(&paho.Disconnect{})
		}
	})
	return s
}

// reconnect connects again to the session kept by the broker (which must
// still have it), for the messages it queued meanwhile.
func (s *subscriber) reconnect() {
	s.t.Helper()
	if ca := s.connect(false); !ca.SessionPresent {
		s.t.Fatalf("subscriber %s: the broker did not keep its session", s.id)
	}
}

func (s *subscriber) connect(clean bool) *paho.Connack {
	s.t.Helper()
	conn, err := net.DialTimeout("tcp", s.addr, 10*time.Second)
	if err != nil {
		s.t.Fatalf("subscriber %s: %v", s.id, err)
	}
	cli := paho.NewClient(paho.ClientConfig{
		ClientID: s.id,
		Conn:     conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			s.mu.Lock()
			s.got = append(s.got, received{pr.Packet.Topic, string(pr.Packet.Payload), pr.Packet.QoS})
			s.mu.Unlock()
			select {
			case s.notify <- struct{}{}:
			default:
			}
			return true, nil
		}},
	})
	expiry := uint32(3600)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ca, err := cli.Connect(ctx, &paho.Connect{ClientID: s.id, KeepAlive: 30, CleanStart: clean,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if err != nil {
		conn.Close()
		s.t.Fatalf("subscriber %s: connect: %v", s.id, err)
	}
	s.mu.Lock()
	s.cli = cli
	s.mu.Unlock()
	return ca
}

func (s *subscriber) client() *paho.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cli
}

// messages returns what has been received so far.
func (s *subscriber) messages() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// waitFor waits until cond holds for what has been received.
func (s *subscriber) waitFor(what string, cond func([]received) bool) []received {
	s.t.Helper()
	timeout := time.After(wait)
	for {
		got := s.messages()
		if cond(got) {
			return got
		}
		select {
		case <-s.notify:
		case <-time.After(100 * time.Millisecond):
		case <-timeout:
			s.t.Fatalf("subscriber %s: not within %v: %s (%d messages received)", s.id, wait, what, len(got))
		}
	}
}

// payloads returns the payloads received on topic (every topic: ""), in
// order.
func payloads(got []received, topic string) []string {
	var p []string
	for _, m := range got {
		if topic == "" || m.Topic == topic {
			p = append(p, m.Payload)
		}
	}
	return p
}
