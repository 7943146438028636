package pipelines_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/admin"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

// TestDamagedJournalRecord: one flipped byte in a message waiting in the
// journal (its sink was down) costs that message alone, not the rest of its
// segment; the loss is counted in sluice_journal_corrupt_records_total and
// named in /readyz, which stays ready. (Before, every message after it in
// the segment was lost, silently.)
func TestDamagedJournalRecord(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "out")
	must(t, os.WriteFile(blocker, nil, 0o644)) // a file where the sink's folder must go: it cannot write
	out := filepath.Join(blocker, "raw.jsonl")
	data := filepath.Join(dir, "data")
	path := filepath.Join(dir, "sluice.yaml")
	must(t, os.WriteFile(path, []byte(fmt.Sprintf(`
data_dir: %s
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines: [{name: p, topics: ["#"], sinks: [raw]}]
sinks:
  - name: raw
    stream: raw
    batch: {size: 50, interval: 10ms}
    retry: {initial: 20ms, max: 100ms}
    file: {path: %s}
`, data, out)), 0o644))
	cfg, err := pipelines.Load(path)
	must(t, err)
	start := func(m *metrics.Metrics) *pipelines.Service {
		svc, err := pipelines.New(cfg, pipelines.Options{Metrics: m, DrainTimeout: 100 * time.Millisecond})
		must(t, err)
		must(t, svc.Start(context.Background()))
		return svc
	}

	svc := start(metrics.New())
	dev := testsvc.MQTT(t, svc.Broker().Addr("tcp"), "dev")
	const n = 50
	for i := 1; i <= n; i++ {
		if code := dev.Publish(t, "plant/dev", 1, []byte(fmt.Sprintf("m-%03d %s", i, strings.Repeat("x", 40)))); code != 0 {
			t.Fatalf("publish %d: reason 0x%02x", i, code)
		}
	}
	must(t, svc.Close(context.Background()))

	segs, _ := filepath.Glob(filepath.Join(data, "journal", "p", "*.seg"))
	flipped := false
	for _, seg := range segs {
		b, err := os.ReadFile(seg)
		must(t, err)
		if at := bytes.Index(b, []byte("m-025 x")); at >= 0 {
			b[at+6] ^= 0x20
			must(t, os.WriteFile(seg, b, 0o644))
			flipped = true
		}
	}
	if !flipped {
		t.Fatalf("message 25 not found in the journal's segments %v", segs)
	}

	must(t, os.Remove(blocker))
	m := metrics.New()
	svc = start(m)
	defer svc.Close(context.Background())
	adm, err := admin.Listen(admin.Options{Config: pipelines.AdminConfig{Address: "127.0.0.1:0"}, Gatherer: m.Registry, Health: svc.Health})
	must(t, err)
	defer adm.Close(context.Background())

	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(out)
		if strings.Count(string(b), "m-0") >= n-1 {
			for i := 1; i <= n; i++ {
				if has := strings.Contains(string(b), fmt.Sprintf("m-%03d ", i)); has == (i == 25) {
					t.Fatalf("message %d in the sink: %v", i, has)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages reached the sink", strings.Count(string(b), "m-0"), n-1)
		}
		time.Sleep(20 * time.Millisecond)
	}
	deadline = time.Now().Add(30 * time.Second)
	for counter(t, m, "sluice_journal_corrupt_records_total") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("sluice_journal_corrupt_records_total = %v, want 1", counter(t, m, "sluice_journal_corrupt_records_total"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.Get("http://" + adm.Addr() + "/readyz")
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `note: pipeline "p": journal: 1 damaged records skipped`) {
		t.Fatalf("/readyz: %d %q", resp.StatusCode, body)
	}
}
