package alertmanager_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/crypto/bcrypt"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/secret"
	"github.com/sluicehq/sluice/internal/secret/secrettest"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/sinks/alertmanager"
)

// boilerRules fire "boiler" while a boiler is above 90 °C.
const boilerRules = `
rules:
  - name: boiler
    match: plant/+site/+line/+device/telemetry
    alert:
      when: temperature > 90
      severity: critical
      message: "boiler {{ device }} at {{ temperature }} °C"
      labels: {team: utilities, "fw-version": "1.2"}
`

// sluiceIn starts a real sluice with data_dir in dir, whose pipeline runs
// the boiler rules over plant/# and sends the alerts to an alertmanager sink
// "am" (the YAML given, under alertmanager:). It returns it with a device
// connected to its broker.
func sluiceIn(t *testing.T, dir, am string, m *metrics.Metrics) (*pipelines.Service, *testsvc.Client) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(boilerRules), 0o644); err != nil {
		t.Fatal(err)
	}
	var ind strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(am), "\n") {
		ind.WriteString("      " + l + "\n")
	}
	cfg, err := pipelines.Parse("sluice.yaml", fmt.Appendf(nil, `
log: {level: warn}
data_dir: %s
shutdown_timeout: 5s
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines:
  - name: plant
    topics: ["plant/#"]
    rules: [rules.yaml]
    sinks: [am]
sinks:
  - name: am
    retry: {initial: 10ms, max: 200ms}
    alertmanager:
%s`, filepath.Join(dir, "data"), ind.String()), dir)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := pipelines.New(cfg, pipelines.Options{Metrics: m, Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close(context.Background()) })
	return svc, testsvc.MQTT(t, svc.Broker().Addr("tcp"), fmt.Sprintf("gateway-%d", time.Now().UnixNano()))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func publish(t *testing.T, c *testsvc.Client, device string, temperature float64) {
	t.Helper()
	if rc := c.Publish(t, "plant/north/line1/"+device+"/telemetry", 1, fmt.Appendf(nil, `{"temperature": %v}`, temperature)); rc != 0 {
		t.Fatalf("publish: reason code %#x", rc)
	}
}

// routedTo is an alertmanager.yml that sends critical alerts to the
// receiver "pager" and the rest to "chat", both webhooks to n, and
// notifies at once (group_wait 0s) and of changes within a second.
func routedTo(n *notifications) string {
	return fmt.Sprintf(`
route:
  receiver: chat
  group_by: [alertname, series]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
receivers:
  - name: chat
    webhook_configs: [{url: "%[1]s/chat", send_resolved: true}]
  - name: pager
    webhook_configs: [{url: "%[1]s/pager", send_resolved: true}]
`, n.URL)
}

