package rules

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/rules/decode"
)

// File is a rule file as operators write it. docs/rules.md describes every
// key with examples.
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
	// Decode is the payload's decoding: one step or a chain ("base64 >
	// gzip > json", or a list). Default auto: by content type, then by
	// magic bytes.
	Decode Steps `yaml:"decode"`
	// Split names an array of objects in the payload whose elements are
	// evaluated as readings of their own.
	Split string `yaml:"split"`
	// Key is an expression giving the series key that per-series state is
	// kept under; default the "device" level, else the topic.
	Key string `yaml:"key"`
	// Where filters: a reading for which it is false yields nothing.
	Where string `yaml:"where"`
	// Let names intermediate values, in order, for the expressions after
	// them; they are not written.
	Let yaml.MapSlice `yaml:"let"`
	// Fields derives fields, in order; each may use the ones before it.
	Fields yaml.MapSlice `yaml:"fields"`
	// Rename renames payload fields: {old: new}.
	Rename yaml.MapSlice `yaml:"rename"`
	// Units converts payload fields: {temperature: "degF -> degC"}.
	Units yaml.MapSlice `yaml:"units"`
	// Keep lists the only payload fields written; Drop lists payload
	// fields not written. At most one of them.
	Keep []string `yaml:"keep"`
	Drop []string `yaml:"drop"`
	// Records, when false, writes no records: an alert-only rule.
	Records *bool `yaml:"records"`
	// TTL evicts the state of a series not heard from for this long
	// (default 1h, or twice the longest window of the rule if longer).
	TTL   time.Duration `yaml:"ttl"`
	Alert *AlertSpec    `yaml:"alert"`
}

// AlertSpec is a rule's alert.
type AlertSpec struct {
	// When fires the alert while true. Exactly one of When and Absent.
	When string `yaml:"when"`
	// Absent fires the alert when a series sends nothing for this long,
	// from a timer, without new data; it resolves when the series is heard
	// from again.
	Absent time.Duration `yaml:"absent"`
	// Clear, when set, resolves a firing alert only when true (hysteresis);
	// otherwise it resolves when When is false.
	Clear string `yaml:"clear"`
	// For holds the alert pending until When has been true this long.
	For time.Duration `yaml:"for"`
	// Value is reported with the alert; default the left side of When when
	// it is a comparison ("temperature" in "temperature > 90").
	Value    string `yaml:"value"`
	Severity string `yaml:"severity"`
	// Message is a template: text with {{ expression }} parts.
	Message string `yaml:"message"`
	// Labels are added to the alert's tags; values are templates.
	Labels yaml.MapSlice `yaml:"labels"`
	// Renotify sends the firing alert again this often while it fires.
	Renotify time.Duration `yaml:"renotify"`
}

// Steps is a decode chain: a list of steps, or one string ("json",
// "base64 > gzip > json").
type Steps []string

// UnmarshalYAML accepts a list or a string.
func (s *Steps) UnmarshalYAML(unmarshal func(any) error) error {
	var list []string
	if err := unmarshal(&list); err == nil {
		*s = list
		return nil
	}
	var one string
	if err := unmarshal(&one); err != nil {
		return fmt.Errorf("want a decode step or a list of steps")
	}
	for _, part := range strings.Split(one, ">") {
		*s = append(*s, strings.TrimSpace(part))
	}
	return nil
}

// validate checks what can be checked in a rule without compiling its
// expressions. (File has no Validate method on purpose: the compiler checks
// each rule itself, so that one bad rule does not hide the errors of the
// others.)
func (s *Spec) validate() error {
	var p conf.Problems
	// The keys and values of these mappings are names, expressions and
	// templates: scalars. A list or a mapping is refused before anything
	// prints it: built from YAML aliases, a few hundred bytes print as
	// gigabytes.
	var labels yaml.MapSlice
	if s.Alert != nil {
		labels = s.Alert.Labels
	}
	for _, group := range []struct {
		key  string
		list yaml.MapSlice
	}{{"let", s.Let}, {"fields", s.Fields}, {"rename", s.Rename}, {"units", s.Units}, {"alert.labels", labels}} {
		for _, item := range group.list {
			for _, v := range []any{item.Key, item.Value} {
				switch reflect.ValueOf(v).Kind() {
				case reflect.Slice, reflect.Array, reflect.Map:
					p.Addf(group.key, "want name: value pairs of plain text, not lists or mappings")
					return p.Err()
				}
			}
		}
	}
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
	if _, err := decode.ParseChain(s.Decode); err != nil {
		p.Addf("decode", "%v", err)
	}
	for _, group := range []struct {
		key  string
		list yaml.MapSlice
	}{{"let", s.Let}, {"fields", s.Fields}} {
		for _, item := range group.list {
			name := fmt.Sprint(item.Key)
			if !isIdent(name) {
				p.Addf(group.key+"."+name, "name %q must be a letter followed by letters, digits or _", name)
			}
		}
	}
	for _, item := range s.Rename {
		if to, ok := item.Value.(string); !ok || to == "" {
			p.Addf("rename."+fmt.Sprint(item.Key), "want the new name")
		}
	}
	for _, item := range s.Units {
		if _, err := parseConversion(fmt.Sprint(item.Value)); err != nil {
			p.Addf("units."+fmt.Sprint(item.Key), "%v", err)
		}
	}
	if len(s.Keep) > 0 && len(s.Drop) > 0 {
		p.Addf("drop", "use keep or drop, not both")
	}
	if s.TTL < 0 {
		p.Addf("ttl", "must not be negative")
	}
	if a := s.Alert; a != nil {
		switch {
		case a.When == "" && a.Absent == 0:
			p.Addf("alert", "an alert needs when (a condition) or absent (a duration)")
		case a.When != "" && a.Absent != 0:
			p.Addf("alert.absent", "an alert has when or absent, not both; make two rules")
		case a.Absent < 0:
			p.Addf("alert.absent", "must be positive")
		}
		if a.Absent != 0 && (a.Clear != "" || a.For != 0) {
			p.Addf("alert.absent", "an absent alert takes no clear or for")
		}
		if a.For < 0 {
			p.Addf("alert.for", "must not be negative")
		}
		if a.Renotify < 0 {
			p.Addf("alert.renotify", "must not be negative")
		}
	}
	if s.Records != nil && !*s.Records && s.Alert == nil {
		p.Addf("records", "a rule with records: false and no alert does nothing")
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

// Expand turns rule paths (files, directories, globs) into rule files in a
// stable order. A directory contributes its *.yaml and *.yml files, except
// test files (*_test.yaml).
func Expand(paths ...string) ([]string, error) {
	return expand(paths, func(name string) bool { return !IsTestFile(name) })
}

// ExpandTests turns paths into rule test files (*_test.yaml) in a stable
// order.
func ExpandTests(paths ...string) ([]string, error) {
	return expand(paths, IsTestFile)
}

func expand(paths []string, want func(string) bool) ([]string, error) {
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
				if want(m) {
					add(m)
				}
				continue
			}
			entries, err := os.ReadDir(m)
			if err != nil {
				return nil, err
			}
			var inDir []string
			for _, e := range entries {
				n := e.Name()
				if e.IsDir() || !want(n) || !(strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
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
