package journal

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readAll reads every record of j with a new reader and returns their seqs,
// checking each is as appendN wrote it.
func readAll(t *testing.T, j *Journal) []uint64 {
	t.Helper()
	r := j.Reader(fmt.Sprintf("all-%p", t))
	ctx := ctxT(t)
	var seqs []uint64
	last := j.Stats().Last
	for len(seqs) == 0 || seqs[len(seqs)-1] < last {
		e, err := r.Next(ctx)
		if err != nil {
			t.Fatalf("Next after %v: %v", seqs[max(0, len(seqs)-1):], err)
		}
		checkEntry(t, e, int(e.Seq))
		seqs = append(seqs, e.Seq)
	}
	return seqs
}

// missing returns the seqs from 1 to n that are not in seqs.
func missing(seqs []uint64, n int) []int {
	have := map[uint64]bool{}
	for _, s := range seqs {
		have[s] = true
	}
	var m []int
	for i := 1; i <= n; i++ {
		if !have[uint64(i)] {
			m = append(m, i)
		}
	}
	return m
}

// One flipped byte in the middle of a segment costs the record it is in,
// counted, and nothing else. (It used to cost the rest of the segment,
// silently: 1,523 acknowledged messages with 1 MiB segments.)
func TestOneFlippedByteLosesOneRecord(t *testing.T) {
	const n = 400
	dir := t.TempDir()
	o := Options{Dir: dir, Mode: Process, SegmentBytes: 64 << 10}
	writeJournal(t, o, n)
	path := filepath.Join(dir, segmentName(1))
	b := mustRead(t, path)
	at := bytes.Index(b, []byte("record 153 x"))
	if at < 0 || len(segFiles(t, dir)) != 1 {
		t.Fatalf("record 150 not found in one segment (%v)", segFiles(t, dir))
	}
	b[at+len("record 153 x")] ^= 0x20
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var logs logBuf
	o.Logger = logs.logger()
	j := open(t, o)
	if m := missing(readAll(t, j), n); len(m) != 1 || m[0] != 153 {
		t.Fatalf("records missing after one flipped byte: %v", m)
	}
	st := j.Stats()
	if st.Damaged != 1 || st.Recovered.CorruptRecords != 1 || !strings.Contains(st.Damage, "record 153 damaged") {
		t.Fatalf("the damage is not counted: %+v", st)
	}
	if !strings.Contains(logs.String(), "damaged records skipped") {
		t.Fatalf("the damage is not logged: %s", logs.String())
	}
}

// Whichever part of a frame is damaged (its sync word, length, checksum,
// seq, time, kind or data; in the last segment or an earlier one; plain or
// encrypted), that record alone is lost.
func TestDamageToAnyPartOfAFrame(t *testing.T) {
	const n = 110
	parts := []struct {
		name string
		at   int64 // from the frame's length field; negative: into its sync word
		bit  byte
	}{
		{"sync word", -2, 0x08},
		{"length, low byte", 0, 0x01},
		{"length, high byte", 3, 0x40},
		{"checksum", 5, 0x10},
		{"seq", 9, 0x02},
		{"time", 17, 0x80},
		{"kind", 24, 0x04},
		{"data", frameOverhead + 3, 0x20},
	}
	for _, key := range [][]byte{nil, testKey(3)} {
		src := t.TempDir()
		o := Options{Dir: src, Mode: Process, SegmentBytes: 1024, Key: key}
		writeJournal(t, o, 100)
		j := open(t, o)
		appendN(t, j, 101, 10) // the last segment holds several records
		must(t, j.Close())
		segs := segFiles(t, src)
		if len(segs) < 3 {
			t.Fatalf("segments %v", segs)
		}
		for _, seg := range []int{1, len(segs) - 1} {
			for _, p := range parts {
				t.Run(fmt.Sprintf("key=%v/segment %d/%s", key != nil, seg, p.name), func(t *testing.T) {
					dir := copyDir(t, src)
					path := filepath.Join(dir, segs[seg])
					b := mustRead(t, path)
					frames := fileFrames(b)
					if len(frames) < 3 {
						t.Fatalf("%d frames in %s", len(frames), segs[seg])
					}
					f := frames[1]
					damaged := segFirst(t, segs[seg]) + 1
					b[f.off+p.at] ^= p.bit
					if err := os.WriteFile(path, b, 0o644); err != nil {
						t.Fatal(err)
					}
					o := o
					o.Dir = dir
					j := open(t, o)
					if m := missing(readAll(t, j), n); len(m) != 1 || m[0] != damaged {
						t.Fatalf("records missing: %v, want [%d]", m, damaged)
					}
					if st := j.Stats(); st.Damaged != 1 || st.Recovered.CutBytes != 0 {
						t.Fatalf("stats %+v", st)
					}
				})
			}
		}
	}
}

