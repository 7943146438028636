package ingest_test

import (
	"context"
	"crypto/tls"
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
	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/ingest/auth"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/secret/secrettest"
	"github.com/sluicehq/sluice/internal/testsvc"
)

// recorder stands in for the pipelines: it accepts every message at once
// and keeps it.
type recorder struct {
	mu   sync.Mutex
	msgs []*sluice.Message
}

func (r *recorder) Handle(ctx context.Context, msg *sluice.Message, refuse bool) error {
	r.mu.Lock()
	r.msgs = append(r.msgs, msg)
	r.mu.Unlock()
	return nil
}

func (r *recorder) topics() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ts []string
	for _, m := range r.msgs {
		ts = append(ts, m.Topic)
	}
	return ts
}

func (r *recorder) last() *sluice.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.msgs) == 0 {
		return nil
	}
	return r.msgs[len(r.msgs)-1]
}

// startBroker starts a broker with cfg, logging at debug level into the
// returned buffer.
func startBroker(t *testing.T, cfg ingest.Config) (*ingest.Broker, *recorder, *testsvc.LogBuffer) {
	t.Helper()
	rec := &recorder{}
	logs := &testsvc.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b := ingest.New(cfg, rec, log, metrics.New())
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	return b, rec, logs
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

var passwords = map[string]string{
	"alice": "alice-Pa55-word",
	"bob":   "bob-Pa55-word",
	"admin": "admin-Pa55-word",
}

const matrixACL = `
rules:
  - users: admin
    allow: all
    topics: ["#"]
  # Commands come from the admin only.
  - deny: publish
    topics: ["devices/+/cmd/#"]
  # Each device is confined to its own subtree.
  - users: "*"
    allow: [publish, subscribe]
    topics: ["devices/%u/#"]
  - users: "*"
    allow: subscribe
    topics: ["fleet/broadcast"]
`

// authBroker starts a broker with users alice, bob and admin, the matrix
// ACL, a listener that requires credentials ("tcp") and one that also
// takes anonymous clients ("anon").
func authBroker(t *testing.T) (*ingest.Broker, *recorder, *testsvc.LogBuffer, string) {
	t.Helper()
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "passwd")
	for user, pw := range passwords {
		if err := auth.SetPassword(pwFile, user, []byte(pw), 4); err != nil {
			t.Fatal(err)
		}
	}
	aclFile := filepath.Join(dir, "acl.yaml")
	writeFile(t, aclFile, matrixACL)
	b, rec, logs := startBroker(t, ingest.Config{
		Listeners: []ingest.ListenerConfig{
			{Name: "tcp", Address: "127.0.0.1:0"},
			{Name: "anon", Address: "127.0.0.1:0", AllowAnonymous: true},
		},
		Auth: ingest.AuthConfig{PasswordFile: pwFile, ACLFile: aclFile},
	})
	return b, rec, logs, aclFile
}

