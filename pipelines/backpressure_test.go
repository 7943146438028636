package pipelines_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/influxd"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

// TestSinkDownLosesNothing starts sluice while its InfluxDB is not there
// yet. QoS 1 publishes are acknowledged once they are in the journal; the
// sink's backlog grows; once a real influxd comes up on that address every
// message is written.
func TestSinkDownLosesNothing(t *testing.T) {
	// An address nothing listens on yet.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	influxAddr := l.Addr().String()
	l.Close()

	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte("rules:\n  - name: m\n    match: sensors/+device\n"), 0o644))
	cfgPath := filepath.Join(dir, "sluice.yaml")
	must(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
data_dir: %s
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines:
  - name: p
    topics: ["sensors/#"]
    rules: [rules.yaml]
    sinks: [influx]
sinks:
  - name: influx
    batch: {size: 10, interval: 10ms}
    retry: {initial: 50ms, max: 200ms}
    influxdb: {url: "http://%s", bucket: db/autogen, timeout: 2s}
`, filepath.Join(dir, "data"), influxAddr)), 0o644))
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
	must(t, svc.Start(ctx))
	t.Cleanup(func() { svc.Close(ctx) })

	const n = 40
	pub := testsvc.MQTT(t, svc.Broker().Addr("tcp"), "dev")
	for i := range n {
		if rc := pub.Publish(t, fmt.Sprintf("sensors/d%d", i%4), 1, []byte(fmt.Sprintf(`{"seq":%d}`, i))); rc != 0 {
			t.Fatalf("publish %d: reason %#x", i, rc)
		}
	}
	// Every message was acknowledged: it is in the journal, waiting for
	// the sink, which is retrying.
	deadline := time.Now().Add(30 * time.Second)
	for counter(t, m, "sluice_sink_retries_total") < 3 {
		if time.Now().After(deadline) {
			t.Fatal("the sink never retried")
		}
		time.Sleep(20 * time.Millisecond)
	}
	st, _ := svc.JournalStats("p")
	for _, r := range st.Readers {
		if r.Name == "sink:influx" && r.Lag < n {
			t.Fatalf("the sink's backlog is %d records, want all %d", r.Lag, n)
		}
	}

	srv, err := influxd.Start(ctx, influxd.Options{Dir: t.TempDir(), Addr: influxAddr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() })
	must(t, srv.CreateDatabase("db"))

	deadline = time.Now().Add(60 * time.Second)
	for !svc.CaughtUp() {
		if time.Now().After(deadline) {
			t.Fatal("the sink did not catch up after InfluxDB came up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	body, err := srv.Query("db", `SELECT count(seq) FROM m`)
	must(t, err)
	var resp struct {
		Results []struct{ Series []struct{ Values [][]any } }
	}
	must(t, json.Unmarshal(body, &resp))
	if got := resp.Results[0].Series[0].Values[0][1]; got != float64(n) {
		t.Fatalf("InfluxDB holds %v points, want %d", got, n)
	}
}
