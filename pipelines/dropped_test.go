package pipelines_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

// TestDropOldestCountsMessages: with overflow drop_oldest and its sinks
// down, a journal drops records. sluice_journal_dropped_total counts
// records (each message, and what the rules made of it), and
// sluice_journal_dropped_messages_total the messages: those the raw sink
// never gets, but for the few it had read and held in memory, retrying
// them, when their segment went (with batches of one: the one being
// written, one queued, one read ahead). (Before, only records were counted, twice the messages,
// with nothing saying so.)
func TestDropOldestCountsMessages(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "out")
	must(t, os.WriteFile(blocker, nil, 0o644)) // a file where the sinks' folder must go: they cannot write
	raw, recs := filepath.Join(blocker, "raw.jsonl"), filepath.Join(blocker, "records.jsonl")
	must(t, os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte("rules:\n  - name: m\n    match: plant/+device\n"), 0o644))
	path := filepath.Join(dir, "sluice.yaml")
	must(t, os.WriteFile(path, []byte(fmt.Sprintf(`
data_dir: %s
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines:
  - name: p
    topics: ["plant/#"]
    rules: [rules.yaml]
    sinks: [raw, recs]
    journal: {max_bytes: 256KiB, segment_bytes: 64KiB, overflow: drop_oldest}
sinks:
  - name: raw
    stream: raw
    batch: {size: 1}
    retry: {initial: 20ms, max: 100ms}
    file: {path: %s}
  - name: recs
    stream: records
    retry: {initial: 20ms, max: 100ms}
    file: {path: %s}
`, filepath.Join(dir, "data"), raw, recs)), 0o644))
	cfg, err := pipelines.Load(path)
	must(t, err)
	m := metrics.New()
	svc, err := pipelines.New(cfg, pipelines.Options{Metrics: m})
	must(t, err)
	must(t, svc.Start(context.Background()))
	defer svc.Close(context.Background())

	dev := testsvc.MQTT(t, svc.Broker().Addr("tcp"), "dev")
	const n = 800
	for i := 1; i <= n; i++ {
		body := fmt.Sprintf(`{"seq":%d,"pad":"%s"}`, i, strings.Repeat("x", 400))
		if code := dev.Publish(t, "plant/dev", 1, []byte(body)); code != 0 {
			t.Fatalf("publish %d: reason 0x%02x", i, code)
		}
	}
	must(t, os.Remove(blocker))
	deadline := time.Now().Add(30 * time.Second)
	for !svc.CaughtUp() {
		if time.Now().After(deadline) {
			t.Fatal("the sinks did not catch up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, err := os.ReadFile(raw)
	must(t, err)
	lost := n - strings.Count(string(b), `seq`)
	st, _ := svc.JournalStats("p")
	if lost == 0 || st.DroppedMessages < uint64(lost) || st.DroppedMessages > uint64(lost)+3 || st.Dropped <= st.DroppedMessages {
		t.Fatalf("%d messages missing from the raw sink; journal dropped %d records, %d messages", lost, st.Dropped, st.DroppedMessages)
	}
	deadline = time.Now().Add(30 * time.Second)
	for counter(t, m, "sluice_journal_dropped_messages_total") != float64(st.DroppedMessages) || counter(t, m, "sluice_journal_dropped_total") != float64(st.Dropped) {
		if time.Now().After(deadline) {
			t.Fatalf("sluice_journal_dropped_messages_total = %v, sluice_journal_dropped_total = %v; want %d messages, %d records",
				counter(t, m, "sluice_journal_dropped_messages_total"), counter(t, m, "sluice_journal_dropped_total"), st.DroppedMessages, st.Dropped)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
