package ingest_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/ingest/auth"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/testsvc"
)

// metricValue reads the counter or gauge name{labels} from m's registry;
// 0 when there is none.
func metricValue(t *testing.T, m *metrics.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v != l.GetValue() {
					continue series
				}
			}
			if s.Counter != nil {
				return s.Counter.GetValue()
			}
			return s.Gauge.GetValue()
		}
	}
	return 0
}

// startBrokerMetrics is startBroker that also returns the metrics.
func startBrokerMetrics(t *testing.T, cfg ingest.Config) (*ingest.Broker, *metrics.Metrics, *testsvc.LogBuffer) {
	t.Helper()
	logs := &testsvc.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := metrics.New()
	b := ingest.New(cfg, &recorder{}, log, m)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	return b, m, logs
}

// TestBrokerLogs: the embedded broker's log lines hold no payload byte, at
// any level, and are rate-limited like sluice's own: MQTT 3.1.1 publishes
// the ACL denies (the broker logged each whole packet) and a subscriber to
// "#" that stopped reading (a line per message) make a few lines, not one
// each; the messages dropped for the subscriber are counted.
func TestBrokerLogs(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "passwd")
	for user, pw := range passwords {
		if err := auth.SetPassword(pwFile, user, []byte(pw), 4); err != nil {
			t.Fatal(err)
		}
	}
	aclFile := filepath.Join(dir, "acl.yaml")
	writeFile(t, aclFile, matrixACL)
	b, m, logs := startBrokerMetrics(t, ingest.Config{
		Listeners: []ingest.ListenerConfig{{Name: "tcp", Address: "127.0.0.1:0"}},
		Auth:      ingest.AuthConfig{PasswordFile: pwFile, ACLFile: aclFile},
		Limits:    ingest.Limits{MaxQueued: 10},
	})
	addr := b.Addr("tcp")
	marker := []byte("PAYLOAD-MUST-NOT-BE-LOGGED/")
	payload := bytes.Repeat(marker, 100_000/len(marker))

	// 20 MQTT 3.1.1 publishes the ACL denies: each closes its connection.
	const denied = 20
	for i := range denied {
		c, _ := dialWire(t, addr, wireConnect{version: v3, clientID: "denied", user: "alice", password: passwords["alice"], clean: true})
		c.publish("devices/bob/temp", 1, uint16(i+1), payload, packets.Properties{})
		closedByServer(t, c.conn)
	}

	// A subscriber to # that reads nothing: of 200 QoS 1 messages, it holds
	// max_queued (10) unacknowledged; the others are dropped for it.
	slow, _ := dialWire(t, addr, wireConnect{version: v5, clientID: "slow", user: "admin", password: passwords["admin"], clean: true})
	slow.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "#", Qos: 1})
	admin := login(t, addr, "admin")
	const published = 200
	for range published {
		if code := admin.Publish(t, "devices/alice/temp", 1, payload[:1000]); code != 0 {
			t.Fatalf("publish: %#x", code)
		}
	}
	eventually(t, 30*time.Second, "the dropped messages counted", func() bool {
		return metricValue(t, m, "sluice_broker_subscriber_dropped_total", map[string]string{"listener": "tcp"}) == published-10
	})

	out := logs.String()
	// The payload, as text, as Go prints a byte slice, in hex or base64.
	for _, form := range []string{string(marker), strings.Trim(fmt.Sprint(marker[:12]), "[]"),
		hex.EncodeToString(marker[:12]), base64.StdEncoding.EncodeToString(marker[:12])} {
		if strings.Contains(out, form) {
			t.Errorf("a payload is in the log (as %q):\n%.2000s", form, out)
		}
	}
	count := func(msg string) int { return strings.Count(out, "msg=\""+msg) + strings.Count(out, "msg="+msg) }
	if n := count("error processing packet"); n == 0 || n > denied/2 {
		t.Errorf("%d lines for %d denied publishes: want some, rate-limited", n, denied)
	}
	if n := count("messages to a subscriber that does not keep up are dropped"); n == 0 || n > 10 {
		t.Errorf("%d lines for %d dropped messages: want some, rate-limited", n, published-10)
	}
	if n := strings.Count(out, "client store quota reached"); n > 0 {
		t.Errorf("the broker logged %d lines of its own per dropped message", n)
	}
	if len(out) > 100_000 {
		t.Errorf("%d bytes of log", len(out))
	}
}
