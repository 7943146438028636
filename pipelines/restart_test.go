package pipelines_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

// TestStopWhileSinkDownLosesNothing stops sluice while its sink cannot
// write (its records wait in the journal, interleaved with the messages
// the sink has nothing from), and starts it again with the sink working:
// every record arrives. The cursor must not move past a batch that was
// never written, not even for the records after it that the sink skips.
func TestStopWhileSinkDownLosesNothing(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "out")
	must(t, os.WriteFile(blocker, nil, 0o644)) // a file where the sink's folder must go
	must(t, os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte("rules:\n  - name: r\n    match: d/+device\n"), 0o644))
	path := filepath.Join(dir, "sluice.yaml")
	must(t, os.WriteFile(path, []byte(fmt.Sprintf(`
data_dir: %s
shutdown_timeout: 300ms
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines: [{name: p, topics: ["d/#"], rules: [rules.yaml], sinks: [records]}]
sinks:
  - name: records
    batch: {size: 1, interval: 1ms}
    retry: {initial: 10ms, max: 50ms}
    file: {path: %s}
`, filepath.Join(dir, "data"), filepath.Join(blocker, "records.jsonl"))), 0o644))
	start := func() *pipelines.Service {
		cfg, err := pipelines.Load(path)
		must(t, err)
		svc, err := pipelines.New(cfg, pipelines.Options{})
		must(t, err)
		must(t, svc.Start(context.Background()))
		return svc
	}

	svc := start()
	dev := testsvc.MQTT(t, svc.Broker().Addr("tcp"), "dev")
	const n = 5
	for i := range n {
		if rc := dev.Publish(t, fmt.Sprintf("d/dev-%d", i), 1, fmt.Appendf(nil, `{"seq": %d}`, i)); rc != 0 {
			t.Fatalf("publish %d: %#x", i, rc)
		}
	}
	must(t, svc.Close(context.Background()))

	must(t, os.Remove(blocker))
	svc = start()
	defer svc.Close(context.Background())
	out := filepath.Join(blocker, "records.jsonl")
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(out)
		got := 0
		for i := range n {
			if strings.Contains(string(b), fmt.Sprintf(`"d/dev-%d"`, i)) {
				got++
			}
		}
		if got == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the restart the sink has %d of %d records:\n%s", got, n, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRemovedSinkNoLongerHoldsTheJournal: a sink taken out of the config
// (here one that was down, with a backlog) leaves no cursor behind: a
// cursor nobody reads would keep every segment, and once the journal is
// full, publishers would wait for ever.
func TestRemovedSinkNoLongerHoldsTheJournal(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "blocked")
	must(t, os.WriteFile(blocker, nil, 0o644)) // the down sink's folder is a file
	must(t, os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte("rules:\n  - name: r\n    match: d/+device\n"), 0o644))
	path := filepath.Join(dir, "sluice.yaml")
	config := func(sinks string) {
		must(t, os.WriteFile(path, []byte(fmt.Sprintf(`
data_dir: %s
shutdown_timeout: 300ms
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines: [{name: p, topics: ["d/#"], rules: [rules.yaml], sinks: [%s]}]
sinks:
  - name: ok
    file: {path: %s}
  - name: down
    retry: {initial: 10ms, max: 50ms}
    file: {path: %s}
`, filepath.Join(dir, "data"), sinks, filepath.Join(dir, "ok.jsonl"), filepath.Join(blocker, "down.jsonl"))), 0o644))
	}
	start := func() *pipelines.Service {
		cfg, err := pipelines.Load(path)
		must(t, err)
		svc, err := pipelines.New(cfg, pipelines.Options{})
		must(t, err)
		must(t, svc.Start(context.Background()))
		return svc
	}
	readers := func(svc *pipelines.Service) []string {
		st, _ := svc.JournalStats("p")
		var names []string
		for _, r := range st.Readers {
			names = append(names, r.Name)
		}
		return names
	}

	config("ok, down")
	svc := start()
	dev := testsvc.MQTT(t, svc.Broker().Addr("tcp"), "dev")
	if rc := dev.Publish(t, "d/dev-1", 1, []byte(`{"seq": 1}`)); rc != 0 {
		t.Fatalf("publish: %#x", rc)
	}
	must(t, svc.Close(context.Background()))

	config("ok")
	svc = start()
	defer svc.Close(context.Background())
	if got := readers(svc); strings.Join(got, ",") != "rules,sink:ok" && strings.Join(got, ",") != "sink:ok,rules" {
		t.Fatalf("journal readers after the sink was removed: %v, want rules and sink:ok", got)
	}
}
