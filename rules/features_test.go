package rules_test

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/rules"
)

func mustParse(t *testing.T, src string) *rules.Set {
	t.Helper()
	set, err := rules.Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func alertsOf(out []sluice.Event) []*sluice.Alert {
	var as []*sluice.Alert
	for _, e := range out {
		if e.Alert != nil {
			as = append(as, e.Alert)
		}
	}
	return as
}

var t0 = time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)

func TestDeadmanFiresFromTheTimerWithoutData(t *testing.T) {
	set := mustParse(t, `
rules:
  - name: silent
    match: sensors/+device
    records: false
    alert:
      absent: 2m
      message: "{{ device }} silent"
`)
	ev := set.NewEvaluator(nil, rules.Limits{})
	ev.Eval(msg("sensors/s1", `{"v":1}`, t0), nil)
	ev.Eval(msg("sensors/s2", `{"v":1}`, t0.Add(time.Minute)), nil)
	var fired []*sluice.Alert
	// The clock runs on with no data at all.
	for now := t0; now.Before(t0.Add(5 * time.Minute)); now = now.Add(time.Second) {
		fired = append(fired, alertsOf(ev.Tick(now, nil))...)
	}
	if len(fired) != 2 {
		t.Fatalf("fired %d alerts, want one per silent series: %+v", len(fired), fired)
	}
	for i, want := range []struct {
		device string
		at     time.Time
	}{{"s1", t0.Add(2 * time.Minute)}, {"s2", t0.Add(3 * time.Minute)}} {
		a := fired[i]
		if a.Device != want.device || a.Status != sluice.AlertFiring || !a.Time.Equal(want.at) || a.Message != want.device+" silent" {
			t.Errorf("alert %d: %+v, want %s firing at %v", i, a, want.device, want.at)
		}
	}
	// Heard from again: resolved.
	out, _ := ev.Eval(msg("sensors/s1", `{"v":2}`, t0.Add(5*time.Minute)), nil)
	if as := alertsOf(out); len(as) != 1 || as[0].Status != sluice.AlertResolved || as[0].Device != "s1" {
		t.Fatalf("on new data: %+v", as)
	}
}

