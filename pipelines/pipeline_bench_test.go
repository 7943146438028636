package pipelines_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/pipelines"
)

// BenchmarkPipeline measures what sluice does per message beyond the
// broker, in one process and without the noise of a load generator: the
// simplest job of sluice bench (-job influx: one rule naming the topic
// levels, an InfluxDB sink writing 3 fields and 3 tags) on 256-byte JSON
// readings at QoS 1, durability process: 100 publishers hand messages to
// the pipelines as the broker's connections do (Service.Handle, which
// returns once the message is journaled), the rules worker records what it
// derives, and the InfluxDB sink encodes and writes its batches to a
// server that stands in for InfluxDB (it counts the points and answers
// 204). An op is one message, published and written to the sink. Compare
// ns/op, B/op and allocs/op before and after a change, in one run
// (benchstat), or count instructions with callgrind:
//
//	go test ./pipelines -run XXX -bench Pipeline -benchmem -count 10
func BenchmarkPipeline(b *testing.B) {
	var points atomic.Int64
	influx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		points.Add(int64(bytes.Count(body, []byte("\n")) + 1))
		if len(body) == 0 {
			points.Add(-1)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer influx.Close()
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte("rules:\n  - name: telemetry\n    match: plant/+site/+line/+device/telemetry\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	cfg, err := pipelines.Parse("bench.yaml", []byte(fmt.Sprintf(`
data_dir: %s
watch_rules: false
broker: {listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]}
pipelines:
  - name: telemetry
    topics: ["plant/+/+/+/telemetry"]
    rules: [rules.yaml]
    sinks: [influx]
sinks:
  - name: influx
    influxdb: {url: %q, bucket: db/autogen, fields: [seq, ts, aux00], time_field: sent_us, time_format: unix_us}
`, filepath.Join(dir, "data"), influx.URL)), dir)
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

	const publishers = 100
	payloads := make([][]byte, publishers)
	topics := make([]string, publishers)
	for i := range publishers {
		topics[i] = fmt.Sprintf("plant/site%d/line%d/boiler-%05d/telemetry", i%5, i%4, i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for p := range publishers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				payloads[p] = benchReading(payloads[p][:0], i, start.Add(time.Duration(i)*time.Microsecond))
				msg := &sluice.Message{Topic: topics[p], Payload: bytes.Clone(payloads[p]), QoS: 1, ClientID: topics[p][17:28], Received: time.Now()}
				if err := svc.Handle(ctx, msg, false); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for points.Load() < int64(b.N) {
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// cpuTime is the CPU time the process has used (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchReading appends a 256-byte reading as sluice bench's devices send
// them: a kind, a time in ms, seq, sent_us, two measurements and numeric
// padding.
func benchReading(b []byte, seq int64, at time.Time) []byte {
	start := len(b)
	b = append(b, `{"kind":"boiler","ts":`...)
	b = strconv.AppendInt(b, at.UnixMilli(), 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"sent_us":`...)
	b = strconv.AppendInt(b, at.UnixMicro(), 10)
	b = append(b, `,"temperature":`...)
	b = strconv.AppendFloat(b, 74+float64(seq%1000)/100, 'f', 2, 64)
	b = append(b, `,"pressure":`...)
	b = strconv.AppendFloat(b, 2.1+float64(seq%100)/1000, 'f', 3, 64)
	for k := 0; len(b)-start+len(`,"aux00":1234.5`) <= 255; k++ {
		b = append(b, `,"aux`...)
		b = append(b, byte('0'+k/10), byte('0'+k%10))
		b = append(b, `":`...)
		b = strconv.AppendFloat(b, 1000+float64(k)*11.1, 'f', 1, 64)
	}
	return append(b, '}')
}
