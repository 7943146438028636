package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// segment is one file of the journal (or its stand-in in Memory mode). Its
// fields are guarded by Journal.mu; first and path never change.
type segment struct {
	first   uint64
	last    uint64 // last seq held; first-1 while empty
	size    int64  // bytes: header and frames
	hdr     int64  // bytes of the header
	written int64  // bytes in the file; the rest of size waits in Journal.pend
	path    string // "" in Memory mode
	f       *os.File
	index   []indexEntry // sparse seq -> offset, in seq order
	removed bool         // reclaimed or dropped
	fm      framing      // how its frames are laid out (the zero value in Memory mode)
	lost    []seqRange   // seqs in [first, last] whose records were lost to damage, as found so far
	marks   []uint64     // bit seq-first is set for a record of Options.MessageKind (when set)
}

// mark notes that record seq is a message (of Options.MessageKind).
func (s *segment) mark(seq uint64) {
	i := seq - s.first
	for uint64(len(s.marks)) <= i/64 {
		s.marks = append(s.marks, 0)
	}
	s.marks[i/64] |= 1 << (i % 64)
}

// marked returns how many of the records from to to are messages.
func (s *segment) marked(from, to uint64) uint64 {
	var n uint64
	for seq := max(from, s.first); seq <= to; {
		i := seq - s.first
		if i/64 >= uint64(len(s.marks)) {
			break
		}
		span := min(64-i%64, to-seq+1)
		w := s.marks[i/64] >> (i % 64)
		if span < 64 {
			w &= 1<<span - 1
		}
		n += uint64(bits.OnesCount64(w))
		seq += span
	}
	return n
}

// seqRange is the records from to to, both included.
type seqRange struct{ from, to uint64 }

func (r seqRange) len() uint64 { return r.to + 1 - r.from }

// indexEntry locates a frame: readers seek to the entry at or before the
// seq they want and read forward.
type indexEntry struct {
	seq  uint64
	off  int64
	time int64
}

func (s *segment) empty() bool { return s.last < s.first }

// frameSize returns the bytes a record of n data bytes takes in s.
func (s *segment) frameSize(n int) int64 {
	return s.fm.minFrame() + int64(n)
}

// note records that the frame seq was written at off at time t. An entry
// every indexEvery bytes bounds how far a reader reads to find a record;
// an entry every indexTime bounds how much older than a record the time
// MaxAge takes for it can be.
func (s *segment) note(seq uint64, off, t int64) {
	if n := len(s.index); n == 0 || off-s.index[n-1].off >= indexEvery || t-s.index[n-1].time >= indexTime {
		s.index = append(s.index, indexEntry{seq: seq, off: off, time: t})
	}
}

// locate returns the index entry at or before seq; when the segment has
// none that early (its first records were lost), its first frame's place.
func (s *segment) locate(seq uint64) indexEntry {
	i := sort.Search(len(s.index), func(i int) bool { return s.index[i].seq > seq }) - 1
	if i < 0 {
		e := indexEntry{seq: s.first, off: s.hdr}
		if len(s.index) > 0 {
			e.time = s.index[0].time
		}
		return e
	}
	return s.index[i]
}

// records returns how many records the segment holds.
func (s *segment) records() uint64 { return s.last + 1 - s.first - s.lostIn(s.first, s.last) }

// lostIn returns how many of the records from to to were lost to damage.
func (s *segment) lostIn(from, to uint64) uint64 {
	var n uint64
	for _, l := range s.lost {
		if lo, hi := max(l.from, from), min(l.to, to); lo <= hi {
			n += hi + 1 - lo
		}
	}
	return n
}

// newHeader returns the header of a new segment, plain or, when key is
// set, encrypted with a fresh salt, and how its frames are laid out.
func newHeader(key []byte) ([]byte, framing, error) {
	sync := newSync()
	if key == nil {
		return plainHeader(sync), framing{sync: sync}, nil
	}
	h, sl, err := sealedHeader(key, sync)
	if err != nil {
		return nil, framing{}, fmt.Errorf("journal: segment key: %w", err)
	}
	return h, framing{sync: sync, sealer: sl}, nil
}

