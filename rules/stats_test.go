package rules_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/rules"
)

// The docs' own example, zscore(vibration, "10m") > 4, on normal noise:
// no alert, however the first readings fall. zscore has no value before
// 10 readings (or the count given), stddev_over before 2.
func TestStatisticalFunctionsWaitForEnoughSamples(t *testing.T) {
	set := mustParse(t, `
rules:
  - name: pump
    match: plant/+device
    fields:
      z: zscore(vibration, "10m")
      z3: zscore(vibration, "10m", 3)
      sd: stddev_over(vibration, "10m")
      sd5: stddev_over(vibration, "10m", 5)
    alert:
      when: zscore(vibration, "10m") > 4
`)
	for seed := uint64(1); seed <= 5; seed++ {
		ev := set.NewEvaluator(nil, rules.Limits{})
		rnd := rand.New(rand.NewPCG(seed, 3))
		for i := 0; i < 60; i++ {
			payload := fmt.Sprintf(`{"vibration": %g}`, 2+rnd.NormFloat64()*0.1)
			out, _ := ev.Eval(msg("plant/p1", payload, t0.Add(time.Duration(i)*10*time.Second)), nil)
			if as := alertsOf(out); len(as) > 0 {
				t.Fatalf("seed %d: reading %d of normal noise fired: %+v", seed, i+1, as[0])
			}
			rec := out[0].Record
			for name, from := range map[string]int{"z": 11, "z3": 4, "sd": 2, "sd5": 5} {
				if _, ok := rec.Field(name); ok != (i+1 >= from) {
					t.Fatalf("seed %d: reading %d: %s present %v, want a value from reading %d on", seed, i+1, name, ok, from)
				}
			}
		}
	}
}

func TestMinimumSamplesArgument(t *testing.T) {
	for _, c := range []struct{ expr, want string }{
		{`zscore(v, "10m", 1)`, `zscore: the fewest samples must be a constant whole number, at least 2`},
		{`zscore(v, "10m", n)`, `zscore: the fewest samples must be a constant whole number`},
		{`stddev_over(v, "10m", 2.5)`, `stddev_over: the fewest samples must be a constant whole number`},
		{`zscore(v, "10m", 5, 6)`, `zscore takes 2 or 3 arguments`},
		{`avg_over(v, "10m", 5)`, `avg_over takes 2 argument(s)`},
	} {
		_, err := rules.Parse("f.yaml", []byte("rules:\n  - name: r\n    where: "+c.expr+" > 0\n"))
		if err == nil || !contains(err.Error(), "f.yaml:3:12: rules[0].where: "+c.want) {
			t.Errorf("%s: got %v, want %s", c.expr, err, c.want)
		}
	}
}

func contains(s, part string) bool { return strings.Contains(s, part) }

// A truck's cold store warms at 0.6 °C/min for 7 minutes from its first
// reading (loaded with the door open), then holds, under sensor noise of
// 0.05 °C, a reading every 10 s. The rate between two readings is mostly
// noise: held for 5 minutes it never fires. The least-squares slope over 5
// minutes does.
func TestDerivSeesAWarmingTruck(t *testing.T) {
	set := mustParse(t, `
rules:
  - name: warming
    match: trucks/+device
    fields:
      per_min: deriv(temperature, "5m") * 60
      rise_5m: delta_over(temperature, "5m")
    alert:
      when: deriv(temperature, "5m") * 60 > 0.5
      for: 5m
      message: 'warming {{ round(deriv(temperature, "5m") * 600) / 10 }} °C/min'
  - name: warming_by_rate
    match: trucks/+device
    records: false
    alert:
      when: rate(temperature) * 60 > 0.5
      for: 5m
`)
	for seed := uint64(1); seed <= 5; seed++ {
		ev := set.NewEvaluator(nil, rules.Limits{})
		rnd := rand.New(rand.NewPCG(seed, 9))
		var fired []string
		var maxRise float64
		for i := 0; i < 6*20; i++ { // 20 minutes
			at := time.Duration(i) * 10 * time.Second
			temp := 4.0 + 0.6*min(at, 7*time.Minute).Minutes()
			temp += rnd.NormFloat64() * 0.05
			out, _ := ev.Eval(msg("trucks/t1", fmt.Sprintf(`{"temperature": %g}`, temp), t0.Add(at)), nil)
			for _, a := range alertsOf(out) {
				fired = append(fired, fmt.Sprintf("%s %s at %v: %s", a.Rule, a.Status, a.Time.Sub(t0), a.Message))
			}
			if rise, ok := out[0].Record.Field("rise_5m"); ok {
				maxRise = max(maxRise, rise.(float64))
			}
		}
		if len(fired) != 2 || !strings.HasPrefix(fired[0], "warming firing at ") || !strings.HasPrefix(fired[1], "warming resolved at ") {
			t.Fatalf("seed %d: want warming to fire and resolve once, and warming_by_rate never; got\n\t%s", seed, strings.Join(fired, "\n\t"))
		}
		if maxRise < 2.6 || maxRise > 3.2 {
			t.Errorf("seed %d: delta_over 5m rose to %.2f °C at most, want about 0.6 °C/min over 4m41s to 5m", seed, maxRise)
		}
		t.Logf("seed %d: %s", seed, strings.Join(fired, "; "))
	}
}

// A ttl shorter than what a rule must remember is refused where it is
// written: the series would be evicted before its window filled.
func TestTTLShorterThanASpanIsRefused(t *testing.T) {
	for _, c := range []struct{ rule, want string }{
		{"ttl: 5s\n    fields: {a: 'avg_over(t, \"10s\")'}",
			`f.yaml:4:10: rules[0].ttl: 5s is shorter than the 10s window of avg_over: a series silent for 5s would lose that state; make ttl at least 10s`},
		{"ttl: 1m\n    alert: {absent: 2m}",
			`f.yaml:4:10: rules[0].ttl: 1m0s is shorter than alert.absent (2m0s)`},
		{"ttl: 30s\n    alert: {when: 't > 1', for: 1m}",
			`f.yaml:4:10: rules[0].ttl: 30s is shorter than alert.for (1m0s)`},
		{"ttl: 10s\n    fields: {a: 'avg_over(t, \"10s\")'}", ""},
	} {
		_, err := rules.Parse("f.yaml", []byte("rules:\n  - name: r\n    match: s/+device\n    "+c.rule+"\n"))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.rule, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: got %v, want %s", c.rule, err, c.want)
		}
	}
}
