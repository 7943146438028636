package pipelines_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

// BenchmarkInfluxBacklog measures how long a backlog of 60,000 records
// takes to drain into a real InfluxDB once it is reachable: clean, and with
// 12 records (0.02%) InfluxDB refuses (a string where the field is a
// float), in one run so the figures compare. It reports the seconds of
// each and their ratio (target: about 1).
//
//	go test ./pipelines -run XXX -bench InfluxBacklog -benchtime 1x
func BenchmarkInfluxBacklog(b *testing.B) {
	const records, bad = 60000, 12
	var clean, poisoned time.Duration
	for range b.N {
		clean += backlogRun(b, records, 0)
		poisoned += backlogRun(b, records, bad)
	}
	b.ReportMetric(clean.Seconds()/float64(b.N), "clean_s")
	b.ReportMetric(poisoned.Seconds()/float64(b.N), "12bad_s")
	b.ReportMetric(poisoned.Seconds()/clean.Seconds(), "12bad/clean")
}

// backlogRun fills a journal with records while InfluxDB cannot be reached,
// then starts sluice again with it reachable and times the drain; bad of
// the records have a string value where InfluxDB holds floats.
func backlogRun(b *testing.B, records, bad int) time.Duration {
	b.Helper()
	influx := testsvc.Influxd(b)
	if err := influx.CreateDatabase("db"); err != nil {
		b.Fatal(err)
	}
	// The field is a float in InfluxDB already, as in a running plant.
	resp, err := http.Post(influx.URL+"/write?db=db", "text/plain", strings.NewReader("telemetry,device=earlier v=1.5 1"))
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()

	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte("rules:\n  - name: telemetry\n    match: plant/+site/+line/+device/telemetry\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	config := func(url string) *pipelines.Config {
		cfg, err := pipelines.Parse("bench.yaml", []byte(fmt.Sprintf(`
data_dir: %s
watch_rules: false
broker: {listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]}
pipelines:
  - name: p
    topics: ["plant/#"]
    rules: [rules.yaml]
    sinks: [influx, dead-letters]
sinks:
  - name: influx
    retry: {initial: 10ms, max: 50ms}
    influxdb: {url: %q, bucket: db/autogen, measurement: telemetry}
  - name: dead-letters
    stream: dead_letters
    file: {path: %s}
`, filepath.Join(dir, "data"), url, filepath.Join(dir, "dead-letters.jsonl"))), dir)
		if err != nil {
			b.Fatal(err)
		}
		return cfg
	}

	// The backlog: InfluxDB's address refuses connections meanwhile.
	down := testsvc.Silent(b)
	down.Close()
	svc, err := pipelines.New(config("http://"+down.Addr), pipelines.Options{DrainTimeout: time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := svc.Start(ctx); err != nil {
		b.Fatal(err)
	}
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	const publishers = 4
	for p := range publishers {
		wg.Go(func() {
			for i := p; i < records; i += publishers {
				payload := fmt.Sprintf(`{"seq":%d,"v":%d.5}`, i, i%100)
				if bad > 0 && i%(records/bad) == records/bad/2 {
					payload = fmt.Sprintf(`{"seq":%d,"v":"hot"}`, i)
				}
				msg := &sluice.Message{Topic: fmt.Sprintf("plant/north/l1/d%d/telemetry", i%8), Payload: []byte(payload), QoS: 1,
					Received: t0.Add(time.Duration(i) * time.Millisecond)}
				if err := svc.Handle(ctx, msg, false); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	// The rules have made their records; only the sink is behind.
	for rulesBehind(svc) {
		time.Sleep(10 * time.Millisecond)
	}
	svc.Close(ctx)

	svc, err = pipelines.New(config(influx.URL), pipelines.Options{})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := svc.Start(ctx); err != nil {
		b.Fatal(err)
	}
	for !svc.CaughtUp() {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	svc.Close(ctx)
	dead, _ := os.ReadFile(filepath.Join(dir, "dead-letters.jsonl"))
	if n := bytes.Count(dead, []byte("\n")); n != bad {
		b.Fatalf("%d dead letters, want %d", n, bad)
	}
	body, err := influx.Query("db", `SELECT count(seq) FROM telemetry`)
	if err != nil || !bytes.Contains(body, fmt.Appendf(nil, `,%d]`, records-bad)) {
		b.Fatalf("InfluxDB does not hold the %d good records: %s %v", records-bad, body, err)
	}
	return elapsed
}

func rulesBehind(svc *pipelines.Service) bool {
	st, _ := svc.JournalStats("p")
	for _, r := range st.Readers {
		if r.Name == "rules" && r.Lag > 0 {
			return true
		}
	}
	return false
}
