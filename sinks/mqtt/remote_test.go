package mqtt_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/mqttclient/mqtttest"
	"github.com/sluicehq/sluice/internal/secret/secrettest"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/sinks/mqtt"
)

const wait = 60 * time.Second // generous: the machine is shared

// bridge starts a real sluice whose pipeline forwards the raw messages of
// plant/# to the remote broker, through an mqtt sink with a remote block
// (the YAML lines given, indented under remote:).
func bridge(t *testing.T, remote string) *pipelines.Service {
	t.Helper()
	dir := t.TempDir()
	var ind strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(remote), "\n") {
		ind.WriteString("        " + l + "\n")
	}
	cfg, err := pipelines.Parse("sluice.yaml", fmt.Appendf(nil, `
log: {level: warn}
data_dir: %s
shutdown_timeout: 2s
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines:
  - name: edge
    topics: ["plant/#"]
    sinks: [cloud]
sinks:
  - name: cloud
    stream: raw
    batch: {size: 16, interval: 5ms}
    retry: {initial: 20ms, max: 300ms}
    mqtt:
      topic: "site1/{topic}"
      qos: 1
      remote:
%s`, filepath.Join(dir, "data"), ind.String()), dir)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := pipelines.New(cfg, pipelines.Options{Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close(context.Background()) })
	return svc
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func payloads(msgs []mqtttest.Message, topic string) []string {
	var out []string
	for _, m := range msgs {
		if m.Topic == topic {
			out = append(out, string(m.Payload))
		}
	}
	return out
}

func fromBridge(m mqtttest.Message) bool { return strings.HasPrefix(m.Topic, "site1/") }

