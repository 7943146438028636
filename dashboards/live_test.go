package dashboards_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicehq/sluice/dashboards"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

// bucket is where the test's sluice writes, in the influxd the test starts
// (InfluxDB 1.8: database/retention-policy); the dashboards' ${bucket}.
const bucket = "sluice/autogen"

// sluiceConfig is the docker-compose stack's pipeline (examples/docker)
// without Kafka: the example rules, records and alerts to InfluxDB. Its
// ACL lets clients publish under plant/ only.
const sluiceConfig = `
log: {level: error}
data_dir: %[1]q
broker:
  listeners:
    - name: tcp
      address: 127.0.0.1:0
      allow_anonymous: true
  auth:
    acl_file: %[2]q
pipelines:
  - name: telemetry
    topics: ["plant/+/+/+/telemetry"]
    rules: [%[3]q]
    sinks: [influx, influx-alerts]
sinks:
  - name: influx
    stream: records
    batch: {size: 100, interval: 20ms}
    influxdb:
      url: %[4]s
      bucket: ` + bucket + `
      measurement: "{rule}"
      time_field: ts
      time_format: unix_ms
  - name: influx-alerts
    stream: alerts
    batch: {size: 100, interval: 20ms}
    influxdb:
      url: %[4]s
      bucket: ` + bucket + `
      measurement: alerts
`

const acl = `
rules:
  - allow: all
    topics: ["plant/#"]
`