func TestHysteresisDoesNotFlap(t *testing.T) {
	rule := func(clear string) string {
		return `
rules:
  - name: hot
    match: sensors/+device
    alert:
      when: t > 90` + clear + "\n"
	}
	// After crossing 90, the value oscillates between the two thresholds.
	values := []float64{80, 91}
	for i := 0; i < 50; i++ {
		values = append(values, 89, 90.5, 86, 92)
	}
	values = append(values, 84)
	run := func(set *rules.Set) []string {
		ev := set.NewEvaluator(nil, rules.Limits{})
		var transitions []string
		for i, v := range values {
			out, _ := ev.Eval(msg("sensors/s1", fmt.Sprintf(`{"t":%v}`, v), t0.Add(time.Duration(i)*time.Second)), nil)
			for _, a := range alertsOf(out) {
				transitions = append(transitions, fmt.Sprintf("%s@%v", a.Status, v))
			}
		}
		return transitions
	}
	with := run(mustParse(t, rule("\n      clear: t < 85")))
	if strings.Join(with, " ") != "firing@91 resolved@84" {
		t.Fatalf("with clear: %v, want one episode", with)
	}
	// Without hysteresis the same values flap: the test above is meaningful.
	if without := run(mustParse(t, rule(""))); len(without) < 50 {
		t.Fatalf("without clear: only %d transitions", len(without))
	}
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func TestGzipAndBase64OfGzipGiveTheSameRecord(t *testing.T) {
	set := mustParse(t, `
rules:
  - name: r
    match: sensors/+device
`)
	plain := []byte(`{"t": 21.5, "ok": true, "motor": {"rpm": 1450}, "name": "pump \"A\""}`)
	payloads := map[string][]byte{
		"json":           plain,
		"gzip":           gzipped(plain),
		"base64 of gzip": []byte(base64.StdEncoding.EncodeToString(gzipped(plain))),
	}
	var want string
	for _, name := range []string{"json", "gzip", "base64 of gzip"} {
		ev := set.NewEvaluator(nil, rules.Limits{})
		out, o := ev.Eval(&sluice.Message{Topic: "sensors/a", Payload: payloads[name], Received: t0}, nil)
		if o.Failed != 0 || len(out) != 1 || out[0].Record == nil {
			t.Fatalf("%s: %+v %+v", name, o, out)
		}
		got := string(out[0].Record.AppendJSON(nil))
		if want == "" {
			want = got
			if !strings.Contains(got, `"motor_rpm":1450`) || !strings.Contains(got, `"name":"pump \"A\""`) {
				t.Fatalf("record %s", got)
			}
		}
		if got != want {
			t.Errorf("%s decodes to\n%s\nwant\n%s", name, got, want)
		}
	}
}

func TestDecompressionBombIsRejected(t *testing.T) {
	set := mustParse(t, `
rules:
  - name: r
    match: sensors/+device
`)
	// 1 KB of gzip that expands to 64 MiB.
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for range 64 {
		w.Write(zeros)
	}
	w.Close()
	if buf.Len() > 100<<10 {
		t.Fatalf("bomb is %d bytes", buf.Len())
	}
	ev := set.NewEvaluator(nil, rules.Limits{})
	out, o := ev.Eval(&sluice.Message{Topic: "sensors/a", Payload: buf.Bytes(), Received: t0}, nil)
	if o.Failed != 1 || len(out) != 1 || out[0].DeadLetter == nil {
		t.Fatalf("bomb not rejected: %+v %+v", o, out)
	}
	dl := out[0].DeadLetter
	if dl.Stage != "decode" || !strings.Contains(dl.Reason, "gzip") || !strings.Contains(dl.Reason, "decompression bomb") {
		t.Fatalf("dead letter %+v", dl)
	}
}

func TestStateSurvivesAReloadOfUnchangedRules(t *testing.T) {
	const kept = `
rules:
  - name: kept
    match: sensors/+device
    fields:
      avg: avg_over(v, "1h")
`
	set1 := mustParse(t, kept)
	ev := set1.NewEvaluator(nil, rules.Limits{})
	ev.Eval(msg("sensors/a", `{"v": 10}`, t0), nil)
	// The new set keeps "kept" as it was and adds a rule.
	set2 := mustParse(t, kept+`
  - name: added
    match: sensors/+device
    fields:
      avg2: avg_over(v, "1h")
`)
	ev = set2.NewEvaluator(ev, rules.Limits{})
	out, _ := ev.Eval(msg("sensors/a", `{"v": 20}`, t0.Add(time.Second)), nil)
	avg, _ := out[0].Record.Field("avg")
	avg2, _ := out[1].Record.Field("avg2")
	if avg != 15.0 || avg2 != 20.0 {
		t.Fatalf("avg %v (want 15: state kept), avg2 %v (want 20: new state)", avg, avg2)
	}
	// A changed definition starts afresh.
	set3 := mustParse(t, strings.Replace(kept, `"1h"`, `"2h"`, 1))
	ev = set3.NewEvaluator(ev, rules.Limits{})
	out, _ = ev.Eval(msg("sensors/a", `{"v": 30}`, t0.Add(2*time.Second)), nil)
	if avg, _ := out[0].Record.Field("avg"); avg != 30.0 {
		t.Fatalf("avg %v after the rule changed, want 30 (fresh state)", avg)
	}
}

func TestStatefulFunctions(t *testing.T) {
	set := mustParse(t, `
rules:
  - name: f
    match: sensors/+device
    fields:
      d: delta(v)
      r: rate(v)
      inc: increase(c)
      ch: changed(state)
      n: count_over("1m")
      mx: max_over(v, "1m")
      mn: min_over(v, "1m")
      sum: sum_over(v, "1m")
      e: ewma(v, "10s")
      hot: held(v > 5, "20s")
      hot2: for(v > 5, "20s")
`)
	ev := set.NewEvaluator(nil, rules.Limits{})
	steps := []struct {
		at      time.Duration
		payload string
		want    map[string]any // nil: absent (NaN)
	}{
		{0, `{"v": 4, "c": 100, "state": "run"}`, map[string]any{"d": nil, "r": nil, "inc": nil, "ch": false, "n": 1.0, "mx": 4.0, "mn": 4.0, "sum": 4.0, "e": 4.0, "hot": false}},
		{10 * time.Second, `{"v": 6, "c": 130, "state": "run"}`, map[string]any{"d": 2.0, "r": 0.2, "inc": 30.0, "ch": false, "n": 2.0, "mx": 6.0, "mn": 4.0, "sum": 10.0, "e": 5.0, "hot": false}},
		{20 * time.Second, `{"v": 8, "c": 10, "state": "stop"}`, map[string]any{"d": 2.0, "r": 0.2, "inc": 10.0, "ch": true, "n": 3.0, "mx": 8.0, "sum": 18.0, "hot": false}},
		{30 * time.Second, `{"v": 7, "c": 20, "state": "stop"}`, map[string]any{"d": -1.0, "inc": 10.0, "ch": false, "hot": true, "hot2": true}},
		{90 * time.Second, `{"v": 1, "c": 25, "state": "stop"}`, map[string]any{"n": 1.0, "mx": 1.0, "hot": false}},
	}
	for i, s := range steps {
		out, o := ev.Eval(msg("sensors/a", s.payload, t0.Add(s.at)), nil)
		if o.Failed != 0 {
			t.Fatalf("step %d: %v", i, out)
		}
		rec := out[0].Record
		for name, want := range s.want {
			got, ok := rec.Field(name)
			if want == nil {
				if ok {
					t.Errorf("step %d: %s = %v, want absent (no data yet)", i, name, got)
				}
				continue
			}
			if !ok || fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("step %d: %s = %v, want %v", i, name, got, want)
			}
		}
	}
}

