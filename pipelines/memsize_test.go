package pipelines

import (
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
)

// The journal's cache counts what the values it keeps hold
// (journalValueSize): the estimate of a message and of the events of a
// record of twenty fields is within a factor of two of what the Go heap
// gives them (measured as what decoding them from the journal allocates:
// the events' message with its payload, less the field names, which the
// rules' values share).
func TestJournalValueSize(t *testing.T) {
	msg := &sluice.Message{Topic: "plant/north/line1/boiler-00001/telemetry", Payload: make([]byte, 256), QoS: 1,
		ClientID: "boiler-00001", Received: time.Now()}
	rec := &sluice.Record{Rule: "boiler", Topic: msg.Topic, Time: msg.Received,
		Tags: []sluice.Tag{{Key: "site", Value: "north"}, {Key: "line", Value: "line1"}, {Key: "device", Value: "boiler-00001"}}}
	names := 0
	for i := range 20 {
		name := "field" + strconv.Itoa(i)
		names += len(name)
		rec.Fields = append(rec.Fields, sluice.Field{Name: name, Value: float64(i) + 0.5})
	}
	events := []sluice.Event{{Stream: sluice.StreamRecords, ID: "sluice-1:12345:0", Message: msg, Record: rec}}
	data := sluice.AppendEvents(nil, msg, events)
	msgData := msg.AppendBinary(nil)

	allocated := func(f func()) int {
		const n = 200
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for range n {
			f()
		}
		runtime.ReadMemStats(&after)
		return int(after.TotalAlloc-before.TotalAlloc) / n
	}
	heapMsg := allocated(func() { sluice.DecodeMessage(msgData) })
	// The events record does not keep the payload: decoding makes the
	// message without it, and the field names.
	heapEvents := allocated(func() { sluice.DecodeEvents(data) }) - names + len(msg.Payload)
	for _, c := range []struct {
		what           string
		estimate, heap int
	}{
		{"message", journalValueSize(msg), heapMsg},
		{"events", journalValueSize(events), heapEvents},
	} {
		t.Logf("%s: estimated %d bytes, the heap gives it %d", c.what, c.estimate, c.heap)
		if c.estimate < c.heap/2 || c.estimate > 2*c.heap {
			t.Errorf("%s: estimated %d bytes, the heap gives it %d", c.what, c.estimate, c.heap)
		}
	}
}