func login(t *testing.T, addr, user string) *testsvc.Client {
	t.Helper()
	c, ca, err := testsvc.Connect(testsvc.MQTTOptions{Addr: addr, ClientID: user + "-client", Username: user, Password: passwords[user]})
	if err != nil {
		t.Fatalf("%s: connect: %v", user, err)
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	if ca.ReasonCode != 0 {
		t.Fatalf("%s: connect refused: %#x", user, ca.ReasonCode)
	}
	return c
}

func subscribeCode(t *testing.T, c *testsvc.Client, filter string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := c.Client.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if sa == nil {
		t.Fatalf("subscribe %q: %v", filter, err)
	}
	return sa.Reasons[0]
}

const (
	granted       = 0x01 // QoS 1 granted
	notAuthorized = 0x87
)

func TestACLMatrix(t *testing.T) {
	b, rec, logs, _ := authBroker(t)
	addr := b.Addr("tcp")
	clients := map[string]*testsvc.Client{}
	for user := range passwords {
		clients[user] = login(t, addr, user)
	}
	anon := testsvc.MQTT(t, b.Addr("anon"), "anon-client")

	publishes := []struct {
		user, topic string
		allowed     bool
	}{
		{"alice", "devices/alice/temp", true},
		{"alice", "devices/alice/a/b/c", true},
		{"alice", "devices/bob/temp", false},
		{"alice", "devices/alice/cmd/reboot", false},
		{"alice", "fleet/broadcast", false},
		{"alice", "elsewhere", false},
		{"bob", "devices/bob/temp", true},
		{"bob", "devices/alice/temp", false},
		{"admin", "devices/alice/cmd/reboot", true},
		{"admin", "fleet/broadcast", true},
		{"anon", "devices//temp", false},
		{"anon", "devices/anon-client/temp", false},
	}
	var want []string
	for _, p := range publishes {
		c := clients[p.user]
		if p.user == "anon" {
			c = anon
		}
		code := c.Publish(t, p.topic, 1, []byte("x"))
		if got := code == 0; got != p.allowed {
			t.Errorf("%s publish %q: reason %#x, want allowed=%v", p.user, p.topic, code, p.allowed)
		}
		if p.allowed {
			want = append(want, p.topic)
		}
	}
	// Only the allowed publishes reached the pipelines.
	if got := rec.topics(); !slices.Equal(got, want) {
		t.Errorf("the pipelines got %q, want %q", got, want)
	}

	subscribes := []struct {
		user, filter string
		allowed      bool
	}{
		{"alice", "devices/alice/#", true},
		{"alice", "devices/alice/temp", true},
		{"alice", "devices/bob/#", false},
		{"alice", "devices/bob/temp", false},
		{"alice", "fleet/broadcast", true},
		{"alice", "fleet/other", false},
		{"alice", "$SYS/#", false},
		{"bob", "devices/alice/temp", false},
		{"bob", "devices/bob/+", true},
		{"admin", "devices/+/temp", true},
		{"anon", "devices/#", false},
		{"anon", "#", false},
		// Wildcards that reach beyond the client's subtree are granted
		// where they overlap what it may see; deliveries are filtered.
		{"alice", "#", true},
		{"alice", "devices/+/temp", true},
	}
	for _, s := range subscribes {
		c := clients[s.user]
		if s.user == "anon" {
			c = anon
		}
		code := subscribeCode(t, c, s.filter)
		if got := code == granted; got != s.allowed {
			t.Errorf("%s subscribe %q: reason %#x, want allowed=%v", s.user, s.filter, code, s.allowed)
		}
	}

	// alice holds "#" and "devices/+/temp": of what the admin publishes,
	// she sees only her own subtree and the broadcast.
	admin := clients["admin"]
	for _, topic := range []string{"devices/bob/temp", "devices/alice/temp", "devices/bob/secret/x", "fleet/broadcast", "other/x", "devices/alice/end"} {
		if code := admin.Publish(t, topic, 1, []byte("from admin")); code != 0 {
			t.Fatalf("admin publish %q: %#x", topic, code)
		}
	}
	seen := map[string]bool{}
	for _, p := range clients["alice"].WaitFor(t, "devices/alice/end", 10*time.Second) {
		seen[p.Topic] = true
	}
	var got []string
	for topic := range seen {
		got = append(got, topic)
	}
	sort.Strings(got)
	// Alice's own publishes earlier are also hers to see (none were
	// subscribed then); what matters is that no other tenant's topic shows.
	if wantSeen := []string{"devices/alice/temp", "fleet/broadcast"}; !slices.Equal(got, wantSeen) {
		t.Errorf("alice received %q, want %q", got, wantSeen)
	}
	// bob, subscribed to his own subtree only, sees nothing of alice's.
	bobSub := clients["bob"]
	subscribeCode(t, bobSub, "devices/bob/#")
	admin.Publish(t, "devices/alice/temp", 1, []byte("x"))
	admin.Publish(t, "devices/bob/end", 1, []byte("x"))
	for _, p := range bobSub.WaitFor(t, "devices/bob/end", 10*time.Second) {
		if !strings.HasPrefix(p.Topic, "devices/bob/") {
			t.Errorf("bob received %q", p.Topic)
		}
	}

	// No password ever reaches the log.
	for user, pw := range passwords {
		if strings.Contains(logs.String(), pw) {
			t.Errorf("%s's password is in the log", user)
		}
	}
}

func TestCredentialsRefused(t *testing.T) {
	b, _, logs, _ := authBroker(t)
	cases := []struct {
		name, listener, user, password string
		want                           byte
	}{
		{"wrong password", "tcp", "alice", "bob-Pa55-word", 0x86},
		{"unknown user", "tcp", "mallory", "whatever-secret", 0x86},
		{"no credentials", "tcp", "", "", 0x87},
		// A username on the anonymous listener must still log in.
		{"wrong password where anonymous is allowed", "anon", "alice", "not-her-secret", 0x86},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl, ca, err := testsvc.Connect(testsvc.MQTTOptions{Addr: b.Addr(c.listener), ClientID: "x", Username: c.user, Password: c.password})
			if ca == nil {
				t.Fatalf("no CONNACK: %v", err)
			}
			if ca.ReasonCode != c.want {
				t.Errorf("CONNACK %#x, want %#x", ca.ReasonCode, c.want)
			}
			if ca.ReasonCode == 0 {
				cl.Disconnect(&paho.Disconnect{})
			}
		})
	}
	for _, secret := range []string{"bob-Pa55-word", "whatever-secret", "not-her-secret"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("a password sent in a refused CONNECT is in the log")
		}
	}
	if !strings.Contains(logs.String(), "connection refused") {
		t.Errorf("refusals were not logged:\n%s", logs.String())
	}
}

