package rules_test

import (
	"strings"
	"testing"

	"github.com/sluicehq/sluice/rules"
)

// A typo of a field name compiles (payload fields are not known in
// advance); the dead letter must say what happened, in words.
func TestMissingNamesExplainAFailure(t *testing.T) {
	set := mustParse(t, `
rules:
  - name: hot
    match: s/+device
    alert:
      when: tmp > 80
  - name: guarded
    match: s/+device
    where: pressure != nil or flow == nil
    fields:
      p: (pressure ?? 0) * 2
  - name: wrong_type
    match: s/+device
    where: kind > 3
`)
	ev := set.NewEvaluator(nil, rules.Limits{})
	out, o := ev.Eval(msg("s/a", `{"temp": 85, "hum": 40, "kind": "boiler"}`, t0), nil)
	reasons := map[string]string{}
	for _, e := range out {
		if e.DeadLetter != nil {
			reasons[e.DeadLetter.Rule] = e.DeadLetter.Reason
		}
	}
	if o.Failed != 2 || len(reasons) != 2 {
		t.Fatalf("%d failed, want hot and wrong_type: %v", o.Failed, reasons)
	}
	want := "alert.when: `tmp` is not in the payload, which has `temp`, `hum`, `kind` (did you mean `temp`?): invalid operation"
	if !strings.HasPrefix(reasons["hot"], want) {
		t.Errorf("hot: reason %q, want it to start %q", reasons["hot"], want)
	}
	// A failure with every name present says nothing of missing names.
	if r := reasons["wrong_type"]; !strings.HasPrefix(r, "where: invalid operation") || strings.Contains(r, "not in the payload") {
		t.Errorf("wrong_type: reason %q", r)
	}
}

// CheckSamples finds, before anything runs, the names rules read that no
// sample payload has, where the rule reads them.
func TestCheckSamples(t *testing.T) {
	set, err := rules.Parse("f.yaml", []byte(`rules:
  - name: boiler
    match: plant/+site/+device/telemetry
    where: kind == "boiler"
    fields:
      p: (pressure ?? 0) * 2
    alert:
      when: tmp > 80
      message: "{{ device }} at {{ tmpp }}"
  - name: pump
    match: plant/+site/+device/telemetry
    where: kind == "pump" and spin > 0
    alert:
      when: vibration > 7
  - name: other
    match: other/#
    alert: {when: x > 1}
`))
	if err != nil {
		t.Fatal(err)
	}
	got := set.CheckSamples([]rules.Sample{
		{Topic: "plant/n/b1/telemetry", Payload: []byte(`{"kind": "boiler", "temp": 85, "hum": 40}`)},
		{Topic: "plant/n/p1/telemetry", Payload: []byte(`{"kind": "pump", "vibration": 3, "rpm": 1450}`)},
		{Topic: "plant/n/p1/telemetry", Payload: []byte(`not json`)},
	})
	want := []string{
		"f.yaml:8:13: rules[0].alert.when: `tmp` is not in any sample, the samples that pass its where have `hum`, `kind`, `temp` (did you mean `temp`?)",
		"f.yaml:9:36: rules[0].alert.message: `tmpp` is not in any sample, the samples that pass its where have `hum`, `kind`, `temp` (did you mean `temp`?)",
		"f.yaml:12:31: rules[1].where: `spin` is not in any sample, the samples on its topics have `hum`, `kind`, `rpm`, `temp`, `vibration`",
	}
	if g, w := got.Error(), strings.Join(want, "\n"); g != w {
		t.Errorf("got\n%s\nwant\n%s", g, w)
	}
}
