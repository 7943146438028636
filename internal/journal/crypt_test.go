package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

// encOpts returns Process-mode options for an encrypted journal in a new
// folder.
func encOpts(t testing.TB) Options {
	return Options{Dir: t.TempDir(), Mode: Process, Key: testKey(1)}
}

// encFrameSize is the bytes record i of appendN takes in an encrypted
// segment.
func encFrameSize(i int) int64 { return frameSize(i) + sealOverhead }

// frameAt is a frame's place in a segment file.
type frameAt struct{ off, size int64 }

// fileFrames lists the frames of a segment file by reading their length
// fields (it does not check them). A frame's place is that of its length
// field, after the sync word (format 3 and 4), and its size does not count
// the sync word.
func fileFrames(b []byte) []frameAt {
	off, sync := int64(headerSize), int64(0)
	switch binary.LittleEndian.Uint32(b[8:]) {
	case versionSealed1:
		off = sealedHeaderSize1
	case versionPlain:
		sync = syncSize
	case versionSealed:
		off, sync = sealedHeaderSize, syncSize
	}
	var out []frameAt
	for off+sync+frameHead <= int64(len(b)) {
		size := frameHead + int64(binary.LittleEndian.Uint32(b[off+sync:]))
		out = append(out, frameAt{off + sync, size})
		off += sync + size
	}
	return out
}

// fixCRC recomputes the CRC of the frame at off, as a forger would.
func fixCRC(b []byte, off int64) {
	n := int64(binary.LittleEndian.Uint32(b[off:]))
	binary.LittleEndian.PutUint32(b[off+4:], crc32.Checksum(b[off+frameHead:off+frameHead+n], castagnoli))
}

// noPlaintext fails the test if a file in dir holds a record's data in
// clear.
func noPlaintext(t *testing.T, dir string) {
	t.Helper()
	for _, f := range segFiles(t, dir) {
		if b := mustRead(t, filepath.Join(dir, f)); bytes.Contains(b, []byte("record ")) || bytes.Contains(b, []byte("xxxxxxxx")) {
			t.Fatalf("segment %s holds record data in clear", f)
		}
	}
}

func TestEncryptedRoundTrip(t *testing.T) {
	for _, m := range []Mode{Process, Fsync} {
		t.Run(m.String(), func(t *testing.T) {
			o := optsFor(t, m)
			o.Key = testKey(1)
			o.SegmentBytes = 2048 // several segments
			j := open(t, o)
			a, b := j.Reader("a"), j.Reader("b")
			appendN(t, j, 1, 200)
			for i, e := range readN(t, a, 1, 200) {
				if e.Value != i+1 {
					t.Fatalf("seq %d: value %v, want it from the cache (plaintext)", e.Seq, e.Value)
				}
			}
			a.Ack(200)
			b.Ack(50)
			st := j.Stats()
			if st.Segments < 5 || st.Last != 200 {
				t.Fatalf("stats %+v", st)
			}
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			noPlaintext(t, o.Dir)

			// Read back from the files, after a restart.
			j = open(t, o)
			if st := j.Stats(); st.Last != 200 || st.Recovered.CutBytes != 0 {
				t.Fatalf("after reopen: %+v", st)
			}
			b = j.Reader("b")
			if b.Acked() != 50 {
				t.Fatalf("cursor b: acked %d, want 50", b.Acked())
			}
			for _, e := range readN(t, b, 51, 150) {
				if e.Value != nil {
					t.Fatalf("seq %d: from the cache after a restart", e.Seq)
				}
			}
			appendN(t, j, 201, 20) // seqs continue
			readN(t, b, 201, 20)
			b.Rewind(100)
			readN(t, b, 101, 5)
		})
	}
}

