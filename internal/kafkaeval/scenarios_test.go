package kafkaeval

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
)

// The events a group goes through.
const (
	evJoin  = "join"  // a third member joins two
	evLeave = "leave" // one of three stops gracefully (LeaveGroup)
	evKill  = "kill"  // one of three is cut off (session timeout)
	// evKillBusy is a kill while the members work through a backlog, so
	// that it lands between writing a batch's outputs and committing it.
	evKillBusy = "kill, busy"
)

// groupRun is one variant, one event: a steady load on the input topic,
// members in a group, the event, the group settled again, then the load
// stops, the survivors drain the input and the output is checked.
type groupRun struct {
	v       variant
	event   string
	members int           // before the event: 3 by default (2 for a join)
	rate    int           // records a second
	burst   int           // records produced at once before a busy kill
	warm    time.Duration // steady processing before the event (and the baseline window)
	stable  time.Duration // the assignment unchanged this long = settled
}

type runResult struct {
	Variant, Event string
	Pause          pause
	Baseline       time.Duration // worst partition gap in the warm window before the event
	Settle         time.Duration // from the event to the settled group
	Tally          tally
	CommitErrs     int64
	Aborted        int64
	Unstable       int64
}

func (g groupRun) run(ctx context.Context) (res runResult, err error) {
	res.Variant, res.Event = g.v.name, g.event
	r, err := g.setUp()
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, r.tearDown()) }()
	if err := r.startMembers(ctx); err != nil {
		return res, err
	}
	t0, err := r.trigger(ctx)
	if err != nil {
		return res, err
	}
	res.Baseline = r.rec.worstGap(t0.Add(-g.warm), t0)
	settled, tend, err := r.settle(ctx)
	if err != nil {
		return res, err
	}
	res.Settle, res.Pause = settled.Sub(t0), r.rec.pauseIn(t0, tend)
	for _, m := range r.members {
		b := baseOf(m)
		res.CommitErrs += b.commitErrs.Load()
		res.Unstable += b.unstable.Load()
		if m, ok := m.(*kgoTxnMember); ok {
			res.Aborted += m.aborted.Load()
		}
	}
	res.Tally, err = r.finish(ctx)
	return res, err
}

// running is a groupRun under way.
type running struct {
	groupRun
	cl      *cluster
	ld      *load
	rec     *recorder
	members map[int]member
	killed  member
	n       int // members before the event
	changed int // the member that joins, leaves or is killed

	failMu sync.Mutex
	fails  error
}

func (g groupRun) setUp() (*running, error) {
	r := &running{groupRun: g, rec: newRecorder(), members: map[int]member{}}
	r.n = g.members
	if r.n == 0 {
		r.n = 3
		if g.event == evJoin {
			r.n = 2
		}
	}
	r.changed = r.n - 1
	if g.event == evJoin {
		r.changed = r.n
	}
	var err error
	if r.cl, err = startCluster(inTopic, outTopic); err != nil {
		return nil, err
	}
	if r.ld, err = newLoad(r.cl.addrs); err != nil {
		r.cl.close()
		return nil, err
	}
	return r, nil
}

// tearDown leaves with the members still there, frees a killed one, and
// stops the load and the brokers.
func (r *running) tearDown() error {
	err := r.leaveAll()
	if r.killed != nil {
		r.killed.release()
	}
	r.ld.close()
	r.cl.close()
	return err
}

func (r *running) fail(err error) {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	r.fails = errors.Join(r.fails, err)
}

func (r *running) failed() error {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	return r.fails
}

func (r *running) start(id int) error {
	m, err := r.v.start(memberConfig{
		id: id, name: fmt.Sprintf("member-%d", id), addrs: r.cl.addrs, group: "rules",
		output: true, rec: r.rec, fail: r.fail,
	})
	if err != nil {
		return fmt.Errorf("start member %d: %w", id, err)
	}
	r.members[id] = m
	return nil
}

// leaveAll has every member leave at once.
func (r *running) leaveAll() error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for id, m := range r.members {
		wg.Go(func() {
			if err := leave(m); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
		delete(r.members, id)
	}
	wg.Wait()
	return errors.Join(errs...)
}

func leave(m member) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return m.leave(ctx)
}