func TestRenameUnitsKeepDrop(t *testing.T) {
	set := mustParse(t, `
rules:
  - name: r
    match: sensors/+device
    rename: {temp: temperature}
    units: {temp: "degF -> degC", p: "bar -> kPa"}
    drop: [secret]
    where: temperature > 30
    fields:
      hot: temperature > 90
`)
	ev := set.NewEvaluator(nil, rules.Limits{})
	out, o := ev.Eval(msg("sensors/a", `{"temp": 212, "p": 1.5, "secret": "x"}`, t0), nil)
	if o.Failed != 0 || len(out) != 1 {
		t.Fatalf("%+v %+v", o, out)
	}
	got := string(out[0].Record.AppendJSON(nil))
	if !strings.Contains(got, `"fields":{"temperature":100,"p":150,"hot":true}`) {
		t.Fatalf("record %s", got)
	}
}

func TestArraysAndSplit(t *testing.T) {
	set := mustParse(t, `
rules:
  - name: batch
    match: gateways/+gw/batch
    split: readings
    where: t > 0
  - name: list
    match: gateways/+gw/list
`)
	ev := set.NewEvaluator(nil, rules.Limits{})
	out, _ := ev.Eval(msg("gateways/g1/batch", `{"site":"n","readings":[{"t":1,"id":"a"},{"t":-1,"id":"b"},{"t":3,"id":"c"}]}`, t0), nil)
	var got []string
	for _, e := range out {
		got = append(got, string(e.Record.AppendJSON(nil)[strings.Index(string(e.Record.AppendJSON(nil)), `"fields"`):]))
	}
	if len(out) != 2 || !strings.Contains(got[0], `"site":"n"`) || !strings.Contains(got[1], `"id":"c"`) {
		t.Fatalf("split records: %v", got)
	}
	out, _ = ev.Eval(msg("gateways/g1/list", `[{"t":1},{"t":2}]`, t0), nil)
	if len(out) != 2 {
		t.Fatalf("array of readings gave %d records", len(out))
	}
}

