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
