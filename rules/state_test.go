package rules_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/rules"
)

// Every stateful function, an alert held for a while with hysteresis, and
// a deadman: what a node hands over in a cluster.
const stateRules = `
rules:
  - name: everything
    match: plant/+site/+line/+device/telemetry
    fields:
      d: delta(temperature)
      r: rate(counter)
      i: increase(counter)
      c: changed(mode)
      avg: avg_over(temperature, "1m")
      mn: min_over(temperature, "1m")
      mx: max_over(temperature, "1m")
      sm: sum_over(temperature, "1m")
      sd: stddev_over(temperature, "1m")
      n: count_over("1m")
      z: zscore(temperature, "1m", 3)
      p: percentile_over(temperature, 90, "1m")
      e: ewma(temperature, "30s")
      h: held(temperature > 50, "10s")
      dv: deriv(temperature, "1m")
      do: delta_over(temperature, "1m")
    alert:
      when: avg_over(temperature, "1m") > 55
      for: 10s
      clear: avg_over(temperature, "1m") < 50
      value: avg_over(temperature, "1m")
      message: "avg {{ avg_over(temperature, \"1m\") }}"
  - name: site_quiet
    match: plant/+site/+line/+device/telemetry
    key: site
    alert:
      absent: 30s
`

// TestStateSurvivesAHandOver evaluates the same input twice: once on one
// evaluator, once handing the series over to a new evaluator halfway
// (Changes, then Restore, as a cluster's changelog does). Records and
// alert transitions must be the same, including a deadman that fires on the
// new evaluator at the time the old one would have.
func TestStateSurvivesAHandOver(t *testing.T) {
	set, err := rules.Parse("state.yaml", []byte(stateRules))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	type step struct {
		at  time.Duration
		msg *sluice.Message // nil: a tick
	}
	var steps []step
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range 120 {
		at := time.Duration(i) * 2 * time.Second
		for d := range 3 {
			temp := 40 + 20*math.Sin(float64(i)/15) + rnd.Float64()
			payload := fmt.Sprintf(`{"temperature":%.3f,"counter":%d,"mode":"m%d"}`, temp, i*(d+1), i/20)
			steps = append(steps, step{at, &sluice.Message{Topic: fmt.Sprintf("plant/north/l1/dev%d/telemetry", d), Payload: []byte(payload), Received: t0.Add(at)}})
		}
		steps = append(steps, step{at + time.Second, nil})
	}
	// The site goes silent: its deadman fires 30s after the last reading.
	for s := range 40 {
		steps = append(steps, step{240*time.Second + time.Duration(s)*time.Second, nil})
	}

	run := func(handOverAt int) []string {
		ev := set.NewEvaluator(nil, rules.Limits{})
		ev.TrackChanges()
		// What the changelog holds: each key's latest state.
		changelog := map[string][]byte{}
		var out []string
		for i, s := range steps {
			var events []sluice.Event
			if s.msg != nil {
				events, _ = ev.Eval(s.msg, nil)
			} else {
				events = ev.Tick(t0.Add(s.at), nil)
			}
			for _, e := range events {
				out = append(out, describe(e))
			}
			ev.Changes(func(k, v []byte) {
				if v == nil {
					delete(changelog, string(k))
				} else {
					changelog[string(k)] = v
				}
			})
			if i == handOverAt {
				ev = set.NewEvaluator(nil, rules.Limits{})
				ev.TrackChanges()
				for k, v := range changelog {
					if ok, err := ev.Restore([]byte(k), v); !ok || err != nil {
						t.Fatalf("restore %q: %v %v", k, ok, err)
					}
				}
			}
		}
		return out
	}
	want := run(-1)
	alerts := 0
	for _, l := range want {
		if l[0] == 'A' {
			alerts++
		}
	}
	if alerts < 3 {
		t.Fatalf("the input raises %d alert transitions; it must exercise firing, resolving and the deadman:\n%v", alerts, want)
	}
	for _, at := range []int{5, len(steps) / 3, len(steps) / 2, len(steps) - 45} {
		got := run(at)
		if !reflect.DeepEqual(got, want) {
			for i := range min(len(got), len(want)) {
				if got[i] != want[i] {
					t.Fatalf("handed over at step %d: output %d differs:\n got  %s\n want %s", at, i, got[i], want[i])
				}
			}
			t.Fatalf("handed over at step %d: %d outputs, want %d", at, len(got), len(want))
		}
	}
}

func describe(e sluice.Event) string {
	switch {
	case e.Record != nil:
		return fmt.Sprintf("R %s %s %v", e.Record.Rule, e.Record.Topic, e.Record.Fields)
	case e.Alert != nil:
		a := e.Alert
		return fmt.Sprintf("A %s %s %s %v %s at %s since %s #%d", a.Rule, a.Series, a.Status, a.Value, a.Message, a.Time.Format(time.TimeOnly), a.Since.Format(time.TimeOnly), a.Notification)
	case e.DeadLetter != nil:
		return "D " + e.DeadLetter.Reason
	}
	return "?"
}

