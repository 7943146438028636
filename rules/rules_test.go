package rules_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/rules"
)

const boilerRules = `
rules:
  - name: boiler_overheat
    match: plant/+site/+line/+device/telemetry
    where: kind == "boiler"
    fields:
      temp_f: temperature * 9 / 5 + 32
      hot: temp_f > 190
    alert:
      when: temperature > 90
      severity: critical
      message: "boiler {{ device }} at {{ temperature }} °C"
`

func msg(topic, payload string, at time.Time) *sluice.Message {
	return &sluice.Message{Topic: topic, Payload: []byte(payload), QoS: 1, Received: at}
}

func TestEvalRecordsAndAlertLifecycle(t *testing.T) {
	set, err := rules.Parse("boilers.yaml", []byte(boilerRules))
	if err != nil {
		t.Fatal(err)
	}
	ev := set.NewEvaluator(nil, rules.Limits{})
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	topic := "plant/north/l1/b7/telemetry"
	steps := []struct {
		payload string
		alert   string // "" none, else status
	}{
		{`{"kind":"boiler","temperature":80}`, ""},
		{`{"kind":"boiler","temperature":95.5}`, sluice.AlertFiring},
		{`{"kind":"boiler","temperature":97}`, ""}, // still firing: deduplicated
		{`{"kind":"boiler","temperature":60}`, sluice.AlertResolved},
	}
	for i, s := range steps {
		out, o := ev.Eval(msg(topic, s.payload, t0.Add(time.Duration(i)*time.Second)), nil)
		if o.Matched != 1 || o.Failed != 0 {
			t.Fatalf("step %d: outcome %+v", i, o)
		}
		rec := out[0].Record
		if d, _ := rec.Tag("device"); d != "b7" {
			t.Fatalf("step %d: record %+v", i, rec)
		}
		if s, _ := rec.Tag("site"); s != "north" {
			t.Fatalf("step %d: record %+v", i, rec)
		}
		if _, ok := rec.Field("temp_f"); !ok {
			t.Fatalf("step %d: derived field missing: %v", i, rec.Fields)
		}
		var alerts []*sluice.Alert
		for _, e := range out {
			if e.Alert != nil {
				alerts = append(alerts, e.Alert)
			}
		}
		switch {
		case s.alert == "" && len(alerts) != 0:
			t.Fatalf("step %d: unexpected alert %+v", i, alerts[0])
		case s.alert != "" && (len(alerts) != 1 || alerts[0].Status != s.alert):
			t.Fatalf("step %d: want one %s alert, got %+v", i, s.alert, alerts)
		}
		if s.alert == sluice.AlertFiring {
			a := alerts[0]
			if a.Device != "b7" || a.Severity != "critical" || a.Value != 95.5 || a.Message != "boiler b7 at 95.5 °C" {
				t.Fatalf("firing alert = %+v", a)
			}
		}
		if s.alert == sluice.AlertResolved && !alerts[0].Since.Equal(t0.Add(time.Second)) {
			t.Fatalf("resolved alert since = %v", alerts[0].Since)
		}
	}
	// temp_f = 60*9/5+32 = 140 in the last record, hot false.
	out, _ := ev.Eval(msg(topic, `{"kind":"boiler","temperature":100}`, t0), nil)
	tf, _ := out[0].Record.Field("temp_f")
	hot, _ := out[0].Record.Field("hot")
	if tf != 212.0 || hot != true {
		t.Fatalf("fields = %v", out[0].Record.Fields)
	}
}

func TestEvalWhereFiltersAndOtherTopics(t *testing.T) {
	set, err := rules.Parse("b.yaml", []byte(boilerRules))
	if err != nil {
		t.Fatal(err)
	}
	ev := set.NewEvaluator(nil, rules.Limits{})
	out, o := ev.Eval(msg("plant/n/l1/p1/telemetry", `{"kind":"pump","temperature":99}`, time.Now()), nil)
	if len(out) != 0 || o.Filtered != 1 {
		t.Fatalf("pump passed the boiler filter: %+v %+v", out, o)
	}
	out, o = ev.Eval(msg("plant/n/l1/p1/status", `{}`, time.Now()), nil)
	if len(out) != 0 || o.Matched != 0 {
		t.Fatalf("status topic matched: %+v", o)
	}
}

func TestEvalBadPayloadIsDeadLettered(t *testing.T) {
	set, err := rules.Parse("b.yaml", []byte(boilerRules))
	if err != nil {
		t.Fatal(err)
	}
	ev := set.NewEvaluator(nil, rules.Limits{})
	for _, p := range []string{`{"kind":"boiler",`, `[1,2]`, `null`, `{"kind":"boiler","temperature":"hot"}`} {
		out, o := ev.Eval(msg("plant/n/l1/b1/telemetry", p, time.Now()), nil)
		if o.Failed != 1 || len(out) != 1 || out[0].DeadLetter == nil {
			t.Fatalf("payload %s: want one dead letter, got %+v %+v", p, out, o)
		}
		if out[0].DeadLetter.Reason == "" || out[0].DeadLetter.Rule != "boiler_overheat" {
			t.Fatalf("dead letter %+v", out[0].DeadLetter)
		}
	}
}

func TestCompileErrorsNamePosition(t *testing.T) {
	src := strings.Join([]string{
		"rules:",                         // 1
		"  - name: a",                    // 2
		"    where: temperature >> 3",    // 3
		"    alert:",                     // 4
		"      when: temperature > 90",   // 5
		"      message: \"{{ len() }}\"", // 6
		"  - name: b",                    // 7
		"    fields:",                    // 8
		"      x: 1 +",                   // 9
		"  - name: a",                    // 10
	}, "\n")
	_, err := rules.Parse("bad.yaml", []byte(src))
	if err == nil {
		t.Fatal("compiled")
	}
	for _, want := range []string{
		"bad.yaml:3:", "rules[0].where",
		"bad.yaml:6:", "rules[0].alert.message",
		"bad.yaml:9:", "rules[1].fields.x",
		"bad.yaml:10:", `rules[2].name: rule "a" is already defined`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error\n%s\nlacks %q", err, want)
		}
	}
}

func TestCompileErrorColumn(t *testing.T) {
	_, err := rules.Parse("c.yaml", []byte("rules:\n  - name: a\n    where: temperature > 9 and ) \n"))
	if err == nil {
		t.Fatal("compiled")
	}
	// "    where: " is 11 columns; ")" is the 21st character of the expression.
	if !strings.HasPrefix(err.Error(), "c.yaml:3:32: rules[0].where:") {
		t.Fatalf("got %v", err)
	}
}

func TestUnknownKeyInRuleFile(t *testing.T) {
	_, err := rules.Parse("k.yaml", []byte("rules:\n  - name: a\n    wher: x > 1\n"))
	if err == nil || !strings.Contains(err.Error(), `k.yaml:3:5: rules[0].wher: unknown key (did you mean "where"?)`) {
		t.Fatalf("got %v", err)
	}
}

func ExampleSet_NewEvaluator() {
	set, _ := rules.Parse("ex.yaml", []byte(boilerRules))
	ev := set.NewEvaluator(nil, rules.Limits{})
	out, _ := ev.Eval(msg("plant/north/l1/b7/telemetry", `{"kind":"boiler","temperature":91}`, time.Unix(0, 0)), nil)
	for _, e := range out {
		fmt.Println(e.Stream, e.Record != nil, e.Alert != nil)
	}
	// Output:
	// records true false
	// alerts false true
}
