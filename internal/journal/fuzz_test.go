package journal

import (
	"bytes"
	"context"
	"encoding/binary"
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
		b = appendFrame(b, testSync, uint64(i), int64(i), byte(i%7), payload(i))
	}
	return append(b, tail...)
}

// FuzzRecover feeds Open a segment file of arbitrary bytes after a valid
// header and n%8 valid records. Open must not fail or panic; it must keep
// the valid records and any valid records the tail happens to hold after
// them (counting the seqs it passes over as damaged), cut what follows the
// last, and leave a journal that appends and reopens cleanly.
func FuzzRecover(f *testing.F) {
	f.Add(uint8(0), []byte{})
	f.Add(uint8(3), appendFrame(nil, testSync, 4, 4, 4, payload(4)))
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
		if last < uint64(valid) || st.Recovered.Records > last || st.Recovered.Records+st.Damaged != last {
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
		for prev, n := uint64(0), uint64(0); n < st.Recovered.Records; n++ {
			e, err := r.Next(ctx)
			if err != nil || e.Seq <= prev || (prev < uint64(valid) && e.Seq != prev+1) {
				t.Fatalf("Next after %d: seq %d, %v", prev, e.Seq, err)
			}
			if e.Seq <= uint64(valid) {
				checkEntry(t, e, int(e.Seq))
			}
			prev = e.Seq
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

// FuzzResync damages a segment of 1+n%40 records, plain or encrypted, by
// flipping bytes at fuzzed places after its header, and opens it. Open must
// not fail or panic; exactly the records whose bytes were left alone are
// read back, as written; the records lost before the last one kept are
// counted; the journal appends after them and opens again unchanged.
func FuzzResync(f *testing.F) {
	f.Add(uint8(20), false, []byte{0x10, 0x00, 0x01})
	f.Add(uint8(39), true, []byte{0xff, 0x01, 0x80, 0x20, 0x02, 0x08, 0x00, 0x00, 0x40})
	f.Add(uint8(5), false, []byte{0x03, 0x00, 0xff, 0x04, 0x00, 0xff, 0x05, 0x00, 0xff})
	f.Fuzz(func(t *testing.T, n uint8, sealed bool, flips []byte) {
		count := 1 + int(n%40)
		var key []byte
		hdr, fm := segmentHeader(), framing{sync: testSync}
		if sealed {
			key = testKey(9)
			var err error
			if hdr, fm, err = newHeader(key); err != nil {
				t.Fatal(err)
			}
		}
		b := hdr
		starts := []int{}
		for i := 1; i <= count; i++ {
			starts = append(starts, len(b))
			if sealed {
				b = appendSealedFrame(b, fm.sync, uint64(i), int64(i), byte(i%7), payload(i), fm.sealer)
			} else {
				b = appendFrame(b, fm.sync, uint64(i), int64(i), byte(i%7), payload(i))
			}
		}
		starts = append(starts, len(b))
		orig := bytes.Clone(b)
		for i := 0; i+2 < len(flips); i += 3 {
			pos := len(hdr) + int(binary.LittleEndian.Uint16(flips[i:]))%(len(b)-len(hdr))
			x := flips[i+2]
			if x == 0 {
				x = 1
			}
			b[pos] ^= x
		}
		touched := map[int]bool{} // records whose bytes changed (two flips may undo each other)
		for k := 1; k <= count; k++ {
			touched[k] = !bytes.Equal(b[starts[k-1]:starts[k]], orig[starts[k-1]:starts[k]])
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segmentName(1)), b, 0o644); err != nil {
			t.Fatal(err)
		}
		o := Options{Dir: dir, Mode: Process, CacheBytes: -1, Key: key}
		j, err := Open(o)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer j.Close()
		var want []uint64
		lastKept, lostBefore := 0, 0
		for k := 1; k <= count; k++ {
			if !touched[k] {
				want = append(want, uint64(k))
				lastKept = k
			}
		}
		for k := 1; k < lastKept; k++ {
			if touched[k] {
				lostBefore++
			}
		}
		st := j.Stats()
		if st.Last != uint64(lastKept) || st.Recovered.Records != uint64(len(want)) || st.Damaged != uint64(lostBefore) {
			t.Fatalf("stats %+v; want last %d, %d records, %d damaged", st, lastKept, len(want), lostBefore)
		}
		r := j.Reader("r")
		ctx := ctxT(t)
		for _, seq := range want {
			e, err := r.Next(ctx)
			if err != nil {
				t.Fatalf("Next (want %d): %v", seq, err)
			}
			checkEntry(t, e, int(seq))
		}
		seq, err := j.Append(ctx, 1, []byte("after"), nil, true)
		if err != nil || seq != uint64(lastKept)+1 {
			t.Fatalf("Append: seq %d, %v; want %d", seq, err, lastKept+1)
		}
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
		j, err = Open(o)
		if err != nil {
			t.Fatalf("second Open: %v", err)
		}
		defer j.Close()
		if st2 := j.Stats(); st2.Recovered.CutBytes != 0 || st2.Last != seq || st2.Damaged != uint64(lostBefore) {
			t.Fatalf("second Open: %+v", st2)
		}
	})
}
