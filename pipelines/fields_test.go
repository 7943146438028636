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

// When every sink of a pipeline's records writes a list of fields (an
// InfluxDB sink with fields:), the records carry only what the sinks read.
// What a user sees is the same as with every field: the points have the
// fields listed (payload and derived, renamed), the measurement and tags
// their templates name from other fields, the time its time field, and the
// rules' alerts see every field of the payload.
func TestInfluxFieldsList(t *testing.T) {
	influx := testsvc.Influxd(t)
	must(t, influx.CreateDatabase("db"))
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(`
rules:
  - name: boiler
    match: plant/+site/+line/+device/telemetry
    rename: {temperature: temp_c}
    fields:
      temp_f: temperature * 9 / 5 + 32
      unused: pressure * 2
    alert:
      when: pressure > 3
      value: pressure
      message: "{{ device }} at {{ pressure }} bar"
`), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "sluice.yaml"), []byte(fmt.Sprintf(`
data_dir: %s
broker: {listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]}
pipelines:
  - name: telemetry
    topics: ["plant/#"]
    rules: [rules.yaml]
    sinks: [influx, alert-topic]
sinks:
  - name: influx
    batch: {size: 100, interval: 20ms}
    influxdb:
      url: %s
      bucket: db/autogen
      measurement: "{kind}"
      tags: {site: "{site}", model: "{model}"}
      fields: [temp_c, temp_f, seq]
      time_field: ts
      time_format: unix_ms
  - name: alert-topic
    stream: alerts
    mqtt: {topic: "alerts/{device}/{rule}", qos: 1}
`, filepath.Join(dir, "data"), influx.URL)), 0o644))
	cfg, err := pipelines.Load(filepath.Join(dir, "sluice.yaml"))
	must(t, err)
	svc, err := pipelines.New(cfg, pipelines.Options{})
	must(t, err)
	ctx := context.Background()
	must(t, svc.Start(ctx))
	t.Cleanup(func() { svc.Close(ctx) })
	watcher := testsvc.MQTT(t, svc.Broker().Addr("tcp"), "watcher")
	watcher.Subscribe(t, "alerts/#")
	device := testsvc.MQTT(t, svc.Broker().Addr("tcp"), "b1")

	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	for i, p := range []float64{2.1, 3.5} {
		payload := fmt.Sprintf(`{"kind":"boiler","model":"rx-%d","seq":%d,"temperature":%d,"pressure":%v,"ts":%d,"aux":1}`,
			i, i, 80+i, p, t0.Add(time.Duration(i)*time.Second).UnixMilli())
		if rc := device.Publish(t, "plant/north/l1/b1/telemetry", 1, []byte(payload)); rc != 0 {
			t.Fatalf("publish %d: reason code %#x", i, rc)
		}
	}
	waitCaughtUp(t, svc)

	body, err := influx.Query("db", `SELECT * FROM boiler ORDER BY time`)
	must(t, err)
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
		t.Fatalf("SELECT * FROM boiler: %s", body)
	}
	s := resp.Results[0].Series[0]
	if got, want := strings.Join(s.Columns, ","), "time,model,seq,site,temp_c,temp_f"; got != want {
		t.Errorf("columns %s, want %s (the fields listed, the tags templated)", got, want)
	}
	want := [][]any{
		{t0.UTC().Format(time.RFC3339Nano), "rx-0", 0.0, "north", 80.0, 176.0},
		{t0.Add(time.Second).UTC().Format(time.RFC3339Nano), "rx-1", 1.0, "north", 81.0, 177.8},
	}
	if fmt.Sprint(s.Values) != fmt.Sprint(want) {
		t.Errorf("rows\n got %v\nwant %v", s.Values, want)
	}
	// The alert saw pressure, which no sink writes.
	deadline := time.Now().Add(30 * time.Second)
	for len(watcher.Received()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no alert on pressure > 3")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p := watcher.Received()[0]; !strings.Contains(string(p.Payload), `"value":3.5`) {
		t.Errorf("alert %s: want the value 3.5", p.Payload)
	}
}
