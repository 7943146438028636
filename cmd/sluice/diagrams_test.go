package main

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/rules"
)

// mermaid returns the n-th Mermaid diagram of a Markdown file, checking it
// starts with a diagram type. (They were rendered with mermaid-cli when
// written; no renderer runs in the tests.)
func mermaid(t *testing.T, file string, n int) string {
	t.Helper()
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```mermaid\n(.*?)```").FindAllStringSubmatch(string(text), -1)
	if len(blocks) <= n {
		t.Fatalf("%s has %d Mermaid diagrams, want one more than %d", file, len(blocks), n)
	}
	d := blocks[n][1]
	first, _, _ := strings.Cut(d, "\n")
	switch strings.Fields(first)[0] {
	case "flowchart", "sequenceDiagram", "stateDiagram-v2":
	default:
		t.Fatalf("%s: diagram %d starts %q", file, n, first)
	}
	return d
}

// yamlKeys returns the keys of a config struct.
func yamlKeys(v any) []string {
	t := reflect.TypeOf(v)
	var keys []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			keys = append(keys, name)
		}
	}
	return keys
}

// words are the words of a text, for "does the diagram name it".
func words(s string) map[string]bool {
	w := map[string]bool{}
	for _, f := range regexp.MustCompile(`[A-Za-z_][A-Za-z0-9_-]*`).FindAllString(s, -1) {
		w[f] = true
	}
	return w
}

// TestDiagramsAreTrueToTheCode checks the Mermaid diagrams of the docs
// against the code they draw, so that they cannot drift: the config's shape
// names every key of the config, a pipeline, a sink (and every kind of
// sink) and the broker; the alert lifecycle's states and the keys on its
// transitions are the rules' own; the architecture names every kind of
// sink; the ack path every durability.
func TestDiagramsAreTrueToTheCode(t *testing.T) {
	shape := words(mermaid(t, "../../docs/configuration.md", 0))
	for what, v := range map[string]any{"the config": pipelines.Config{}, "a pipeline": pipelines.PipelineConfig{},
		"a sink": pipelines.SinkConfig{}, "the broker": ingest.Config{}, "a source": pipelines.SourceConfig{}} {
		for _, k := range yamlKeys(v) {
			if !shape[k] {
				t.Errorf("configuration.md's diagram lacks %s's key %q", what, k)
			}
		}
	}

	life := mermaid(t, "../../docs/rules.md", 0)
	lw := words(life)
	alertKeys := map[string]bool{}
	for _, k := range append(yamlKeys(rules.AlertSpec{}), yamlKeys(rules.Spec{})...) {
		alertKeys[k] = true
	}
	for _, k := range []string{"when", "for", "clear", "absent", "renotify", "ttl"} {
		if !alertKeys[k] {
			t.Errorf("rules.md's lifecycle speaks of %q, which is not a key of a rule or its alert", k)
		}
		if !lw[k] {
			t.Errorf("rules.md's lifecycle does not say what %q does", k)
		}
	}
	for _, k := range yamlKeys(rules.AlertSpec{}) {
		switch k {
		case "value", "severity", "message", "labels": // what is sent, not when
		default:
			if !lw[k] {
				t.Errorf("rules.md's lifecycle lacks the alert key %q", k)
			}
		}
	}
	for _, s := range regexp.MustCompile(`(?m)^\s*(\w+) --> (\w+)`).FindAllStringSubmatch(life, -1) {
		for _, state := range s[1:] {
			switch state {
			case "idle", "pending", "firing":
			default:
				t.Errorf("rules.md's lifecycle has a state %q the evaluator does not", state)
			}
		}
	}

	arch := words(mermaid(t, "../../README.md", 0))
	ack := words(mermaid(t, "../../docs/delivery.md", 0))
	for _, k := range yamlKeys(pipelines.SinkConfig{}) {
		switch k {
		case "name", "stream", "batch", "retry":
		default:
			if !arch[k] {
				t.Errorf("README's diagram lacks the %s sink", k)
			}
		}
	}
	for _, d := range []string{"process", "fsync", "none"} {
		path := writeFile(t, t.TempDir(), "sluice.yaml", "pipelines:\n  - {name: p, topics: [\"#\"], sinks: [a], durability: "+d+"}\nsinks:\n  - {name: a, mqtt: {}}\n")
		if _, err := pipelines.Load(path); err != nil {
			t.Errorf("durability %s: %v", d, err)
		}
		if !ack[d] {
			t.Errorf("delivery.md's ack path does not say when a message is safe with durability %s", d)
		}
	}
	for _, w := range []string{"PUBACK", "cursor", "journal"} {
		if !ack[w] {
			t.Errorf("delivery.md's ack path lacks %q", w)
		}
	}
}

// TestReadmeFirstScreen checks the README's first screen still leads with
// the two commands that matter.
func TestReadmeFirstScreen(t *testing.T) {
	text, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(text), "\n")
	first := strings.Join(lines[:min(len(lines), 20)], "\n")
	_, block, _ := strings.Cut(first, "```sh\n")
	if !strings.HasPrefix(block, "make demo") || !strings.Contains(block, "\nmake test") {
		t.Errorf("the README's first screen does not lead with make demo and make test:\n%s", first)
	}
}