// With no cache every record is read from its file and decrypted.
func TestEncryptedReadFromDisk(t *testing.T) {
	o := encOpts(t)
	o.CacheBytes = -1
	o.SegmentBytes = 4096
	j := open(t, o)
	r := j.Reader("r")
	appendN(t, j, 1, 300)
	readN(t, r, 1, 300)
	r.Rewind(120) // cursors work on encrypted segments as on plain ones
	readN(t, r, 121, 10)
	if st := j.Stats(); st.Readers[0].Acked != 0 || st.Readers[0].Lag != 300 {
		t.Fatalf("stats %+v", st.Readers)
	}
	noPlaintext(t, o.Dir)

	// Records larger than the read buffer.
	big := bytes.Repeat([]byte("large "), 30000)
	seq, err := j.Append(ctxT(t), 3, big, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	r.Rewind(seq - 1)
	if e, err := r.Next(ctxT(t)); err != nil || e.Seq != seq || e.Kind != 3 || !bytes.Equal(e.Data, big) {
		t.Fatalf("large record: seq %d kind %d %d bytes, %v", e.Seq, e.Kind, len(e.Data), err)
	}
}

func TestEncryptedTornTail(t *testing.T) {
	const n = 20
	src := t.TempDir()
	o := Options{Dir: src, Mode: Process, Key: testKey(1), SegmentBytes: 1 << 20}
	writeJournal(t, o, n)
	path := lastSegment(t, src)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()
	lastStart := size - encFrameSize(n)
	for cut := lastStart; cut < size; cut++ {
		dir := copyDir(t, src)
		if err := os.Truncate(filepath.Join(dir, filepath.Base(path)), cut); err != nil {
			t.Fatal(err)
		}
		var logs logBuf
		o := Options{Dir: dir, Mode: Process, Key: testKey(1), Logger: logs.logger()}
		st := checkRecovered(t, o, 1, n-1)
		if st.Recovered.Records != n-1 || st.Recovered.CutBytes != cut-lastStart {
			t.Fatalf("cut at %d: recovered %+v", cut, st.Recovered)
		}
		if cut > lastStart && !strings.Contains(logs.String(), "cut torn or corrupt tail") {
			t.Fatalf("cut at %d: loss not logged: %s", cut, logs.String())
		}
	}
}

// An encrypted journal never appends to a segment an earlier run wrote: the
// seq of a record cut from the tail is sealed again in a new segment, with
// a new key, so that no nonce is used twice with one key.
func TestEncryptedNewSegmentAtOpen(t *testing.T) {
	o := encOpts(t)
	writeJournal(t, o, 10)
	path := lastSegment(t, o.Dir)
	if err := os.Truncate(path, int64(len(mustRead(t, path)))-3); err != nil {
		t.Fatal(err)
	}
	j := open(t, o)
	appendN(t, j, 10, 1) // seq 10 again
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	segs := segFiles(t, o.Dir)
	if strings.Join(segs, ",") != segmentName(1)+","+segmentName(10) {
		t.Fatalf("segments %v", segs)
	}
	salts := map[string]bool{}
	for _, s := range segs {
		salts[string(mustRead(t, filepath.Join(o.Dir, s))[16:16+saltSize])] = true
	}
	if len(salts) != 2 {
		t.Fatal("two segments share a salt")
	}
	// An empty last segment is replaced, with a new salt.
	j = open(t, o) // starts segment 11
	j.Close()
	before := mustRead(t, lastSegment(t, o.Dir))
	j = open(t, o)
	j.Close()
	segs = segFiles(t, o.Dir)
	after := mustRead(t, lastSegment(t, o.Dir))
	if len(segs) != 3 || segs[2] != segmentName(11) || len(after) != sealedHeaderSize || bytes.Equal(before, after) {
		t.Fatalf("segments %v", segs)
	}
	j = open(t, o)
	readN(t, j.Reader("r"), 1, 10)
}

// A frame altered with its CRC recomputed is no torn write: Open refuses
// the journal, naming the segment, and changes nothing.
func TestTamperedRecord(t *testing.T) {
	const n = 30
	src := t.TempDir()
	o := Options{Dir: src, Mode: Process, Key: testKey(1), SegmentBytes: 1024}
	writeJournal(t, o, n)
	segs := segFiles(t, src)
	if len(segs) < 3 {
		t.Fatalf("segments %v", segs)
	}
	tests := []struct {
		name string
		seg  int   // index in segs
		rec  int   // index of the frame in its segment
		at   int64 // offset in the frame; negative: from its end
	}{
		{"ciphertext, middle segment", 1, 2, frameOverhead + nonceSize + 1},
		{"ciphertext, last record", len(segs) - 1, -1, frameOverhead + nonceSize},
		{"tag", 0, 0, -1},
		{"nonce", 0, 1, frameOverhead + 5},
		{"seq", 1, 0, 8},
		{"time", 0, 3, 16},
		{"kind", 1, 1, 24},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyDir(t, src)
			path := filepath.Join(dir, segs[tt.seg])
			b := mustRead(t, path)
			frames := fileFrames(b)
			rec := tt.rec
			if rec < 0 {
				rec += len(frames)
			}
			f := frames[rec]
			at := tt.at
			if at < 0 {
				at += f.size
			}
			b[f.off+at] ^= 0x04
			fixCRC(b, f.off)
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Open(Options{Dir: dir, Mode: Process, Key: testKey(1)})
			if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), segs[tt.seg]) {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(mustRead(t, path), b) || len(segFiles(t, dir)) != len(segs) {
				t.Fatal("Open changed the journal it refused")
			}
		})
	}

	// Records swapped, each intact: authentic, but out of place.
	t.Run("records swapped", func(t *testing.T) {
		dir := copyDir(t, src)
		path := filepath.Join(dir, segs[0])
		b := mustRead(t, path)
		fr := fileFrames(b)
		f1, f2 := b[fr[1].off:fr[1].off+fr[1].size], b[fr[2].off:fr[2].off+fr[2].size]
		swapped := append(append(append(append([]byte(nil), b[:fr[1].off]...), f2...), f1...), b[fr[2].off+fr[2].size:]...)
		if err := os.WriteFile(path, swapped, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(Options{Dir: dir, Mode: Process, Key: testKey(1)}); !errors.Is(err, ErrTampered) {
			t.Fatalf("Open: %v", err)
		}
	})

	// A bit flipped without fixing the CRC is damage, as in a plain
	// journal: the tail is cut.
	t.Run("damage", func(t *testing.T) {
		dir := copyDir(t, src)
		path := lastSegment(t, dir)
		b := mustRead(t, path)
		fr := fileFrames(b)
		last := fr[len(fr)-1]
		b[last.off+frameOverhead+nonceSize] ^= 0x04
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		st := checkRecovered(t, Options{Dir: dir, Mode: Process, Key: testKey(1)}, 1, n-1)
		if st.Recovered.CutBytes != encFrameSize(n) {
			t.Fatalf("recovered %+v", st.Recovered)
		}
	})
}

