package bench

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"time"
)

// SeriesResult is one series-scale run (-scale -series): Load.Series
// series appear once each, their state is held for the rules' ttl, then
// expires. It says what memory the series take and whether it is given
// back.
type SeriesResult struct {
	Name, Target string
	Load         LoadReport
	// Series is how many series appeared (messages acknowledged, one
	// each); Held the most series sluice reported holding state for
	// (sluice_rule_active_series, summed over rules).
	Series, Held int64
	// RSS of the process: before the load (after a GC that returns freed
	// memory to the system), its peak (VmHWM, from the load to the end of
	// expiry), when the last series had appeared (the series' state held,
	// the sinks perhaps still writing), and once every series had expired
	// and the sinks had caught up (both after that GC).
	IdleRSS, PeakRSS, HeldRSS, AfterRSS int64
	// The Go heap in use (HeapInuse) at the same moments.
	IdleHeap, HeldHeap, AfterHeap uint64
	// Publish is how long the series took to appear; Expiry from the last
	// publish until no series was left.
	Publish, Expiry time.Duration
	Problems        []string
}

// series runs the series check against sluice: publish Load.Series
// messages, each a series of its own, wait for the sinks, then for every
// series to expire, measuring RSS along the way.
func (b *bench) series(ctx context.Context, stack *sluiceStack, target string) error {
	r := &SeriesResult{Name: "sluice", Target: target}
	var ms runtime.MemStats
	settle := func() (int64, uint64) {
		runtime.GC()
		debug.FreeOSMemory()
		runtime.ReadMemStats(&ms)
		return memoryOf(0).RSS, ms.HeapInuse
	}
	r.IdleRSS, r.IdleHeap = settle()
	_ = resetPeak()
	start := time.Now()
	if err := b.side.StartLoad(StartArgs{Addr: stack.addr, Load: b.cfg.Load}, &Empty{}); err != nil {
		return err
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	phase := "publishing"
	var published, deadline time.Time
	for {
		select {
		case <-tick.C:
		case <-ctx.Done():
			b.side.StopLoad(Empty{}, &Empty{})
			return ctx.Err()
		}
		var lp LoadProgress
		if err := b.side.Progress(Empty{}, &lp); err != nil {
			return err
		}
		n := stack.numbers()
		r.Held = max(r.Held, int64(n.series))
		fmt.Fprintf(b.out, "%-8s %5.0fs %-11s dev %s/%s  series sent %s  acked %s | held %s  backlog %s | rss %s\n", r.Name,
			time.Since(start).Seconds(), phase, count(lp.Fleet.Connected), count(int64(b.cfg.Load.Devices)),
			count(lp.Fleet.Sent), count(lp.Fleet.Acked), count(int64(n.series)), count(int64(n.backlog)), mb(memoryOf(0).RSS))
		switch phase {
		case "publishing":
			if lp.Fleet.Phase != "done" {
				continue
			}
			published = time.Now()
			r.Publish = published.Sub(start)
			deadline = published.Add(b.cfg.Drain)
			r.HeldRSS, r.HeldHeap = settle()
			if b.cfg.MemProfile != "" {
				if err := writeHeapProfile(b.cfg.MemProfile + ".held"); err != nil {
					r.Problems = append(r.Problems, "heap profile: "+err.Error())
				}
			}
			phase = "expiring"
		case "expiring":
			if n.series > 0 || !stack.svc.CaughtUp() {
				break
			}
			r.Expiry = time.Since(published)
			r.PeakRSS = memoryOf(0).Peak
			r.AfterRSS, r.AfterHeap = settle()
			if b.cfg.MemProfile != "" {
				// What is left once the series are gone.
				if err := writeHeapProfile(b.cfg.MemProfile); err != nil {
					r.Problems = append(r.Problems, "heap profile: "+err.Error())
				}
			}
			if err := b.side.Finish(Empty{}, &r.Load); err != nil {
				return err
			}
			r.Series = r.Load.Fleet.Acked
			b.report.addSeries(r)
			return nil
		}
		if time.Now().After(deadline) {
			r.Problems = append(r.Problems, fmt.Sprintf("still %s %v after the last publish; measured as it stood", phase, b.cfg.Drain))
			r.PeakRSS = memoryOf(0).Peak
			r.AfterRSS, r.AfterHeap = settle()
			if err := b.side.Finish(Empty{}, &r.Load); err != nil {
				return err
			}
			r.Series = r.Load.Fleet.Acked
			b.report.addSeries(r)
			return nil
		}
	}
}

func (r *Report) addSeries(s *SeriesResult) { r.Series = append(r.Series, s) }

func (r *Report) seriesTable(w io.Writer) {
	fmt.Fprint(w, "\n## Series: memory as series appear once and expire\n\n")
	fmt.Fprintln(w, "| run | target | series | most held (all rules) | publish | expiry after the last | RSS before | peak RSS | RSS held | RSS after expiry | after − before | Go heap before / held / after |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, s := range r.Series {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s / %s |\n", s.Name, s.Target,
			count(s.Series), count(s.Held), round(s.Publish), round(s.Expiry), mb(s.IdleRSS), mb(s.PeakRSS), mb(s.HeldRSS),
			mb(s.AfterRSS), mb(s.AfterRSS-s.IdleRSS), mb(int64(s.IdleHeap)), mb(int64(s.HeldHeap)), mb(int64(s.AfterHeap)))
	}
	fmt.Fprintln(w, "\nRSS before, held and after are read after a GC that returns freed memory to the system; peak RSS is the most the process held (VmHWM) from the load to the end of expiry. Held: when the last series had appeared, their state held (the sinks perhaps still writing). After expiry: once no rule held state for any series and the sinks had caught up. docs/operations.md (Memory) gives the budget after − before must stay within.")
}
