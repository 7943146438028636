package rules_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/rules"
)

// An alert's message and a dead letter's reason follow one rule in rule
// tests: a string matches exactly, {contains: part} matches a part.
func TestExpectedTextMatchesOneWay(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("r.yaml", `
rules:
  - name: hot
    match: s/+device
    alert:
      when: t > 90
      message: "{{ device }} at {{ t }} °C"
`)
	step := func(alert, dead string) string {
		return `
      - publish: {topic: s/a, payload: {t: 95}}
        alerts: [{rule: hot, message: ` + alert + `}]
      - publish: {topic: s/a, payload: "{"}
        dead_letters: [{rule: hot, reason: ` + dead + `}]`
	}
	write("r_test.yaml", `
tests:
  - name: exact
    steps:`+step(`"a at 95 °C"`, `"json: unexpected end of input at byte 1, want a string key"`)+`
  - name: contains
    steps:`+step(`{contains: at 95}`, `{contains: unexpected end}`)+`
  - name: a part is not the text
    steps:`+step(`"at 95"`, `"unexpected end"`)+`
`)
	results, err := rules.RunTests(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"exact": true, "contains": true, "a part is not the text": false}
	for _, r := range results {
		if r.Passed() != want[r.Name] {
			t.Errorf("%s: passed %v, want %v: %s", r.Name, r.Passed(), want[r.Name], strings.Join(r.Failures, "\n"))
		}
		if r.Name == "a part is not the text" {
			got := strings.Join(r.Failures, "\n")
			for _, part := range []string{`message "a at 95 °C", want "at 95"`, `reason "json: unexpected end of input at byte 1, want a string key", want "unexpected end"`} {
				if !strings.Contains(got, part) {
					t.Errorf("the failure does not say %s:\n%s", part, got)
				}
			}
		}
	}
	write("r_test.yaml", "tests:\n  - steps:\n      - publish: {topic: s/a, payload: {t: 95}}\n        alerts: [{rule: hot, message: {part: x}}]\n")
	if _, err := rules.RunTests(dir); err == nil || !strings.Contains(err.Error(), "r_test.yaml:4") || !strings.Contains(err.Error(), `want the exact text, or {contains: part of it}, not {part: "x"}`) {
		t.Errorf("a bad expectation: %v", err)
	}
}