// A record altered after Open is not delivered: a reader reading it from
// its file gets ErrTampered, every time, and not the records after it.
func TestTamperedAfterOpen(t *testing.T) {
	o := encOpts(t)
	o.CacheBytes = -1
	j := open(t, o)
	r := j.Reader("r")
	appendN(t, j, 1, 10)
	if err := j.WaitDurable(ctxT(t), 10); err != nil {
		t.Fatal(err)
	}
	path := lastSegment(t, o.Dir)
	b := mustRead(t, path)
	f := fileFrames(b)[4] // record 5
	b[f.off+frameOverhead+nonceSize+2] ^= 0x01
	fixCRC(b, f.off)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	readN(t, r, 1, 4)
	for range 2 {
		if e, err := r.Next(ctxT(t)); !errors.Is(err, ErrTampered) {
			t.Fatalf("Next: seq %d, %v", e.Seq, err)
		}
	}
	r.Rewind(5)
	readN(t, r, 6, 5)
}

func TestEncryptionKeyMismatch(t *testing.T) {
	encrypted := func(t *testing.T, records int) string {
		o := encOpts(t)
		writeJournal(t, o, records)
		return o.Dir
	}
	plain := func(t *testing.T, records int) string {
		o := Options{Dir: t.TempDir(), Mode: Process}
		writeJournal(t, o, records)
		return o.Dir
	}
	tests := []struct {
		name    string
		dir     func(*testing.T, int) string
		key     []byte
		records int
		says    string
	}{
		{"wrong key", encrypted, testKey(2), 5, "another key"},
		{"wrong key, no records", encrypted, testKey(2), 0, "another key"},
		{"no key", encrypted, nil, 5, "encrypted"},
		{"key for a plain journal", plain, testKey(1), 5, "not encrypted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.dir(t, tt.records)
			_, err := Open(Options{Dir: dir, Mode: Process, Key: tt.key})
			if !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("Open: %v", err)
			}
		})
	}
}