// TestAlertsReachAlertmanager: a boiler overheats, and a real Alertmanager
// lists the alert with the labels and annotations the README promises and
// notifies the receiver its route names; the boiler cools down, and the
// alert is resolved: gone from Alertmanager's active alerts (the resend
// interval is an hour: it did not expire, sluice resolved it) and notified
// as resolved.
func TestAlertsReachAlertmanager(t *testing.T) {
	n := newNotifications(t)
	am := startAlertmanager(t, amOptions{Config: routedTo(n)})
	_, dev := sluiceIn(t, t.TempDir(), fmt.Sprintf(`
urls: [%s]
resend_interval: 1h
labels: {source: sluice}
annotations: {runbook_url: "https://wiki.example/runbooks/{rule}"}
generator_url: "https://grafana.example/d/alerts?var-device={device}"`, am.URL), nil)

	before := time.Now()
	publish(t, dev, "boiler-7", 95.5)
	a := am.Alert("boiler", "boiler-7", nil)
	wantLabels := map[string]string{"alertname": "boiler", "severity": "critical", "series": "boiler-7", "device": "boiler-7",
		"site": "north", "line": "line1", "team": "utilities", "fw_version": "1.2", "source": "sluice"}
	if fmt.Sprint(a.Labels) != fmt.Sprint(wantLabels) {
		t.Errorf("labels\n got %v\nwant %v", a.Labels, wantLabels)
	}
	since := a.Annotations["since"]
	wantAnnotations := map[string]string{"summary": "boiler boiler-7 at 95.5 °C", "value": "95.5", "since": since,
		"topic": "plant/north/line1/boiler-7/telemetry", "runbook_url": "https://wiki.example/runbooks/boiler"}
	if fmt.Sprint(a.Annotations) != fmt.Sprint(wantAnnotations) {
		t.Errorf("annotations\n got %v\nwant %v", a.Annotations, wantAnnotations)
	}
	// Alertmanager keeps times to the millisecond.
	if s, err := time.Parse(time.RFC3339Nano, since); err != nil || !s.Truncate(time.Millisecond).Equal(a.StartsAt) {
		t.Errorf("since %q, startsAt %v: want the same time", since, a.StartsAt)
	}
	if a.GeneratorURL != "https://grafana.example/d/alerts?var-device=boiler-7" {
		t.Errorf("generatorURL %q", a.GeneratorURL)
	}
	if a.EndsAt.Before(before.Add(3*time.Hour)) || a.Status.State != "active" {
		t.Errorf("endsAt %v, state %q: want four resend intervals (4h) ahead, active", a.EndsAt, a.Status.State)
	}
	n.wait(t, "firing to the pager", func(m notification) bool {
		return m.Receiver == "pager" && m.Status == "firing" && m.Alerts[0].Labels["series"] == "boiler-7"
	})

	publish(t, dev, "boiler-7", 60)
	am.Gone("boiler", "boiler-7")
	n.wait(t, "resolved to the pager", func(m notification) bool {
		return m.Receiver == "pager" && m.Status == "resolved" && m.Alerts[0].Labels["series"] == "boiler-7" &&
			m.Alerts[0].EndsAt.Before(time.Now())
	})
}

