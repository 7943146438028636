package journal

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"time"

	"github.com/sluicehq/sluice/internal/seal"
)

// On-disk layout; see the package documentation.
const (
	magic = "SLUICEJ1"
	// Format versions. 3 (plain) and 4 (encrypted) are written; 1 and 2,
	// their forms before each frame began with the segment's sync word,
	// are still read.
	versionPlain1  = 1
	versionSealed1 = 2
	versionPlain   = 3
	versionSealed  = 4
	headerSize     = 16 // plain: magic, uint32 version, uint32 sync word (3) or zero (1); an encrypted segment's is longer (crypt.go)

	syncSize      = 4                      // a segment's sync word, before each of its frames (formats 3 and 4)
	frameHead     = 8                      // uint32 length, uint32 CRC-32C
	recordHead    = 17                     // uint64 seq, int64 unix-nano time, kind
	frameOverhead = frameHead + recordHead // bytes a frame adds to its data, sync word not counted

	readBufSize = 64 << 10           // buffered reads of segment files
	indexEvery  = 8 << 10            // a sparse index entry at least every this many bytes ...
	indexTime   = int64(time.Second) // ... and every this long
)

// MaxRecordBytes is the largest data a record may carry: the largest MQTT
// payload (256 MiB). It also bounds the frame length recovery believes
// (plus what sealing adds, in an encrypted segment).
const MaxRecordBytes = 256 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Frame errors, as recovery and readers report them.
var (
	errShort    = errors.New("short frame")
	errSync     = errors.New("no sync word")
	errLength   = errors.New("bad frame length")
	errChecksum = errors.New("checksum mismatch")
	errSeq      = errors.New("unexpected seq")
)

func segmentName(first uint64) string { return fmt.Sprintf("%020d.seg", first) }

// newSync draws a segment's sync word: random, so that no payload can hold
// a frame a reader resynchronising would take for one of the segment's.
func newSync() []byte {
	b := make([]byte, syncSize)
	for bytes.Equal(b, make([]byte, syncSize)) {
		rand.Read(b)
	}
	return b
}

// plainHeader returns the header of a new plain segment with sync word sync.
func plainHeader(sync []byte) []byte {
	h := make([]byte, headerSize)
	copy(h, magic)
	binary.LittleEndian.PutUint32(h[8:], versionPlain)
	copy(h[12:], sync)
	return h
}

// framing is how a segment's frames are laid out: after the segment's sync
// word (format 3 and 4) or not (1 and 2), their data sealed (encrypted) or
// not.
type framing struct {
	sync   []byte       // nil: format 1 or 2
	sealer *seal.Sealer // nil: plain
}

// minFrame is the smallest frame the segment can hold (no data).
func (fm framing) minFrame() int64 {
	n := int64(frameOverhead + len(fm.sync))
	if fm.sealer != nil {
		n += sealOverhead
	}
	return n
}

// appendFrame appends one frame, sync word first, to dst.
func appendFrame(dst, sync []byte, seq uint64, t int64, kind byte, data []byte) []byte {
	dst = append(dst, sync...)
	n := len(dst)
	dst = append(dst, make([]byte, frameOverhead+len(data))...)
	encodeFrame(dst[n:n:len(dst)], seq, t, kind, data)
	return dst
}

// encodeFrame writes one frame, without sync word, into buf (reused when
// large enough).
func encodeFrame(buf []byte, seq uint64, t int64, kind byte, data []byte) []byte {
	n := frameOverhead + len(data)
	if cap(buf) < n {
		buf = make([]byte, n, max(n, 2*cap(buf), 512))
	}
	buf = buf[:n]
	binary.LittleEndian.PutUint32(buf[0:], uint32(recordHead+len(data)))
	binary.LittleEndian.PutUint64(buf[8:], seq)
	binary.LittleEndian.PutUint64(buf[16:], uint64(t))
	buf[24] = kind
	copy(buf[frameOverhead:], data)
	binary.LittleEndian.PutUint32(buf[4:], crc32.Checksum(buf[frameHead:], castagnoli))
	return buf
}

