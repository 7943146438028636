package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tryConfig writes a config with one pipeline and the rule file given.
func tryConfig(t *testing.T, ruleFile string) (dir, path string) {
	t.Helper()
	dir = t.TempDir()
	writeFile(t, dir, "rules/r.yaml", ruleFile)
	path = writeFile(t, dir, "sluice.yaml", `pipelines:
  - name: telemetry
    topics: ["plant/#"]
    rules: [rules]
    sinks: [alerts]
sinks:
  - name: alerts
    mqtt: {}
`)
	return dir, path
}

// TestRulesTry runs payloads through a config's rules without starting
// anything: the records, the alert transitions (a for: duration on the
// simulated clock), and the dead letter of a typo with its reason in words.
func TestRulesTry(t *testing.T) {
	dir, path := tryConfig(t, `rules:
  - name: boiler
    match: plant/+site/+device/telemetry
    fields: {temp_f: temp * 9 / 5 + 32}
    alert:
      when: temp > 90
      for: 2s
      severity: critical
      message: "{{ device }} at {{ temp }}"
  - name: hot
    match: plant/+site/+device/telemetry
    where: hum != nil
    alert:
      when: tmp > 80
`)
	topic := "plant/north/b1/telemetry"
	t.Run("one payload", func(t *testing.T) {
		code, stdout, stderr := runMain("rules", "try", "-c", path, "-topic", topic, `{"temp": 95, "hum": 40}`)
		for _, want := range []string{
			topic + ` {"temp": 95, "hum": 40}`,
			"  boiler: record {device=b1 site=north} {hum=40 temp=95 temp_f=203}",
			"  hot (rule): DEAD LETTER alert.when: `tmp` is not in the payload, which has `temp`, `hum` (did you mean `temp`?)",
			"1 message: 2 records, 0 alert transitions, 1 dead letter",
		} {
			if !strings.Contains(stdout, want) {
				t.Errorf("output lacks %q:\n%s%s", want, stdout, stderr)
			}
		}
		if code != exitFailure {
			t.Errorf("exit %d, want %d (a dead letter)", code, exitFailure)
		}
	})
	t.Run("a file of payloads, on the simulated clock", func(t *testing.T) {
		file := writeFile(t, dir, "capture.txt", "# mosquitto_sub -v\n"+
			topic+` {"temp": 91}`+"\n"+
			topic+` {"temp": 92}`+"\n"+
			topic+` {"temp": 93}`+"\n"+
			topic+` {"temp": 80}`+"\n"+
			`other/topic {"temp": 99}`+"\n")
		code, stdout, stderr := runMain("rules", "try", "-c", path, "-file", file, "-every", "1s")
		for _, want := range []string{
			"  boiler: ALERT FIRING b1 critical value=93 since ",
			"  boiler: ALERT RESOLVED b1 critical value=80",
			"other/topic {\"temp\": 99}\n  no pipeline takes this topic",
			"5 messages: 4 records, 2 alert transitions, 0 dead letters",
		} {
			if !strings.Contains(stdout, want) {
				t.Errorf("output lacks %q:\n%s%s", want, stdout, stderr)
			}
		}
		if strings.Count(stdout, "ALERT FIRING") != 1 || code != exitOK {
			t.Errorf("exit %d, want one firing and 0:\n%s", code, stdout)
		}
	})
	t.Run("a YAML file, topics from -topic", func(t *testing.T) {
		file := writeFile(t, dir, "readings.yaml", "- payload: {temp: 50}\n- topic: plant/south/b2/telemetry\n  payload: {temp: 60}\n")
		code, stdout, _ := runMain("rules", "try", "-c", path, "-topic", topic, "-file", file)
		if code != exitOK || !strings.Contains(stdout, "{device=b1 site=north} {temp=50 temp_f=122}") ||
			!strings.Contains(stdout, "{device=b2 site=south} {temp=60 temp_f=140}") {
			t.Errorf("exit %d:\n%s", code, stdout)
		}
	})
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Errorf("rules try made the data folder: %v", err)
	}
	for _, args := range [][]string{
		{"rules", "try", "-c", path, `{"temp": 1}`},
		{"rules", "try", "-c", path, "-topic", topic},
		{"rules", "try", "-c", path, "-topic", topic, "-pipeline", "nope", "{}"},
		{"rules", "try", "-c", path, "-file", writeFile(t, dir, "bad.txt", "no-space-here\n")},
	} {
		if code, _, stderr := runMain(args...); code != exitUsage || !strings.HasPrefix(stderr, "sluice rules try: ") {
			t.Errorf("%v: exit %d, want %d: %s", args, code, exitUsage, stderr)
		}
	}
}

// TestRulesLintSample checks lint --sample reports, at the rule's line, a
// payload name no sample has, with the name it probably meant: the typo
// that passed lint and validate and made every message a dead letter.
func TestRulesLintSample(t *testing.T) {
	dir, path := tryConfig(t, "rules:\n  - name: boiler\n    match: plant/+site/+device/telemetry\n    alert:\n      when: tmp > 80\n")
	samples := writeFile(t, dir, "samples.txt", `plant/north/b1/telemetry {"temp": 95, "hum": 40}`+"\n")
	code, stdout, stderr := runMain("rules", "lint", "-c", path, "-sample", samples)
	want := filepath.Join(dir, "rules", "r.yaml") + ":5:13: rules[0].alert.when: `tmp` is not in any sample"
	if code != exitUsage || !strings.Contains(stdout, want) || !strings.Contains(stdout, "(did you mean `temp`?)") {
		t.Errorf("exit %d, want %d and\n%s\n%s%s", code, exitUsage, want, stdout, stderr)
	}
	writeFile(t, dir, "rules/r.yaml", "rules:\n  - name: boiler\n    match: plant/+site/+device/telemetry\n    alert:\n      when: temp > 80\n")
	if code, stdout, _ := runMain("rules", "lint", "-c", path, "-sample", samples); code != exitOK || stdout != "1 rule file, 0 test files, 1 sample: ok\n" {
		t.Errorf("exit %d: %q", code, stdout)
	}
}
