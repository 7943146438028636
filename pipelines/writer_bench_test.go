package pipelines

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/journal"
)

// BenchmarkSinkEventsFromFiles measures what a sink reading its backlog
// from the journal's files (a sink back after an outage, or behind at full
// load) spends on a record per event it reads: a records sink decodes
// each; an alerts sink reads records of twenty fields that hold no alert.
//
//	go test ./pipelines -run XXX -bench SinkEventsFromFiles -benchmem
func BenchmarkSinkEventsFromFiles(b *testing.B) {
	j, err := journal.Open(journal.Options{Dir: b.TempDir(), Mode: journal.Process, CacheBytes: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	msg := &sluice.Message{Topic: "plant/north/line1/boiler-00001/telemetry", ClientID: "boiler-00001", QoS: 1, Received: time.Now()}
	rec := &sluice.Record{Rule: "boiler", Topic: msg.Topic, Time: msg.Received,
		Tags: []sluice.Tag{{Key: "site", Value: "north"}, {Key: "line", Value: "line1"}, {Key: "device", Value: "boiler-00001"}}}
	for i := range 20 {
		rec.Fields = append(rec.Fields, sluice.Field{Name: "field" + strconv.Itoa(i), Value: float64(i) + 0.5})
	}
	data := sluice.AppendEvents(nil, msg, []sluice.Event{{Stream: sluice.StreamRecords, ID: "sluice:1:0", Message: msg, Record: rec}})
	const records = 10000
	for range records {
		if _, err := j.Write(kindEvents, data, nil); err != nil {
			b.Fatal(err)
		}
	}
	for _, stream := range []sluice.Stream{sluice.StreamRecords, sluice.StreamAlerts} {
		b.Run(stream.String()+" sink", func(b *testing.B) {
			s := &sinkReader{stream: stream}
			r := j.Reader("bench-" + stream.String())
			ctx := context.Background()
			b.ReportAllocs()
			for i := range b.N {
				if i%records == 0 {
					r.Rewind(0)
				}
				e, err := r.Next(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := s.events(e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
