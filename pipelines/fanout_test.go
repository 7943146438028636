package pipelines_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

// TestMessageForTwoPipelinesGoesIntoBothOrNeither routes every message to
// two pipelines, the second of which has a small journal whose sink is
// down. Once that journal is full, an MQTT 5 publish is refused ("quota
// exceeded"), and the first pipeline must not have taken it either: the
// device sends it again later, and it would be there twice. Before, the
// first pipeline's journal took it before the second refused it.
func TestMessageForTwoPipelinesGoesIntoBothOrNeither(t *testing.T) {
	down := testsvc.Silent(t)
	down.Close() // an address that refuses connections
	dir := t.TempDir()
	out := filepath.Join(dir, "a.jsonl")
	cfg, err := pipelines.Parse("sluice.yaml", []byte(fmt.Sprintf(`
data_dir: %s
watch_rules: false
broker: {listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]}
pipelines:
  - name: a
    topics: ["sensors/#"]
    sinks: [out]
  - name: b
    topics: ["sensors/#"]
    sinks: [kafka]
    journal: {max_bytes: 256KiB, segment_bytes: 64KiB}
sinks:
  - name: out
    stream: raw
    batch: {size: 10, interval: 10ms}
    file: {path: %s}
  - name: kafka
    stream: raw
    retry: {initial: 50ms, max: 200ms}
    kafka: {brokers: [%q], topic: t, timeout: 1s}
`, filepath.Join(dir, "data"), out, down.Addr)), dir)
	if err != nil {
		t.Fatal(err)
	}
	// b's sink never catches up: a stop waits for it no longer than this.
	svc, err := pipelines.New(cfg, pipelines.Options{DrainTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	must(t, svc.Start(ctx))
	t.Cleanup(func() { svc.Close(ctx) })

	pub := testsvc.MQTT(t, svc.Broker().Addr("tcp"), "dev")
	pad := strings.Repeat("x", 1000)
	acked, refused := map[int]bool{}, -1
	for seq := 0; refused < 0; seq++ {
		if seq == 1000 {
			t.Fatal("no publish was refused: pipeline b's journal never filled")
		}
		switch rc := pub.Publish(t, "sensors/d1", 1, fmt.Appendf(nil, `{"seq":%d,"pad":%q}`, seq, pad)); rc {
		case 0:
			acked[seq] = true
		case 0x97: // quota exceeded: b's journal is full
			refused = seq
		default:
			t.Fatalf("publish %d: reason %#x", seq, rc)
		}
	}

	// Pipeline a writes everything it took; that must be exactly what was
	// acknowledged.
	var got map[int]int
	deadline := time.Now().Add(30 * time.Second)
	for {
		got = seqsIn(t, out)
		if len(got) >= len(acked) && readersCaughtUp(svc, "a") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pipeline a wrote %d of the %d acknowledged messages", len(got), len(acked))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := got[refused]; n > 0 {
		t.Errorf("message %d was refused to the publisher, yet pipeline a took it", refused)
	}
	for seq, n := range got {
		if !acked[seq] && seq != refused {
			t.Errorf("pipeline a wrote message %d, never acknowledged", seq)
		}
		if n > 1 {
			t.Errorf("pipeline a wrote message %d %d times", seq, n)
		}
	}
	if len(got) != len(acked) {
		t.Errorf("pipeline a wrote %d messages, want the %d acknowledged", len(got), len(acked))
	}
}

// seqsIn counts the messages of each seq in a file sink's output.
func seqsIn(t *testing.T, path string) map[int]int {
	t.Helper()
	seqs := map[int]int{}
	f, err := os.Open(path)
	if err != nil {
		return seqs
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m struct{ Seq int }
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		seqs[m.Seq]++
	}
	return seqs
}

// readersCaughtUp reports whether every reader of a pipeline's journal has
// finished with it.
func readersCaughtUp(svc *pipelines.Service, pipeline string) bool {
	st, _ := svc.JournalStats(pipeline)
	for _, r := range st.Readers {
		if r.Lag > 0 {
			return false
		}
	}
	return true
}
