package rules_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/rules"
)

// vibrationStream is 15 minutes of a pump's RMS vibration, one reading every
// 5 s: normal noise (2.0 ± 0.1 mm/s), a spike to 3.5 at 12m05s, and, on every
// third reading, an "override" field.
func vibrationStream(seed uint64) []*sluice.Message {
	rnd := rand.New(rand.NewPCG(seed, 17))
	var msgs []*sluice.Message
	for i := 0; i < 180; i++ {
		v := 2.0 + rnd.NormFloat64()*0.1
		if i == 145 {
			v = 3.5
		}
		payload := fmt.Sprintf(`{"vibration_rms": %g}`, v)
		if i%3 == 0 {
			payload = fmt.Sprintf(`{"vibration_rms": %g, "override": 0}`, v)
		}
		msgs = append(msgs, msg("plant/pumps/p1", payload, t0.Add(time.Duration(i)*5*time.Second)))
	}
	return msgs
}

func transitions(t *testing.T, set *rules.Set, msgs []*sluice.Message) []string {
	t.Helper()
	ev := set.NewEvaluator(nil, rules.Limits{})
	var got []string
	for _, m := range msgs {
		out, o := ev.Eval(m, nil)
		if o.Failed > 0 {
			t.Fatalf("at %v: %+v", m.Received.Sub(t0), out[0].DeadLetter)
		}
		for _, a := range alertsOf(out) {
			got = append(got, fmt.Sprintf("%s at %v value %v message %q", a.Status, a.Time.Sub(t0), a.Value, a.Message))
		}
	}
	return got
}

// A stateful call sees every reading the rule sees wherever it stands:
// behind and, or, ?: and ??, in clear and in value. Each rule written
// inline must alert exactly as the same rule written with let.
func TestStatefulCallsInlineEqualLet(t *testing.T) {
	const rule = `
rules:
  - name: vib
    match: plant/pumps/+device
    records: false
    let:
%s
    alert:
%s
`
	cases := []struct {
		name       string
		inline     string // the alert
		let, alert string // the let form
	}{
		{"and (the issue's rule)",
			`      when: count_over("10m") >= 30 and abs(zscore(vibration_rms, "10m")) > 4
      value: zscore(vibration_rms, "10m")`,
			`      n: count_over("10m")
      z: zscore(vibration_rms, "10m")`,
			`      when: n >= 30 and abs(z) > 4
      value: z`},
		{"or",
			`      when: not (count_over("10m") < 30 or abs(zscore(vibration_rms, "10m")) <= 4)`,
			`      n: count_over("10m")
      z: zscore(vibration_rms, "10m")`,
			`      when: not (n < 30 or abs(z) <= 4)`},
		{"?:",
			`      when: 'count_over("10m") >= 30 ? abs(zscore(vibration_rms, "10m")) > 4 : false'`,
			`      n: count_over("10m")
      z: zscore(vibration_rms, "10m")`,
			`      when: 'n >= 30 ? abs(z) > 4 : false'`},
		{"??",
			`      when: (override ?? abs(zscore(vibration_rms, "10m"))) > 4`,
			`      z: zscore(vibration_rms, "10m")`,
			`      when: (override ?? abs(z)) > 4`},
		{"clear, evaluated only while firing",
			`      when: abs(zscore(vibration_rms, "10m")) > 4
      clear: avg_over(vibration_rms, "1m") < 2.05
      value: avg_over(vibration_rms, "1m")`,
			`      z: zscore(vibration_rms, "10m")
      m: avg_over(vibration_rms, "1m")`,
			`      when: abs(z) > 4
      clear: m < 2.05
      value: m`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			inline := mustParse(t, fmt.Sprintf(strings.Replace(rule, "    let:\n%s\n", "", 1), c.inline))
			withLet := mustParse(t, fmt.Sprintf(rule, c.let, c.alert))
			for seed := uint64(1); seed <= 5; seed++ {
				msgs := vibrationStream(seed)
				want := transitions(t, withLet, msgs)
				if !strings.Contains(strings.Join(want, "\n"), "firing at 12m5s") {
					t.Fatalf("seed %d: the let form should fire on the spike at 12m05s: %q", seed, want)
				}
				if got := transitions(t, inline, msgs); strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("seed %d: inline alerted\n\t%s\nwant, as written with let,\n\t%s", seed, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
				}
			}
		})
	}
}

