package journal

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// writeJournal writes records 1..n with appendN and closes the journal.
func writeJournal(t *testing.T, o Options, n int, readers ...string) {
	t.Helper()
	j := open(t, o)
	for _, name := range readers {
		j.Reader(name)
	}
	appendN(t, j, 1, n)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkRecovered opens dir and checks that it holds exactly records
// from..to, then that appending continues at to+1, and that a second Open
// finds nothing more to cut.
func checkRecovered(t *testing.T, o Options, from, to int) Stats {
	t.Helper()
	j, err := Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	st := j.Stats()
	r := j.Reader("check")
	if to >= from {
		readN(t, r, from, to-from+1)
	}
	appendN(t, j, to+1, 1)
	readN(t, r, to+1, 1)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j, err = Open(o)
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	defer j.Close()
	if st2 := j.Stats(); st2.Recovered.CutBytes != 0 || st2.Last != uint64(to+1) {
		t.Fatalf("second Open: %+v", st2)
	}
	return st
}

func TestTornTail(t *testing.T) {
	const n = 20
	tests := []struct {
		name         string
		segmentBytes int64
	}{
		{"one segment", 1 << 20},
		// The last record alone in its segment: cutting it leaves an empty
		// segment, whose name still carries the seq.
		{"last record alone", func() int64 {
			s := int64(headerSize)
			for i := 1; i < n; i++ {
				s += frameSize(i)
			}
			return s
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := t.TempDir()
			writeJournal(t, Options{Dir: src, Mode: Process, SegmentBytes: tt.segmentBytes}, n)
			fi, err := os.Stat(lastSegment(t, src))
			if err != nil {
				t.Fatal(err)
			}
			size := fi.Size()
			lastStart := size - frameSize(n)
			for cut := lastStart; cut < size; cut++ {
				dir := copyDir(t, src)
				if err := os.Truncate(lastSegment(t, dir), cut); err != nil {
					t.Fatal(err)
				}
				var logs logBuf
				st := checkRecovered(t, Options{Dir: dir, Mode: Process, Logger: logs.logger()}, 1, n-1)
				if st.Recovered.Records != n-1 || st.Recovered.CutBytes != cut-lastStart {
					t.Fatalf("cut at %d: recovered %+v", cut, st.Recovered)
				}
				if cut > lastStart && !strings.Contains(logs.String(), "cut torn or corrupt tail") {
					t.Fatalf("cut at %d: loss not logged: %s", cut, logs.String())
				}
			}
		})
	}
}

func TestFlippedBitsInLastRecord(t *testing.T) {
	const n = 10
	src := t.TempDir()
	writeJournal(t, Options{Dir: src, Mode: Process}, n)
	b, err := os.ReadFile(lastSegment(t, src))
	if err != nil {
		t.Fatal(err)
	}
	lastStart := int64(len(b)) - frameSize(n)
	for off := lastStart; off < int64(len(b)); off++ {
		for _, bit := range []byte{0x01, 0x80} {
			dir := copyDir(t, src)
			c := append([]byte(nil), b...)
			c[off] ^= bit
			if err := os.WriteFile(lastSegment(t, dir), c, 0o644); err != nil {
				t.Fatal(err)
			}
			st := checkRecovered(t, Options{Dir: dir, Mode: Process}, 1, n-1)
			if st.Recovered.CutBytes != frameSize(n) {
				t.Fatalf("flip %#x at %d: %+v", bit, off, st.Recovered)
			}
		}
	}
}

// frameOffsets returns the offsets of the frames of a segment file written
// by appendN, starting with record first.
func frameOffsets(t *testing.T, path string, first int) []int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	for off, i := int64(headerSize), first; off < fi.Size(); i++ { // the frame's sync word
		offs = append(offs, off)
		off += frameSize(i)
	}
	return offs
}

