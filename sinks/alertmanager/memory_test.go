package alertmanager

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
)

// BenchmarkMemoryPerAlert measures what the sink holds per alert it keeps
// for re-sending (README: Memory), for a boiler alert of a realistic shape:
// four tags, a message of some 30 characters.
//
//	go test -run '^$' -bench MemoryPerAlert ./sinks/alertmanager
func BenchmarkMemoryPerAlert(b *testing.B) {
	const n = 10000
	for range b.N {
		s := New(Config{URLs: []string{"http://127.0.0.1:9093"}, MaxAlerts: n}, Options{})
		now := time.Now()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range n {
			// The event is garbage once kept, as in a pipeline.
			series := fmt.Sprintf("boiler-%05d", i)
			topic := "plant/north/line1/" + series + "/telemetry"
			e := &sluice.Event{Stream: sluice.StreamAlerts, Message: &sluice.Message{Topic: topic}, Alert: &sluice.Alert{
				Rule: "boiler", Severity: "critical", Status: sluice.AlertFiring, Series: series, Device: series,
				Value: 95.5, Message: "boiler " + series + " at 95.5 °C", Time: now, Since: now, Topic: topic,
				Tags: []sluice.Tag{{Key: "site", Value: "north"}, {Key: "line", Value: "line1"}, {Key: "device", Value: series}, {Key: "team", Value: "utilities"}}}}
			t, err := s.build(e)
			if err != nil {
				b.Fatal(err)
			}
			s.apply(nil, alertKey{e.Alert.Rule, e.Alert.Series}, t, e.Alert, now)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if len(s.alerts) != n {
			b.Fatalf("kept %d", len(s.alerts))
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/alert")
		runtime.KeepAlive(s)
	}
}