// A stateful call may sit in an expr let, use one, or be nested in
// another's argument; it may not use a predicate's element, nor be part of a
// series key.
func TestStatefulCallsInExpressions(t *testing.T) {
	set := mustParse(t, `
rules:
  - name: r
    match: s/+device
    fields:
      a: let d = v - 10; avg_over(d, "1m") + 10
      b: avg_over(v, "1m")
      c: ewma(rate(v), "10s")
      e: 'v > 100 ? -1 : (let d = v * 2; max_over(d, "1m"))'
      f: any([1, 2], {# > avg_over(v, "1m")})
`)
	ev := set.NewEvaluator(nil, rules.Limits{})
	var rec *sluice.Record
	for i, v := range []float64{1, 3, 200} {
		out, o := ev.Eval(msg("s/x", fmt.Sprintf(`{"v": %g}`, v), t0.Add(time.Duration(i)*10*time.Second)), nil)
		if o.Failed > 0 {
			t.Fatalf("%+v", out[0].DeadLetter)
		}
		rec = out[0].Record
	}
	for name, want := range map[string]any{"a": 68.0, "b": 68.0, "c": 9.95, "e": -1.0, "f": false} {
		if got, _ := rec.Field(name); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	// e's max_over was fed 400 on the reading where the ?: did not reach it.
	out, _ := ev.Eval(msg("s/x", `{"v": 5}`, t0.Add(30*time.Second)), nil)
	if got, _ := out[0].Record.Field("e"); got != 400.0 {
		t.Errorf("e = %v, want 400 (the max of 2, 6, 400 and 10)", got)
	}

	for _, c := range []struct{ rule, want string }{
		{"fields: {x: 'all([1, 2], {avg_over(#, \"1m\") > 1})'}", `f.yaml:4:31: rules[0].fields.x: avg_over: its argument cannot use the element of a predicate (#)`},
		{"key: 'avg_over(v, \"1m\") > 1 ? \"a\" : \"b\"'", `f.yaml:4:11: rules[0].key: avg_over: a series key cannot call a stateful function`},
	} {
		_, err := rules.Parse("f.yaml", []byte("rules:\n  - name: r\n    match: s/+device\n    "+c.rule+"\n"))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %s", c.rule, err, c.want)
		}
	}
}

// An alert raised by the timer has no reading: its message shows the
// windows as they stand, and does not feed them (a renotification neither
// counts as a reading nor resets a for()).
func TestTimerAlertsReadSitesWithoutFeedingThem(t *testing.T) {
	set := mustParse(t, `
rules:
  - name: r
    match: s/+device
    records: false
    alert:
      when: for(v > 5, "20s")
      renotify: 30s
      message: "{{ count_over(\"10m\") }} readings, avg {{ avg_over(v, \"10m\") }}, rate {{ rate(v) }}"
`)
	ev := set.NewEvaluator(nil, rules.Limits{})
	var got []string
	for i := 0; i < 4; i++ {
		out, _ := ev.Eval(msg("s/x", `{"v": 6}`, t0.Add(time.Duration(i)*10*time.Second)), nil)
		for _, a := range alertsOf(out) {
			got = append(got, fmt.Sprintf("%v %s: %s", a.Time.Sub(t0), a.Status, a.Message))
		}
	}
	for s := 31; s <= 100; s++ {
		for _, a := range alertsOf(ev.Tick(t0.Add(time.Duration(s)*time.Second), nil)) {
			got = append(got, fmt.Sprintf("%v %s: %s", a.Time.Sub(t0), a.Status, a.Message))
		}
	}
	out, _ := ev.Eval(msg("s/x", `{"v": 6}`, t0.Add(101*time.Second)), nil)
	if as := alertsOf(out); len(as) != 0 {
		t.Errorf("the reading after the renotifications: %+v, want no transition (still held)", as[0])
	}
	want := []string{
		"20s firing: 3 readings, avg 6, rate 0",
		"50s firing: 4 readings, avg 6, rate n/a",
		"1m20s firing: 4 readings, avg 6, rate n/a",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("alerts:\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

// A call in a message or label written as in when shows the value when
// compared; another call in a template is fed every reading like the rest.
func TestTemplateCallsShareTheirSite(t *testing.T) {
	set := mustParse(t, `
rules:
  - name: r
    match: s/+device
    records: false
    alert:
      when: zscore(v, "10m") > 4
      message: 'z {{ zscore(v, "10m") }}, mean {{ round(avg_over(v, "10m") * 100) / 100 }}'
      labels: {z: '{{ zscore(v, "10m") }}'}
`)
	ev := set.NewEvaluator(nil, rules.Limits{})
	var fired []*sluice.Alert
	for i, v := range []float64{10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 20} {
		out, _ := ev.Eval(msg("s/x", fmt.Sprintf(`{"v": %g}`, v), t0.Add(time.Duration(i)*10*time.Second)), nil)
		fired = append(fired, alertsOf(out)...)
	}
	if len(fired) != 1 {
		t.Fatalf("%d alerts, want 1: %+v", len(fired), fired)
	}
	a := fired[0]
	z, _ := findTag(a.Tags, "z")
	if a.Value != 19.0 || a.Message != "z 19, mean 11.36" || z != "19" {
		t.Errorf("value %v, message %q, label z=%q; want 19, \"z 19, mean 11.36\", 19", a.Value, a.Message, z)
	}
}

func findTag(tags []sluice.Tag, key string) (string, bool) {
	for _, t := range tags {
		if t.Key == key {
			return t.Value, true
		}
	}
	return "", false
}
