package ingest_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/ingest/auth"
	"github.com/sluicehq/sluice/internal/metrics"
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