// frame is one decoded record. data points into the frameReader's buffer.
type frame struct {
	seq  uint64
	time int64
	kind byte
	data []byte
	ad   []byte // the frame's seq, time and kind as stored: an encrypted record's additional data
	off  int64  // offset of the frame in its file (of its sync word, if any)
	size int64  // bytes of the whole frame
}

// frameReader reads frames from a segment file with buffered positional
// reads, never at or past limit: bytes past limit may be a frame still being
// written, and a buffered read must not capture half of it.
type frameReader struct {
	f          *os.File
	buf        []byte
	start, end int   // unread bytes are buf[start:end]
	off        int64 // file offset of buf[start]: the next frame
	limit      int64
	fm         framing
	damage     error // what nextAfter found damaged on its way to the frame it returned, if anything
}

// reset positions the reader at off in f, a segment framed as fm,
// dropping buffered bytes.
func (r *frameReader) reset(f *os.File, fm framing, off, limit int64) {
	r.f, r.fm, r.off, r.limit = f, fm, off, limit
	r.start, r.end = 0, 0
}

// ensure makes at least n unread bytes available in the buffer.
func (r *frameReader) ensure(n int) error {
	if r.end-r.start >= n {
		return nil
	}
	if r.off+int64(n) > r.limit {
		return errShort
	}
	if cap(r.buf) < n {
		nb := make([]byte, max(n, readBufSize))
		copy(nb, r.buf[r.start:r.end])
		r.buf = nb
	} else {
		r.buf = r.buf[:cap(r.buf)]
		copy(r.buf, r.buf[r.start:r.end])
	}
	r.end -= r.start
	r.start = 0
	for r.end < n {
		at := r.off + int64(r.end)
		want := min(int64(len(r.buf)-r.end), r.limit-at)
		m, err := r.f.ReadAt(r.buf[r.end:r.end+int(want)], at)
		r.end += m
		if r.end >= n {
			return nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errShort
			}
			return err
		}
	}
	return nil
}

// advance moves the reader n bytes on.
func (r *frameReader) advance(n int64) {
	if n <= int64(r.end-r.start) {
		r.start += int(n)
	} else {
		r.start, r.end = 0, 0
	}
	r.off += n
}

// next decodes the frame at r.off into f, checks its framing and CRC, and
// moves past it. A frame whose seq is outside (lo, hi] is refused (errSeq) before
// the rest of it is read: a reader resynchronising past damage tries many
// places, and must not read and checksum what a garbage length claims at
// each. On an error the reader stays at the frame.
func (r *frameReader) next(f *frame, lo, hi uint64) error {
	p := len(r.fm.sync)
	if err := r.ensure(p + frameHead + 8); err != nil {
		return err
	}
	b := r.buf[r.start:r.end]
	if p > 0 && binary.LittleEndian.Uint32(b) != binary.LittleEndian.Uint32(r.fm.sync) {
		return errSync
	}
	length := binary.LittleEndian.Uint32(b[p:])
	if length < recordHead || length > recordHead+sealOverhead+MaxRecordBytes {
		return errLength
	}
	if seq := binary.LittleEndian.Uint64(b[p+frameHead:]); seq <= lo || seq > hi {
		return errSeq
	}
	total := p + frameHead + int(length)
	if err := r.ensure(total); err != nil {
		return err
	}
	h := r.buf[r.start+p : r.start+total]
	if crc32.Checksum(h[frameHead:], castagnoli) != binary.LittleEndian.Uint32(h[4:]) {
		return errChecksum
	}
	*f = frame{
		seq:  binary.LittleEndian.Uint64(h[8:]),
		time: int64(binary.LittleEndian.Uint64(h[16:])),
		kind: h[24],
		data: h[frameOverhead:len(h):len(h)],
		ad:   h[frameHead:frameOverhead:frameOverhead],
		off:  r.off,
		size: int64(total),
	}
	r.advance(int64(total))
	return nil
}

