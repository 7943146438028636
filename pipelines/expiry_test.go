package pipelines_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	dto "github.com/prometheus/client_model/go"

	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

// TestMessageExpiryHonouredInTheJournal: an MQTT 5 message with a message
// expiry interval that waits in the journal (its sink is down) past its
// expiry is not delivered when the sink comes back; a message without one
// is.
func TestMessageExpiryHonouredInTheJournal(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "out")
	must(t, os.WriteFile(blocker, nil, 0o644)) // a file where the sink's folder must go: it cannot write
	out := filepath.Join(blocker, "raw.jsonl")
	path := filepath.Join(dir, "sluice.yaml")
	must(t, os.WriteFile(path, []byte(fmt.Sprintf(`
data_dir: %s
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines: [{name: p, topics: ["#"], sinks: [raw]}]
sinks:
  - name: raw
    stream: raw
    retry: {initial: 20ms, max: 100ms}
    file: {path: %s}
`, filepath.Join(dir, "data"), out)), 0o644))
	cfg, err := pipelines.Load(path)
	must(t, err)
	m := metrics.New()
	svc, err := pipelines.New(cfg, pipelines.Options{Metrics: m})
	must(t, err)
	must(t, svc.Start(context.Background()))
	defer svc.Close(context.Background())

	dev := testsvc.MQTT(t, svc.Broker().Addr("tcp"), "dev")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	expiry := uint32(1)
	sent := time.Now()
	for _, p := range []*paho.Publish{
		{Topic: "a/short-lived", QoS: 1, Payload: []byte("short-lived"), Properties: &paho.PublishProperties{MessageExpiry: &expiry}},
		{Topic: "a/lasting", QoS: 1, Payload: []byte("lasting")},
	} {
		if _, err := dev.Client.Publish(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	// Wait out the expiry while the sink cannot write.
	for time.Since(sent) < 1500*time.Millisecond {
		time.Sleep(50 * time.Millisecond)
	}
	must(t, os.Remove(blocker))

	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(out)
		if strings.Contains(string(b), "lasting") {
			if strings.Contains(string(b), "short-lived") {
				t.Fatalf("an expired message was delivered: %q", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lasting message did not arrive: %q", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var got dto.Metric
	must(t, m.Expired.WithLabelValues("p", "sink:raw").Write(&got))
	if got := got.GetCounter().GetValue(); got != 1 {
		t.Errorf("sluice_messages_expired_total{reader=sink:raw} = %v, want 1", got)
	}
}
