package pipelines

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/console"
	"github.com/sluicehq/sluice/internal/journal"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/rules"
)

// BenchmarkWorker measures what one rules worker does per message
// (evaluate, record for the sinks, acknowledge): without the console's
// hooks (the baseline, in the same run), with the console's tail unwatched,
// watched by a watch that takes none of the messages, and watched by one
// that takes them all. The first is the hot path's cost of the console:
// an atomic load per message.
func BenchmarkWorker(b *testing.B) {
	set, err := rules.Parse("bench.yaml", []byte(`
rules:
  - name: boiler
    match: plant/+site/+line/+device/telemetry
    where: kind == "boiler"
    fields:
      temp_f: temperature * 9 / 5 + 32
    alert:
      when: temperature > 90
      message: "{{ device }} at {{ temperature }}"
`))
	if err != nil {
		b.Fatal(err)
	}
	msgs := make([]*sluice.Message, 1024)
	t0 := time.Now()
	for i := range msgs {
		msgs[i] = &sluice.Message{Topic: fmt.Sprintf("plant/north/l1/b%d/telemetry", i%64), QoS: 1, Received: t0.Add(time.Duration(i) * time.Millisecond),
			Payload: fmt.Appendf(nil, `{"kind":"boiler","temperature":%d,"pressure":2.5,"rpm":1200}`, 60+i%40)}
	}
	for _, mode := range []string{"without the console's hooks", "unwatched", "watched, taking none", "watched, taking all"} {
		b.Run(mode, func(b *testing.B) {
			hub := console.NewHub(nil)
			switch mode {
			case "watched, taking none":
				w := hub.Tap.Watch(console.Filter{Device: "nobody"}, 256)
				defer w.Close()
			case "watched, taking all":
				w := hub.Tap.Watch(console.Filter{}, 256)
				defer w.Close()
				go func() {
					for range w.C {
					}
				}()
			}
			j, err := journal.Open(journal.Options{Mode: journal.Memory})
			if err != nil {
				b.Fatal(err)
			}
			defer j.Close()
			log := slog.New(slog.DiscardHandler)
			p := &pipeline{name: "bench", journal: j, streams: map[sluice.Stream]bool{sluice.StreamRecords: true, sluice.StreamAlerts: true},
				metrics: metrics.New(), log: log, rlog: newRateLog(log), tap: hub.Tap, deadLetters: hub.DeadLetters, alerts: hub.Alerts}
			p.set.Store(set)
			sink := j.Reader("sink")
			p.tracker.init(j.Reader("rules"), j)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go p.tracker.run(ctx)
			go func() { // the sink: keeps the journal from filling
				for {
					e, err := sink.Next(ctx)
					if err != nil {
						return
					}
					sink.Ack(e.Seq)
				}
			}()
			wk := p.newWorker()
			defer wk.close()
			b.ReportAllocs()
			b.ResetTimer()
			if mode == "without the console's hooks" {
				// worker.message as it was before the console: the baseline.
				for i := range b.N {
					w := work{seq: uint64(i + 1), msg: msgs[i%len(msgs)]}
					wk.current()
					var o rules.Outcome
					wk.out, o = wk.ev.Eval(w.msg, wk.out[:0])
					p.count(o)
					p.tracker.done(w.seq, p.record(w.msg, wk.out))
				}
				return
			}
			for i := range b.N {
				wk.message(work{seq: uint64(i + 1), msg: msgs[i%len(msgs)]})
			}
		})
	}
}
