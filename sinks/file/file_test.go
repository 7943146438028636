package file_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/sinks/file"
)

func deadLetter(i int) sluice.Event {
	return sluice.Event{Stream: sluice.StreamDeadLetters,
		Message:    &sluice.Message{Topic: "t", Payload: []byte{0xff, byte(i)}, Received: time.Unix(0, 0)},
		DeadLetter: &sluice.DeadLetter{Stage: "decode", Rule: "r", Reason: "json: bad"}}
}

func lines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

func TestWritesJSONLinesAndRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dl", "dead-letters.jsonl")
	s := file.New(file.Config{Path: path, MaxBytes: 1000, Keep: 2, Fsync: true})
	ctx := context.Background()
	for i := 0; i < 30; i++ {
		if err := s.Write(ctx, []sluice.Event{deadLetter(i)}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close(ctx)
	total := 0
	for _, p := range []string{path, path + ".1", path + ".2"} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		ls := lines(t, p)
		for _, l := range ls {
			if l["reason"] != "json: bad" || l["payload_base64"] == nil {
				t.Fatalf("line %v", l)
			}
		}
		total += len(ls)
	}
	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Fatalf("kept more than 2 rotated files")
	}
	if total == 0 || total > 30 {
		t.Fatalf("%d lines", total)
	}
}

// TestUnencodableEventDoesNotTakeTheBatch: an event that cannot be encoded
// is named in the error and the others are written (before, the sink wrote
// nothing and reported only the bad event, so the writer took the others
// as written: they were lost).
func TestUnencodableEventDoesNotTakeTheBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	s := file.New(file.Config{Path: path})
	ctx := context.Background()
	defer s.Close(ctx)
	err := s.Write(ctx, []sluice.Event{deadLetter(1), {Stream: sluice.Stream(99), Message: &sluice.Message{}}, deadLetter(2)})
	var be *sluice.BatchError
	if !errors.As(err, &be) || len(be.Errs) != 1 || !sluice.IsPermanent(be.Errs[1]) {
		t.Fatalf("got %v, want item 1 refused for good", err)
	}
	if got := lines(t, path); len(got) != 2 {
		t.Fatalf("%d lines written, want the 2 good events", len(got))
	}
}