// startMembers starts the steady load and the members, and returns once
// every partition has been progressing on all of them for g.warm and a
// random part of a heartbeat interval: members learn of a rebalance at
// their next heartbeat, so the event must not fall at the same point of
// their heartbeat cycle in every run.
func (r *running) startMembers(ctx context.Context) error {
	r.ld.steady(ctx, r.rate)
	for id := range r.n {
		if err := r.start(id); err != nil {
			return err
		}
	}
	if err := waitFor(ctx, time.Minute, "steady processing", func() bool {
		o, ok := r.rec.owners(time.Now().Add(-500 * time.Millisecond))
		return ok && distinct(o) == r.n
	}); err != nil {
		return err
	}
	var jitter time.Duration
	if r.warm > 0 {
		jitter = rand.N(heartbeat)
	}
	select {
	case <-time.After(r.warm + jitter):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// trigger makes the event happen and returns when it did.
func (r *running) trigger(ctx context.Context) (time.Time, error) {
	var burst chan error
	if r.burst > 0 {
		// A burst keeps every member busy: the kill lands between a
		// batch's outputs and its commit.
		burst = make(chan error, 1)
		pre := r.rec.total()
		go func() { _, err := r.ld.fill(ctx, r.burst); burst <- err }()
		if err := waitFor(ctx, time.Minute, "burst under way", func() bool { return r.rec.total() >= pre+int64(r.burst/5) }); err != nil {
			return time.Time{}, err
		}
		if r.rec.total() >= pre+int64(r.burst) {
			return time.Time{}, fmt.Errorf("the burst was processed before the %s", r.event)
		}
	}
	t0 := time.Now()
	switch r.event {
	case evJoin:
		if err := r.start(r.changed); err != nil {
			return t0, err
		}
	case evLeave:
		m := r.members[r.changed]
		delete(r.members, r.changed)
		if err := leave(m); err != nil {
			return t0, err
		}
	case evKill, evKillBusy:
		r.killed = r.members[r.changed]
		delete(r.members, r.changed)
		r.killed.kill()
	}
	if burst != nil {
		return t0, <-burst
	}
	return t0, nil
}

// settle waits until every partition progresses again, the event shows in
// who owns them (the new member some; the gone one none), and the owners
// stay the same for g.stable. It returns when the owners last changed and
// when they were found stable.
func (r *running) settle(ctx context.Context) (settled, tend time.Time, err error) {
	var last [partitions]int
	err = waitFor(ctx, 2*time.Minute, "group settled after "+r.event, func() bool {
		now := time.Now()
		o, ok := r.rec.owners(now.Add(-500 * time.Millisecond))
		if ok {
			ok = slices.Contains(o[:], r.changed) == (r.event == evJoin)
		}
		switch {
		case !ok:
			settled = time.Time{}
		case settled.IsZero() || o != last:
			last, settled = o, now
		case now.Sub(settled) >= r.stable:
			tend = now
			return true
		}
		return false
	})
	return settled, tend, errors.Join(err, r.failed())
}

// finish stops the load, lets the members process the rest, has them leave,
// and reads the output.
func (r *running) finish(ctx context.Context) (tally, error) {
	ends, err := r.ld.halt(ctx)
	if err != nil {
		return tally{}, err
	}
	if err := waitFor(ctx, 2*time.Minute, "drain", func() bool { return r.rec.covered(ends) || r.failed() != nil }); err != nil {
		return tally{}, err
	}
	if err := errors.Join(r.leaveAll(), r.failed()); err != nil {
		return tally{}, err
	}
	vctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return verify(vctx, r.cl.addrs, ends)
}

func distinct(o [partitions]int) int {
	seen := map[int]bool{}
	for _, m := range o {
		seen[m] = true
	}
	return len(seen)
}

func baseOf(m member) *base {
	switch m := m.(type) {
	case *kafkagoMember:
		return &m.base
	case *kgoMember:
		return &m.base
	case *kgoTxnMember:
		return &m.base
	}
	panic(fmt.Sprintf("unknown member %T", m))
}

// throughputRun: one member, a topic filled beforehand, the time from its
// first progress to the last record, and the CPU of this process (the
// client alone: the brokers run in a child process) and of the brokers.
type throughputRun struct {
	v      variant
	output bool
	n      int
}

type throughputResult struct {
	Variant   string
	Output    bool
	PerSec    float64
	ClientCPU time.Duration // per record
	BrokerCPU time.Duration // per record
}

func (tr throughputRun) run(ctx context.Context) (res throughputResult, err error) {
	res.Variant, res.Output = tr.v.name, tr.output
	cl, err := startChildCluster(inTopic, outTopic)
	if err != nil {
		return res, err
	}
	defer cl.close()
	ld, err := newLoad(cl.addrs)
	if err != nil {
		return res, err
	}
	ends, err := ld.fill(ctx, tr.n)
	ld.close()
	if err != nil {
		return res, err
	}
	var fails error
	var mu sync.Mutex
	rec := newRecorder()
	c0, b0 := cpuSelf(), cpuOf(cl.pid)
	m, err := tr.v.start(memberConfig{
		id: 0, name: "member-0", addrs: cl.addrs, group: "rules", output: tr.output, rec: rec,
		fail: func(err error) { mu.Lock(); fails = errors.Join(fails, err); mu.Unlock() },
	})
	if err != nil {
		return res, err
	}
	werr := waitFor(ctx, 5*time.Minute, "consume all", func() bool { return rec.covered(ends) })
	t1, c1, b1 := time.Now(), cpuSelf(), cpuOf(cl.pid)
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	lerr := m.leave(lctx)
	mu.Lock()
	defer mu.Unlock()
	if err := errors.Join(werr, lerr, fails); err != nil {
		return res, err
	}
	rec.mu.Lock()
	first := rec.first
	rec.mu.Unlock()
	res.PerSec = float64(tr.n) / t1.Sub(first).Seconds()
	res.ClientCPU = (c1 - c0) / time.Duration(tr.n)
	res.BrokerCPU = (b1 - b0) / time.Duration(tr.n)
	return res, nil
}

// Reports.

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string {
	if d >= 10*time.Second {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}

func medMax(ds []time.Duration) string {
	return ms(median(ds)) + " / " + ms(slices.Max(ds))
}

// pauseTable is one row per variant and event: median / max over the runs.
func pauseTable(results []runResult, vs []variant, events []string) string {
	var b strings.Builder
	b.WriteString("| client | event | runs | partitions moved | moved partitions: longest gap | unmoved partitions: longest gap | nothing processed at all | steady-state gap | lost | duplicated |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, ev := range events {
		for _, v := range vs {
			var moved, unmoved, stop, base []time.Duration
			var lost, dup int
			var nmoved []time.Duration
			for _, r := range results {
				if r.Variant != v.name || r.Event != ev {
					continue
				}
				moved = append(moved, r.Pause.Moved)
				unmoved = append(unmoved, r.Pause.Unmoved)
				stop = append(stop, r.Pause.AllStop)
				base = append(base, r.Baseline)
				lost += r.Tally.Lost
				dup += r.Tally.Dup
				nmoved = append(nmoved, time.Duration(r.Pause.NMoved))
			}
			if len(moved) == 0 {
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %d | %s | %s | %s | %s | %d | %d |\n",
				v.name, ev, len(moved), median(nmoved), medMax(moved), medMax(unmoved), medMax(stop), medMax(base), lost, dup)
		}
	}
	return b.String()
}

func throughputTable(results []throughputResult, vs []variant) string {
	var b strings.Builder
	b.WriteString("| client | consume + commit: records/s | client CPU µs/record | broker CPU µs/record | consume + produce + commit: records/s | client CPU µs/record | broker CPU µs/record |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	cell := func(v variant, output bool) string {
		var rate []float64
		var cc, bc []time.Duration
		for _, r := range results {
			if r.Variant == v.name && r.Output == output {
				rate = append(rate, r.PerSec)
				cc = append(cc, r.ClientCPU)
				bc = append(bc, r.BrokerCPU)
			}
		}
		if len(rate) == 0 {
			return "n/a | | "
		}
		slices.Sort(rate)
		return fmt.Sprintf("%.0f | %.1f | %.1f", rate[len(rate)/2],
			float64(median(cc).Nanoseconds())/1e3, float64(median(bc).Nanoseconds())/1e3)
	}
	for _, v := range vs {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", v.name, cell(v, false), cell(v, true))
	}
	return b.String()
}