func TestACLReloadAppliesToConnectedClients(t *testing.T) {
	b, _, _, aclFile := authBroker(t)
	alice := login(t, b.Addr("tcp"), "alice")
	if code := alice.Publish(t, "devices/alice/temp", 1, nil); code != 0 {
		t.Fatalf("before the reload: %#x", code)
	}
	writeFile(t, aclFile, strings.Replace(matrixACL, `topics: ["devices/%u/#"]`, `topics: ["devices/%u/readonly"]`, 1))
	if err := b.ReloadAuth(); err != nil {
		t.Fatal(err)
	}
	if code := alice.Publish(t, "devices/alice/temp", 1, nil); code != notAuthorized {
		t.Errorf("after the reload: %#x, want not authorized", code)
	}

	// A broken file is refused and the working ACL stays.
	writeFile(t, aclFile, "rules:\n  - allow: publsh\n    topics: [x]\n")
	err := b.ReloadAuth()
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%s:2", aclFile)) || !strings.Contains(err.Error(), "publsh") {
		t.Errorf("reload of a broken ACL: %v", err)
	}
	if code := alice.Publish(t, "devices/alice/readonly", 1, nil); code != 0 {
		t.Errorf("after a failed reload the previous ACL should stay: %#x", code)
	}
}

// sessionLogin is one way a device logs in, for the session cases: by
// password or by client certificate, over MQTT 3.1.1 or 5.
type sessionLogin struct {
	version byte
	cert    bool
}

func (l sessionLogin) String() string {
	how := "password"
	if l.cert {
		how = "cert"
	}
	return how + "-" + versionName(l.version)
}

// sessionClient is a real client (paho.golang for MQTT 5,
// paho.mqtt.golang for 3.1.1) connected, or refused, for a session case.
type sessionClient struct {
	code     byte            // CONNACK reason (MQTT 5) or return code (3.1.1)
	present  bool            // session present
	received func() []string // the payloads received so far
	sub      func(t *testing.T, filter string)
	leave    func()
}

// waitFor waits until payload has been received and returns the set of
// payloads received by then.
func (c *sessionClient) waitFor(t *testing.T, payload string) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := c.received()
		if slices.Contains(got, payload) {
			slices.Sort(got)
			return slices.Compact(got)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q not received within 30s (got %q)", payload, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sessionBroker is a broker with the matrix users (alice, bob, admin) and
// ACL, a password listener ("tcp") and a client-certificate listener
// ("mtls", identity cn), keeping its state in a file, so that it can be
// restarted.
type sessionBroker struct {
	cfg     ingest.Config
	root    *secrettest.CA
	certs   map[string]tls.Certificate
	b       *ingest.Broker
	aclFile string
}

func newSessionBroker(t *testing.T) *sessionBroker {
	t.Helper()
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "passwd")
	for user, pw := range passwords {
		if err := auth.SetPassword(pwFile, user, []byte(pw), 4); err != nil {
			t.Fatal(err)
		}
	}
	aclFile := filepath.Join(dir, "acl.yaml")
	writeFile(t, aclFile, matrixACL)
	root, tlsCfg := tlsSetup(t)
	s := &sessionBroker{root: root, certs: map[string]tls.Certificate{}, aclFile: aclFile, cfg: ingest.Config{
		Listeners: []ingest.ListenerConfig{
			{Name: "tcp", Address: "127.0.0.1:0"},
			{Name: "mtls", Type: "tls", Address: "127.0.0.1:0", TLS: tlsCfg},
		},
		Auth:      ingest.AuthConfig{PasswordFile: pwFile, ACLFile: aclFile},
		StatePath: filepath.Join(dir, "broker.db"),
	}}
	for user := range passwords {
		s.certs[user] = root.Client(t, user).TLS
	}
	s.start(t)
	return s
}