// TestResentToEveryAlertmanager: with two Alertmanagers (an HA pair), each
// gets every alert; the firing ones are sent again every resend_interval
// without new data, so one that is replaced (its alerts lost) has the alert
// again within the interval; a resolve reaches both.
func TestResentToEveryAlertmanager(t *testing.T) {
	a, b := startAlertmanager(t, amOptions{}), startAlertmanager(t, amOptions{})
	m := metrics.New()
	_, dev := sluiceIn(t, t.TempDir(), fmt.Sprintf("urls: [%s, %s]\nresend_interval: 1s", a.URL, b.URL), m)

	publish(t, dev, "boiler-7", 95.5)
	first := a.Alert("boiler", "boiler-7", nil)
	b.Alert("boiler", "boiler-7", nil)
	// No new reading: the re-send renews it.
	a.Alert("boiler", "boiler-7", func(x gettableAlert) bool {
		return x.UpdatedAt.After(first.UpdatedAt) && x.EndsAt.After(first.EndsAt) && x.StartsAt.Equal(first.StartsAt)
	})

	// b is replaced by a new one at the same address, which knows nothing.
	b.Stop()
	deadline := time.Now().Add(wait)
	for value(m.AlertmanagerRequests.WithLabelValues("am", b.URL, "error")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no failed request to the stopped Alertmanager counted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	b2 := startAlertmanager(t, amOptions{Addr: b.Addr})
	b2.Alert("boiler", "boiler-7", nil)

	publish(t, dev, "boiler-7", 60)
	a.Gone("boiler", "boiler-7")
	b2.Gone("boiler", "boiler-7")
	if v := value(m.AlertmanagerAlerts.WithLabelValues("am", "firing")); v != 0 {
		t.Errorf("sluice_alertmanager_alerts{state=firing} = %v after the resolve, want 0", v)
	}
}

// TestAcrossARestart: sluice restarts while an alert fires (its rules
// start afresh and its re-sends stop, docs/delivery.md). Alertmanager
// keeps the alert until its endsAt; the rule fires again on the next hot
// reading, and Alertmanager sees the same alert go on, with its first
// startsAt; the resolve after the restart resolves it.
func TestAcrossARestart(t *testing.T) {
	am := startAlertmanager(t, amOptions{})
	dir := t.TempDir()
	cfg := fmt.Sprintf("urls: [%s]\nresend_interval: 1h", am.URL)
	svc, dev := sluiceIn(t, dir, cfg, nil)
	publish(t, dev, "boiler-7", 95.5)
	first := am.Alert("boiler", "boiler-7", nil)
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	_, dev = sluiceIn(t, dir, cfg, nil)
	publish(t, dev, "boiler-7", 96)
	again := am.Alert("boiler", "boiler-7", func(x gettableAlert) bool { return x.Annotations["value"] == "96" })
	if !again.StartsAt.Equal(first.StartsAt) {
		t.Errorf("startsAt %v after the restart, want %v: Alertmanager took it for another alert", again.StartsAt, first.StartsAt)
	}
	if n := len(am.Alerts()); n != 1 {
		t.Errorf("%d active alerts, want 1", n)
	}
	publish(t, dev, "boiler-7", 60)
	am.Gone("boiler", "boiler-7")
}

// TestStoppedSluiceLetsAlertsEnd: an alert sluice stops sending (sluice is
// down) ends in Alertmanager at its endsAt, four resend intervals after the
// last send: no alert stays firing for ever.
func TestStoppedSluiceLetsAlertsEnd(t *testing.T) {
	am := startAlertmanager(t, amOptions{})
	svc, dev := sluiceIn(t, t.TempDir(), fmt.Sprintf("urls: [%s]\nresend_interval: 1s", am.URL), nil)
	publish(t, dev, "boiler-7", 95.5)
	am.Alert("boiler", "boiler-7", nil)
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	am.Gone("boiler", "boiler-7")
}

func alertEvent(series, status string) sluice.Event {
	at := time.Now()
	msg := &sluice.Message{Topic: "plant/north/line1/" + series + "/telemetry", Received: at}
	return sluice.Event{Stream: sluice.StreamAlerts, Message: msg, Alert: &sluice.Alert{
		Rule: "boiler", Severity: "critical", Status: status, Series: series, Device: series,
		Value: 95.5, Message: "hot", Time: at, Since: at.Add(-time.Minute), Topic: msg.Topic, Notification: 1}}
}

// TestBasicAuthAndTLS: an Alertmanager serving TLS and asking for basic
// authentication (its web.config.file) takes the alerts from a sink with
// the CA and the password; a wrong password or no CA is a retryable
// failure that says why.
func TestBasicAuthAndTLS(t *testing.T) {
	need(t, "prometheus-alertmanager", "alertmanager")
	ca := secrettest.NewCA(t, "am")
	server := ca.Server(t, "127.0.0.1")
	hash, err := bcrypt.GenerateFromPassword([]byte("pa55"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	am := startAlertmanager(t, amOptions{
		WebConfig: fmt.Sprintf("tls_server_config: {cert_file: %s, key_file: %s}\nbasic_auth_users: {sluice: %q}\n", server.CertFile, server.KeyFile, hash),
		TLS:       &tls.Config{RootCAs: ca.Pool}, User: "sluice", Password: "pa55",
	})
	ctx := context.Background()
	sink := func(password string, ca *secret.TLS) *alertmanager.Sink {
		s := alertmanager.New(alertmanager.Config{URLs: []string{am.URL}, Username: "sluice", Password: secret.New(password), TLS: ca}, alertmanager.Options{Name: "am"})
		t.Cleanup(func() { s.Close(ctx) })
		return s
	}
	good := sink("pa55", &secret.TLS{CAFile: ca.CertFile})
	if err := good.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := good.Write(ctx, []sluice.Event{alertEvent("b1", sluice.AlertFiring)}); err != nil {
		t.Fatal(err)
	}
	am.Alert("boiler", "b1", nil)

	wrong := sink("guess", &secret.TLS{CAFile: ca.CertFile})
	if err := wrong.Connect(ctx); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("connect with a wrong password: %v", err)
	}
	err = wrong.Write(ctx, []sluice.Event{alertEvent("b2", sluice.AlertFiring)})
	if err == nil || sluice.IsPermanent(err) || !strings.Contains(err.Error(), "401 Unauthorized") {
		t.Errorf("write with a wrong password: %v; want a retryable 401", err)
	}
	untrusted := sink("pa55", nil)
	err = untrusted.Write(ctx, []sluice.Event{alertEvent("b3", sluice.AlertFiring)})
	if err == nil || sluice.IsPermanent(err) || !secret.IsTLSFailure(err) {
		t.Errorf("write without the CA: %v; want a retryable TLS failure", err)
	}
}

// TestBearerToken: behind a proxy that wants a bearer token (Alertmanager
// itself knows only basic authentication), the sink's token gets the alert
// through.
func TestBearerToken(t *testing.T) {
	am := startAlertmanager(t, amOptions{})
	target, _ := url.Parse(am.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t0k3n" {
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	ctx := context.Background()
	s := alertmanager.New(alertmanager.Config{URLs: []string{front.URL}, Token: secret.New("t0k3n")}, alertmanager.Options{})
	defer s.Close(ctx)
	if err := s.Write(ctx, []sluice.Event{alertEvent("b1", sluice.AlertFiring)}); err != nil {
		t.Fatal(err)
	}
	am.Alert("boiler", "b1", nil)
}

// TestMaxAlerts: the alerts kept for re-sending are bounded: past
// max_alerts a firing alert is sent once and counted; a resolved alert
// kept gives its place to a firing one.
func TestMaxAlerts(t *testing.T) {
	am := startAlertmanager(t, amOptions{})
	m := metrics.New()
	ctx := context.Background()
	s := alertmanager.New(alertmanager.Config{URLs: []string{am.URL}, MaxAlerts: 2}, alertmanager.Options{Name: "am", Metrics: m})
	defer s.Close(ctx)
	kept := func(state string) float64 {
		return value(m.AlertmanagerAlerts.WithLabelValues("am", state))
	}
	untracked := func() float64 { return value(m.AlertmanagerUntracked.WithLabelValues("am")) }

	for _, series := range []string{"b1", "b2", "b3"} {
		if err := s.Write(ctx, []sluice.Event{alertEvent(series, sluice.AlertFiring)}); err != nil {
			t.Fatal(err)
		}
		am.Alert("boiler", series, nil) // sent, kept or not
	}
	if kept("firing") != 2 || untracked() != 1 {
		t.Errorf("kept %v firing, %v untracked; want 2 and 1", kept("firing"), untracked())
	}
	if err := s.Write(ctx, []sluice.Event{alertEvent("b1", sluice.AlertResolved)}); err != nil {
		t.Fatal(err)
	}
	if kept("firing") != 1 || kept("resolved") != 1 {
		t.Errorf("kept %v firing, %v resolved; want 1 and 1", kept("firing"), kept("resolved"))
	}
	if err := s.Write(ctx, []sluice.Event{alertEvent("b4", sluice.AlertFiring)}); err != nil {
		t.Fatal(err)
	}
	if kept("firing") != 2 || kept("resolved") != 0 || untracked() != 1 {
		t.Errorf("kept %v firing, %v resolved, %v untracked; want 2, 0 and 1", kept("firing"), kept("resolved"), untracked())
	}
}

// TestNotAnAlert: an event of another stream (a mistake the config check
// prevents) is refused for good, not retried for ever.
func TestNotAnAlert(t *testing.T) {
	s := alertmanager.New(alertmanager.Config{URLs: []string{"http://127.0.0.1:1"}}, alertmanager.Options{})
	err := s.Write(context.Background(), []sluice.Event{{Stream: sluice.StreamRecords, Message: &sluice.Message{}, Record: &sluice.Record{}}})
	var be *sluice.BatchError
	if !errors.As(err, &be) || !sluice.IsPermanent(be.Errs[0]) {
		t.Fatalf("got %v, want item 0 permanent", err)
	}
}

// TestConfigErrors: mistakes in an alertmanager sink's config are
// reported at their file, line and key.
func TestConfigErrors(t *testing.T) {
	cases := []struct{ name, sink, want string }{
		{"typo", "alertmanager: {urls: [\"http://am:9093\"], resend_intervall: 1m}", `sluice.yaml:11:46: sinks[0].alertmanager.resend_intervall: unknown key (did you mean "resend_interval"?)`},
		{"url", "alertmanager: {url: http://am:9093}", `sinks[0].alertmanager.url: unknown key (did you mean "urls"?)`},
		{"no urls", "alertmanager: {resend_interval: 1m}", `sluice.yaml:11:5: sinks[0].alertmanager: missing required key "urls"`},
		{"not http", "alertmanager: {urls: [\"am:9093\"]}", `sinks[0].alertmanager.urls[0]: "am:9093" is not an http(s) URL`},
		{"query", "alertmanager: {urls: [\"http://am:9093/api/v2/alerts?x=1\"]}", "sinks[0].alertmanager.urls[0]: want the Alertmanager's address, without a query"},
		{"twice", "alertmanager: {urls: [\"http://am:9093\", \"http://am:9093\"]}", `sinks[0].alertmanager.urls[1]: "http://am:9093" is listed twice`},
		{"records", "stream: records\n    alertmanager: {urls: [\"http://am:9093\"]}", "sinks[0].stream: the alertmanager sink sends alerts, not records"},
		{"fast", "alertmanager: {urls: [\"http://am:9093\"], resend_interval: 100ms}", "sinks[0].alertmanager.resend_interval: 100ms: want at least 1s"},
		{"label", "alertmanager: {urls: [\"http://am:9093\"], labels: {\"team-a\": x}}", `sinks[0].alertmanager.labels: "team-a" is not a valid label name`},
		{"alertname", "alertmanager: {urls: [\"http://am:9093\"], labels: {alertname: x}}", "sinks[0].alertmanager.labels.alertname: alertname is the rule's name"},
		{"template", "alertmanager:\n      urls: [\"http://am:9093\"]\n      annotations:\n        runbook: \"{rule\"", `sluice.yaml:14:9: sinks[0].alertmanager.annotations.runbook: template "{rule": unclosed {`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := pipelines.Parse("sluice.yaml", []byte(`
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0"}]
pipelines:
  - name: p
    topics: ["#"]
    sinks: [am]
sinks:
  - name: am
    batch: {size: 1}
    `+c.sink+"\n"), t.TempDir())
			var list conf.ErrorList
			if !errors.As(err, &list) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v\nwant %s", err, c.want)
			}
		})
	}
}

// value reads a counter or a gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	m.Write(&d)
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// TestDocumentedPayload: the request the README shows is, byte for byte,
// what the sink posts for that alert (a recorder stands in for
// Alertmanager here: the other tests use the real one).
func TestDocumentedPayload(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(readme), "`generator_url`) posts:\n\n```json\n")
	want, _, ok := strings.Cut(rest, "\n```")
	if !ok {
		t.Fatal("README.md: no example request")
	}
	got := make(chan string, 1)
	rec := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		select {
		case got <- string(b):
		default:
		}
	}))
	defer rec.Close()
	at := time.Date(2026, 11, 25, 12, 0, 1, 500e6, time.UTC)
	s := alertmanager.New(alertmanager.Config{URLs: []string{rec.URL}}, alertmanager.Options{Now: func() time.Time { return at }})
	defer s.Close(context.Background())
	topic := "plant/north/line1/boiler-7/telemetry"
	e := sluice.Event{Stream: sluice.StreamAlerts, Message: &sluice.Message{Topic: topic, Received: at}, Alert: &sluice.Alert{
		Rule: "boiler", Severity: "critical", Status: sluice.AlertFiring, Series: "boiler-7", Device: "boiler-7",
		Value: 95.5, Message: "boiler boiler-7 at 95.5 °C", Time: at, Since: at, Topic: topic, Notification: 1,
		Tags: []sluice.Tag{{Key: "site", Value: "north"}, {Key: "line", Value: "line1"}, {Key: "device", Value: "boiler-7"}}}}
	if err := s.Write(context.Background(), []sluice.Event{e}); err != nil {
		t.Fatal(err)
	}
	if body := <-got; body != want {
		t.Fatalf("the sink posts\n%s\nthe README shows\n%s", body, want)
	}
}
