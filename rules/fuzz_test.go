package rules_test

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/conf/conftest"
	"github.com/sluicehq/sluice/rules"
)

// Seed corpora are in testdata/fuzz/<FuzzName>/; run a target with
//
//	go test ./rules -run XXX -fuzz FuzzParseFilter -fuzztime 60s

// FuzzParseFilter parses arbitrary filter text and, for a filter it
// accepts, checks Match against topics derived from it with a reference
// matcher written from the MQTT specification.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{
		"plant/+site/+line/+device/telemetry", "plant/#rest", "#", "+", "+/+/#tail", "$SYS/#",
		"a//b", "/", "a/+x/+x", "a/#/b", "a/b+", "+_x1/#_", "é/+ñ/#",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		flt, err := rules.ParseFilter(text)
		if err != nil {
			if flt != nil {
				t.Fatalf("ParseFilter(%q) returned a filter and an error", text)
			}
			return
		}
		if flt.String() != text {
			t.Fatalf("ParseFilter(%q).String() = %q", text, flt.String())
		}
		names := flt.Names()
		levels := strings.Split(text, "/")
		for i, l := range levels {
			if strings.HasPrefix(l, "#") && i != len(levels)-1 {
				t.Fatalf("ParseFilter(%q) accepted # before the last level", text)
			}
			if strings.ContainsAny(l[min(1, len(l)):], "+#") {
				t.Fatalf("ParseFilter(%q) accepted a wildcard inside level %q", text, l)
			}
		}
		if want := refNames(text); !slices.Equal(names, want) {
			t.Fatalf("ParseFilter(%q).Names() = %q, want %q", text, names, want)
		}
		for i, n := range names {
			if !isName(n) || slices.Contains(names[:i], n) {
				t.Fatalf("ParseFilter(%q) accepted segment name %q (names %q)", text, n, names)
			}
		}

		// A topic built by filling every wildcard matches, and binds
		// what it was filled with.
		filled, want := fill(levels)
		checkMatch(t, flt, filled, true, want)
		if last := levels[len(levels)-1]; len(levels) > 1 && strings.HasPrefix(last, "#") {
			// "a/#" matches "a" too, binding the # level to "".
			if len(last) > 1 {
				want[len(want)-1] = ""
			}
			checkMatch(t, flt, strings.TrimSuffix(filled, "/r1/r2"), true, want)
		}

		wild := strings.ContainsAny(text, "+#")
		for _, topic := range []string{text, "", "/", "$" + text, text + "/x", "x/" + text, strings.TrimSuffix(text, "/"),
			text[:len(text)/2], strings.ReplaceAll(text, "/", "//"), strings.Repeat(text+"/", 3)} {
			ok, vals := refMatch(levels, topic)
			checkMatch(t, flt, topic, ok, vals)
			if !wild && ok != (topic == text) {
				t.Fatalf("literal filter %q: Match(%q) = %v", text, topic, ok)
			}
		}
	})
}

// FuzzFilterMatch matches arbitrary topics against fixed filters, checking
// each against the reference matcher, and that "#" matches every topic but
// the broker's own ($SYS/...).
func FuzzFilterMatch(f *testing.F) {
	for _, s := range []string{
		"plant/north/l1/b7/telemetry", "$SYS/broker/uptime", "", "/", "//", "a//b", "$", "plant",
		"plant/" + strings.Repeat("x/", 5000) + "telemetry", "plant/\x00/\xff/é/telemetry",
	} {
		f.Add(s)
	}
	var filters []*rules.Filter
	var levels [][]string
	for _, s := range []string{
		"#", "#all", "+/#", "+", "+a/+b/+c", "plant/+site/+line/+device/telemetry", "plant/#rest",
		"plant/+/+/+device/#", "$SYS/#", "a/b/c", "a//+mid", "/+x", "+x/", "+/+", "$SYS/+what",
	} {
		filters = append(filters, rules.MustFilter(s))
		levels = append(levels, strings.Split(s, "/"))
	}
	f.Fuzz(func(t *testing.T, topic string) {
		for i, flt := range filters {
			ok, vals := refMatch(levels[i], topic)
			checkMatch(t, flt, topic, ok, vals)
		}
		notSys := !strings.HasPrefix(topic, "$")
		for _, s := range []string{"#", "#all", "+/#"} {
			flt := rules.MustFilter(s)
			vals := make([]string, len(flt.Names()))
			if got := flt.Match(topic, vals); got != notSys {
				t.Fatalf("%q.Match(%q) = %v", s, topic, got)
			}
			if s == "#all" && notSys && vals[0] != topic {
				t.Fatalf("#all bound %q to %q", vals[0], topic)
			}
		}
	})
}

// checkMatch calls Match with and without values and compares with want.
func checkMatch(t *testing.T, flt *rules.Filter, topic string, want bool, wantVals []string) {
	t.Helper()
	vals := make([]string, len(flt.Names()))
	for i := range vals {
		vals[i] = "\x00unset"
	}
	got := flt.Match(topic, vals)
	if noVals := flt.Match(topic, nil); noVals != got {
		t.Fatalf("%q.Match(%q) = %v with values, %v without", flt, topic, got, noVals)
	}
	if got != want {
		t.Fatalf("%q.Match(%q) = %v, want %v", flt, topic, got, want)
	}
	if got && !slices.Equal(vals, wantVals) {
		t.Fatalf("%q.Match(%q) bound %q, want %q", flt, topic, vals, wantVals)
	}
}