func TestCompileErrorsForFunctions(t *testing.T) {
	cases := []struct{ expr, want string }{
		{`rate()`, "rate takes 1 argument(s): rate(value)"},
		{`avg_over(v, d)`, `avg_over: the duration must be a constant string such as "5m"`},
		{`avg_over(v, "5 minutes")`, `avg_over: want a positive duration such as 30s or 5m, got "5 minutes"`},
		{`percentile_over(v, 120, "5m")`, `the percentile must be a constant from 0 to 100`},
		{`convert(v, "degF", "bar")`, `cannot convert degF (temperature) to bar (pressure)`},
		{`frobnicate(v) > 1`, `unknown function frobnicate`},
	}
	for _, tc := range cases {
		_, err := rules.Parse("f.yaml", []byte("rules:\n  - name: r\n    where: "+tc.expr+" > 0\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "f.yaml:3:") {
			t.Errorf("%s: got %v, want f.yaml:3:...: %s", tc.expr, err, tc.want)
		}
	}
}

func TestAPanicFailsOneEvaluationOnly(t *testing.T) {
	set := mustParse(t, `
rules:
  - name: r
    match: sensors/+device
    where: 1 / v > 0
`)
	ev := set.NewEvaluator(nil, rules.Limits{})
	out, o := ev.Eval(msg("sensors/a", `{"v": "x"}`, t0), nil)
	if o.Failed != 1 || out[0].DeadLetter == nil {
		t.Fatalf("%+v", out)
	}
	out, o = ev.Eval(msg("sensors/a", `{"v": 2}`, t0), nil)
	if o.Failed != 0 || len(out) != 1 {
		t.Fatalf("the next message failed too: %+v", out)
	}
}

func TestRulesWithDifferentDecodingsSeeTheirOwnReadings(t *testing.T) {
	set := mustParse(t, `
rules:
  - name: whole
    match: sensors/+device
    decode: json
  - name: parts
    match: sensors/+device
    decode: json
    split: parts
  - name: whole_again
    match: sensors/+device
`)
	ev := set.NewEvaluator(nil, rules.Limits{})
	out, o := ev.Eval(msg("sensors/a", `{"site":"n","parts":[{"p":1},{"p":2}]}`, t0), nil)
	if o.Failed != 0 || len(out) != 4 {
		t.Fatalf("%+v: %d events", o, len(out))
	}
	var got []string
	for _, e := range out {
		b := string(e.Record.AppendJSON(nil))
		got = append(got, e.Record.Rule+" "+b[strings.Index(b, `"fields"`):])
	}
	want := []string{
		`whole "fields":{"site":"n"}}`,
		`parts "fields":{"site":"n","p":1}}`,
		`parts "fields":{"site":"n","p":2}}`,
		`whole_again "fields":{"site":"n"}}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestQuickWhereAgreesWithTheVM checks the filters evaluated without the VM
// (name ==/!= string, bool or nil, joined by and) against the same filters
// forced through the VM, over payloads of every type.
func TestQuickWhereAgreesWithTheVM(t *testing.T) {
	wheres := []string{
		`kind == "boiler"`,
		`kind != "boiler"`,
		`on == true`,
		`on != false`,
		`x == nil`,
		`x != nil`,
		`kind == "boiler" and x != nil`,
		`device == "d1" && on == true`,
	}
	payloads := []string{
		`{}`, `{"kind":"boiler"}`, `{"kind":"pump"}`, `{"kind":3}`, `{"kind":true}`, `{"kind":"boiler","x":0}`,
		`{"on":true}`, `{"on":false}`, `{"on":"true"}`, `{"on":1}`, `{"x":null}`, `{"x":"s","on":true,"kind":"boiler"}`,
	}
	for _, w := range wheres {
		quick := mustParse(t, "rules:\n  - name: q\n    match: s/+device\n    where: '"+w+"'\n")
		slow := mustParse(t, "rules:\n  - name: q\n    match: s/+device\n    where: '("+w+") ? true : false'\n")
		evq, evs := quick.NewEvaluator(nil, rules.Limits{}), slow.NewEvaluator(nil, rules.Limits{})
		for _, p := range payloads {
			for _, topic := range []string{"s/d1", "s/d2"} {
				oq, _ := evq.Eval(msg(topic, p, t0), nil)
				os, _ := evs.Eval(msg(topic, p, t0), nil)
				if len(oq) != len(os) {
					t.Errorf("where %s, %s on %s: quick gives %d events, the VM %d", w, p, topic, len(oq), len(os))
				}
			}
		}
	}
}