// TestDashboardsShowData runs the real pipeline, with the example rules,
// into a real influxd, sends a small fleet's telemetry over MQTT, and then
// checks what Grafana would show: every Flux query of every panel and
// variable returns rows, and /metrics exports every metric the health
// dashboard reads.
func TestDashboardsShowData(t *testing.T) {
	influx := testsvc.Influxd(t)
	if err := influx.CreateDatabase("sluice"); err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	// cmd/sluice sets this at start; the test runs the pipelines without it.
	m.BuildInfo.WithLabelValues("test", runtime.Version()).Set(1)
	addr := startSluice(t, influx.URL, m)

	from := time.Now().Add(-time.Hour)
	sent := sendTelemetry(t, addr)
	client := influxdb2.NewClient(influx.URL, "")
	t.Cleanup(client.Close)
	waitForPoints(t, client, sent)
	sendTrouble(t, addr)

	t.Run("flux", func(t *testing.T) {
		for _, d := range readDashboards(t) {
			for _, q := range d.queries() {
				if q.datasource.Type != "influxdb" {
					continue
				}
				t.Run(d.Title+"/"+q.where, func(t *testing.T) {
					flux := interpolate(q.text, from, time.Now().Add(time.Minute))
					rows, err := runFlux(client, flux)
					if err != nil {
						t.Fatalf("%s %s: %v\n%s", d.file, q.where, err, flux)
					}
					if len(rows) == 0 {
						t.Errorf("%s %s returns no rows:\n%s", d.file, q.where, flux)
					}
				})
			}
		}
	})

	// The analysts' queries of docs/operations.md, on the same data: the
	// docs' bucket (telemetry, InfluxDB 2) and device become the test's.
	t.Run("docs", func(t *testing.T) {
		doc, err := os.ReadFile("../docs/operations.md")
		if err != nil {
			t.Fatal(err)
		}
		ours := strings.NewReplacer(`"telemetry"`, strconv.Quote(bucket), "boiler-07", "boiler-02")
		flux := codeBlocks(string(doc), "flux")
		if len(flux) < 4 {
			t.Fatalf("docs/operations.md has %d Flux examples, want at least 4", len(flux))
		}
		for _, q := range flux {
			q = ours.Replace(q)
			if rows, err := runFlux(client, q); err != nil || len(rows) == 0 {
				t.Errorf("docs/operations.md Flux example: %d rows, error %v:\n%s", len(rows), err, q)
			}
		}
		sql := codeBlocks(string(doc), "sql")
		if len(sql) != 1 {
			t.Fatalf("docs/operations.md has %d InfluxQL blocks, want 1", len(sql))
		}
		for _, q := range strings.Split(strings.TrimSpace(sql[0]), "\n") {
			q = ours.Replace(q)
			body, err := influx.Query("sluice", q)
			if err != nil || !strings.Contains(string(body), `"values"`) {
				t.Errorf("docs/operations.md InfluxQL example returns no rows (%v): %s\n%s", err, q, body)
			}
		}
	})

	t.Run("firing now", func(t *testing.T) {
		// boiler-01 and pump-03 fired and resolved; boiler-02 is still hot.
		rows := panelRows(t, client, "alerts.json", "Firing now", "table", from)
		var got []string
		for _, r := range rows {
			got = append(got, fmt.Sprintf("%v %v", r["rule"], r["device"]))
		}
		if want := []string{"boiler boiler-02"}; !slices.Equal(got, want) {
			t.Errorf("firing now: %q, want %q", got, want)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		srv := httptest.NewServer(promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
		defer srv.Close()
		want, err := dashboards.MetricNames()
		if err != nil {
			t.Fatal(err)
		}
		// Some metrics are updated after the fact (backlog gauges, dead
		// letters of a refused write): wait for them.
		deadline := time.Now().Add(30 * time.Second)
		for {
			missing := missingFamilies(t, srv.URL, want)
			if len(missing) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("after traffic, /metrics has no %s: the health dashboard's panels that read them show no data", strings.Join(missing, ", "))
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}

// startSluice starts the pipeline service and returns its MQTT address.
// codeBlocks returns the bodies of the fenced code blocks of a language in
// a Markdown text.
func codeBlocks(md, lang string) []string {
	var out []string
	for _, part := range strings.Split(md, "```"+lang+"\n")[1:] {
		body, _, _ := strings.Cut(part, "```")
		out = append(out, body)
	}
	return out
}

func startSluice(t *testing.T, influxURL string, m *metrics.Metrics) string {
	t.Helper()
	dir := t.TempDir()
	aclFile := filepath.Join(dir, "acl.yaml")
	if err := os.WriteFile(aclFile, []byte(acl), 0o644); err != nil {
		t.Fatal(err)
	}
	rulesDir, err := filepath.Abs("../examples/rules")
	if err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf(sluiceConfig, filepath.Join(dir, "data"), aclFile, rulesDir, influxURL)
	cfg, err := pipelines.Parse("sluice.yaml", []byte(text), dir)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := pipelines.New(cfg, pipelines.Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close(ctx) })
	return svc.Broker().Addr("tcp")
}

// A device and the readings it sends, one a second.
type device struct {
	site, line, id string
	readings       []map[string]any
}

func boiler(temperature float64) map[string]any {
	return map[string]any{"kind": "boiler", "temperature": temperature, "pressure": 2.1, "firmware": 3}
}

func pump(vibration float64) map[string]any {
	return map[string]any{"kind": "pump", "vibration": vibration, "rpm": 1450, "flow": 42.5}
}

func coldStore(temperature float64, doorOpen bool) map[string]any {
	return map[string]any{"kind": "coldchain", "temperature": temperature, "door_open": doorOpen}
}

func motor(vibrationInS float64) map[string]any {
	return map[string]any{"kind": "motor", "vibration_rms": vibrationInS, "winding_temp": 160, "current": 12}
}

// fleet: boiler-01 and pump-03 cross their limits and come back (an alert
// fires and resolves), boiler-02 overheats and stays hot (its alert is
// firing at the end), a cold store's door opens for loading, a motor runs
// steadily.
var fleet = []device{
	{"north", "line1", "boiler-01", []map[string]any{boiler(80), boiler(91), boiler(88), boiler(84)}},
	{"south", "line2", "boiler-02", []map[string]any{boiler(85), boiler(92), boiler(95), boiler(96)}},
	{"north", "line2", "pump-03", []map[string]any{pump(3), pump(7.5), pump(6.8), pump(6)}},
	{"east", "line1", "coldchain-04", []map[string]any{coldStore(4.5, false), coldStore(4.8, true), coldStore(5, true), coldStore(5.2, false)}},
	{"east", "line2", "motor-05", []map[string]any{motor(0.1), motor(0.1), motor(0.11), motor(0.1)}},
}

// sendTelemetry publishes the fleet's readings at QoS 1, as one gateway,
// stamped a second apart in the last minute. It returns how many points
// each measurement must hold: a record per reading, and the alert
// transitions.
func sendTelemetry(t *testing.T, addr string) map[string]int {
	gateway := testsvc.MQTT(t, addr, "gateway-1")
	t0 := time.Now().Add(-time.Minute)
	want := map[string]int{"alerts": 5} // boiler-01, pump-03: fired, resolved; boiler-02 fired
	for i := range fleet[0].readings {
		for _, d := range fleet {
			r := maps.Clone(d.readings[i])
			r["ts"] = t0.Add(time.Duration(i) * time.Second).UnixMilli()
			publish(t, gateway, fmt.Sprintf("plant/%s/%s/%s/telemetry", d.site, d.line, d.id), r)
			want[r["kind"].(string)]++ // each kind's rule is named after it
		}
	}
	return want
}

// sendTrouble sends what goes wrong in a plant, so that the error metrics
// have values.
func sendTrouble(t *testing.T, addr string) {
	gateway := testsvc.MQTT(t, addr, "gateway-2")
	// A truncated payload: a dead letter, and an error of each rule.
	publish(t, gateway, "plant/north/line1/boiler-01/telemetry", `{"kind": "boiler", "temperature": `)
	// A firmware update changed a field's type: InfluxDB refuses the
	// point, a permanent sink failure.
	publish(t, gateway, "plant/north/line1/boiler-01/telemetry", `{"kind": "boiler", "temperature": 70, "firmware": "3.1-beta"}`)
	// A device no rule is for: dropped.
	publish(t, gateway, "plant/north/line1/gateway-2/telemetry", `{"kind": "gateway", "uptime_s": 3600}`)
	// A topic no pipeline takes: unrouted.
	publish(t, gateway, "plant/north/line1/gateway-2/status", `{"online": true}`)
	// Outside plant/: the ACL denies it.
	if rc := gateway.Publish(t, "factory/recipes", 1, []byte("{}")); rc != 0x87 {
		t.Fatalf("publish outside the ACL: reason code %#x, want 0x87 (not authorized)", rc)
	}
	// Not MQTT: the connection is refused, and closed.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: sluice\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Closed with unread bytes, it may be reset rather than ended: either
	// will do, not the deadline.
	if _, err := io.Copy(io.Discard, conn); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("a connection that is not MQTT was not closed within 30s")
	}
}

// publish publishes a payload (JSON-encoded unless a string) at QoS 1 and
// checks the broker acknowledged it.
func publish(t *testing.T, c *testsvc.Client, topic string, payload any) {
	t.Helper()
	b, ok := payload.(string)
	if !ok {
		j, err := json.Marshal(payload)
		if err != nil {
			t.Fatal(err)
		}
		b = string(j)
	}
	if rc := c.Publish(t, topic, 1, []byte(b)); rc != 0 {
		t.Fatalf("publish to %s: reason code %#x", topic, rc)
	}
}

// waitForPoints waits until InfluxDB holds the points of each measurement
// (counted by a field every point has).
func waitForPoints(t *testing.T, client influxdb2.Client, want map[string]int) {
	t.Helper()
	flux := `from(bucket: "` + bucket + `")
  |> range(start: -1d)
  |> filter(fn: (r) => r._field == "kind" or r._field == "firing")
  |> group(columns: ["_measurement"])
  |> count()`
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := map[string]int{}
		rows, err := runFlux(client, flux)
		for _, r := range rows {
			got[r["_measurement"].(string)] = int(r["_value"].(int64))
		}
		done := err == nil
		for m, n := range want {
			done = done && got[m] >= n
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("InfluxDB holds %v points by measurement (error %v), want %v", got, err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// panelRows runs the Flux query of a panel, found by its title and type.
func panelRows(t *testing.T, client influxdb2.Client, file, title, typ string, from time.Time) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("json", file))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title, Type string
			Targets     []struct{ Query string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	for _, p := range d.Panels {
		if p.Title == title && p.Type == typ {
			rows, err := runFlux(client, interpolate(p.Targets[0].Query, from, time.Now().Add(time.Minute)))
			if err != nil {
				t.Fatal(err)
			}
			return rows
		}
	}
	t.Fatalf("%s: no %s panel %q", file, typ, title)
	return nil
}

var (
	// A dashboard variable: ${name} or ${name:format}.
	variable = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}`)
	// Grafana's Flux macros (pkg/tsdb/influxdb/flux/macros.go matches any
	// word before the dot, as this does).
	macro = regexp.MustCompile(`[a-zA-Z]+\.(timeRangeStart|timeRangeStop|windowPeriod)\b`)
)

// interpolate does to a query what Grafana does before sending it to
// InfluxDB: variables (the bucket the pipeline wrote to; every other
// variable at All, whose value is ".*"), then v.timeRangeStart and
// v.timeRangeStop (RFC 3339 times) and v.windowPeriod (a duration).
func interpolate(q string, from, to time.Time) string {
	q = variable.ReplaceAllStringFunc(q, func(v string) string {
		if variable.FindStringSubmatch(v)[1] == "bucket" {
			return bucket
		}
		return ".*"
	})
	return macro.ReplaceAllStringFunc(q, func(m string) string {
		switch macro.FindStringSubmatch(m)[1] {
		case "timeRangeStart":
			return from.UTC().Format(time.RFC3339Nano)
		case "timeRangeStop":
			return to.UTC().Format(time.RFC3339Nano)
		default:
			return "1s"
		}
	})
}

// runFlux runs a Flux query and returns its rows.
func runFlux(client influxdb2.Client, flux string) ([]map[string]any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := client.QueryAPI("").Query(ctx, flux)
	if err != nil {
		return nil, err
	}
	defer res.Close()
	var rows []map[string]any
	for res.Next() {
		rows = append(rows, res.Record().Values())
	}
	return rows, res.Err()
}

// missingFamilies returns the names in want that a scrape of url has no
// metric of.
func missingFamilies(t *testing.T, url string, want []string) []string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	// The text format announces each family that has metrics:
	// "# TYPE name type".
	have := map[string]bool{}
	for line := range strings.Lines(string(body)) {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			have[f[2]] = true
		}
	}
	var missing []string
	for _, name := range want {
		if !have[name] {
			missing = append(missing, name)
		}
	}
	return missing
}
