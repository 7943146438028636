package decode

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
)

// snappyMagic opens a snappy framed stream (its stream identifier chunk).
var snappyMagic = []byte{0xff, 0x06, 0x00, 0x00, 's', 'N', 'a', 'P', 'p', 'Y'}

// emptyZlib is a complete zlib stream of no data: zlib.NewReader needs a
// valid header to build the reader that later calls Reset.
var emptyZlib = []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01}

// zstdHeadroom is room past the output limit in the zstd buffer: a zstd
// block can add up to 128 KiB at once, and with this room a frame that
// fails while its output is still within the limit failed on bad data, not
// for want of space.
const zstdHeadroom = 128<<10 + 64

// transform runs the transform step s over in and returns its output, which
// stays valid until the step after next.
func (d *Decoder) transform(s step, in []byte) ([]byte, error) {
	out := d.bufs[d.next][:0]
	var err error
	switch s {
	case stepBase64:
		out, err = d.unbase64(in, out)
	case stepGzip:
		out, err = d.gunzip(in, out)
	case stepZlib:
		out, err = d.unzlib(in, out)
	case stepDeflate:
		out, err = d.inflate(in, out)
	case stepZstd:
		out, err = d.unzstd(in, out)
	case stepSnappy:
		out, err = d.unsnappy(in, out)
	default:
		panic("decode: transform called with " + s.String())
	}
	d.bufs[d.next] = out // keep the buffer, grown or not
	if err != nil {
		return nil, err
	}
	d.next ^= 1
	return out, nil
}

// untransform forgets the last transform, making its buffer the next one
// written (auto uses it when a trial base64 decoding led nowhere).
func (d *Decoder) untransform() { d.next ^= 1 }

// unbase64 decodes standard or URL-safe base64, padded or not; whitespace
// anywhere is ignored.
func (d *Decoder) unbase64(in, out []byte) ([]byte, error) {
	src := in
	if bytes.ContainsAny(in, " \t\r\n") {
		d.scratch = d.scratch[:0]
		for _, c := range in {
			if !isSpace(c) {
				d.scratch = append(d.scratch, c)
			}
		}
		src = d.scratch
	}
	unpadded := bytes.TrimRight(src, "=")
	if len(src)-len(unpadded) > 2 {
		return out, &stepError{stepBase64, fmt.Errorf("too much padding")}
	}
	enc := base64.RawStdEncoding
	if bytes.ContainsAny(unpadded, "-_") {
		enc = base64.RawURLEncoding
	}
	size := enc.DecodedLen(len(unpadded))
	if size > d.outputLimit() {
		return out, d.tooLarge(stepBase64, len(in))
	}
	out = grow(out, size)[:size]
	n, err := enc.Decode(out, unpadded)
	if err != nil {
		var corrupt base64.CorruptInputError
		if errors.As(err, &corrupt) {
			where := ""
			if len(src) != len(in) {
				where = " (not counting whitespace)"
			}
			err = fmt.Errorf("invalid data at byte %d%s", int64(corrupt), where)
		}
		return out[:0], &stepError{stepBase64, err}
	}
	return out[:n], nil
}

func (d *Decoder) gunzip(in, out []byte) ([]byte, error) {
	d.src.Reset(in)
	if d.gz == nil {
		d.gz = new(gzip.Reader)
	}
	if err := d.gz.Reset(&d.src); err != nil {
		return out, &stepError{stepGzip, err}
	}
	return d.readAll(stepGzip, d.gz, len(in), out)
}

func (d *Decoder) unzlib(in, out []byte) ([]byte, error) {
	if d.zl == nil {
		zl, err := zlib.NewReader(bytes.NewReader(emptyZlib))
		if err != nil {
			panic("decode: zlib reader: " + err.Error())
		}
		d.zl = zl
	}
	d.src.Reset(in)
	if err := d.zl.(zlib.Resetter).Reset(&d.src, nil); err != nil {
		return out, &stepError{stepZlib, err}
	}
	return d.readAll(stepZlib, d.zl, len(in), out)
}

func (d *Decoder) inflate(in, out []byte) ([]byte, error) {
	d.src.Reset(in)
	if d.fl == nil {
		d.fl = flate.NewReader(&d.src)
	} else if err := d.fl.(flate.Resetter).Reset(&d.src, nil); err != nil {
		return out, &stepError{stepDeflate, err}
	}
	return d.readAll(stepDeflate, d.fl, len(in), out)
}

// unzstd decodes in one call into a buffer whose capacity bounds the output
// (WithDecodeAllCapLimit). The window size a frame declares does not matter
// to DecodeAll, which uses the output as its window, so it is not limited
// (WithDecoderMaxMemory would limit it, and so turn away legitimate frames
// made by streaming encoders, which declare windows of 8 MiB).
func (d *Decoder) unzstd(in, out []byte) ([]byte, error) {
	if d.zs == nil {
		zs, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			panic("decode: zstd decoder: " + err.Error())
		}
		d.zs = zs
	}
	limit := d.outputLimit()
	size := limit + 1 + zstdHeadroom
	out = grow(out, size)
	out, err := d.zs.DecodeAll(in, out[:0:size])
	switch {
	case len(out) > limit || errors.Is(err, zstd.ErrDecoderSizeExceeded):
		return out[:0], d.tooLarge(stepZstd, len(in))
	case err != nil:
		return out[:0], &stepError{stepZstd, err}
	}
	return out, nil
}

// unsnappy decodes the framed format if in starts with its stream
// identifier, else the block format.
func (d *Decoder) unsnappy(in, out []byte) ([]byte, error) {
	if bytes.HasPrefix(in, snappyMagic) {
		d.src.Reset(in)
		if d.sn == nil {
			d.sn = snappy.NewReader(&d.src)
		} else {
			d.sn.Reset(&d.src)
		}
		return d.readAll(stepSnappy, d.sn, len(in), out)
	}
	size, err := snappy.DecodedLen(in)
	if err != nil && !errors.Is(err, snappy.ErrTooLarge) {
		return out, &stepError{stepSnappy, err}
	}
	if err != nil || size > d.outputLimit() {
		return out, d.tooLarge(stepSnappy, len(in))
	}
	out = grow(out, size)
	decoded, err := snappy.Decode(out[:size], in)
	if err != nil {
		return out[:0], &stepError{stepSnappy, err}
	}
	return decoded, nil
}

// readAll reads a decompressor's output into out, through a LimitedReader
// that stops one byte past outputLimit: nothing past that is decompressed,
// and out grows only as the output does.
func (d *Decoder) readAll(s step, r io.Reader, in int, out []byte) ([]byte, error) {
	limit := d.outputLimit()
	d.lim = io.LimitedReader{R: r, N: int64(limit) + 1}
	out = out[:0]
	if cap(out) == 0 {
		out = make([]byte, 0, min(max(4*in, 4096), limit+1))
	}
	for idle := 0; ; {
		if len(out) == cap(out) {
			out = grow(out, min(2*cap(out), limit+1))
		}
		n, err := d.lim.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		switch {
		case err == io.EOF:
			if len(out) > limit {
				return out[:0], d.tooLarge(s, in)
			}
			return out, nil
		case err != nil:
			return out[:0], &stepError{s, err}
		case n == 0:
			if idle++; idle == 100 {
				return out[:0], &stepError{s, io.ErrNoProgress}
			}
		default:
			idle = 0
		}
	}
}

// grow returns b with a capacity of at least n, keeping its contents.
func grow(b []byte, n int) []byte {
	if cap(b) >= n {
		return b
	}
	g := make([]byte, len(b), n)
	copy(g, b)
	return g
}
