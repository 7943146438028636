package rules_test

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/rules"
)

// TestFiringListsTheSeriesFiringNow: what `sluice alerts` shows comes from
// the evaluator's own state: the series firing, with the value and message
// of their last notification, gone once resolved; the generation moves
// with every change and only then.
func TestFiringListsTheSeriesFiringNow(t *testing.T) {
	set, err := rules.Parse("boilers.yaml", []byte(boilerRules))
	if err != nil {
		t.Fatal(err)
	}
	ev := set.NewEvaluator(nil, rules.Limits{})
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	eval := func(device string, temp string, at time.Duration) {
		t.Helper()
		ev.Eval(msg("plant/north/l1/"+device+"/telemetry", `{"kind":"boiler","temperature":`+temp+`}`, t0.Add(at)), nil)
	}
	gen := ev.AlertGeneration()
	eval("b7", "80", 0)
	if len(ev.Firing(nil)) != 0 || ev.AlertGeneration() != gen {
		t.Fatalf("nothing fires at 80: %v, generation %d -> %d", ev.Firing(nil), gen, ev.AlertGeneration())
	}
	eval("b7", "95.5", time.Second)
	eval("b8", "91", 2*time.Second)
	eval("b7", "97", 3*time.Second) // still firing: no notification
	firing := ev.Firing(nil)
	if len(firing) != 2 || ev.AlertGeneration() == gen {
		t.Fatalf("firing %v, generation %d", firing, ev.AlertGeneration())
	}
	byDevice := map[string]*sluice.Alert{}
	for _, a := range firing {
		byDevice[a.Device] = a
	}
	b7 := byDevice["b7"]
	if b7 == nil || b7.Rule != "boiler_overheat" || b7.Severity != "critical" || b7.Value != 95.5 ||
		b7.Message != "boiler b7 at 95.5 °C" || !b7.Since.Equal(t0.Add(time.Second)) {
		t.Fatalf("b7: %+v", b7)
	}
	gen = ev.AlertGeneration()
	eval("b7", "60", 4*time.Second)
	if f := ev.Firing(nil); len(f) != 1 || f[0].Device != "b8" || ev.AlertGeneration() == gen {
		t.Fatalf("after b7 resolved: %v", f)
	}
}

// TestSimulationRunsTheClockBetweenMessages: a deadman fires on the
// simulated clock between two messages, at the time it would have on the
// wall clock, and Until runs the clock past the last message.
func TestSimulationRunsTheClockBetweenMessages(t *testing.T) {
	set, err := rules.Parse("deadman.yaml", []byte(`
rules:
  - name: silent
    match: plant/+site/+device/telemetry
    alert:
      absent: 10s
      message: "{{ device }} silent"
`))
	if err != nil {
		t.Fatal(err)
	}
	sim := set.Simulate(rules.Limits{})
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 300_000_000, time.UTC)
	var transitions []string
	note := func(events []sluice.Event) {
		for _, e := range events {
			if e.Alert != nil {
				transitions = append(transitions, e.Alert.Device+" "+e.Alert.Status+" at "+e.Alert.Time.Sub(t0).String())
			}
		}
	}
	for _, m := range []struct {
		device string
		at     time.Duration
	}{{"d1", 0}, {"d2", 5 * time.Second}, {"d1", 30 * time.Second}} {
		ticks, out, _ := sim.Eval(msg("plant/north/"+m.device+"/telemetry", `{"v":1}`, t0.Add(m.at)))
		note(ticks)
		note(out)
	}
	note(sim.Until(t0.Add(60 * time.Second)))
	want := []string{"d1 firing at 10s", "d2 firing at 15s", "d1 resolved at 30s", "d1 firing at 40s"}
	if len(transitions) != len(want) {
		t.Fatalf("transitions %q, want %q", transitions, want)
	}
	for i := range want {
		if transitions[i] != want[i] {
			t.Fatalf("transitions %q, want %q", transitions, want)
		}
	}
	if f := sim.Firing(); len(f) != 2 {
		t.Fatalf("firing at the end: %v", f)
	}
}

func TestMatchingAndDecode(t *testing.T) {
	set, err := rules.Parse("two.yaml", []byte(`
rules:
  - name: boiler
    match: plant/+site/+line/+device/telemetry
    decode: [base64, json]
  - name: pump
    match: plant/+site/pumps/+device/telemetry
  - name: all
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := set.Matching("plant/north/l1/b7/telemetry"); len(got) != 2 || got[0] != "boiler" || got[1] != "all" {
		t.Fatalf("matching: %q", got)
	}
	rule, readings, err := set.Decode(msg("plant/north/l1/b7/telemetry", "eyJ0ZW1wIjogOTF9", time.Now()), rules.Limits{})
	if err != nil || rule != "boiler" || len(readings) != 1 || readings[0][0].Name != "temp" || readings[0][0].Value != 91.0 {
		t.Fatalf("decode: %q %v %v", rule, readings, err)
	}
}
