package pipelines_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/rules"
)

// TestJournalRetention: with journal.retention, the messages the sinks are
// done with stay for a look back (what sluice replay and the playground
// read), within max_bytes, and they do not make the pipeline look full:
// it stays ready with the journal at its bound.
func TestJournalRetention(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte("rules:\n  - name: all\n    match: plant/+site/+device/telemetry\n"), 0o644))
	cfgPath := filepath.Join(dir, "sluice.yaml")
	must(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
data_dir: %s
broker: {listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]}
pipelines:
  - name: telemetry
    topics: ["plant/#"]
    rules: [rules.yaml]
    sinks: [out]
    journal: {max_bytes: 1MiB, segment_bytes: 64KiB, retention: 1h}
sinks:
  - name: out
    file: {path: %s}
`, filepath.Join(dir, "data"), filepath.Join(dir, "out.jsonl"))), 0o644))
	cfg, err := pipelines.Load(cfgPath)
	must(t, err)
	svc, err := pipelines.New(cfg, pipelines.Options{})
	must(t, err)
	ctx := context.Background()
	must(t, svc.Start(ctx))
	t.Cleanup(func() { svc.Close(ctx) })
	dev := testsvc.MQTT(t, svc.Broker().Addr("tcp"), "gateway")
	pad := strings.Repeat("x", 900)
	const n = 3000 // about 3 MiB: three times max_bytes
	for i := range n {
		device := fmt.Sprintf("d%d", i%10)
		// While the sink is behind, the journal is full: an MQTT 5
		// publisher is told so (quota exceeded) and sends again.
		deadline := time.Now().Add(30 * time.Second)
		for {
			rc := dev.Publish(t, "plant/north/"+device+"/telemetry", 1, fmt.Appendf(nil, `{"i":%d,"pad":%q}`, i, pad))
			if rc == 0 {
				break
			}
			if rc != 0x97 || time.Now().After(deadline) {
				t.Fatalf("publish %d: reason code %#x", i, rc)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitCaughtUp(t, svc)
	st, _ := svc.JournalStats("telemetry")
	if st.Bytes > 1<<20 || st.Retained < 512<<10 || st.First == 1 {
		t.Fatalf("journal: %d bytes, %d retained, first %d: want most of max_bytes retained, the oldest gone", st.Bytes, st.Retained, st.First)
	}
	if h := svc.Health(time.Now()); !h.Ready {
		t.Fatalf("not ready with the journal full of retained messages: %v", h.Problems)
	}

	// A look back: every message held since a time, in order, and the
	// last ones of a device.
	var seen []int
	oldest, err := svc.Messages(ctx, "telemetry", time.Time{}, func(seq uint64, msg *sluice.Message) error {
		var i int
		fmt.Sscanf(string(msg.Payload), `{"i":%d`, &i)
		seen = append(seen, i)
		return nil
	})
	must(t, err)
	if len(seen) < 200 || seen[len(seen)-1] != n-1 || oldest.IsZero() {
		t.Fatalf("look back: %d messages, last %v, oldest %v", len(seen), seen[len(seen)-1:], oldest)
	}
	for k := 1; k < len(seen); k++ {
		if seen[k] != seen[k-1]+1 {
			t.Fatalf("look back: %d after %d", seen[k], seen[k-1])
		}
	}
	recent, err := svc.Recent(ctx, "telemetry", rules.MustFilter("plant/+/d3/#"), 5)
	must(t, err)
	if len(recent) != 5 || !strings.HasPrefix(string(recent[4].Payload), fmt.Sprintf(`{"i":%d,`, n-7)) {
		t.Fatalf("the last 5 of d3: %d, last %.20s", len(recent), recent[len(recent)-1].Payload)
	}
}