func (s *sessionBroker) start(t *testing.T) {
	t.Helper()
	logs := &testsvc.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("broker log:\n%s", logs)
		}
	})
	b := ingest.New(s.cfg, &recorder{}, log, metrics.New())
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	s.b = b
}

func (s *sessionBroker) restart(t *testing.T) {
	t.Helper()
	if err := s.b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.start(t)
}

// connect connects user (by password or by certificate, as l says) with
// client id id. Unless fresh, it resumes the session there is, and its
// session outlives the connection (3.1.1: clean session 0; 5: an expiry of
// an hour). Fresh asks for a clean one: clean start (5), clean session
// (3.1.1, whose session then ends with the connection).
func (s *sessionBroker) connect(t *testing.T, l sessionLogin, user, id string, fresh bool) *sessionClient {
	t.Helper()
	c := &sessionClient{}
	var tlsConf *tls.Config
	listener := "tcp"
	if l.cert {
		listener = "mtls"
		tlsConf = &tls.Config{RootCAs: s.root.Pool, Certificates: []tls.Certificate{s.certs[user]}, ServerName: "127.0.0.1"}
	}
	addr := s.b.Addr(listener)
	if l.version == v5 {
		var conn net.Conn
		var err error
		if tlsConf != nil {
			conn, err = tls.Dial("tcp", addr, tlsConf)
		} else {
			conn, err = net.Dial("tcp", addr)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		expiry := uint32(3600)
		cp := &paho.Connect{ClientID: id, CleanStart: fresh, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
		if !l.cert {
			cp.Username, cp.UsernameFlag = user, true
			cp.Password, cp.PasswordFlag = []byte(passwords[user]), true
		}
		pc, ca := pahoOn(t, conn, cp)
		c.code, c.present = ca.ReasonCode, ca.SessionPresent
		c.received = func() []string {
			pc.mu.Lock()
			defer pc.mu.Unlock()
			var got []string
			for _, p := range pc.msgs {
				got = append(got, string(p.Payload))
			}
			return got
		}
		c.sub = func(t *testing.T, filter string) {
			if codes := pc.subscribe(t, paho.SubscribeOptions{Topic: filter, QoS: 1}); codes[0] != 1 {
				t.Fatalf("subscribe %q: %#x", filter, codes[0])
			}
		}
		c.leave = func() { pc.Disconnect(&paho.Disconnect{}) }
		return c
	}
	var mu sync.Mutex
	var got []string
	c.received = func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
	scheme := "tcp://"
	if tlsConf != nil {
		scheme = "ssl://"
	}
	o := mqtt3.NewClientOptions().AddBroker(scheme + addr).SetClientID(id).SetProtocolVersion(4).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectRetry(false).SetKeepAlive(60 * time.Second).
		SetOrderMatters(true).SetTLSConfig(tlsConf).
		SetDefaultPublishHandler(func(_ mqtt3.Client, m mqtt3.Message) {
			mu.Lock()
			got = append(got, string(m.Payload()))
			mu.Unlock()
		})
	if !l.cert {
		o.SetUsername(user).SetPassword(passwords[user])
	}
	if fresh {
		o.SetCleanSession(true)
	}
	cl := mqtt3.NewClient(o)
	tok := cl.Connect()
	if !tok.WaitTimeout(30 * time.Second) {
		t.Fatalf("paho3 %s: no CONNACK", id)
	}
	ct := tok.(*mqtt3.ConnectToken)
	c.code, c.present = ct.ReturnCode(), ct.SessionPresent()
	if c.code == 0 {
		t.Cleanup(func() { cl.Disconnect(100) })
	}
	c.sub = func(t *testing.T, filter string) { wait3(t, cl.Subscribe(filter, 1, nil)) }
	c.leave = func() { cl.Disconnect(100) }
	return c
}

// notAuthorizedCode is "not authorized" in l's protocol.
func (l sessionLogin) notAuthorizedCode() byte {
	if l.version == v5 {
		return 0x87
	}
	return 5
}

func sessionLogins() []sessionLogin {
	return []sessionLogin{{v3, false}, {v5, false}, {v3, true}, {v5, true}}
}

// TestSessionBelongsToItsOwner: a client id's session belongs to the
// identity (username or certificate identity) that made it. Another one
// connecting with that client id, to resume the session or to start a
// fresh one, is refused as not authorized, before and after a restart: it
// neither receives the owner's queued messages nor takes the session (or
// the connection) from the owner, who gets all of them.
func TestSessionBelongsToItsOwner(t *testing.T) {
	s := newSessionBroker(t)
	admin := login(t, s.b.Addr("tcp"), "admin")
	publish := func(t *testing.T, topic string, payloads ...string) {
		t.Helper()
		for _, p := range payloads {
			if code := admin.Publish(t, topic, 1, []byte(p)); code != 0 {
				t.Fatalf("admin publish %q: %#x", topic, code)
			}
		}
	}
	intrude := func(t *testing.T, l sessionLogin, id string) {
		t.Helper()
		for _, fresh := range []bool{false, true} {
			if c := s.connect(t, l, "alice", id, fresh); c.code != l.notAuthorizedCode() {
				t.Errorf("alice with bob's client id (fresh session %v): CONNACK %#x, want %#x (not authorized)",
					fresh, c.code, l.notAuthorizedCode())
			}
		}
	}

	// bob leaves a session with three messages queued.
	for _, l := range sessionLogins() {
		// A new session (3.1.1's clean session would end with the connection).
		bob := s.connect(t, l, "bob", "bob-"+l.String(), l.version == v5)
		if bob.code != 0 {
			t.Fatalf("%s: bob refused: %#x", l, bob.code)
		}
		bob.sub(t, "devices/bob/"+l.String()+"/#")
		bob.leave()
		publish(t, "devices/bob/"+l.String()+"/x", "1", "2", "3")
	}
	for _, l := range sessionLogins() {
		t.Run(l.String()+"/offline", func(t *testing.T) { intrude(t, l, "bob-"+l.String()) })
	}

	// The owner is kept in the broker's state.
	admin.Disconnect(&paho.Disconnect{})
	s.restart(t)
	admin = login(t, s.b.Addr("tcp"), "admin")

	for _, l := range sessionLogins() {
		t.Run(l.String()+"/after-restart", func(t *testing.T) {
			id := "bob-" + l.String()
			intrude(t, l, id)
			bob := s.connect(t, l, "bob", id, false)
			if bob.code != 0 || !bob.present {
				t.Fatalf("bob resuming his session: CONNACK %#x, session present %v", bob.code, bob.present)
			}
			bob.waitFor(t, "3")
			// While bob is connected, alice cannot take his connection.
			intrude(t, l, id)
			publish(t, "devices/bob/"+l.String()+"/x", "4")
			if got := bob.waitFor(t, "4"); !slices.Equal(got, []string{"1", "2", "3", "4"}) {
				t.Errorf("bob received %q, want 1 to 4", got)
			}
		})
	}
}

// TestResumedSessionCheckedAgainstTheACL: the messages a session queued are
// checked against the ACL in force when they are delivered, as every
// delivery is: the ACL may have changed while they waited.
func TestResumedSessionCheckedAgainstTheACL(t *testing.T) {
	s := newSessionBroker(t)
	admin := login(t, s.b.Addr("tcp"), "admin")
	logins := []sessionLogin{{v3, false}, {v5, false}}
	for _, l := range logins {
		bob := s.connect(t, l, "bob", "bob-"+l.String(), l.version == v5)
		bob.sub(t, "devices/bob/"+l.String()+"/#")
		bob.leave()
		for _, topic := range []string{"secret/1", "open/1", "secret/2", "open/2"} {
			if code := admin.Publish(t, "devices/bob/"+l.String()+"/"+topic, 1, []byte(topic)); code != 0 {
				t.Fatalf("admin publish: %#x", code)
			}
		}
	}
	// bob may no longer read his secret subtree.
	writeFile(t, s.aclFile, strings.Replace(matrixACL, "rules:\n", "rules:\n  - users: bob\n    deny: subscribe\n    topics: [\"devices/bob/+/secret/#\"]\n", 1))
	if err := s.b.ReloadAuth(); err != nil {
		t.Fatal(err)
	}
	for _, l := range logins {
		t.Run(l.String(), func(t *testing.T) {
			bob := s.connect(t, l, "bob", "bob-"+l.String(), false)
			if bob.code != 0 || !bob.present {
				t.Fatalf("bob resuming his session: CONNACK %#x, session present %v", bob.code, bob.present)
			}
			bob.waitFor(t, "open/2")
			if code := admin.Publish(t, "devices/bob/"+l.String()+"/open/end", 1, []byte("open/end")); code != 0 {
				t.Fatalf("admin publish: %#x", code)
			}
			if got := bob.waitFor(t, "open/end"); !slices.Equal(got, []string{"open/1", "open/2", "open/end"}) {
				t.Errorf("bob received %q, want only what the ACL lets him read now", got)
			}
		})
	}
}
