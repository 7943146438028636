package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testsvc"
)

// TestAdminMetricsReadinessAndStatus runs sluice with real InfluxDB, Kafka
// and MQTT sinks, sends traffic that fires an alert, and checks what an
// operator sees: the metrics (non-zero where traffic went), /readyz going
// from ready to not ready once a sink has been down past its bound, the
// token on the private endpoints, and `sluice status`.
func TestAdminMetricsReadinessAndStatus(t *testing.T) {
	dir := t.TempDir()
	influx := testsvc.Influxd(t)
	if err := influx.CreateDatabase("db"); err != nil {
		t.Fatal(err)
	}
	kafka := testsvc.Kafka(t, "records")
	writeFile(t, dir, "rules.yaml", `rules:
  - name: hot
    match: plant/+site/+device/telemetry
    fields: {t2: t * 2}
    alert:
      when: t > 50
      severity: critical
      message: "{{ device }} at {{ t }}"
`)
	path := writeFile(t, dir, "sluice.yaml", `log: {level: info}
data_dir: `+filepath.Join(dir, "data")+`
shutdown_timeout: 2s
admin:
  address: 127.0.0.1:0
  token: admin-s3cret
  sink_down_after: 2s
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines:
  - name: telemetry
    topics: ["plant/#"]
    rules: [rules.yaml]
    sinks: [influx, kafka, alert-topic]
sinks:
  - name: influx
    retry: {initial: 50ms, max: 200ms}
    influxdb: {url: `+influx.URL+`, bucket: db/autogen, timeout: 2s}
  - name: kafka
    kafka: {brokers: ["`+kafka.Addrs()[0]+`"], topic: records}
  - name: alert-topic
    stream: alerts
    mqtt: {topic: "alerts/{rule}/{device}"}
`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testsvc.LogBuffer
	exited := make(chan int)
	go func() { exited <- Main(ctx, []string{"run", "-c", path}, &stdout, &stderr) }()
	mqttAddr := waitForListener(t, &stderr)
	adminAddr := waitForLog(t, &stderr, regexp.MustCompile(`admin listener.* address=(\S+)`))
	base := "http://" + adminAddr

	sub := testsvc.MQTT(t, mqttAddr, "ops")
	sub.Subscribe(t, "alerts/#")
	dev := testsvc.MQTT(t, mqttAddr, "dev-1")
	for i, v := range []int{20, 30, 60} {
		if rc := dev.Publish(t, "plant/north/dev-1/telemetry", byte(i%2+1), []byte(`{"t": `+strconv.Itoa(v)+`}`)); rc != 0 {
			t.Fatalf("publish: reason %#x", rc)
		}
	}
	sub.WaitFor(t, "alerts/hot/dev-1", 30*time.Second)

	if code, body := get(t, base+"/healthz", ""); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz", ""); code != 200 {
		t.Errorf("/readyz with every sink up: %d %q", code, body)
	}
	if code, _ := get(t, base+"/metrics", ""); code != http.StatusUnauthorized {
		t.Errorf("/metrics without the token: %d, want 401", code)
	}
	if code, _ := get(t, base+"/metrics", "wrong"); code != http.StatusUnauthorized {
		t.Errorf("/metrics with a wrong token: %d, want 401", code)
	}
	if code, _ := get(t, base+"/debug/pprof/", "admin-s3cret"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without admin.pprof: %d, want 404", code)
	}

	// Every figure an operator watches moves with the traffic. The sinks
	// write asynchronously: wait until the metrics have caught up.
	want := []string{
		`sluice_messages_received_total{listener="tcp",qos="1"}`,
		`sluice_messages_received_total{listener="tcp",qos="2"}`,
		`sluice_received_bytes_total{listener="tcp"}`,
		`sluice_broker_connections{listener="tcp"}`,
		`sluice_broker_connections_total{listener="tcp"}`,
		`sluice_pipeline_messages_total{pipeline="telemetry"}`,
		`sluice_pipeline_decoded_total{pipeline="telemetry"}`,
		`sluice_records_total{pipeline="telemetry",rule="hot"}`,
		`sluice_rule_evaluations_total{rule="hot"}`,
		`sluice_rule_matches_total{rule="hot"}`,
		`sluice_rule_evaluation_seconds_count{rule="hot"}`,
		`sluice_rule_active_series{rule="hot"}`,
		`sluice_alerts_firing{rule="hot",severity="critical"}`,
		`sluice_alert_transitions_total{rule="hot",severity="critical",status="firing"}`,
		`sluice_sink_events_written_total{sink="influx"}`,
		`sluice_sink_events_written_total{sink="kafka"}`,
		`sluice_sink_events_written_total{sink="alert-topic"}`,
		`sluice_sink_batches_total{sink="influx"}`,
		`sluice_sink_write_seconds_count{sink="kafka"}`,
		`sluice_sink_ready{sink="influx"}`,
		`sluice_ack_latency_seconds_count`,
		`sluice_journal_bytes{pipeline="telemetry"}`,
	}
	var metrics map[string]float64
	waitUntil(t, 30*time.Second, func() bool {
		metrics = scrape(t, base, "admin-s3cret")
		for _, k := range want {
			if metrics[k] <= 0 {
				return false
			}
		}
		return true
	}, func() string {
		return "metrics still zero or missing: " + missing(metrics, want) + "\n" + stderr.String()
	})
	if got := metrics[`sluice_sink_events_written_total{sink="influx"}`]; got != 3 {
		t.Errorf("influx wrote %v records, want 3", got)
	}
	if got := metrics[`sluice_alerts_firing{rule="hot",severity="critical"}`]; got != 1 {
		t.Errorf("alerts firing %v, want 1", got)
	}

	// sluice status: ready, the sinks and the alert.
	var out, errOut testsvc.LogBuffer
	if code := Main(ctx, []string{"status", "-admin", adminAddr, "-token", "admin-s3cret", "-interval", "100ms"}, &out, &errOut); code != exitOK {
		t.Fatalf("sluice status: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	t.Logf("sluice status:\n%s", out.String())
	for _, s := range []string{"READY", "pipeline telemetry", "influx", "kafka", "alert-topic", "hot", "critical"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("sluice status does not show %q:\n%s", s, out.String())
		}
	}

	// InfluxDB goes away: once its writes have failed for longer than
	// sink_down_after, sluice is not ready, and says which sink and why.
	if err := influx.Stop(); err != nil {
		t.Fatal(err)
	}
	dev.Publish(t, "plant/north/dev-1/telemetry", 1, []byte(`{"t": 61}`))
	var body string
	waitUntil(t, 60*time.Second, func() bool {
		var code int
		code, body = get(t, base+"/readyz", "")
		return code == http.StatusServiceUnavailable
	}, func() string { return "/readyz still ready with InfluxDB down: " + body })
	if !strings.Contains(body, `sink "influx"`) || !strings.Contains(body, "failing for") {
		t.Errorf("/readyz does not say which sink is down: %q", body)
	}
	if m := scrape(t, base, "admin-s3cret"); m[`sluice_sink_ready{sink="influx"}`] != 0 || m[`sluice_sink_ready{sink="kafka"}`] != 1 {
		waitUntil(t, 10*time.Second, func() bool {
			m = scrape(t, base, "admin-s3cret")
			return m[`sluice_sink_ready{sink="influx"}`] == 0 && m[`sluice_sink_ready{sink="kafka"}`] == 1
		}, func() string { return "sluice_sink_ready does not show influx down and kafka up" })
	}
	out, errOut = testsvc.LogBuffer{}, testsvc.LogBuffer{}
	if code := Main(ctx, []string{"status", "-admin", adminAddr, "-token", "admin-s3cret", "-interval", "100ms"}, &out, &errOut); code != exitFailure {
		t.Errorf("sluice status with a sink down: exit %d, want 1", code)
	}
	t.Logf("sluice status, InfluxDB down:\n%s", out.String())
	if !strings.Contains(out.String(), "NOT READY") || !strings.Contains(out.String(), "DOWN") {
		t.Errorf("sluice status does not show the sink down:\n%s", out.String())
	}

	cancel()
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		t.Fatal("sluice did not stop")
	}
	if strings.Contains(stderr.String(), "admin-s3cret") {
		t.Error("the admin token was logged")
	}
}

func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// scrape reads /metrics into series (name{labels} as exposed) and values.
func scrape(t *testing.T, base, token string) map[string]float64 {
	t.Helper()
	code, body := get(t, base+"/metrics", token)
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func missing(m map[string]float64, want []string) string {
	var miss []string
	for _, k := range want {
		if m[k] <= 0 {
			miss = append(miss, k)
		}
	}
	return strings.Join(miss, ", ")
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t *testing.T, deadline time.Duration, cond func() bool, why func() string) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatal(why())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitForLog(t *testing.T, log *testsvc.LogBuffer, re *regexp.Regexp) string {
	t.Helper()
	var m []string
	waitUntil(t, 30*time.Second, func() bool {
		m = re.FindStringSubmatch(log.String())
		return m != nil
	}, func() string { return "not in the log: " + re.String() + "\n" + log.String() })
	return m[1]
}
