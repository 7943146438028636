package ingest

import (
	"bytes"
	"io"
)

// connReader buffers a client connection's reads, as bufio.Reader would,
// but starts with a small buffer of its own and takes a large one only
// once the client sends more than fits in it: a device that connects and
// then only pings (most of a fleet, most of the time) never holds 4 KiB of
// read buffer while it waits. A connection that has needed the large
// buffer keeps it. (sluice bench -scale: the listener's 4 KiB buffer was
// most of what sluice adds per connection to the bare broker's cost.)
type connReader struct {
	src   io.Reader
	buf   []byte // small[:], or a large buffer once one was needed
	r, w  int    // buf[r:w] is read and not yet consumed
	full  bool   // the last read filled the buffer: more is probably waiting
	err   error  // the read error, returned once the buffer is consumed
	small [smallReadBuf]byte
}

const (
	smallReadBuf = 256 // a CONNECT, a PINGREQ, a small PUBLISH
	largeReadBuf = 4 << 10
)

func newConnReader(src io.Reader) *connReader {
	c := &connReader{src: src}
	c.buf = c.small[:]
	return c
}

// fill reads once more from the connection, after moving what is unread to
// the start of the buffer, into a large one when the small one filled up.
func (c *connReader) fill() {
	if c.full && len(c.buf) < largeReadBuf {
		large := make([]byte, largeReadBuf)
		c.w = copy(large, c.buf[c.r:c.w])
		c.r = 0
		c.buf = large
	} else if c.r > 0 {
		copy(c.buf, c.buf[c.r:c.w])
		c.w -= c.r
		c.r = 0
	}
	n, err := c.src.Read(c.buf[c.w:])
	c.full = c.w+n == len(c.buf)
	c.w += n
	if err != nil {
		c.err = err
	}
}

// Buffered returns the number of bytes that can be read without waiting.
func (c *connReader) Buffered() int { return c.w - c.r }

// Peek returns the next n bytes, n at most Buffered, without consuming them.
func (c *connReader) Peek(n int) []byte { return c.buf[c.r : c.r+n] }

// ReadByte reads one byte, waiting for it if need be.
func (c *connReader) ReadByte() (byte, error) {
	for c.r == c.w {
		if c.err != nil {
			return 0, c.err
		}
		c.fill()
	}
	b := c.buf[c.r]
	c.r++
	return b, nil
}

// copyTo appends the next n bytes to dst as they arrive, so that dst grows
// only by what the client has sent.
func (c *connReader) copyTo(dst *bytes.Buffer, n int) error {
	for n > 0 {
		if c.r == c.w {
			if c.err != nil {
				return c.err
			}
			c.fill()
			continue
		}
		k := min(n, c.w-c.r)
		dst.Write(c.buf[c.r : c.r+k])
		c.r += k
		n -= k
	}
	return nil
}