// Segments written before frames had a sync word (formats 1 and 2) are
// resynchronised too, byte by byte.
func TestDamageInAnEarlierFormat(t *testing.T) {
	for _, tt := range []struct {
		dir string
		key []byte
	}{
		{"plain-v1", nil},
		{"encrypted-v2", compatKey},
	} {
		t.Run(tt.dir, func(t *testing.T) {
			dir := copyDir(t, filepath.Join("testdata", "compat", tt.dir))
			path := filepath.Join(dir, segmentName(1))
			b := mustRead(t, path)
			f := fileFrames(b)[9] // record 10
			b[f.off+frameOverhead+1] ^= 0x10
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			j := open(t, Options{Dir: dir, Mode: Process, Key: tt.key})
			if m := missing(readAll(t, j), 150); len(m) != 1 || m[0] != 10 {
				t.Fatalf("records missing: %v, want [10]", m)
			}
			if st := j.Stats(); st.Damaged != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// A file in the journal's folder named as a segment but holding none does
// not move the journal's numbering: records go on after the last one held.
// It is set aside and reported. (A file named 00000000000099999999.seg
// used to make the journal count from 99,999,999.)
func TestStrayFileDoesNotMoveTheSequence(t *testing.T) {
	for _, tt := range []struct {
		name    string
		content []byte
		says    string
	}{
		{"empty", nil, "empty (zero length)"},
		{"torn header", []byte("SLUICEJ1\x03"), "header is torn"},
		{"not a segment", []byte("hello, I am a note someone left here"), "not a journal segment"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			o := Options{Dir: dir, Mode: Process, SegmentBytes: 1024}
			writeJournal(t, o, 30, "r")
			stray := filepath.Join(dir, segmentName(99999999))
			if err := os.WriteFile(stray, tt.content, 0o644); err != nil {
				t.Fatal(err)
			}
			j := open(t, o)
			st := j.Stats()
			if st.Last != 30 || !strings.Contains(st.Damage, tt.says) || !strings.Contains(st.Damage, segmentName(99999999)) {
				t.Fatalf("stats %+v", st)
			}
			appendN(t, j, 31, 1)
			readN(t, j.Reader("r"), 1, 31)
			if b, err := os.ReadFile(stray + ".corrupt"); err != nil || !bytes.Equal(b, tt.content) {
				t.Fatalf("not set aside: %v", err)
			}
		})
	}
}

// A segment found empty (zero length) between others lost its records: they
// are counted and reported, and the journal goes on.
func TestZeroLengthSegmentReported(t *testing.T) {
	dir := t.TempDir()
	o := Options{Dir: dir, Mode: Process, SegmentBytes: 1024}
	writeJournal(t, o, 100)
	segs := segFiles(t, dir)
	lost, next := segFirst(t, segs[1]), segFirst(t, segs[2])
	if err := os.Truncate(filepath.Join(dir, segs[1]), 0); err != nil {
		t.Fatal(err)
	}
	j := open(t, o)
	st := j.Stats()
	if st.Damaged != uint64(next-lost) || st.Last != 100 || !strings.Contains(st.Damage, fmt.Sprintf("%d to %d", lost, next-1)) {
		t.Fatalf("stats %+v", st)
	}
	if m := missing(readAll(t, j), 100); len(m) != next-lost || m[0] != lost {
		t.Fatalf("records missing: %v", m)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