// TestBridgeOut: devices publish to the edge sluice; the remote broker
// receives every message, in order, under the remapped topic, with the
// original payload and MQTT 5 properties.
func TestBridgeOut(t *testing.T) {
	r := mqtttest.Start(t, mqtttest.Options{})
	svc := bridge(t, fmt.Sprintf("url: %s\nclient_id: edge-1", r.URL))
	device := testsvc.MQTT(t, svc.Broker().Addr("tcp"), "device-1")

	var want []string
	for i := range 30 {
		p := fmt.Sprintf(`{"seq":%d}`, i)
		want = append(want, p)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		_, err := device.Client.Publish(ctx, &paho.Publish{Topic: "plant/l1/boiler-7/telemetry", QoS: 1, Payload: []byte(p),
			Properties: &paho.PublishProperties{ContentType: "application/json", User: paho.UserProperties{{Key: "fw", Value: "1.2"}}}})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	got := r.WaitFor(t, len(want), fromBridge, wait)
	if p := payloads(got, "site1/plant/l1/boiler-7/telemetry"); !slices.Equal(p, want) {
		t.Errorf("remote received\n%q\nwant\n%q", p, want)
	}
	m := got[0]
	if m.QoS != 1 || m.ClientID != "edge-1" || m.Props.ContentType != "application/json" ||
		len(m.Props.User) != 1 || m.Props.User[0].Key != "fw" || m.Props.User[0].Val != "1.2" {
		t.Errorf("first message: qos %d, client %q, props %+v", m.QoS, m.ClientID, m.Props)
	}
	if s, ok := r.Session("edge-1"); !ok || s.Protocol != 5 {
		t.Errorf("session on the remote: %+v", s)
	}
}

// TestStoreAndForward cuts the link: while the remote broker is down the
// messages wait in the journal (the devices' publishes are acknowledged);
// when it is back on the same port they all arrive, in order per topic.
func TestStoreAndForward(t *testing.T) {
	r := mqtttest.Start(t, mqtttest.Options{})
	svc := bridge(t, fmt.Sprintf(`
url: %s
client_id: edge-saf
connect_timeout: 2s
reconnect: {initial: 20ms, max: 300ms}`, r.URL))
	device := testsvc.MQTT(t, svc.Broker().Addr("tcp"), "device-1")
	topics := []string{"plant/a/t", "plant/b/t", "plant/c/t"}
	sent := map[string][]string{}
	send := func(from, to int) {
		for i := from; i < to; i++ {
			for _, topic := range topics {
				p := fmt.Sprintf("%s#%d", topic, i)
				sent[topic] = append(sent[topic], p)
				device.Publish(t, topic, 1, []byte(p))
			}
		}
	}

	send(0, 10)
	r.WaitFor(t, 30, fromBridge, wait)

	r.Stop()
	send(10, 50)
	backlog := func() uint64 { return svc.Health(time.Now()).Pipelines[0].Sinks[0].Backlog }
	mqtttest.Eventually(t, wait, "the 120 messages waiting in the journal", func() bool { return backlog() == 120 })
	mqtttest.Eventually(t, wait, "the sink reporting its writes failing", func() bool {
		h := svc.Health(time.Now()).Pipelines[0].Sinks[0]
		return h.FailingFor > 0 && strings.Contains(h.LastError, "not connected")
	})

	r2 := mqtttest.Start(t, mqtttest.Options{Addr: r.Addr})
	got := r2.WaitFor(t, 120, fromBridge, wait)
	mqtttest.Eventually(t, wait, "the journal drained", func() bool { return backlog() == 0 })
	got = r2.Received()
	for _, topic := range topics {
		// At least once: a message the remote had may come again after a
		// retry, but never ahead of one before it.
		var order []string
		seen := map[string]bool{}
		for _, p := range payloads(got, "site1/"+topic) {
			if !seen[p] {
				seen[p] = true
				order = append(order, p)
			}
		}
		if want := sent[topic][10:]; !slices.Equal(order, want) {
			t.Errorf("%s: the remote received (first times)\n%q\nwant\n%q", topic, order, want)
		}
	}
}

// TestBridgeOutFallback publishes to a remote that speaks only MQTT 3.1.1.
func TestBridgeOutFallback(t *testing.T) {
	r := mqtttest.Start(t, mqtttest.Options{V5: mqtttest.RefuseV5AsV3})
	svc := bridge(t, fmt.Sprintf("url: %s\nclient_id: edge-old", r.URL))
	device := testsvc.MQTT(t, svc.Broker().Addr("tcp"), "device-1")
	var want []string
	for i := range 20 {
		want = append(want, fmt.Sprint(i))
		device.Publish(t, "plant/x", 1, []byte(fmt.Sprint(i)))
	}
	got := r.WaitFor(t, len(want), fromBridge, wait)
	if p := payloads(got, "site1/plant/x"); !slices.Equal(p, want) {
		t.Errorf("remote received %q, want %q", p, want)
	}
	if s, ok := r.Session("edge-old"); !ok || s.Protocol != 4 {
		t.Errorf("session on the remote: %+v, want MQTT 3.1.1", s)
	}
}

// TestBridgeOutTLS publishes over TLS with a password; with a wrong one the
// sink reports why, without the password.
func TestBridgeOutTLS(t *testing.T) {
	ca := secrettest.NewCA(t, "cloud")
	cert := ca.Server(t, "127.0.0.1")
	const password = "Cloud-pw-7731"
	r := mqtttest.Start(t, mqtttest.Options{
		TLS:   &tls.Config{Certificates: []tls.Certificate{cert.TLS}, MinVersion: tls.VersionTLS12},
		Users: map[string]string{"edge": password},
	})
	svc := bridge(t, fmt.Sprintf("url: %s\nusername: edge\npassword: %s\ntls: {ca_file: %s}", r.URL, password, ca.CertFile))
	device := testsvc.MQTT(t, svc.Broker().Addr("tcp"), "device-1")
	device.Publish(t, "plant/x", 1, []byte("secure"))
	if got := r.WaitFor(t, 1, fromBridge, wait); string(got[0].Payload) != "secure" {
		t.Errorf("remote received %q", got[0].Payload)
	}

	bad := bridge(t, fmt.Sprintf("url: %s\nusername: edge\npassword: not-%s\ntls: {ca_file: %s}\nreconnect: {initial: 20ms, max: 200ms}\nconnect_timeout: 1s", r.URL, password, ca.CertFile))
	dev2 := testsvc.MQTT(t, bad.Broker().Addr("tcp"), "device-2")
	dev2.Publish(t, "plant/y", 1, []byte("refused"))
	var last string
	mqtttest.Eventually(t, wait, "the sink failing with the reason", func() bool {
		last = bad.Health(time.Now()).Pipelines[0].Sinks[0].LastError
		return strings.Contains(last, "bad user name or password")
	})
	if strings.Contains(last, password) {
		t.Errorf("the error shows the password: %s", last)
	}
}

// TestRemoteConfig checks the remote block's validation.
func TestRemoteConfig(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"embedded broker", "topic: a/{rule}", nil},
		{"remote", "topic: \"site1/{topic}\"\nremote: {url: mqtts://cloud:8883, client_id: edge, username: u, password: p, protocol: auto, session_expiry: 24h}", nil},
		{"remote without url", "remote: {client_id: x}", []string{`remote: missing required key "url"`}},
		{"bad remote", "remote: {url: \"ftp://x\", protocol: \"6\", reconnect: {initial: 2s, max: 1s}}", []string{"remote.url:", "remote.protocol:", "remote.reconnect:"}},
		{"wildcard topic", "topic: a/+/b", []string{"topic:", "wildcard"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// As pipelines does: decode, set defaults, validate.
			var c struct {
				Sink mqtt.Config `yaml:"sink"`
			}
			var doc strings.Builder
			doc.WriteString("sink:\n")
			for _, l := range strings.Split(tc.yaml, "\n") {
				doc.WriteString("  " + l + "\n")
			}
			_, err := conf.Decode("sink.yaml", []byte(doc.String()), &c)
			if err == nil {
				c.Sink.SetDefaults(sluice.StreamRaw)
				err = c.Sink.Validate()
			}
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
