package pipelines_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/mqttclient/mqtttest"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

// TestSourcesFromConfig runs an HTTP source configured in sluice.yaml: a
// POST reaches the pipeline's sink, with the token's user, and a config
// naming a source like a broker listener is refused at its line.
func TestSourcesFromConfig(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.jsonl")
	path := filepath.Join(dir, "sluice.yaml")
	must(t, os.WriteFile(path, []byte(fmt.Sprintf(`
data_dir: %s
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0"}]
sources:
  - name: web
    http:
      address: 127.0.0.1:0
      tokens: [{user: line-7, token: a-token-of-16-chars-or-more}]
pipelines: [{name: p, topics: ["devices/#"], sinks: [raw]}]
sinks:
  - name: raw
    stream: raw
    file: {path: %s}
`, filepath.Join(dir, "data"), out)), 0o644))
	cfg, err := pipelines.Load(path)
	must(t, err)
	svc, err := pipelines.New(cfg, pipelines.Options{})
	must(t, err)
	must(t, svc.Start(context.Background()))
	defer svc.Close(context.Background())

	addr := svc.SourceAddr("web")
	if addr == "" {
		t.Fatal("no address for source web")
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/publish/devices/7/telemetry", strings.NewReader(`{"t": 21.5}`))
	req.Header.Set("Authorization", "Bearer a-token-of-16-chars-or-more")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST: %s, want 202", resp.Status)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(out)
		if string(b) == "{\"t\": 21.5}\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the POST did not reach the sink; it holds %q", b)
		}
		time.Sleep(20 * time.Millisecond)
	}

	data, err := os.ReadFile(path)
	must(t, err)
	badPath := filepath.Join(dir, "bad.yaml")
	must(t, os.WriteFile(badPath, []byte(strings.Replace(string(data), "name: web", "name: tcp", 1)), 0o644))
	_, err = pipelines.Load(badPath)
	if err == nil || !strings.Contains(err.Error(), "bad.yaml:6:") || !strings.Contains(err.Error(), "sources[0].name") {
		t.Errorf("a source named like a listener: %v", err)
	}
}

// TestMQTTSourceAndBridgeOutFromConfig runs sluice as the rule tier of
// another broker, from sluice.yaml: it subscribes there (an mqtt source),
// and forwards what its pipeline takes back to it under another prefix
// (an mqtt sink in remote mode).
func TestMQTTSourceAndBridgeOutFromConfig(t *testing.T) {
	remote := mqtttest.Start(t, mqtttest.Options{})
	dir := t.TempDir()
	out := filepath.Join(dir, "out.jsonl")
	path := filepath.Join(dir, "sluice.yaml")
	must(t, os.WriteFile(path, []byte(fmt.Sprintf(`
data_dir: %s
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0"}]
sources:
  - name: upstream
    mqtt:
      url: %s
      subscriptions: [{filter: "plant/#", qos: 1}]
pipelines: [{name: p, topics: ["plant/#"], sinks: [raw, cloud]}]
sinks:
  - name: raw
    stream: raw
    file: {path: %s}
  - name: cloud
    stream: raw
    mqtt:
      topic: "fwd/{topic}"
      remote: {url: %s}
`, filepath.Join(dir, "data"), remote.URL, out, remote.URL)), 0o644))
	cfg, err := pipelines.Load(path)
	must(t, err)
	svc, err := pipelines.New(cfg, pipelines.Options{})
	must(t, err)
	must(t, svc.Start(context.Background()))
	defer svc.Close(context.Background())

	dev := testsvc.MQTT(t, remote.Addr, "device")
	// The source subscribes once connected: publish until a message is
	// through, then the rest.
	deadline := time.Now().Add(30 * time.Second)
	for n := 0; ; n++ {
		dev.Publish(t, "plant/a/telemetry", 1, []byte(fmt.Sprintf(`{"n": %d}`, n)))
		if b, _ := os.ReadFile(out); len(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing from the remote broker reached the pipeline")
		}
		time.Sleep(50 * time.Millisecond)
	}
	dev.Publish(t, "plant/a/telemetry", 1, []byte(`{"n": "last"}`))
	got := remote.WaitFor(t, 1, func(m mqtttest.Message) bool {
		return m.Topic == "fwd/plant/a/telemetry" && string(m.Payload) == `{"n": "last"}`
	}, 30*time.Second)
	if got[0].QoS != 1 {
		t.Errorf("forwarded at QoS %d, want 1", got[0].QoS)
	}
}

// TestNoEmbeddedBroker runs sluice with broker.enabled false, fed by an
// HTTP source only: nothing listens for MQTT, nothing is stored for a
// broker, and an MQTT sink without a remote broker is refused.
func TestNoEmbeddedBroker(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	out := filepath.Join(dir, "out.jsonl")
	config := fmt.Sprintf(`
data_dir: %s
broker: {enabled: false}
sources:
  - name: web
    http: {address: 127.0.0.1:0, allow_anonymous: true}
pipelines: [{name: p, topics: ["#"], sinks: [raw]}]
sinks:
  - name: raw
    stream: raw
    file: {path: %s}
`, data, out)
	path := filepath.Join(dir, "sluice.yaml")
	must(t, os.WriteFile(path, []byte(config), 0o644))
	cfg, err := pipelines.Load(path)
	must(t, err)
	svc, err := pipelines.New(cfg, pipelines.Options{})
	must(t, err)
	must(t, svc.Start(context.Background()))
	if l := svc.Broker().Listeners(); len(l) != 0 {
		t.Errorf("listeners %v with the broker disabled", l)
	}
	resp, err := http.Post("http://"+svc.SourceAddr("web")+"/v1/publish/a/b", "application/json", strings.NewReader(`{"v": 1}`))
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST: %s", resp.Status)
	}
	deadline := time.Now().Add(30 * time.Second)
	for b, _ := os.ReadFile(out); string(b) != "{\"v\": 1}\n"; b, _ = os.ReadFile(out) {
		if time.Now().After(deadline) {
			t.Fatalf("sink holds %q", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	must(t, svc.Close(context.Background()))
	if _, err := os.Stat(filepath.Join(data, "broker.db")); !os.IsNotExist(err) {
		t.Errorf("broker state kept with the broker disabled: %v", err)
	}

	bad := filepath.Join(dir, "bad.yaml")
	must(t, os.WriteFile(bad, []byte(config+"  - name: alerts\n    mqtt: {topic: a}\n"), 0o644))
	if _, err := pipelines.Load(bad); err == nil || !strings.Contains(err.Error(), "sinks[1].mqtt") || !strings.Contains(err.Error(), "remote") {
		t.Errorf("an embedded-broker mqtt sink without a broker: %v", err)
	}
}
