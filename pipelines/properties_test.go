package pipelines_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

// TestPropertiesEndToEnd sends MQTT 5 messages with user properties and a
// content type through real sinks: the properties become Kafka headers
// (and the Kafka key, by template), a chosen one becomes an InfluxDB tag,
// the device's timestamp comes from a property, and the content type
// picks the decoder (a key=value payload, not JSON).
func TestPropertiesEndToEnd(t *testing.T) {
	influx := testsvc.Influxd(t)
	must(t, influx.CreateDatabase("db"))
	kafka := testsvc.Kafka(t, "records")
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(`rules:
  - name: meter
    match: meters/+device/reading
`), 0o644))
	path := filepath.Join(dir, "sluice.yaml")
	must(t, os.WriteFile(path, []byte(fmt.Sprintf(`
data_dir: %s
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines: [{name: p, topics: ["meters/#"], rules: [rules.yaml], sinks: [influx, kafka]}]
sinks:
  - name: influx
    influxdb:
      url: %s
      bucket: db/autogen
      tag_properties: [gateway]
      time_property: sampled_at
  - name: kafka
    kafka: {brokers: ["%s"], topic: records, key: "{prop.serial}"}
`, filepath.Join(dir, "data"), influx.URL, kafka.Addrs()[0])), 0o644))
	cfg, err := pipelines.Load(path)
	must(t, err)
	svc, err := pipelines.New(cfg, pipelines.Options{})
	must(t, err)
	must(t, svc.Start(context.Background()))
	defer svc.Close(context.Background())

	dev := testsvc.MQTT(t, svc.Broker().Addr("tcp"), "meter-7")
	sampled := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := dev.Client.Publish(ctx, &paho.Publish{Topic: "meters/m7/reading", QoS: 1, Payload: []byte("kwh=12.5 volts=231"),
		Properties: &paho.PublishProperties{ContentType: "text/plain", User: paho.UserProperties{
			{Key: "gateway", Value: "gw-3"}, {Key: "serial", Value: "SN-0007"},
			{Key: "sampled_at", Value: fmt.Sprint(sampled.UnixMilli())}}}}); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, svc)

	body, err := influx.Query("db", `SELECT kwh, volts, gateway, device FROM meter`)
	must(t, err)
	var resp struct {
		Results []struct{ Series []struct{ Values [][]any } }
	}
	must(t, json.Unmarshal(body, &resp))
	if len(resp.Results) != 1 || len(resp.Results[0].Series) != 1 || len(resp.Results[0].Series[0].Values) != 1 {
		t.Fatalf("influxdb: %s", body)
	}
	row := resp.Results[0].Series[0].Values[0]
	at, _ := time.Parse(time.RFC3339Nano, row[0].(string))
	if !at.Equal(sampled) || row[1] != 12.5 || row[2] != 231.0 || row[3] != "gw-3" || row[4] != "m7" {
		t.Errorf("influxdb row %v; want time %v (the sampled_at property), kwh 12.5, volts 231, gateway gw-3, device m7", row, sampled.UTC())
	}

	msgs := testsvc.ReadKafka(t, kafka.Addrs(), "records", 1, 30*time.Second)
	headers := map[string]string{}
	for _, h := range msgs[0].Headers {
		headers[h.Key] = string(h.Value)
	}
	if string(msgs[0].Key) != "SN-0007" || headers["gateway"] != "gw-3" || headers["serial"] != "SN-0007" || headers["content-type"] != "text/plain" {
		t.Errorf("kafka key %q headers %v", msgs[0].Key, headers)
	}
}
