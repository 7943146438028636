package pipelines_test

import (
	"os"
	"slices"
	"testing"

	"github.com/sluicehq/sluice/internal/conf/conftest"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/rules"
)

// Seed corpora are in testdata/fuzz/<FuzzName>/; run the target with
//
//	go test ./pipelines -run XXX -fuzz FuzzParseConfig -fuzztime 60s

// FuzzParseConfig parses arbitrary sluice.yaml text: an error is a
// conf.ErrorList whose every entry is at a line inside the file; a config
// it accepts keeps every promise Validate makes, and compiles (with its
// rule paths left out) to one empty rule set per pipeline.
func FuzzParseConfig(f *testing.F) {
	for _, name := range []string{"../examples/demo/sluice.yaml", "../examples/docker/sluice.yaml"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("pipelines: [{name: p, topics: [\"#\"], sinks: [f]}]\nsinks: [{name: f, file: {path: out.jsonl}}]\n"))
	f.Add([]byte("pipelines:\n  - name: p\n    topics: [a/+x/#]\n    sinks: [f]\n    workers: 2\n    queue: 1\n    durability: none\n    journal: {max_bytes: 1MiB, segment_bytes: 64KiB, overflow: drop_oldest, max_age: 1h}\nsinks:\n  - name: f\n    stream: dead_letters\n    batch: {size: 1, interval: 1ms}\n    retry: {initial: 1ms, max: 1ms}\n    file: {path: x}\n"))
	f.Add([]byte("pipelines:\n  - name: p\n    topics: [a/#/b, \"\"]\n    sinks: [nope]\n    workers: -1\n    journal: {max_bytes: 1KiB}\nsinks:\n  - name: f\n    kafka: {}\n    mqtt: {}\n  - name: f\n"))
	f.Add([]byte("log: {level: loud}\nbroker:\n  listeners:\n    - {name: a, address: nowhere}\n    - {name: a, type: udp}\npipelines: []\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := pipelines.Parse("sluice.yaml", data, t.TempDir())
		if err != nil {
			if cfg != nil {
				t.Fatal("Parse returned a config and an error")
			}
			conftest.CheckErrorList(t, err, "sluice.yaml", data)
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that does not validate: %v", err)
		}
		checkAccepted(t, cfg)
		for i := range cfg.Pipelines {
			cfg.Pipelines[i].Rules = nil
		}
		sets, err := cfg.CompileRules()
		if err != nil {
			t.Fatalf("CompileRules without rules: %v", err)
		}
		if len(sets) != len(cfg.Pipelines) {
			t.Fatalf("%d rule sets for %d pipelines", len(sets), len(cfg.Pipelines))
		}
		for _, p := range cfg.Pipelines {
			if set := sets[p.Name]; set == nil || len(set.Rules()) != 0 {
				t.Fatalf("pipeline %q: rule set %v", p.Name, set)
			}
		}
	})
}

// checkAccepted checks what Validate promises of an accepted config,
// independently of how Validate checks it.
func checkAccepted(t *testing.T, cfg *pipelines.Config) {
	t.Helper()
	if len(cfg.Pipelines) == 0 {
		t.Fatal("accepted a config without pipelines")
	}
	var sinks []string
	for _, s := range cfg.Sinks {
		if s.Name == "" || slices.Contains(sinks, s.Name) || s.Type() == "" || s.Batch.Size < 1 ||
			s.Retry.Initial <= 0 || s.Retry.Max < s.Retry.Initial {
			t.Fatalf("accepted sink %+v", s)
		}
		sinks = append(sinks, s.Name)
	}
	var names []string
	for _, p := range cfg.Pipelines {
		if p.Name == "" || slices.Contains(names, p.Name) || len(p.Topics) == 0 || len(p.Sinks) == 0 ||
			p.Workers < 1 || p.Queue < 1 {
			t.Fatalf("accepted pipeline %+v", p)
		}
		names = append(names, p.Name)
		for _, topic := range p.Topics {
			if _, err := rules.ParseFilter(topic); err != nil {
				t.Fatalf("pipeline %q: accepted topic filter %q: %v", p.Name, topic, err)
			}
		}
		for _, s := range p.Sinks {
			if !slices.Contains(sinks, s) {
				t.Fatalf("pipeline %q writes to sink %q, which does not exist", p.Name, s)
			}
		}
		j := p.Journal
		if j.SegmentBytes < 64<<10 || j.MaxBytes < 0 || j.MaxAge < 0 || j.MaxBytes > 0 && j.MaxBytes/2 < j.SegmentBytes {
			t.Fatalf("pipeline %q: accepted journal bounds max_bytes %d, segment_bytes %d, max_age %v",
				p.Name, int64(j.MaxBytes), int64(j.SegmentBytes), j.MaxAge)
		}
	}
}