// nextAfter reads into fr the next good frame after the record prev, passing
// over damage: the frame at r.off, or, if that one is damaged, the first
// good frame after it (resynchronising). A frame found past damage is good
// if its framing and CRC check out and its seq is in (prev, prev+1+g/m],
// g being the bytes passed over and m the smallest frame: the damaged bytes
// hold at most g/m records. (A resynchronising reader thus takes no frame
// that lies within a record's data, unless that data holds a frame of this
// segment, sync word included: the word is random, per segment.)
//
// At r.off itself, where the next frame belongs, a frame whose CRC checks
// out is taken as written: in a plain segment one with another seq is
// passed over whole; in an encrypted one it fails with ErrTampered, as
// does a frame that fails authentication (both were altered on purpose: a
// damaged frame fails its CRC). Frames of an encrypted segment from the
// record want on are authenticated and returned decrypted; those before
// it, which the caller passes over, are neither.
//
// It returns errShort when no good frame lies before the limit: the reader
// is then at the limit.
func (r *frameReader) nextAfter(fr *frame, prev, want uint64) error {
	r.damage = nil
	if r.off >= r.limit {
		return errShort
	}
	// Where the next frame belongs, whatever is there is read: a frame
	// as written is taken, or told out of place.
	err := r.next(fr, 0, math.MaxUint64)
	if err == nil && fr.seq == prev+1 && (r.fm.sealer == nil || fr.seq < want) {
		return nil // the common case
	}
	from, m := fr.off, r.fm.minFrame()
	if err != nil {
		from = r.off
	}
	for {
		gap := r.off - from
		if err == nil {
			gap = fr.off - from
		}
		if err == nil {
			placed := fr.seq > prev && fr.seq <= prev+1+uint64(gap/m)
			if r.fm.sealer != nil && (!placed || fr.seq >= want) {
				if err := openFrame(r.fm.sealer, fr); err != nil {
					return fmt.Errorf("record at offset %d (seq %d): %w", fr.off, fr.seq, err)
				}
				if !placed {
					return fmt.Errorf("record %d at offset %d where record %d belongs (moved or copied): %w",
						fr.seq, fr.off, prev+1, ErrTampered)
				}
			}
			if placed {
				return nil
			}
			if r.damage == nil {
				r.damage = fmt.Errorf("record %d out of place: %w", fr.seq, errSeq)
			}
			// A frame as written, out of place: the next one may belong.
		} else {
			if !isCorrupt(err) {
				return err
			}
			if r.damage == nil {
				r.damage = err
			}
			if !r.resync() {
				return errShort
			}
		}
		if r.off >= r.limit {
			return errShort
		}
		// Past damage, a frame is read only if its seq fits.
		err = r.next(fr, prev, prev+1+uint64((r.off-from)/m))
	}
}

// resync moves the reader from a damaged frame to the next place a frame
// may begin: the next occurrence of the segment's sync word or, in a
// segment of format 1 or 2, the next byte. It reports false, the reader
// at the limit, when there is none.
func (r *frameReader) resync() bool {
	if r.off >= r.limit {
		return false
	}
	r.advance(1)
	p := len(r.fm.sync)
	if p == 0 {
		if r.off+frameOverhead > r.limit {
			r.toLimit()
			return false
		}
		return true
	}
	for {
		if i := bytes.Index(r.buf[r.start:r.end], r.fm.sync); i >= 0 {
			r.advance(int64(i))
			return true
		}
		// Keep the last bytes: a sync word may begin among them.
		if n := r.end - r.start - (p - 1); n > 0 {
			r.advance(int64(n))
		}
		if r.ensure(min(readBufSize, int(r.limit-r.off))) != nil || r.end-r.start < p {
			r.toLimit()
			return false
		}
	}
}

// toLimit moves the reader to its limit: nothing more to read.
func (r *frameReader) toLimit() {
	r.start, r.end = 0, 0
	r.off = r.limit
}