// A damaged record in the middle of a segment costs that record, counted
// and logged; the rest of its segment is read.
func TestCorruptMiddleSegment(t *testing.T) {
	dir := t.TempDir()
	o := Options{Dir: dir, Mode: Process, SegmentBytes: 1024}
	writeJournal(t, o, 100)
	segs := segFiles(t, dir)
	if len(segs) < 4 {
		t.Fatalf("segments %v", segs)
	}
	// Damage the third record of the second segment.
	path := filepath.Join(dir, segs[1])
	first := segFirst(t, segs[1])
	offs := frameOffsets(t, path, first)
	b, _ := os.ReadFile(path)
	b[offs[2]+frameOverhead+1] ^= 0x10
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var logs logBuf
	o.Logger = logs.logger()
	j := open(t, o)
	st := j.Stats()
	damaged := first + 2
	if st.Recovered.CorruptSegments != 1 || st.Recovered.CutBytes != 0 || st.Recovered.CorruptRecords != 1 ||
		st.Damaged != 1 || st.Last != 100 || !strings.Contains(st.Damage, fmt.Sprintf("%s: record %d damaged", segs[1], damaged)) {
		t.Fatalf("stats %+v", st)
	}
	if !strings.Contains(logs.String(), "damaged records skipped") {
		t.Fatalf("not logged: %s", logs.String())
	}
	r := j.Reader("r")
	readN(t, r, 1, damaged-1)
	readN(t, r, damaged+1, 100-damaged) // the rest of its segment, and the later ones
	appendN(t, j, 101, 1)
	readN(t, r, 101, 1)
}

// segFirst returns the first seq of a segment from its file name.
func segFirst(t *testing.T, name string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSuffix(name, ".seg"))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEmptySegments(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) // after records 1..50 were written
		last  int                            // last seq recovered
	}{
		{"empty last file", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, segmentName(51)), nil, 0o644)
		}, 50},
		{"header-only last file", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, segmentName(51)), segmentHeader(), 0o644)
		}, 50},
		{"torn header", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, segmentName(51)), segmentHeader()[:7], 0o644)
		}, 50},
		// Not what a crash leaves: a stray file, set aside.
		{"empty file after a gap", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, segmentName(61)), nil, 0o644)
		}, 50},
		{"empty middle file", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, segmentName(51)), nil, 0o644)
			os.WriteFile(filepath.Join(dir, segmentName(61)), segmentHeader(), 0o644)
		}, 60},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			o := Options{Dir: dir, Mode: Process}
			writeJournal(t, o, 50)
			tt.setup(t, dir)
			j := open(t, o)
			st := j.Stats()
			if st.Last != uint64(tt.last) || st.Recovered.Records != 50 {
				t.Fatalf("stats %+v", st)
			}
			r := j.Reader("r")
			readN(t, r, 1, 50)
			appendN(t, j, tt.last+1, 1)
			readN(t, r, tt.last+1, 1)
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			for _, f := range segFiles(t, dir) {
				fi, _ := os.Stat(filepath.Join(dir, f))
				if fi.Size() < headerSize {
					t.Fatalf("segment %s left with %d bytes", f, fi.Size())
				}
			}
		})
	}
}

func TestNotASegment(t *testing.T) {
	dir := t.TempDir()
	o := Options{Dir: dir, Mode: Process, SegmentBytes: 1024}
	writeJournal(t, o, 100)
	segs := segFiles(t, dir)
	garbage := []byte(strings.Repeat("not a journal segment ", 10))
	if err := os.WriteFile(filepath.Join(dir, segs[0]), garbage, 0o644); err != nil {
		t.Fatal(err)
	}
	j := open(t, o)
	st := j.Stats()
	if st.Recovered.CorruptSegments != 1 || st.Last != 100 {
		t.Fatalf("stats %+v", st)
	}
	if b, err := os.ReadFile(filepath.Join(dir, segs[0]+".corrupt")); err != nil || string(b) != string(garbage) {
		t.Fatalf("file not set aside: %v", err)
	}
	next := segFirst(t, segs[1])
	readN(t, j.Reader("r"), next, 100-next+1)
}

func TestUnknownVersion(t *testing.T) {
	dir := t.TempDir()
	o := Options{Dir: dir, Mode: Process}
	writeJournal(t, o, 3)
	path := lastSegment(t, dir)
	b, _ := os.ReadFile(path)
	binary.LittleEndian.PutUint32(b[8:], 9)
	os.WriteFile(path, b, 0o644)
	if _, err := Open(o); err == nil || !strings.Contains(err.Error(), "format version 9") {
		t.Fatalf("Open of a version 9 segment: %v", err)
	}
}

