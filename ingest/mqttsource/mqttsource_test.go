package mqttsource_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/ingest/mqttsource"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/mqttclient/mqtttest"
	"github.com/sluicehq/sluice/internal/secret/secrettest"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

const wait = 60 * time.Second // generous: the machine is shared

// service starts a real sluice whose one pipeline takes the topics filter
// and writes the raw payloads, one per line, to out.
func service(t *testing.T, filter string) (svc *pipelines.Service, out string) {
	t.Helper()
	dir := t.TempDir()
	out = filepath.Join(dir, "out.jsonl")
	cfg, err := pipelines.Parse("sluice.yaml", fmt.Appendf(nil, `
log: {level: warn}
data_dir: %s
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines:
  - name: in
    topics: [%q]
    sinks: [out]
sinks:
  - name: out
    stream: raw
    batch: {size: 100, interval: 5ms}
    file: {path: %s}
`, filepath.Join(dir, "data"), filter, out), dir)
	if err != nil {
		t.Fatal(err)
	}
	svc, err = pipelines.New(cfg, pipelines.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close(context.Background()) })
	return svc, out
}

// lines returns the lines written to path so far.
func lines(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil || len(data) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

func waitLines(t *testing.T, path string, n int) []string {
	t.Helper()
	mqtttest.Eventually(t, wait, fmt.Sprintf("%d lines in %s", n, path), func() bool { return len(lines(path)) >= n })
	return lines(path)
}

// source starts an MQTT source on the remote broker, closed when the test
// ends.
func source(t *testing.T, name, yaml string, o mqttsource.Options) *mqttsource.Source {
	t.Helper()
	var cfg mqttsource.Config
	if _, err := conf.Decode(name+".yaml", []byte(yaml), &cfg); err != nil {
		t.Fatal(err)
	}
	o.Name = name
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	s, err := mqttsource.New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// publish publishes through the remote broker itself (as if a device
// connected to it had), at qos.
func publish(t *testing.T, r *mqtttest.Broker, topic, payload string, qos byte) {
	t.Helper()
	if err := r.Server.Publish(topic, []byte(payload), false, qos); err != nil {
		t.Fatal(err)
	}
}

// recorder passes every message on to the pipelines, and remembers it.
type recorder struct {
	next ingest.Handler
	mu   sync.Mutex
	got  []*sluice.Message
}

var _ ingest.Handler = (*recorder)(nil)

func (r *recorder) Handle(ctx context.Context, msg *sluice.Message, refuse bool) error {
	if err := r.next.Handle(ctx, msg, refuse); err != nil {
		return err
	}
	r.mu.Lock()
	r.got = append(r.got, msg)
	r.mu.Unlock()
	return nil
}

func (r *recorder) messages() []*sluice.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// TestMessagesArriveInThePipeline: a device publishes to the remote broker
// over TCP, MQTT 5, with properties; sluice's source renames the topics,
// the pipeline (which only takes the renamed ones) writes every payload, in
// order, and the remote ends up with nothing unacknowledged.
func TestMessagesArriveInThePipeline(t *testing.T) {
	r := mqtttest.Start(t, mqtttest.Options{})
	svc, out := service(t, "remote/#")
	rec := &recorder{next: svc}
	m := metrics.New()
	src := source(t, "site-a", fmt.Sprintf(`
url: %s
client_id: sluice-test-a
subscriptions:
  - filter: "plant/#"
    qos: 2
  - filter: "other/+"
    qos: 0
topic: "remote/{topic}"
`, r.URL), mqttsource.Options{Handler: rec, Metrics: m})
	if src.Protocol() != "5" {
		t.Errorf("protocol %s, want 5", src.Protocol())
	}

	device := testsvc.MQTT(t, r.Addr, "device-1")
	var want []string
	for i := range 20 {
		p := fmt.Sprintf(`{"n":%d}`, i)
		want = append(want, p)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		_, err := device.Client.Publish(ctx, &paho.Publish{Topic: "plant/north/boiler-7/telemetry", QoS: byte(1 + i%2), Payload: []byte(p),
			Properties: &paho.PublishProperties{ContentType: "application/json", User: paho.UserProperties{{Key: "site", Value: "north"}}}})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	device.Publish(t, "other/x", 0, []byte("q0"))
	want = append(want, "q0")

	if got := waitLines(t, out, len(want)); !slices.Equal(got, want) {
		t.Errorf("pipeline wrote\n%q\nwant\n%q", got, want)
	}
	msgs := rec.messages()
	first := msgs[0]
	if first.Topic != "remote/plant/north/boiler-7/telemetry" || first.ClientID != "site-a" || first.QoS != 1 ||
		first.ContentType != "application/json" || len(first.UserProperties) != 1 || first.UserProperties[0] != (sluice.Property{Key: "site", Value: "north"}) ||
		first.Received.IsZero() {
		t.Errorf("first message %+v", first)
	}
	if last := msgs[len(msgs)-1]; last.Topic != "remote/other/x" || last.QoS != 0 {
		t.Errorf("last message %+v", last)
	}
	mqtttest.Eventually(t, wait, "every message acknowledged to the remote", func() bool {
		s, ok := r.Session("sluice-test-a")
		return ok && s.Connected && s.Inflight == 0
	})
	if n := value(m.MessagesIn.WithLabelValues("site-a", "1")); n != 10 {
		t.Errorf("sluice_messages_received_total{listener=site-a,qos=1} = %v, want 10", n)
	}
	if n := value(m.Connections.WithLabelValues("site-a")); n != 1 {
		t.Errorf("sluice_broker_connections{listener=site-a} = %v, want 1", n)
	}
}

// TestNotAcknowledgedUntilDurable stops sluice's pipelines while the source
// still receives: the messages they could not take are not acknowledged,
// the remote keeps them, and a new sluice with the same client id (a
// restart) receives exactly those: the ones taken before were acknowledged
// only once durable, and are not sent again.
func TestNotAcknowledgedUntilDurable(t *testing.T) {
	r := mqtttest.Start(t, mqtttest.Options{})
	cfg := fmt.Sprintf(`
url: %s
client_id: sluice-durable
subscriptions: [{filter: "plant/#", qos: 1}]
reconnect: {initial: 50ms, max: 500ms}
`, r.URL)
	svc1, out1 := service(t, "plant/#")
	src1 := source(t, "plant", cfg, mqttsource.Options{Handler: svc1})
	for i := range 5 {
		publish(t, r, "plant/a", fmt.Sprintf("before-%d", i), 1)
	}
	waitLines(t, out1, 5)
	mqtttest.Eventually(t, wait, "the first five acknowledged", func() bool {
		s, ok := r.Session("sluice-durable")
		return ok && s.Inflight == 0
	})

	// The pipelines stop; the source goes on receiving.
	if err := svc1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		publish(t, r, "plant/a", fmt.Sprintf("after-%d", i), 1)
	}
	mqtttest.Eventually(t, wait, "the remote holding the five unacknowledged", func() bool {
		s, ok := r.Session("sluice-durable")
		return ok && s.Inflight == 5
	})
	if err := src1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	// sluice starts again.
	svc2, out2 := service(t, "plant/#")
	source(t, "plant", cfg, mqttsource.Options{Handler: svc2})
	// mochi resends a session's unacknowledged messages sorted by the
	// second they were created in, so in no set order here: compare sets.
	want := []string{"after-0", "after-1", "after-2", "after-3", "after-4"}
	waitLines(t, out2, 5)
	mqtttest.Eventually(t, wait, "all acknowledged after the restart", func() bool {
		s, ok := r.Session("sluice-durable")
		return ok && s.Inflight == 0
	})
	if got := slices.Sorted(slices.Values(lines(out2))); !slices.Equal(got, want) {
		t.Errorf("after the restart the pipeline wrote %q, want exactly %q", got, want)
	}
}

// TestSharedSubscriptionSplits runs two sluice instances on one $share
// group: each receives part of the stream, and together all of it, once.
func TestSharedSubscriptionSplits(t *testing.T) {
	r := mqtttest.Start(t, mqtttest.Options{})
	cfg := fmt.Sprintf(`
url: %s
subscriptions: [{filter: "$share/sluice/plant/#"}]
`, r.URL)
	svcA, outA := service(t, "plant/#")
	svcB, outB := service(t, "plant/#")
	a := source(t, "a", cfg, mqttsource.Options{Handler: svcA})
	b := source(t, "b", cfg, mqttsource.Options{Handler: svcB})
	if a.ClientID() == b.ClientID() {
		t.Fatalf("both instances have client id %q", a.ClientID())
	}

	const n = 200
	for i := range n {
		publish(t, r, fmt.Sprintf("plant/d%d", i%10), fmt.Sprintf("m%d", i), 1)
	}
	mqtttest.Eventually(t, wait, "every message in one of the pipelines", func() bool {
		return len(lines(outA))+len(lines(outB)) >= n
	})
	gotA, gotB := lines(outA), lines(outB)
	if len(gotA) == 0 || len(gotB) == 0 {
		t.Errorf("one instance got nothing: %d and %d", len(gotA), len(gotB))
	}
	all := map[string]int{}
	for _, l := range append(gotA, gotB...) {
		all[l]++
	}
	for i := range n {
		if c := all[fmt.Sprintf("m%d", i)]; c != 1 {
			t.Errorf("m%d arrived %d times", i, c)
		}
	}
	t.Logf("split: %d and %d", len(gotA), len(gotB))
}

// TestInjectPublishesLocally bridges in: what arrives from the remote goes
// to the pipelines and to a subscriber of sluice's embedded broker, under
// the renamed topic.
func TestInjectPublishesLocally(t *testing.T) {
	r := mqtttest.Start(t, mqtttest.Options{})
	svc, out := service(t, "cloud/#")
	local := testsvc.MQTT(t, svc.Broker().Addr("tcp"), "local-app")
	local.Subscribe(t, "cloud/#")
	source(t, "cloud", fmt.Sprintf(`
url: %s
subscriptions: [{filter: "commands/#"}]
topic: "cloud/{topic}"
inject: true
`, r.URL), mqttsource.Options{Handler: svc, Publisher: svc.Broker()})

	publish(t, r, "commands/valve-3", `{"open":true}`, 1)
	local.WaitFor(t, "cloud/commands/valve-3", wait)
	for _, p := range local.Received() {
		if p.Topic == "cloud/commands/valve-3" && string(p.Payload) != `{"open":true}` {
			t.Errorf("local subscriber got %q", p.Payload)
		}
	}
	if got := waitLines(t, out, 1); got[0] != `{"open":true}` {
		t.Errorf("pipeline wrote %q", got)
	}
}

// TestFallbackToMQTT311 connects to remotes that refuse MQTT 5, in either
// way a broker does: the source speaks 3.1.1 to them, and messages arrive.
// Told to speak only MQTT 5, it does not connect, and says why.
func TestFallbackToMQTT311(t *testing.T) {
	for _, tc := range []struct {
		name    string
		refusal mqtttest.Refusal
	}{
		{"3.1.1 CONNACK", mqtttest.RefuseV5AsV3},
		{"MQTT 5 CONNACK 0x84", mqtttest.RefuseV5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mqtttest.Start(t, mqtttest.Options{V5: tc.refusal})
			svc, out := service(t, "old/#")
			src := source(t, "old", fmt.Sprintf(`
url: %s
client_id: sluice-old
subscriptions: [{filter: "old/#", qos: 1}]
`, r.URL), mqttsource.Options{Handler: svc})
			if src.Protocol() != "3.1.1" {
				t.Errorf("protocol %s, want 3.1.1", src.Protocol())
			}
			for i := range 10 {
				publish(t, r, "old/x", fmt.Sprintf("m%d", i), 1)
			}
			waitLines(t, out, 10)
			mqtttest.Eventually(t, wait, "a 3.1.1 session, all acknowledged", func() bool {
				s, ok := r.Session("sluice-old")
				return ok && s.Protocol == 4 && s.Inflight == 0
			})
		})
	}

	t.Run("protocol 5 only", func(t *testing.T) {
		r := mqtttest.Start(t, mqtttest.Options{V5: mqtttest.RefuseV5AsV3})
		svc, _ := service(t, "old/#")
		m := metrics.New()
		src := source(t, "strict", fmt.Sprintf(`
url: %s
protocol: 5
subscriptions: [{filter: "old/#"}]
reconnect: {initial: 50ms, max: 200ms}
`, r.URL), mqttsource.Options{Handler: svc, Metrics: m})
		mqtttest.Eventually(t, wait, "refusals counted", func() bool {
			return value(m.Refused.WithLabelValues("strict", "protocol")) >= 2
		})
		if src.Protocol() != "5" {
			t.Errorf("protocol %s, want 5", src.Protocol())
		}
	})
}

// TestTLSAndPassword connects over TLS, trusting a test CA, with a user and
// password; a wrong password is refused, retried and explained, and the
// password is in no log line.
func TestTLSAndPassword(t *testing.T) {
	ca := secrettest.NewCA(t, "remote")
	cert := ca.Server(t, "127.0.0.1")
	const password = "s3cret-Remote-9z"
	r := mqtttest.Start(t, mqtttest.Options{
		TLS:   &tls.Config{Certificates: []tls.Certificate{cert.TLS}, MinVersion: tls.VersionTLS12},
		Users: map[string]string{"edge": password},
	})
	t.Setenv("REMOTE_PASSWORD", password)
	t.Setenv("WRONG_PASSWORD", "not-"+password)
	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))

	svc, out := service(t, "secure/#")
	source(t, "secure", fmt.Sprintf(`
url: %s
username: edge
password: {env: REMOTE_PASSWORD}
tls: {ca_file: %s}
subscriptions: [{filter: "secure/#"}]
`, r.URL, ca.CertFile), mqttsource.Options{Handler: svc, Logger: log})
	publish(t, r, "secure/a", "over-tls", 1)
	if got := waitLines(t, out, 1); got[0] != "over-tls" {
		t.Errorf("pipeline wrote %q", got)
	}

	m := metrics.New()
	source(t, "wrong", fmt.Sprintf(`
url: %s
username: edge
password: {env: WRONG_PASSWORD}
tls: {ca_file: %s}
subscriptions: [{filter: "secure/#"}]
reconnect: {initial: 50ms, max: 200ms}
`, r.URL, ca.CertFile), mqttsource.Options{Handler: svc, Logger: log, Metrics: m})
	mqtttest.Eventually(t, wait, "the wrong password refused twice", func() bool {
		return value(m.Refused.WithLabelValues("wrong", "auth")) >= 2
	})

	// Without the test CA the server is not trusted.
	source(t, "untrusted", fmt.Sprintf(`
url: %s
username: edge
password: {env: REMOTE_PASSWORD}
subscriptions: [{filter: "secure/#"}]
reconnect: {initial: 50ms, max: 200ms}
`, r.URL), mqttsource.Options{Handler: svc, Logger: log, Metrics: m})
	mqtttest.Eventually(t, wait, "the untrusted server refused", func() bool {
		return value(m.Refused.WithLabelValues("untrusted", "tls")) >= 1
	})

	mu.Lock()
	text := logs.String()
	mu.Unlock()
	if !strings.Contains(text, "bad user name or password") || !strings.Contains(text, "env WRONG_PASSWORD") {
		t.Errorf("the refusal is not explained in the logs:\n%s", text)
	}
	if !strings.Contains(text, "TLS with the remote broker failed") {
		t.Errorf("the TLS failure is not explained in the logs:\n%s", text)
	}
	if strings.Contains(text, password) {
		t.Errorf("a password is in the logs:\n%s", text)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// TestConfig checks validation, with keys relative to the source block.
func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string // substrings of the error; none: valid
	}{
		{"minimal", "url: mqtt://broker\nsubscriptions: [{filter: a/#}]", nil},
		{"full", `
url: wss://broker:8443/mqtt
client_id: sluice-1
username: u
password: p
tls: {ca_file: ca.pem}
protocol: 3.1.1
clean_start: true
session_expiry: 0s
keep_alive: 10s
connect_timeout: 5s
ack_timeout: 30s
receive_maximum: 10
reconnect: {initial: 1s, max: 1m}
subscriptions: [{filter: "$share/g/plant/#", qos: 2}]
topic: "site1/{topic}"
inject: true`, nil},
		{"protocol as a number", "url: mqtt://b\nprotocol: 5\nsubscriptions: [{filter: a}]", nil},
		{"no url, no subscriptions", "client_id: x", []string{`missing required key "url"`, `missing required key "subscriptions"`}},
		{"bad url", "url: http://b\nsubscriptions: [{filter: a}]", []string{"url:", "want mqtt://"}},
		{"credentials in the url", "url: mqtt://u:pw@b\nsubscriptions: [{filter: a}]", []string{"url: credentials in the url"}},
		{"tls on plain mqtt", "url: mqtt://b\ntls: {}\nsubscriptions: [{filter: a}]", []string{"tls: set, but"}},
		{"password without user", "url: mqtt://b\npassword: x\nsubscriptions: [{filter: a}]", []string{"password: set without a username"}},
		{"bad protocol", "url: mqtt://b\nprotocol: 4\nsubscriptions: [{filter: a}]", []string{`protocol: "4"`}},
		{"bad filters", "url: mqtt://b\nsubscriptions: [{filter: a/#/b}, {filter: $share/g}, {filter: x, qos: 3}, {filter: x}]",
			[]string{"subscriptions[0].filter", "subscriptions[1].filter", "subscriptions[2].qos", "subscriptions[3].filter: \"x\" is subscribed twice"}},
		{"bad topic template", "url: mqtt://b\nsubscriptions: [{filter: a}]\ntopic: \"{device}/x\"", []string{`topic:`, `"device"`}},
		{"wildcard in topic template", "url: mqtt://b\nsubscriptions: [{filter: a}]\ntopic: \"+/{topic}\"", []string{"topic:", "wildcard"}},
		{"keep alive", "url: mqtt://b\nkeep_alive: 100ms\nsubscriptions: [{filter: a}]", []string{"keep_alive:"}},
		{"unknown key", "url: mqtt://b\nsubscriptions: [{filter: a}]\nqos: 1", []string{"qos: unknown key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c mqttsource.Config
			_, err := conf.Decode("src.yaml", []byte(tc.yaml), &c)
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
			if strings.Contains(err.Error(), "pw@") {
				t.Errorf("error shows credentials: %v", err)
			}
		})
	}
	// The secret is redacted in the decoded config.
	var c mqttsource.Config
	if _, err := conf.Decode("src.yaml", []byte("url: mqtt://b\nusername: u\npassword: hunter2\nsubscriptions: [{filter: a}]"), &c); err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprintf("%+v", c); strings.Contains(s, "hunter2") {
		t.Errorf("config prints its password: %s", s)
	}
}

// value reads a counter or a gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}
