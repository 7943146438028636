package rules_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/rules"
)

// benchPayload is a 256-byte JSON reading from a boiler.
func benchPayload(i int) []byte {
	// Mostly in range, as a healthy fleet is: an alert transition is rare.
	p := fmt.Sprintf(`{"kind":"boiler","temperature":%.2f,"pressure":2.13,"battery":87,"site_code":"N1","firmware":"4.2.1","status":"running","flow":41.7,"rpm":1450,"uptime_s":86400,"ts":1795694401500,"serial":"BX-2231-0042-77","pad":"`, 70+float64(i%17))
	for len(p) < 254 {
		p += "x"
	}
	return []byte(p + `"}`)
}

func loadBench(b *testing.B) *rules.Set {
	data, err := os.ReadFile("testdata/bench_rules.yaml")
	if err != nil {
		b.Fatal(err)
	}
	set, err := rules.Parse("bench_rules.yaml", data)
	if err != nil {
		b.Fatal(err)
	}
	if n := len(set.Rules()); n != 10 {
		b.Fatalf("%d rules, want 10", n)
	}
	return set
}

// BenchmarkEval10Rules is decode + evaluation of ten rules for one 256-byte
// JSON message, on one core. Target: at or under 3 µs/op.
func BenchmarkEval10Rules(b *testing.B) {
	set := loadBench(b)
	ev := set.NewEvaluator(nil, rules.Limits{})
	msgs := make([]*sluice.Message, 64)
	for i := range msgs {
		msgs[i] = &sluice.Message{Topic: fmt.Sprintf("plant/north/l1/b%d/telemetry", i%16), Payload: benchPayload(i), QoS: 1, Received: time.Now()}
	}
	if len(msgs[0].Payload) != 256 {
		b.Fatalf("payload is %d bytes", len(msgs[0].Payload))
	}
	out := make([]sluice.Event, 0, 16)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out, _ = ev.Eval(msgs[i%len(msgs)], out[:0])
	}
}

// BenchmarkEval10RulesGzip is the same with the payload gzip-compressed
// (decode: auto finds it by its magic bytes).
func BenchmarkEval10RulesGzip(b *testing.B) {
	set := loadBench(b)
	ev := set.NewEvaluator(nil, rules.Limits{})
	msgs := make([]*sluice.Message, 64)
	for i := range msgs {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write(benchPayload(i))
		w.Close()
		msgs[i] = &sluice.Message{Topic: fmt.Sprintf("plant/north/l1/b%d/telemetry", i%16), Payload: buf.Bytes(), QoS: 1, Received: time.Now()}
	}
	out := make([]sluice.Event, 0, 16)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out, _ = ev.Eval(msgs[i%len(msgs)], out[:0])
	}
}

// BenchmarkSeriesMemory measures the heap held per active series: 100,000
// devices through a rule with one window function and an alert. It reports
// bytes/series (everything the rule keeps for a series) and
// bytes/window (what one more window function adds per series).
// Target: at or under 1 KB per active series per window function.
func BenchmarkSeriesMemory(b *testing.B) {
	const series = 100_000
	heldBy := func(src string) float64 {
		set, err := rules.Parse("mem.yaml", []byte(src))
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		ev := set.NewEvaluator(nil, rules.Limits{})
		msg := &sluice.Message{Payload: []byte(`{"t": 21.5}`), Received: time.Now()}
		for i := range series {
			msg.Topic = fmt.Sprintf("plant/s/l/d%06d/telemetry", i)
			ev.Eval(msg, nil)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if st := ev.Stats(); st[0].Series != series {
			b.Fatalf("%d series, want %d", st[0].Series, series)
		}
		runtime.KeepAlive(ev)
		return float64(after.HeapAlloc-before.HeapAlloc) / series
	}
	const rule = `
rules:
  - name: r
    match: plant/+site/+line/+device/telemetry
    records: false
    alert:
      when: avg_over(t, "5m") > 90%s
`
	for i := 0; i < b.N; i++ {
		one := heldBy(fmt.Sprintf(rule, ""))
		two := heldBy(fmt.Sprintf(rule, ` or max_over(t, "5m") > 95`))
		b.ReportMetric(one, "bytes/series")
		b.ReportMetric(two-one, "bytes/window")
	}
}

// BenchmarkEvalStateful is one message through a rule with four stateful
// calls (a window in a field, and a count, a z-score and a rate in when),
// the state of 16 series.
func BenchmarkEvalStateful(b *testing.B) {
	set, err := rules.Parse("stateful.yaml", []byte(`
rules:
  - name: boiler_drift
    match: plant/+site/+line/+device/telemetry
    where: kind == "boiler"
    fields:
      temp_avg: avg_over(temperature, "5m")
    alert:
      when: count_over("10m") >= 30 and (abs(zscore(temperature, "10m")) > 4 or rate(pressure) > 0.5)
      message: "boiler {{ device }} at {{ temperature }} °C"
`))
	if err != nil {
		b.Fatal(err)
	}
	ev := set.NewEvaluator(nil, rules.Limits{})
	msgs := make([]*sluice.Message, 64)
	start := time.Now()
	for i := range msgs {
		msgs[i] = &sluice.Message{Topic: fmt.Sprintf("plant/north/l1/b%d/telemetry", i%16), Payload: benchPayload(i), QoS: 1}
	}
	out := make([]sluice.Event, 0, 16)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m := msgs[i%len(msgs)]
		m.Received = start.Add(time.Duration(i) * time.Millisecond)
		out, _ = ev.Eval(m, out[:0])
	}
}

// BenchmarkEvalOneRule is the simplest job's rule (sluice bench -job
// influx): the topic levels named, every reading a record, of a 256-byte
// JSON reading of 21 fields as sluice bench's devices send; with every
// field recorded, and with the four an InfluxDB sink writes
// (Evaluator.KeepFields, as a pipeline sets it).
func BenchmarkEvalOneRule(b *testing.B) {
	set, err := rules.Parse("influx.yaml", []byte("rules:\n  - name: telemetry\n    match: plant/+site/+line/+device/telemetry\n"))
	if err != nil {
		b.Fatal(err)
	}
	msgs := make([]*sluice.Message, 64)
	for i := range msgs {
		p := fmt.Appendf(nil, `{"kind":"boiler","ts":%d,"seq":%d,"sent_us":%d,"temperature":%.2f,"pressure":%.3f`,
			1795694401500+i, 1000+i, 1795694401500123+i, 74+float64(i%17)/10, 2.1+float64(i%7)/100)
		for k := 0; len(p) < 240; k++ {
			p = fmt.Appendf(p, `,"aux%02d":%.1f`, k, 1000+float64(k)*11.1)
		}
		msgs[i] = &sluice.Message{Topic: fmt.Sprintf("plant/north/line1/boiler-%05d/telemetry", i), Payload: append(p, '}'), QoS: 1, Received: time.Now()}
	}
	for _, keep := range [][]string{nil, {"aux00", "sent_us", "seq", "ts"}} {
		name := "every field"
		if keep != nil {
			name = "the sink's four"
		}
		b.Run(name, func(b *testing.B) {
			ev := set.NewEvaluator(nil, rules.Limits{})
			ev.KeepFields(keep)
			out := make([]sluice.Event, 0, 4)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				out, _ = ev.Eval(msgs[i%len(msgs)], out[:0])
			}
		})
	}
}
