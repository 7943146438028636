package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"time"
)

// On-disk layout; see the package documentation.
const (
	magic         = "SLUICEJ1"
	formatVersion = 1
	headerSize    = 16 // magic, uint32 version, uint32 reserved (zero); an encrypted segment's is longer (crypt.go)

	frameHead     = 8                      // uint32 length, uint32 CRC-32C
	recordHead    = 17                     // uint64 seq, int64 unix-nano time, kind
	frameOverhead = frameHead + recordHead // bytes a frame adds to its data

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
	errLength   = errors.New("bad frame length")
	errChecksum = errors.New("checksum mismatch")
	errSeq      = errors.New("unexpected seq")
)

func segmentName(first uint64) string { return fmt.Sprintf("%020d.seg", first) }

func segmentHeader() []byte {
	h := make([]byte, headerSize)
	copy(h, magic)
	binary.LittleEndian.PutUint32(h[8:], formatVersion)
	return h
}

// appendFrame appends one frame to dst.
func appendFrame(dst []byte, seq uint64, t int64, kind byte, data []byte) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, frameOverhead+len(data))...)
	encodeFrame(dst[n:n:len(dst)], seq, t, kind, data)
	return dst
}

// encodeFrame writes one frame into buf (reused when large enough).
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
	off  int64  // offset of the frame in its file
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
}

// reset positions the reader at off in f, dropping buffered bytes.
func (r *frameReader) reset(f *os.File, off, limit int64) {
	r.f, r.off, r.limit = f, off, limit
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

// next decodes the frame at r.off and checks its CRC.
func (r *frameReader) next() (frame, error) {
	if err := r.ensure(frameHead); err != nil {
		return frame{}, err
	}
	length := binary.LittleEndian.Uint32(r.buf[r.start:])
	if length < recordHead || length > recordHead+sealOverhead+MaxRecordBytes {
		return frame{}, errLength
	}
	total := frameHead + int(length)
	if err := r.ensure(total); err != nil {
		return frame{}, err
	}
	b := r.buf[r.start : r.start+total]
	if crc32.Checksum(b[frameHead:], castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
		return frame{}, errChecksum
	}
	f := frame{
		seq:  binary.LittleEndian.Uint64(b[8:]),
		time: int64(binary.LittleEndian.Uint64(b[16:])),
		kind: b[24],
		data: b[frameOverhead:total:total],
		ad:   b[frameHead:frameOverhead:frameOverhead],
		off:  r.off,
		size: int64(total),
	}
	r.start += total
	r.off += int64(total)
	return f, nil
}
