package pipelines_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/pipelines"
)

// BenchmarkDurability measures what each durability mode costs, in one run
// so the figures compare: 20,000 QoS 1 messages from 16 concurrent
// publishers go through the journal, a rule and a file sink, and the clock
// stops when the sink has written the last one. It reports messages per
// second for none, process and fsync, and process as a fraction of none
// (target: at least 0.8).
func BenchmarkDurability(b *testing.B) {
	const messages, publishers = 20000, 16
	modes := []string{"none", "process", "fsync"}
	elapsed := map[string]time.Duration{}
	for i := 0; i < b.N; i++ {
		// Rotate the order, so that no mode always runs first (cold) or
		// last.
		for k := range modes {
			mode := modes[(i+k)%len(modes)]
			elapsed[mode] += durabilityRun(b, mode, messages, publishers)
		}
	}
	rate := func(mode string) float64 { return float64(b.N*messages) / elapsed[mode].Seconds() }
	b.ReportMetric(rate("none"), "none_msg/s")
	b.ReportMetric(rate("process"), "process_msg/s")
	b.ReportMetric(rate("fsync"), "fsync_msg/s")
	b.ReportMetric(rate("process")/rate("none"), "process/none")
}

func durabilityRun(b *testing.B, mode string, messages, publishers int) time.Duration {
	b.Helper()
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(`
rules:
  - name: boiler
    match: plant/+site/+line/+device/telemetry
    where: kind == "boiler"
    fields:
      temp_f: temperature * 9 / 5 + 32
`), 0o644); err != nil {
		b.Fatal(err)
	}
	cfg, err := pipelines.Parse("bench.yaml", []byte(fmt.Sprintf(`
data_dir: %s
watch_rules: false
broker: {listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]}
pipelines:
  - name: p
    topics: ["plant/#"]
    rules: [rules.yaml]
    sinks: [out]
    durability: %s
sinks:
  - name: out
    batch: {size: 500, interval: 5ms}
    file: {path: %s}
`, filepath.Join(dir, "data"), mode, filepath.Join(dir, "out.jsonl"))), dir)
	if err != nil {
		b.Fatal(err)
	}
	svc, err := pipelines.New(cfg, pipelines.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := svc.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer svc.Close(ctx)
	payload := []byte(`{"kind":"boiler","temperature":81.5,"pressure":2.13,"status":"running","serial":"BX-2231-0042-77","firmware":"4.2.1","rpm":1450,"flow":41.7,"battery":87,"uptime_s":86400,"ts":1795694401500,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)
	start := time.Now()
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := fmt.Sprintf("plant/north/l1/dev%d/telemetry", p)
			for i := p; i < messages; i += publishers {
				msg := &sluice.Message{Topic: topic, Payload: payload, QoS: 1, ClientID: topic, Received: time.Now()}
				if err := svc.Handle(ctx, msg, false); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for !svc.CaughtUp() {
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}
