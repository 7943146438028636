package pipelines_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"

	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

const e2eRules = `
rules:
  - name: boiler
    match: plant/+site/+line/+device/telemetry
    where: kind == "boiler"
    fields:
      temp_f: temperature * 9 / 5 + 32
    alert:
      when: temperature > 90
      severity: critical
      message: "boiler {{ device }} at {{ temperature }} °C"
`

const e2eConfig = `
log:
  level: warn
data_dir: %[3]s
broker:
  listeners:
    - name: tcp
      address: 127.0.0.1:0
      allow_anonymous: true
pipelines:
  - name: telemetry
    topics: ["plant/#"]
    rules: [rules.yaml]
    sinks: [events, influx, alert-topic]
sinks:
  - name: events
    stream: records
    batch: {size: 100, interval: 20ms}
    kafka:
      brokers: [%[1]s]
      topic: sluice.records
      key: "{device}"
  - name: influx
    stream: records
    batch: {size: 100, interval: 20ms}
    influxdb:
      url: %[2]s
      bucket: telemetry/autogen
      measurement: "{rule}"
      time_field: ts
      time_format: unix_ms
  - name: alert-topic
    stream: alerts
    mqtt:
      topic: "alerts/{site}/{device}/{rule}"
      qos: 1
`

type reading struct {
	device string
	kind   string
	temp   float64
}