// createSegment creates the file of a new, empty segment, encrypted when
// key is set.
func createSegment(dir string, first uint64, key []byte) (*segment, error) {
	hdr, fm, err := newHeader(key)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, segmentName(first))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("journal: create segment: %w", err)
	}
	if _, err := f.WriteAt(hdr, 0); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("journal: write segment header %s: %w", path, err)
	}
	n := int64(len(hdr))
	return &segment{first: first, last: first - 1, size: n, hdr: n, written: n, path: path, f: f, fm: fm}, nil
}

// segmentFiles lists the segment files in dir in seq order.
func segmentFiles(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("journal: list %s: %w", dir, err)
	}
	var firsts []uint64
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || len(name) != 24 || !strings.HasSuffix(name, ".seg") {
			continue
		}
		first, err := strconv.ParseUint(name[:20], 10, 64)
		if err != nil || first == 0 {
			continue
		}
		firsts = append(firsts, first)
	}
	sort.Slice(firsts, func(i, k int) bool { return firsts[i] < firsts[k] })
	return firsts, nil
}

// scan is what recovering one segment file found.
type scan struct {
	seg     *segment // nil when nothing of the file is kept
	records uint64
	damage  []damage // records lost to damage before the last good one
	cut     int64    // bytes cut off the end
	reason  error    // why the cut was made
	// notSegment says why the file holds no segment, when it does not:
	// empty, its header torn, or not a journal segment at all. recover
	// decides what to do with it; the file is left as it was.
	notSegment string
	torn       bool // notSegment: empty or a torn header (what a crash while creating it leaves)
}

// damage is records lost to damage: where it was found, and why.
type damage struct {
	lost   seqRange
	off    int64 // offset in the file where the damaged bytes begin
	reason error
}

// recoverSegment scans the segment file starting at first: it checks every
// frame (framing, CRC, seqs rising from first; in an encrypted segment
// also authenticity, a failure being an error), resynchronising past
// damage, and truncates the file after the last good frame. The file of the
// last segment stays open for appending; an empty earlier segment is
// removed. In Fsync mode the file is fsync'd, so that what recovery kept is
// durable.
func (j *Journal) recoverSegment(first uint64, last bool) (scan, error) {
	path := filepath.Join(j.opts.Dir, segmentName(first))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return scan{}, fmt.Errorf("journal: open segment: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return scan{}, fmt.Errorf("journal: stat segment: %w", err)
	}
	size := fi.Size()
	buf := make([]byte, sealedHeaderSize)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return scan{}, fmt.Errorf("journal: read segment header %s: %w", path, err)
	}
	h, err := j.parseHeader(path, buf[:n])
	if err != nil {
		return scan{}, err
	}
	switch {
	case size == 0:
		return scan{notSegment: "empty (zero length)", torn: true}, nil
	case h.torn:
		return scan{notSegment: fmt.Sprintf("its header is torn (%d bytes)", size), torn: true}, nil
	case h.bad:
		return scan{notSegment: "not a journal segment (bad magic)"}, nil
	}

	s := &segment{first: first, last: first - 1, path: path, hdr: h.size, fm: h.fm}
	var sc scan
	var r frameReader
	r.reset(f, h.fm, h.size, size)
	good := h.size // end of the last good frame
	var fr frame
	for {
		err := r.nextAfter(&fr, s.last, 0)
		if errors.Is(err, errShort) {
			sc.reason = r.damage
			break
		}
		if err != nil {
			if errors.Is(err, ErrTampered) {
				return scan{}, fmt.Errorf("journal: segment %s: %w", path, err)
			}
			return scan{}, fmt.Errorf("journal: read segment %s: %w", path, err)
		}
		if fr.seq > s.last+1 {
			sc.damage = append(sc.damage, damage{lost: seqRange{s.last + 1, fr.seq - 1}, off: good, reason: r.damage})
			s.lost = append(s.lost, seqRange{s.last + 1, fr.seq - 1})
		}
		s.note(fr.seq, fr.off, fr.time)
		if j.opts.MessageKind != 0 && fr.kind == j.opts.MessageKind {
			s.mark(fr.seq)
		}
		s.last = fr.seq
		sc.records++
		good = r.off
	}
	s.size = good
	sc.cut = size - good
	if sc.cut > 0 {
		if sc.reason == nil {
			sc.reason = errShort
		}
		if err := f.Truncate(s.size); err != nil {
			return scan{}, fmt.Errorf("journal: truncate segment %s: %w", path, err)
		}
	}
	if s.empty() && !last {
		if err := os.Remove(path); err != nil {
			return scan{}, fmt.Errorf("journal: remove empty segment: %w", err)
		}
		return sc, nil
	}
	if j.opts.Mode == Fsync {
		if err := j.syncFile(f); err != nil {
			return scan{}, fmt.Errorf("journal: fsync segment %s: %w", path, err)
		}
	}
	if last {
		keep = true
		s.f = f
	}
	sc.seg = s
	return sc, nil
}

