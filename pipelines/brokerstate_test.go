package pipelines_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

// TestBrokerStateSurvivesARestart stops sluice and starts it again on the
// same data_dir: a retained message is still there, and a subscriber with a
// persistent session gets the QoS 1 messages published while it was away,
// across the restart.
func TestBrokerStateSurvivesARestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sluice.yaml")
	must(t, os.WriteFile(path, []byte(fmt.Sprintf(`
data_dir: %s
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines: [{name: p, topics: ["telemetry/#"], sinks: [a]}]
sinks: [{name: a, mqtt: {}}]
`, filepath.Join(dir, "data"))), 0o644))
	start := func() *pipelines.Service {
		cfg, err := pipelines.Load(path)
		must(t, err)
		svc, err := pipelines.New(cfg, pipelines.Options{})
		must(t, err)
		must(t, svc.Start(context.Background()))
		return svc
	}

	svc := start()
	addr := svc.Broker().Addr("tcp")
	// A subscriber with a session that outlives its connection.
	sub := persistentClient(t, addr, "dashboard", false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "status/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	sub.Disconnect(&paho.Disconnect{})

	pub := testsvc.MQTT(t, addr, "device")
	pub.Client.Publish(ctx, &paho.Publish{Topic: "config/line1", QoS: 1, Retain: true, Payload: []byte("setpoint=90")})
	for i := range 3 {
		pub.Publish(t, "status/line1", 1, []byte(fmt.Sprintf("queued %d", i)))
	}
	pub.Disconnect(&paho.Disconnect{})
	must(t, svc.Close(context.Background()))

	svc = start()
	t.Cleanup(func() { svc.Close(context.Background()) })
	addr = svc.Broker().Addr("tcp")

	// The retained message survived.
	late := testsvc.MQTT(t, addr, "late")
	late.Subscribe(t, "config/#")
	if got := waitMessages(late, 1); len(got) != 1 || string(got[0].Payload) != "setpoint=90" || !got[0].Retain {
		t.Fatalf("retained after restart: %v", got)
	}
	// The session survived, with its queued messages. (Their order is
	// mochi's, which sorts messages queued within one second arbitrarily:
	// a known defect, see docs/delivery.md.)
	var mu sync.Mutex
	var got []string
	back := persistentClient(t, addr, "dashboard", false, func(p *paho.Publish) {
		mu.Lock()
		got = append(got, string(p.Payload))
		mu.Unlock()
	})
	defer back.Disconnect(&paho.Disconnect{})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 3 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	sort.Strings(got)
	if fmt.Sprint(got) != "[queued 0 queued 1 queued 2]" {
		t.Fatalf("queued messages after restart: %v", got)
	}
}

// persistentClient connects with a session that outlives the connection.
func persistentClient(t *testing.T, addr, id string, clean bool, on ...func(*paho.Publish)) *paho.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	must(t, err)
	cfg := paho.ClientConfig{Conn: conn, ClientID: id}
	for _, f := range on {
		cfg.OnPublishReceived = append(cfg.OnPublishReceived, func(pr paho.PublishReceived) (bool, error) { f(pr.Packet); return true, nil })
	}
	c := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	expiry := uint32(3600)
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: clean,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}); err != nil {
		t.Fatal(err)
	}
	return c
}

func waitMessages(c *testsvc.Client, n int) []*paho.Publish {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if got := c.Received(); len(got) >= n {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
	return c.Received()
}