// TestEndToEnd publishes telemetry at QoS 1 through the embedded broker and
// checks what a user would: the exact points in a real InfluxDB (Flux and
// InfluxQL), the exact records in Kafka, and the alerts on the alert topic.
func TestEndToEnd(t *testing.T) {
	influx := testsvc.Influxd(t)
	if err := influx.CreateDatabase("telemetry"); err != nil {
		t.Fatal(err)
	}
	kafka := testsvc.Kafka(t, "sluice.records")

	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(e2eRules), 0o644))
	cfgPath := filepath.Join(dir, "sluice.yaml")
	must(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(e2eConfig, kafka.Addrs()[0], influx.URL, filepath.Join(dir, "data"))), 0o644))
	cfg, err := pipelines.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	svc, err := pipelines.New(cfg, pipelines.Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close(ctx) })
	addr := svc.Broker().Addr("tcp")

	watcher := testsvc.MQTT(t, addr, "watcher")
	watcher.Subscribe(t, "alerts/#")
	device := testsvc.MQTT(t, addr, "gateway-1")

	// b1 crosses the threshold and comes back: one firing, one resolved.
	// b2 stays below. p1 is a pump (filtered out by where). One payload is
	// malformed and must not stop anything.
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	sent := []reading{
		{"b1", "boiler", 70}, {"b2", "boiler", 80}, {"b1", "boiler", 95},
		{"p1", "pump", 99}, {"b1", "boiler", 96.5}, {"b2", "boiler", 85}, {"b1", "boiler", 60},
	}
	for i, r := range sent {
		payload := fmt.Sprintf(`{"kind":%q,"temperature":%v,"ts":%d}`, r.kind, r.temp, t0.Add(time.Duration(i)*time.Second).UnixMilli())
		if rc := device.Publish(t, "plant/north/l1/"+r.device+"/telemetry", 1, []byte(payload)); rc != 0 {
			t.Fatalf("publish %d: reason code %#x", i, rc)
		}
	}
	// A malformed payload is acknowledged (it is safe in the journal),
	// counted as a dead letter, and the pipeline goes on.
	if rc := device.Publish(t, "plant/north/l1/b9/telemetry", 1, []byte(`{"kind":"boiler",`)); rc != 0 {
		t.Fatalf("malformed payload: reason code %#x", rc)
	}
	// Every publish was acknowledged once in the journal; the sinks write
	// it soon after. Wait until they have caught up.
	waitCaughtUp(t, svc)

	var boilers []reading
	for _, r := range sent {
		if r.kind == "boiler" {
			boilers = append(boilers, r)
		}
	}

	t.Run("influxdb flux", func(t *testing.T) {
		client := influxdb2.NewClient(influx.URL, "")
		defer client.Close()
		res, err := client.QueryAPI("").Query(ctx, `from(bucket: "telemetry/autogen")
			|> range(start: -1h)
			|> filter(fn: (r) => r._measurement == "boiler" and r._field == "temperature")
			|> group()
			|> sort(columns: ["_time"])`)
		if err != nil {
			t.Fatal(err)
		}
		var got []reading
		for res.Next() {
			r := res.Record()
			if r.ValueByKey("site") != "north" || r.ValueByKey("line") != "l1" {
				t.Errorf("tags of %v: site=%v line=%v", r.Values(), r.ValueByKey("site"), r.ValueByKey("line"))
			}
			got = append(got, reading{device: r.ValueByKey("device").(string), kind: "boiler", temp: r.Value().(float64)})
		}
		if res.Err() != nil {
			t.Fatal(res.Err())
		}
		if fmt.Sprint(got) != fmt.Sprint(boilers) {
			t.Fatalf("flux rows\n got %v\nwant %v", got, boilers)
		}
	})

	t.Run("influxdb influxql", func(t *testing.T) {
		body, err := influx.Query("telemetry", `SELECT temperature, temp_f, "kind" FROM boiler WHERE device = 'b1' ORDER BY time`)
		if err != nil {
			t.Fatal(err)
		}
		var resp struct {
			Results []struct {
				Series []struct {
					Columns []string
					Values  [][]any
				}
			}
		}
		must(t, json.Unmarshal(body, &resp))
		if len(resp.Results) != 1 || len(resp.Results[0].Series) != 1 {
			t.Fatalf("influxql: %s", body)
		}
		rows := resp.Results[0].Series[0].Values
		want := [][]any{
			{t0.UTC().Format(time.RFC3339Nano), 70.0, 158.0, "boiler"},
			{t0.Add(2 * time.Second).UTC().Format(time.RFC3339Nano), 95.0, 203.0, "boiler"},
			{t0.Add(4 * time.Second).UTC().Format(time.RFC3339Nano), 96.5, 205.7, "boiler"},
			{t0.Add(6 * time.Second).UTC().Format(time.RFC3339Nano), 60.0, 140.0, "boiler"},
		}
		if len(rows) != len(want) {
			t.Fatalf("influxql rows: %v", rows)
		}
		for i := range rows {
			gotTime, _ := time.Parse(time.RFC3339Nano, rows[i][0].(string))
			wantTime, _ := time.Parse(time.RFC3339Nano, want[i][0].(string))
			if !gotTime.Equal(wantTime) || rows[i][1] != want[i][1] || rows[i][2] != want[i][2] || rows[i][3] != want[i][3] {
				t.Errorf("row %d: got %v, want %v (time from the payload's ts)", i, rows[i], want[i])
			}
		}
	})

	t.Run("kafka", func(t *testing.T) {
		msgs := testsvc.ReadKafka(t, kafka.Addrs(), "sluice.records", len(boilers), 30*time.Second)
		var got []string
		for _, m := range msgs {
			headers := map[string]string{}
			for _, h := range m.Headers {
				headers[h.Key] = string(h.Value)
			}
			var rec struct {
				Rule   string
				Topic  string
				Tags   map[string]string
				Fields map[string]any
			}
			must(t, json.Unmarshal(m.Value, &rec))
			if headers["mqtt.topic"] != rec.Topic || headers["mqtt.client_id"] != "gateway-1" {
				t.Errorf("headers %v for record on %s", headers, rec.Topic)
			}
			if string(m.Key) != rec.Tags["device"] || rec.Rule != "boiler" {
				t.Errorf("key %q for record %+v", m.Key, rec)
			}
			got = append(got, fmt.Sprintf("%s:%v:%v", m.Key, rec.Fields["temperature"], rec.Fields["temp_f"]))
		}
		want := []string{"b1:70:158", "b1:95:203", "b1:96.5:205.7", "b1:60:140", "b2:80:176", "b2:85:185"}
		sort.Strings(got)
		sort.Strings(want)
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("kafka records\n got %v\nwant %v", got, want)
		}
	})

	t.Run("alert topic", func(t *testing.T) {
		// The alerts were published before the sinks caught up; this marker
		// is published after, so it arrives after them.
		device.Publish(t, "alerts/end", 1, []byte("end"))
		alerts := watcher.WaitFor(t, "alerts/end", 30*time.Second)
		var got []string
		for _, p := range alerts {
			var a struct {
				Rule, Severity, Status, Device, Message string
				Value                                   float64
				Time                                    time.Time
			}
			must(t, json.Unmarshal(p.Payload, &a))
			if a.Time.IsZero() {
				t.Errorf("alert without time: %s", p.Payload)
			}
			got = append(got, fmt.Sprintf("%s %s %s %s %s %v %q", p.Topic, a.Rule, a.Severity, a.Status, a.Device, a.Value, a.Message))
		}
		want := []string{
			`alerts/north/b1/boiler boiler critical firing b1 95 "boiler b1 at 95 °C"`,
			`alerts/north/b1/boiler boiler critical resolved b1 60 "boiler b1 at 60 °C"`,
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("alerts\n got %q\nwant %q", got, want)
		}
	})

	if got := counter(t, m, "sluice_dead_letters_total"); got != 1 {
		t.Errorf("dead letters counted: %v, want 1", got)
	}
}

// waitCaughtUp waits until the rules and every sink have finished with
// everything in the journals.
func waitCaughtUp(t *testing.T, svc *pipelines.Service) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !svc.CaughtUp() {
		if time.Now().After(deadline) {
			st, _ := svc.JournalStats("telemetry")
			t.Fatalf("the sinks did not catch up: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func counter(t *testing.T, m *metrics.Metrics, name string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, mt := range f.GetMetric() {
			total += mt.GetCounter().GetValue()
		}
	}
	return total
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
