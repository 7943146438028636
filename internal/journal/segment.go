package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/internal/seal"
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
	sealer  *seal.Sealer // nil: a plain segment
}

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
	if s.sealer != nil {
		return int64(frameOverhead + sealOverhead + n)
	}
	return int64(frameOverhead + n)
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

// locate returns the index entry at or before seq; ok is false when the
// segment has no entry that early.
func (s *segment) locate(seq uint64) (indexEntry, bool) {
	i := sort.Search(len(s.index), func(i int) bool { return s.index[i].seq > seq }) - 1
	if i < 0 {
		return indexEntry{}, false
	}
	return s.index[i], true
}

// records returns how many records the segment holds.
func (s *segment) records() uint64 { return s.last + 1 - s.first }

// newHeader returns the header of a new segment: plain, or encrypted with
// a fresh salt when key is set, with the sealer for its records.
func newHeader(key []byte) ([]byte, *seal.Sealer, error) {
	if key == nil {
		return segmentHeader(), nil, nil
	}
	h, sl, err := sealedHeader(key)
	if err != nil {
		return nil, nil, fmt.Errorf("journal: segment key: %w", err)
	}
	return h, sl, nil
}

// createSegment creates the file of a new, empty segment, encrypted when
// key is set.
func createSegment(dir string, first uint64, key []byte) (*segment, error) {
	hdr, sl, err := newHeader(key)
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
	return &segment{first: first, last: first - 1, size: n, hdr: n, written: n, path: path, f: f, sealer: sl}, nil
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
	cut     int64 // bytes cut off the end
	reason  error // why the cut was made
	corrupt bool  // the file was not a segment at all (bad magic)
}

// recoverSegment scans the segment file starting at first: it checks every
// frame (length, CRC, consecutive seqs from first; in an encrypted segment
// also authenticity, a failure being an error) and truncates the file
// after the last good one. The file of the last segment stays open for
// appending; an empty earlier segment is removed. In Fsync mode the file
// is fsync'd, so that what recovery kept is durable.
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
	s := &segment{first: first, last: first - 1, path: path}
	var sc scan

	buf := make([]byte, encryptedHeaderSize)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return scan{}, fmt.Errorf("journal: read segment header %s: %w", path, err)
	}
	h, err := j.parseHeader(path, buf[:n])
	if err != nil {
		return scan{}, err
	}
	switch {
	case h.bad:
		// Not a segment of ours: set it aside rather than destroy it.
		sc.cut, sc.reason, sc.corrupt = size, errors.New("bad magic"), true
		f.Close()
		if err := os.Rename(path, path+".corrupt"); err != nil {
			return scan{}, fmt.Errorf("journal: set aside corrupt segment: %w", err)
		}
		if !last {
			return sc, nil
		}
		s, err := createSegment(j.opts.Dir, first, j.key)
		if err != nil {
			return scan{}, err
		}
		sc.seg = s
		return sc, nil
	case h.torn:
		// Torn while being created: no records, nothing lost.
		if !last {
			break // removed below
		}
		hdr, sl, err := newHeader(j.key)
		if err != nil {
			return scan{}, err
		}
		if err := f.Truncate(0); err != nil {
			return scan{}, fmt.Errorf("journal: truncate segment %s: %w", path, err)
		}
		if _, err := f.WriteAt(hdr, 0); err != nil {
			return scan{}, fmt.Errorf("journal: write segment header %s: %w", path, err)
		}
		s.hdr, s.size, s.sealer = int64(len(hdr)), int64(len(hdr)), sl
	default:
		s.hdr, s.size, s.sealer = h.size, h.size, h.sealer
		var r frameReader
		r.reset(f, h.size, size)
		good := h.size // end of the last good frame
		for good < size {
			fr, err := r.next()
			if err == nil && s.sealer != nil {
				// The CRC checks out: the frame is as written, or was
				// altered on purpose. Neither cut (it may be followed by
				// good records) nor accepted.
				if err := openFrame(s.sealer, &fr); err != nil {
					return scan{}, fmt.Errorf("journal: segment %s: record at offset %d (seq %d): %w", path, fr.off, fr.seq, err)
				}
				if fr.seq != s.last+1 {
					return scan{}, fmt.Errorf("journal: segment %s: record %d at offset %d where record %d belongs (moved or copied): %w",
						path, fr.seq, fr.off, s.last+1, ErrTampered)
				}
			}
			if err == nil && fr.seq != s.last+1 {
				err = errSeq
			}
			if err != nil {
				if !isCorrupt(err) {
					return scan{}, fmt.Errorf("journal: read segment %s: %w", path, err)
				}
				sc.reason = err
				break
			}
			s.note(fr.seq, fr.off, fr.time)
			s.last = fr.seq
			sc.records++
			good = r.off
		}
		s.size = good
		sc.cut = size - good
		if sc.cut > 0 {
			if err := f.Truncate(s.size); err != nil {
				return scan{}, fmt.Errorf("journal: truncate segment %s: %w", path, err)
			}
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
	size   int64        // bytes of the header
	sealer *seal.Sealer // nil: a plain segment
	torn   bool         // the file ends within the header: torn while being created, it holds no records
	bad    bool         // not a segment (bad magic)
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
	switch v := binary.LittleEndian.Uint32(b[8:]); v {
	case formatVersion:
		if len(b) < headerSize {
			return header{torn: true}, nil
		}
		if j.key != nil {
			return header{}, fmt.Errorf("journal: segment %s is not encrypted, but a key is set; "+
				"an encrypted journal does not continue a plain one (open it without the key, or drain it and remove its segments): %w",
				path, ErrWrongKey)
		}
		return header{size: headerSize}, nil
	case encryptedVersion:
		if len(b) < encryptedHeaderSize {
			return header{torn: true}, nil
		}
		if j.key == nil {
			return header{}, fmt.Errorf("journal: segment %s has format version %d (encrypted), and no key is set: %w", path, v, ErrWrongKey)
		}
		sl, err := openSealedHeader(j.key, b[:encryptedHeaderSize])
		if errors.Is(err, ErrWrongKey) {
			return header{}, fmt.Errorf("journal: segment %s was written with another key (or its header was altered): %w", path, err)
		}
		if err != nil {
			return header{}, fmt.Errorf("journal: segment %s: %w", path, err)
		}
		return header{size: encryptedHeaderSize, sealer: sl}, nil
	default:
		return header{}, fmt.Errorf("journal: segment %s has format version %d; this sluice reads versions %d (plain) and %d (encrypted)",
			path, v, formatVersion, encryptedVersion)
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