// refMatch matches a topic against a filter's levels as the MQTT
// specification reads (4.7), and returns the values of the named levels.
func refMatch(filter []string, topic string) (bool, []string) {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter[0], "+") || strings.HasPrefix(filter[0], "#")) {
		return false, nil
	}
	parts := strings.Split(topic, "/")
	var vals []string
	for i, l := range filter {
		switch {
		case strings.HasPrefix(l, "#"):
			if l != "#" {
				vals = append(vals, strings.Join(parts[i:], "/"))
			}
			return true, vals
		case i >= len(parts):
			return false, nil
		case strings.HasPrefix(l, "+"):
			if l != "+" {
				vals = append(vals, parts[i])
			}
		case l != parts[i]:
			return false, nil
		}
	}
	if len(parts) != len(filter) {
		return false, nil
	}
	return true, vals
}

// fill replaces each wildcard level by a value ("v<i>" for +, "r1/r2" for
// #) and returns the topic and the values bound to the named levels.
func fill(levels []string) (string, []string) {
	out := make([]string, len(levels))
	var vals []string
	for i, l := range levels {
		switch {
		case strings.HasPrefix(l, "+"):
			out[i] = "v" + strconv.Itoa(i)
		case strings.HasPrefix(l, "#"):
			out[i] = "r1/r2"
		default:
			out[i] = l
			continue
		}
		if len(l) > 1 {
			vals = append(vals, out[i])
		}
	}
	return strings.Join(out, "/"), vals
}

func refNames(text string) []string {
	var names []string
	for _, l := range strings.Split(text, "/") {
		if len(l) > 1 && (l[0] == '+' || l[0] == '#') {
			names = append(names, l[1:])
		}
	}
	return names
}

func isName(s string) bool {
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return s != ""
}

// compileBound is how long compiling one rule file, and evaluating it on a
// few messages, may take before the fuzzer reports it: not a speed target,
// a bound that catches runaway work (a pathological expression or YAML
// document) rather than slow machines.
const compileBound = time.Second

// FuzzCompileRules compiles arbitrary rule files: a set or a conf.ErrorList
// whose lines are inside the file, in bounded time; a set that compiles
// evaluates messages and timer ticks without panicking, and every event it
// produces names one of its rules.
func FuzzCompileRules(f *testing.F) {
	files, _ := filepath.Glob("../examples/rules/*.yaml")
	files = append(files, "testdata/bench_rules.yaml")
	for _, name := range files {
		if rules.IsTestFile(name) {
			continue
		}
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("rules:\n  - name: a\n    where: temperature >> 3\n    fields:\n      x: 1 +\n"))
	f.Add([]byte("rules:\n  - name: a\n    alert:\n      when: |\n        let y = 2;\n        y > oops\n      message: \"{{ len() }} {{\"\n"))
	f.Add([]byte("rules:\n  - name: a\n    match: a/+x/#rest\n    key: x + rest\n    split: r\n    decode: base64 > gzip > json\n"))
	f.Add([]byte("rules: [{name: a, where: \"a\\n\\n\\n>\"}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		start := time.Now()
		set, err := rules.Parse("fuzz.yaml", data)
		switch {
		case err != nil && set != nil:
			t.Fatal("Parse returned a set and an error")
		case err != nil:
			conftest.CheckErrorList(t, err, "fuzz.yaml", data)
		default:
			evaluate(t, set)
		}
		if took := time.Since(start); took > compileBound {
			t.Fatalf("compiling (and evaluating) %d bytes took %v", len(data), took)
		}
	})
}

var fuzzMessages = []struct{ topic, payload string }{
	{"plant/north/l1/b7/telemetry", `{"kind":"boiler","temperature":95.5,"pressure":2,"door_open":true,"r":[{"t":1},{"t":2}]}`},
	{"plant/north/l1/b7/telemetry", "temperature=-40 kind=\"pump\" vibration=1e300"},
	{"$SYS/broker/uptime", "\x1f\x8b\x00garbage"},
	{"a", ""},
}

// evaluate runs a compiled set on fixed messages and ticks.
func evaluate(t *testing.T, set *rules.Set) {
	t.Helper()
	ruleNames := set.Rules()
	ev := set.NewEvaluator(nil, rules.Limits{})
	at := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	var out []sluice.Event
	for round := range 2 {
		for i, m := range fuzzMessages {
			at = at.Add(time.Duration(i+round) * time.Second)
			msg := &sluice.Message{Topic: m.topic, Payload: []byte(m.payload), QoS: 1, ClientID: "c", Received: at}
			var o rules.Outcome
			out, o = ev.Eval(msg, out[:0])
			if o.Matched > len(ruleNames) || o.Filtered+o.Failed > o.Matched {
				t.Fatalf("%d rules, outcome %+v", len(ruleNames), o)
			}
			checkEvents(t, ruleNames, out)
		}
		out = ev.Tick(at.Add(24*time.Hour), out[:0])
		checkEvents(t, ruleNames, out)
	}
}

func checkEvents(t *testing.T, ruleNames []string, out []sluice.Event) {
	t.Helper()
	for _, e := range out {
		var rule string
		switch {
		case e.Record != nil && e.Stream == sluice.StreamRecords && e.Alert == nil && e.DeadLetter == nil:
			rule = e.Record.Rule
		case e.Alert != nil && e.Stream == sluice.StreamAlerts && e.Record == nil && e.DeadLetter == nil:
			rule = e.Alert.Rule
		case e.DeadLetter != nil && e.Stream == sluice.StreamDeadLetters && e.Record == nil && e.Alert == nil:
			rule = e.DeadLetter.Rule
		default:
			t.Fatalf("event %+v: stream and content disagree", e)
		}
		if !slices.Contains(ruleNames, rule) {
			t.Fatalf("event of rule %q, not one of %q", rule, ruleNames)
		}
	}
}
