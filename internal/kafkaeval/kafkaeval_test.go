package kafkaeval

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if os.Getenv(brokerEnv) == "1" {
		os.Exit(serveBroker())
	}
	os.Exit(m.Run())
}

// TestSmoke runs each client through a graceful hand-over under load on a
// three-broker kfake: two members share the input, one leaves, the other
// drains it. Every input has an output; with transactions exactly one
// (read_committed). It asserts no timing.
func TestSmoke(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			g := groupRun{v: v, event: evLeave, members: 2, rate: 300, stable: 200 * time.Millisecond}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			res, err := g.run(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d outputs, %d lost, %d duplicated", res.Tally.Outputs, res.Tally.Lost, res.Tally.Dup)
			if res.Tally.Lost != 0 {
				t.Errorf("%d inputs have no output after a graceful leave", res.Tally.Lost)
			}
			if v.txn && res.Tally.Dup != 0 {
				t.Errorf("read_committed output has %d duplicates with transactions", res.Tally.Dup)
			}
		})
	}
}

// TestEval is the measurement behind docs/scaling.md, "Which Kafka client,
// and why". It takes about 25 minutes. SLUICE_KAFKAEVAL_REPS (default 5)
// sets the runs per client and measurement, SLUICE_KAFKAEVAL_ONLY a comma
// list of phases (throughput, join, leave, kill, killbusy),
// SLUICE_KAFKAEVAL_VARIANTS a part of the clients' names, and
// SLUICE_KAFKAEVAL_OUT a file the tables are appended to.
func TestEval(t *testing.T) {
	if os.Getenv("SLUICE_KAFKAEVAL") != "1" {
		t.Skip("set SLUICE_KAFKAEVAL=1 to measure (about 25 minutes)")
	}
	reps := 5
	if s := os.Getenv("SLUICE_KAFKAEVAL_REPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("SLUICE_KAFKAEVAL_REPS=%q: want a positive number", s)
		}
		reps = n
	}
	only := map[string]bool{}
	for _, s := range strings.Split(os.Getenv("SLUICE_KAFKAEVAL_ONLY"), ",") {
		if s != "" {
			only[s] = true
		}
	}
	want := func(phase string) bool { return len(only) == 0 || only[phase] }
	vs := variants
	if s := os.Getenv("SLUICE_KAFKAEVAL_VARIANTS"); s != "" {
		vs = slices.DeleteFunc(slices.Clone(vs), func(v variant) bool { return !strings.Contains(v.name, s) })
	}
	t.Logf("partitions %d, session timeout %v, heartbeat %v, transaction timeout %v, fetch max wait %v, batch <= %d, value %d B",
		partitions, sessionTimeout, heartbeat, txnTimeout, fetchMaxWait, maxBatch, valueSize)
	if want("throughput") {
		evalThroughput(t, vs, reps)
	}
	var events []string
	for ev, phase := range map[string]string{evJoin: "join", evLeave: "leave", evKill: "kill", evKillBusy: "killbusy"} {
		if want(phase) {
			events = append(events, ev)
		}
	}
	slices.SortFunc(events, func(a, b string) int { return slices.Index(eventOrder, a) - slices.Index(eventOrder, b) })
	if len(events) > 0 {
		evalPauses(t, vs, events, reps)
	}
}

var eventOrder = []string{evJoin, evLeave, evKill, evKillBusy}

// evalThroughput: one member reads a million records, with and without an
// output per record; the order of the clients rotates between repetitions.
func evalThroughput(t *testing.T, vs []variant, reps int) {
	const n = 1_000_000
	var results []throughputResult
	for rep := range reps {
		for i := range vs {
			v := vs[(i+rep)%len(vs)]
			for _, output := range []bool{false, true} {
				if v.txn && !output {
					continue
				}
				r, err := throughputRun{v: v, output: output, n: n}.run(context.Background())
				if err != nil {
					t.Fatalf("throughput %s output=%v: %v", v.name, output, err)
				}
				t.Logf("throughput %s output=%v: %.0f records/s, client %v/record, broker %v/record", v.name, output, r.PerSec, r.ClientCPU, r.BrokerCPU)
				results = append(results, r)
			}
		}
	}
	report(t, fmt.Sprintf("Throughput, one member, %d records of %d B (median of %d):\n\n%s", n, valueSize, reps, throughputTable(results, vs)))
}

// evalPauses runs each event reps times for each client, the clients'
// order rotating between repetitions.
func evalPauses(t *testing.T, vs []variant, events []string, reps int) {
	const rate = 1000
	runs := map[string]groupRun{
		evJoin:     {event: evJoin, rate: rate, warm: 3 * time.Second, stable: 2 * time.Second},
		evLeave:    {event: evLeave, rate: rate, warm: 3 * time.Second, stable: 2 * time.Second},
		evKill:     {event: evKill, rate: rate, warm: 3 * time.Second, stable: 2 * time.Second},
		evKillBusy: {event: evKillBusy, rate: rate, burst: 300_000, warm: time.Second, stable: 2 * time.Second},
	}
	var results []runResult
	for _, ev := range events {
		for rep := range reps {
			for i := range vs {
				g := runs[ev]
				g.v = vs[(i+rep)%len(vs)]
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				r, err := g.run(ctx)
				cancel()
				if err != nil {
					t.Fatalf("%s %s: %v", g.v.name, ev, err)
				}
				t.Logf("%s %s: moved %v (%d partitions), unmoved %v, all stopped %v, steady %v, settled after %v; %d outputs, %d lost, %d dup; %d commit errors, %d aborted transactions, %d offset fetches retried on UNSTABLE_OFFSET_COMMIT",
					g.v.name, ev, r.Pause.Moved.Round(time.Millisecond), r.Pause.NMoved, r.Pause.Unmoved.Round(time.Millisecond),
					r.Pause.AllStop.Round(time.Millisecond), r.Baseline.Round(time.Millisecond), r.Settle.Round(time.Millisecond),
					r.Tally.Outputs, r.Tally.Lost, r.Tally.Dup, r.CommitErrs, r.Aborted, r.Unstable)
				results = append(results, r)
			}
		}
	}
	report(t, fmt.Sprintf("Rebalance pauses, 3 members, %d partitions, %d records/s, session timeout %v (median / max of %d runs):\n\n%s",
		partitions, rate, sessionTimeout, reps, pauseTable(results, vs, events)))
}

// report logs a table and appends it to SLUICE_KAFKAEVAL_OUT when set.
func report(t *testing.T, s string) {
	t.Log("\n" + s)
	path := os.Getenv("SLUICE_KAFKAEVAL_OUT")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s\n", s)
}
