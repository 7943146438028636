package rules

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/goccy/go-yaml"

	"github.com/sluicehq/sluice/internal/conf"
)

// File is a rule file as operators write it:
//
//	rules:
//	  - name: boiler_overheat
//	    match: plant/+site/+line/+device/telemetry
//	    where: kind == "boiler"
//	    fields:
//	      temp_f: temperature * 9 / 5 + 32
//	    alert:
//	      when: temperature > 90
//	      severity: critical
//	      message: "boiler {{ device }} at {{ temperature }} °C"
type File struct {
	Rules []Spec `yaml:"rules"`
}

// Spec is one rule as written.
type Spec struct {
	Name string `yaml:"name"`
	// Match is a topic filter whose wildcards may be named (+device); the
	// names become variables and tags. Empty matches every topic the
	// pipeline routes here.
	Match string `yaml:"match"`
	// Decode names the payload decoding: "json" (the default) or "none".
	Decode string `yaml:"decode"`
	// Key is an expression giving the series key that per-series state
	// (alerts) is kept under; default the "device" segment, else the topic.
	Key string `yaml:"key"`
	// Where filters: a message for which it is false yields nothing.
	Where string `yaml:"where"`
	// Fields derives new fields, in order; each may use the ones before it.
	Fields yaml.MapSlice `yaml:"fields"`
	Alert  *AlertSpec    `yaml:"alert"`
}

// AlertSpec is a rule's alert condition.
type AlertSpec struct {
	// When fires the alert while true.
	When string `yaml:"when"`
	// Value is the value reported with the alert; default the left side of
	// When when it is a comparison ("temperature" in "temperature > 90").
	Value    string `yaml:"value"`
	Severity string `yaml:"severity"`
	// Message is a template: text with {{ expression }} parts.
	Message string `yaml:"message"`
}

// Decoders accepted in a rule's decode key.
var decoders = []string{"json", "none"}

// validate checks what can be checked in a rule without compiling its
// expressions. (File has no Validate method on purpose: the compiler checks
// each rule itself, so that one bad rule does not hide the errors of the
// others.)
func (s *Spec) validate() error {
	var p conf.Problems
	switch {
	case s.Name == "":
		p.Missing("name")
	case !isRuleName(s.Name):
		p.Addf("name", "%q: use letters, digits, _ and - only", s.Name)
	}
	if s.Match != "" {
		if _, err := ParseFilter(s.Match); err != nil {
			p.Addf("match", "%v", err)
		}
	}
	if s.Decode != "" && !contains(decoders, s.Decode) {
		p.Addf("decode", "unknown decoder %q (want one of %s)", s.Decode, strings.Join(decoders, ", "))
	}
	for _, item := range s.Fields {
		name := fmt.Sprint(item.Key)
		if !isIdent(name) {
			p.Addf("fields."+name, "field name %q must be a letter followed by letters, digits or _", name)
		}
	}
	if a := s.Alert; a != nil {
		if a.When == "" {
			p.Missing("alert.when")
		}
	}
	return p.Err()
}

func isRuleName(s string) bool {
	for _, r := range s {
		if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return s != ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Expand turns rule paths (files, directories, globs) into rule files in a
// stable order. A directory contributes its *.yaml and *.yml files, except
// test files (*_test.yaml).
func Expand(paths ...string) ([]string, error) {
	var files []string
	seen := map[string]bool{}
	add := func(f string) {
		if !seen[f] {
			seen[f] = true
			files = append(files, f)
		}
	}
	for _, p := range paths {
		matches, err := filepath.Glob(p)
		if err != nil {
			return nil, fmt.Errorf("rule path %q: %w", p, err)
		}
		if matches == nil {
			return nil, fmt.Errorf("rule path %q: no such file", p)
		}
		for _, m := range matches {
			st, err := os.Stat(m)
			if err != nil {
				return nil, err
			}
			if !st.IsDir() {
				add(m)
				continue
			}
			entries, err := os.ReadDir(m)
			if err != nil {
				return nil, err
			}
			var inDir []string
			for _, e := range entries {
				n := e.Name()
				if e.IsDir() || IsTestFile(n) || !(strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
					continue
				}
				inDir = append(inDir, filepath.Join(m, n))
			}
			sort.Strings(inDir)
			for _, f := range inDir {
				add(f)
			}
		}
	}
	return files, nil
}

// IsTestFile reports whether name is a rule test file rather than a rule file.
func IsTestFile(name string) bool {
	base := filepath.Base(name)
	return strings.HasSuffix(base, "_test.yaml") || strings.HasSuffix(base, "_test.yml")
}