// Memory mode writes nothing, so it has nothing to encrypt: it ignores the key.
func TestMemoryIgnoresKey(t *testing.T) {
	j := open(t, Options{Mode: Memory, Key: testKey(1)})
	appendN(t, j, 1, 10)
	readN(t, j.Reader("r"), 1, 10)
}

func TestKeySize(t *testing.T) {
	for _, n := range []int{1, 16, 31, 33, 64} {
		if _, err := Open(Options{Dir: t.TempDir(), Mode: Process, Key: make([]byte, n)}); err == nil {
			t.Fatalf("Open accepted a %d-byte key", n)
		}
	}
}

// FuzzRecoverEncrypted feeds Open an encrypted segment: records 1..n%8
// sealed by a journal, then arbitrary bytes. Open either keeps the valid
// records (and any sealed ones the bytes hold after them, and cuts the
// rest) or, if the bytes make a frame whose CRC checks out where a record
// belongs, fails with ErrTampered and changes nothing; it never panics nor
// delivers a record that was not sealed.
func FuzzRecoverEncrypted(f *testing.F) {
	src := f.TempDir()
	o := Options{Dir: src, Mode: Process, Key: testKey(1)}
	j, err := Open(o)
	if err != nil {
		f.Fatal(err)
	}
	for i := 1; i <= 8; i++ {
		if _, err := j.Write(byte(i%7), payload(i), nil); err != nil {
			f.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		f.Fatal(err)
	}
	seg, err := os.ReadFile(filepath.Join(src, segmentName(1)))
	if err != nil {
		f.Fatal(err)
	}
	frames := fileFrames(seg)
	f.Add(uint8(0), []byte{})
	f.Add(uint8(3), seg[frames[3].off:frames[4].off])      // record 4: valid where it is
	f.Add(uint8(3), seg[frames[5].off:frames[6].off])      // record 6: authentic, out of place
	f.Add(uint8(2), append([]byte{0, 0, 0}, seg[8:20]...)) // garbage
	f.Fuzz(func(t *testing.T, n uint8, tail []byte) {
		valid := int(n % 8)
		end := int64(len(seg))
		if valid < len(frames) {
			end = frames[valid].off
		}
		content := append(bytes.Clone(seg[:end]), tail...)
		dir := t.TempDir()
		path := filepath.Join(dir, segmentName(1))
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
		o := Options{Dir: dir, Mode: Process, Key: testKey(1), CacheBytes: -1}
		j, err := Open(o)
		if errors.Is(err, ErrTampered) {
			if !bytes.Equal(mustRead(t, path), content) {
				t.Fatal("Open changed the segment it refused")
			}
			return
		}
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer j.Close()
		st := j.Stats()
		if st.Last < uint64(valid) || st.Recovered.Records+st.Damaged != st.Last {
			t.Fatalf("recovered %+v from %d valid records", st, valid)
		}
		r := j.Reader("r")
		ctx := ctxT(t)
		for prev, n := uint64(0), uint64(0); n < st.Recovered.Records; n++ {
			e, err := r.Next(ctx)
			if err != nil || e.Seq <= prev {
				t.Fatalf("Next after %d: seq %d, %v", prev, e.Seq, err)
			}
			checkEntry(t, e, int(e.Seq)) // only records the journal sealed exist
			prev = e.Seq
		}
	})
}