// header is what a segment file's header says.
type header struct {
	size int64   // bytes of the header
	fm   framing // how the segment's frames are laid out
	torn bool    // the file ends within the header: torn while being created, it holds no records
	bad  bool    // not a segment (bad magic)
}

// parseHeader reads the header b (the first bytes of the file at path, as
// many as an encrypted header has, or fewer if the file is shorter). A
// segment whose encryption does not match Options.Key, or written with
// another key, is an error: Open must not guess.
func (j *Journal) parseHeader(path string, b []byte) (header, error) {
	if m := min(len(b), len(magic)); string(b[:m]) != magic[:m] {
		return header{bad: true}, nil
	}
	if len(b) < 12 {
		return header{torn: true}, nil
	}
	v := binary.LittleEndian.Uint32(b[8:])
	switch v {
	case versionPlain1, versionPlain:
		if len(b) < headerSize {
			return header{torn: true}, nil
		}
		if j.key != nil {
			return header{}, fmt.Errorf("journal: segment %s is not encrypted, but a key is set; "+
				"an encrypted journal does not continue a plain one (open it without the key, or drain it and remove its segments): %w",
				path, ErrWrongKey)
		}
		h := header{size: headerSize}
		if v == versionPlain {
			h.fm.sync = bytes.Clone(b[12:headerSize])
		}
		return h, nil
	case versionSealed1, versionSealed:
		size := int64(sealedHeaderSize1)
		if v == versionSealed {
			size = sealedHeaderSize
		}
		if int64(len(b)) < size {
			return header{torn: true}, nil
		}
		if j.key == nil {
			return header{}, fmt.Errorf("journal: segment %s has format version %d (encrypted), and no key is set: %w", path, v, ErrWrongKey)
		}
		sl, err := openSealedHeader(j.key, b[:sealedHeaderSize1])
		if errors.Is(err, ErrWrongKey) {
			return header{}, fmt.Errorf("journal: segment %s was written with another key (or its header was altered): %w", path, err)
		}
		if err != nil {
			return header{}, fmt.Errorf("journal: segment %s: %w", path, err)
		}
		h := header{size: size, fm: framing{sealer: sl}}
		if v == versionSealed {
			h.fm.sync = bytes.Clone(b[sealedHeaderSize1:sealedHeaderSize])
		}
		return h, nil
	default:
		return header{}, fmt.Errorf("journal: segment %s has format version %d; this sluice reads versions %d and %d (plain), %d and %d (encrypted)",
			path, v, versionPlain1, versionPlain, versionSealed1, versionSealed)
	}
}

// syncDir fsyncs the journal's directory, making file creations, renames
// and removals durable.
func (j *Journal) syncDir() error {
	d, err := os.Open(j.opts.Dir)
	if err != nil {
		return fmt.Errorf("journal: open dir: %w", err)
	}
	err = j.syncFile(d)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("journal: fsync dir: %w", err)
	}
	return nil
}
