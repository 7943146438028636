package pipelines_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

// TestAlertStateIsRetainedForLateSubscribers checks the documented recipe
// for a per-series "current state" topic: an MQTT sink with retain on a
// per-series topic lets a subscriber that comes later see each series' state.
func TestAlertStateIsRetainedForLateSubscribers(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(`
rules:
  - name: hot
    match: sensors/+device
    alert:
      when: t > 90
`), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "sluice.yaml"), []byte(fmt.Sprintf(`
data_dir: %s
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines:
  - name: p
    topics: ["sensors/#"]
    rules: [rules.yaml]
    sinks: [state]
sinks:
  - name: state
    stream: alerts
    mqtt: {topic: "state/{rule}/{series}", retain: true, qos: 1}
`, filepath.Join(dir, "data"))), 0o644))
	cfg, err := pipelines.Load(filepath.Join(dir, "sluice.yaml"))
	must(t, err)
	svc, err := pipelines.New(cfg, pipelines.Options{})
	must(t, err)
	ctx := context.Background()
	must(t, svc.Start(ctx))
	t.Cleanup(func() { svc.Close(ctx) })
	addr := svc.Broker().Addr("tcp")

	dev := testsvc.MQTT(t, addr, "dev")
	dev.Publish(t, "sensors/a", 1, []byte(`{"t": 95}`))
	dev.Publish(t, "sensors/b", 1, []byte(`{"t": 95}`))
	dev.Publish(t, "sensors/b", 1, []byte(`{"t": 20}`))
	waitCaughtUp(t, svc)

	// A dashboard connects afterwards.
	late := testsvc.MQTT(t, addr, "dashboard")
	late.Subscribe(t, "state/#")
	// The broker sends the retained messages after the SUBACK, one per
	// topic.
	got := map[string]string{}
	for deadline := time.Now().Add(10 * time.Second); len(got) < 2 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for _, p := range late.Received() {
			var a struct{ Status string }
			must(t, json.Unmarshal(p.Payload, &a))
			if !p.Retain {
				t.Errorf("%s was not delivered as retained", p.Topic)
			}
			got[p.Topic] = a.Status
		}
	}
	if len(got) != 2 || got["state/hot/a"] != "firing" || got["state/hot/b"] != "resolved" {
		t.Fatalf("late subscriber sees %v, want a firing and b resolved", got)
	}
}

func TestDataDirIsLocked(t *testing.T) {
	dir := t.TempDir()
	cfg, err := pipelines.Parse("s.yaml", []byte(fmt.Sprintf(`
data_dir: %s
broker: {listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]}
pipelines: [{name: p, topics: ["#"], sinks: [a]}]
sinks: [{name: a, mqtt: {}}]
`, dir)), dir)
	must(t, err)
	first, err := pipelines.New(cfg, pipelines.Options{})
	must(t, err)
	if _, err := pipelines.New(cfg, pipelines.Options{}); err == nil || !strings.Contains(err.Error(), "is in use by process") {
		t.Fatalf("a second sluice on the same data_dir: %v", err)
	}
	must(t, first.Close(context.Background()))
	second, err := pipelines.New(cfg, pipelines.Options{})
	must(t, err)
	second.Close(context.Background())
}
