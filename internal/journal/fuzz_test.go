package journal

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fuzzSegment builds a segment file: a valid header, records 1..valid as
// appendN writes them, then tail.
func fuzzSegment(valid int, tail []byte) []byte {
	b := segmentHeader()
	for i := 1; i <= valid; i++ {
		b = append(b, encodeFrame(nil, uint64(i), int64(i), byte(i%7), payload(i))...)
	}
	return append(b, tail...)
}

// FuzzRecover feeds Open a segment file of arbitrary bytes after a valid
// header and n%8 valid records. Open must not fail or panic; it must keep
// the valid records and any valid records the tail happens to continue
// them with, cut the rest, and leave a journal that appends and reopens
// cleanly.
func FuzzRecover(f *testing.F) {
	f.Add(uint8(0), []byte{})
	f.Add(uint8(3), encodeFrame(nil, 4, 4, 4, payload(4)))
	f.Fuzz(func(t *testing.T, n uint8, tail []byte) {
		valid := int(n % 8)
		dir := t.TempDir()
		content := fuzzSegment(valid, tail)
		path := filepath.Join(dir, segmentName(1))
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
		o := Options{Dir: dir, Mode: Process, CacheBytes: -1}
		j, err := Open(o)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer j.Close()
		st := j.Stats()
		last := st.Last
		if last < uint64(valid) || st.Recovered.Records != last {
			t.Fatalf("recovered %+v from %d valid records", st, valid)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size()+st.Recovered.CutBytes != int64(len(content)) || !bytes.HasPrefix(content, mustRead(t, path)) {
			t.Fatalf("kept %d bytes and cut %d of %d, not a prefix", fi.Size(), st.Recovered.CutBytes, len(content))
		}

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r := j.Reader("r")
		for i := uint64(1); i <= last; i++ {
			e, err := r.Next(ctx)
			if err != nil || e.Seq != i {
				t.Fatalf("Next: seq %d, %v; want %d", e.Seq, err, i)
			}
			if i <= uint64(valid) {
				checkEntry(t, e, int(i))
			}
		}
		seq, err := j.Append(ctx, 1, []byte("after"), nil, true)
		if err != nil || seq != last+1 {
			t.Fatalf("Append after recovery: seq %d, %v; want %d", seq, err, last+1)
		}
		if e, err := r.Next(ctx); err != nil || e.Seq != seq || string(e.Data) != "after" {
			t.Fatalf("reading the appended record: %+v, %v", e, err)
		}
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}

		j, err = Open(o)
		if err != nil {
			t.Fatalf("second Open: %v", err)
		}
		defer j.Close()
		if st := j.Stats(); st.Recovered.CutBytes != 0 || st.Last != last+1 {
			t.Fatalf("second Open: %+v", st)
		}
	})
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