func TestCursorsFile(t *testing.T) {
	tests := []struct {
		name    string
		content string // "": remove the file
		logged  string
		acked   uint64 // of reader "a" after Open
	}{
		{"intact", "keep", "", 30},
		{"missing", "", "", 0},
		{"corrupt", `{"version":1,"readers":{"a":{"ack`, "cursors file is corrupt", 0},
		{"not json", "\x00\x01garbage", "cursors file is corrupt", 0},
		{"unknown version", `{"version":9,"readers":{}}`, "cursors file is corrupt", 0},
		{"ahead of the journal", `{"version":1,"readers":{"a":{"acked":5000}}}`, "not in the journal", 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			o := Options{Dir: dir, Mode: Process}
			j := open(t, o)
			a := j.Reader("a")
			appendN(t, j, 1, 100)
			a.Ack(30)
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, cursorsFile)
			switch tt.content {
			case "keep":
			case "":
				os.Remove(path)
			default:
				os.WriteFile(path, []byte(tt.content), 0o644)
			}
			var logs logBuf
			o.Logger = logs.logger()
			j = open(t, o)
			if tt.logged != "" && !strings.Contains(logs.String(), tt.logged) {
				t.Fatalf("log does not say %q: %s", tt.logged, logs.String())
			}
			a = j.Reader("a")
			if a.Acked() != tt.acked {
				t.Fatalf("acked %d, want %d", a.Acked(), tt.acked)
			}
			if tt.acked < 100 {
				readN(t, a, int(tt.acked)+1, 1) // a reader without a cursor starts at the first record held
			}
			appendN(t, j, 101, 1)
			a.Rewind(100)
			readN(t, a, 101, 1)
		})
	}
}

func TestOverlappingSegments(t *testing.T) {
	dir := t.TempDir()
	o := Options{Dir: dir, Mode: Process}
	writeJournal(t, o, 10)
	b, _ := os.ReadFile(lastSegment(t, dir))
	os.WriteFile(filepath.Join(dir, segmentName(5)), b, 0o644) // claims 5.. but holds 1..10
	if _, err := Open(o); err == nil {
		t.Fatal("Open accepted overlapping segments")
	} else if !strings.Contains(err.Error(), "overlaps") {
		t.Fatalf("error: %v", err)
	}
	if b2, _ := os.ReadFile(filepath.Join(dir, segmentName(5))); len(b2) != len(b) {
		t.Fatal("Open changed a segment it refused")
	}
}

// A record damaged after Open (disk rot) costs a reader that record, not
// the rest of its segment: it is logged and counted once, however many
// readers meet it.
func TestDamageAfterOpen(t *testing.T) {
	dir := t.TempDir()
	var logs logBuf
	o := Options{Dir: dir, Mode: Process, SegmentBytes: 1024, CacheBytes: -1, Logger: logs.logger()}
	j := open(t, o)
	r := j.Reader("r")
	appendN(t, j, 1, 100)
	segs := segFiles(t, dir)
	path := filepath.Join(dir, segs[1])
	first := segFirst(t, segs[1])
	offs := frameOffsets(t, path, first)
	b := mustRead(t, path)
	b[offs[1]+syncSize+frameOverhead] ^= 0x01
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	r2 := j.Reader("r2")
	for _, r := range []*Reader{r, r2} {
		readN(t, r, 1, first)             // up to the damaged record
		readN(t, r, first+2, 100-first-1) // after it
	}
	if st := j.Stats(); st.Damaged != 1 || !strings.Contains(st.Damage, fmt.Sprintf("record %d damaged", first+1)) {
		t.Fatalf("stats %+v", st)
	}
	if !strings.Contains(logs.String(), "damaged records skipped") || !strings.Contains(logs.String(), "found_by=\"reader r\"") {
		t.Fatalf("not logged: %s", logs.String())
	}
}