// TestRestoreDropsStateOfAChangedRule: a rule whose definition changed
// starts afresh, as after a reload.
func TestRestoreDropsStateOfAChangedRule(t *testing.T) {
	a, _ := rules.Parse("a.yaml", []byte("rules:\n  - name: r\n    match: t/+device\n    fields:\n      x: avg_over(v, \"1m\")\n"))
	b, _ := rules.Parse("a.yaml", []byte("rules:\n  - name: r\n    match: t/+device\n    fields:\n      x: avg_over(v, \"5m\")\n"))
	ev := a.NewEvaluator(nil, rules.Limits{})
	ev.TrackChanges()
	ev.Eval(&sluice.Message{Topic: "t/d1", Payload: []byte(`{"v":1}`), Received: time.Unix(100, 0)}, nil)
	n := 0
	ev.Changes(func(k, v []byte) {
		n++
		if ok, err := b.NewEvaluator(nil, rules.Limits{}).Restore(k, v); ok || err != nil {
			t.Fatalf("restored into a changed rule: %v %v", ok, err)
		}
		if ok, err := a.NewEvaluator(nil, rules.Limits{}).Restore(k, v); !ok || err != nil {
			t.Fatalf("not restored into the same rule: %v %v", ok, err)
		}
	})
	if n != 1 {
		t.Fatalf("%d changes, want 1", n)
	}
}

// FuzzRestore: a changelog record that is not what Changes wrote is an
// error, never a panic.
func FuzzRestore(f *testing.F) {
	set, err := rules.Parse("state.yaml", []byte(stateRules))
	if err != nil {
		f.Fatal(err)
	}
	ev := set.NewEvaluator(nil, rules.Limits{})
	ev.TrackChanges()
	for i := range 20 {
		ev.Eval(&sluice.Message{Topic: "plant/n/l/d/telemetry", Payload: []byte(fmt.Sprintf(`{"temperature":%d,"counter":%d,"mode":"a"}`, 40+i, i)), Received: time.Unix(int64(100+i), 0)}, nil)
	}
	ev.Changes(func(k, v []byte) { f.Add(k, v) })
	f.Fuzz(func(t *testing.T, k, v []byte) {
		set.NewEvaluator(nil, rules.Limits{}).Restore(k, v)
	})
}

// A fleet that came and went gives back the memory of its series: once
// their ttl has passed and they are evicted, the state map does not keep
// the room it had for them (a Go map never shrinks by itself).
func TestEvictedSeriesGiveTheirMemoryBack(t *testing.T) {
	set := mustParse(t, `
rules:
  - name: gap
    match: plant/+device
    ttl: 1m
    records: false
    alert:
      when: delta(seq) > 1
`)
	ev := set.NewEvaluator(nil, rules.Limits{})
	heap := func() float64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return float64(ms.HeapAlloc)
	}
	before := heap()
	const fleet = 100_000
	for i := range fleet {
		ev.Eval(msg(fmt.Sprintf("plant/d%d", i), `{"seq": 1}`, t0), nil)
	}
	if s := ev.Stats()[0].Series; s != fleet {
		t.Fatalf("%d series held, want %d", s, fleet)
	}
	held := heap()
	ev.Tick(t0.Add(2*time.Minute), nil)
	if s := ev.Stats()[0].Series; s != 0 {
		t.Fatalf("%d series held after their ttl, want none", s)
	}
	after := heap()
	perSeries := (held - before) / fleet
	if left := (after - before) / fleet; left > perSeries/20 {
		t.Errorf("%.0f bytes per series left once they all expired (%.0f while held): want under a twentieth", left, perSeries)
	}
	// The evaluator goes on as before.
	if out, _ := ev.Eval(msg("plant/d1", `{"seq": 5}`, t0.Add(3*time.Minute)), nil); len(out) != 0 {
		t.Errorf("a returning series fired at once: %+v", out)
	}
	runtime.KeepAlive(ev)
}

// An evaluator told which fields its sinks write (KeepFields) records
// those alone, after the rule's renames, derived fields included; its
// expressions and alerts still see every field.
func TestKeepFields(t *testing.T) {
	set := mustParse(t, `
rules:
  - name: boiler
    match: plant/+device
    rename: {temperature: temp_c}
    fields:
      temp_f: temperature * 9 / 5 + 32
      double: pressure * 2
    alert:
      when: pressure > 3
      value: pressure
`)
	ev := set.NewEvaluator(nil, rules.Limits{})
	ev.KeepFields([]string{"seq", "temp_c", "temp_f"})
	for i, payload := range []string{`{"seq":1,"temperature":20,"pressure":2}`, `{"pressure":4,"seq":2,"temperature":30,"x":1}`} {
		out, _ := ev.Eval(msg("plant/b1", payload, t0.Add(time.Duration(i)*time.Second)), nil)
		var got []string
		for _, f := range out[0].Record.Fields {
			got = append(got, fmt.Sprintf("%s=%v", f.Name, f.Value))
		}
		want := [][]string{{"seq=1", "temp_c=20", "temp_f=68"}, {"seq=2", "temp_c=30", "temp_f=86"}}[i]
		if !reflect.DeepEqual(got, want) {
			t.Errorf("reading %d: record fields %v, want %v", i, got, want)
		}
		if i == 1 && (len(out) != 2 || out[1].Alert == nil || out[1].Alert.Value != 4.0) {
			t.Errorf("reading %d: %d events, want the record and an alert on pressure 4", i, len(out))
		}
	}
	ev.KeepFields(nil)
	out, _ := ev.Eval(msg("plant/b1", `{"seq":3,"temperature":20,"pressure":2}`, t0.Add(3*time.Second)), nil)
	if n := len(out[0].Record.Fields); n != 5 {
		t.Errorf("with every field kept: %d fields, want 5 (seq, temp_c, pressure, temp_f, double)", n)
	}
}
