package ingest

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
)

// bytesConn is a connection whose peer sent data and then closed; what is
// written to it (a DISCONNECT saying why) is kept.
type bytesConn struct {
	net.Conn
	r       *bytes.Reader
	written bytes.Buffer
}

func (c *bytesConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *bytesConn) Write(p []byte) (int, error) { return c.written.Write(p) }

// FuzzReadConnect feeds the framing every client's bytes go through: the
// first packet must be a whole CONNECT within the size limit; what is
// handed on is the client's bytes, unchanged, a whole packet at a time;
// nothing panics.
func FuzzReadConnect(f *testing.F) {
	f.Add([]byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 1, 'p', 0xc0, 0})
	f.Add([]byte{0x10, 1, 0, 0x30, 3, 0, 1, 'a', 0x30, 0xff, 0xff, 0x7f})
	f.Add([]byte{0x10, 0x80, 0x80, 0x80, 0x80, 0x01})
	f.Add([]byte{0x10, 0xff, 0xff, 0xff, 0x7f})
	f.Add([]byte{0x30, 3, 0, 1, 'a'})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 1024
		c := &clientConn{Conn: &bytesConn{r: bytes.NewReader(data)}}
		if err := c.readConnect(limit); err != nil {
			return
		}
		if data[0] != 0x10 {
			t.Fatalf("took a first packet of type %#x", data[0])
		}
		if n := c.connectLen(); n > limit+4 {
			t.Fatalf("took a CONNECT of %d bytes over the limit %d", n, limit)
		}
		got, _ := io.ReadAll(c)
		if !bytes.HasPrefix(data, got) {
			t.Fatalf("handed on %x, which is not what the client sent (%x)", got, data)
		}
	})
}

// BenchmarkPacketReader measures what the framing costs per packet: the
// same stream of 200-byte PUBLISHes read through bufio (as mochi reads a
// connection) directly, and through the packetReader.
func BenchmarkPacketReader(b *testing.B) {
	pk := append([]byte{0x30, 198, 0, 10}, "plant/a/b/"...)
	pk = append(pk, bytes.Repeat([]byte("x"), 200-len(pk))...)
	stream := bytes.Repeat(pk, 1000)
	read := func(b *testing.B, wrap func(io.Reader) io.Reader) {
		b.SetBytes(int64(len(stream)))
		buf := make([]byte, 4096)
		for b.Loop() {
			r := wrap(bytes.NewReader(stream))
			for {
				if _, err := r.Read(buf); err != nil {
					break
				}
			}
		}
	}
	b.Run("direct", func(b *testing.B) {
		read(b, func(r io.Reader) io.Reader { return bufio.NewReaderSize(r, 4096) })
	})
	b.Run("framed", func(b *testing.B) {
		read(b, func(r io.Reader) io.Reader {
			return bufio.NewReaderSize(&packetReader{src: newConnReader(r), max: 1 << 20}, 4096)
		})
	})
}
