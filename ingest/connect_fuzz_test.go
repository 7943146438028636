package ingest

import (
	"bytes"
	"io"
	"net"
	"testing"
)

// bytesConn is a connection whose peer sent data and then closed.
type bytesConn struct {
	net.Conn
	r *bytes.Reader
}

func (c *bytesConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// FuzzReadConnect feeds the check every connection's first bytes go
// through: it takes a whole CONNECT of at most the size limit and gives it
// back byte for byte, and refuses anything else, without panicking.
func FuzzReadConnect(f *testing.F) {
	f.Add([]byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 1, 'p', 0xc0, 0})
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
		got, _ := io.ReadAll(c)
		if !bytes.Equal(got, data) {
			t.Fatalf("gave back %x, want %x", got, data)
		}
		if n := c.connectLen(); n > limit+4 {
			t.Fatalf("took a CONNECT of %d bytes over the limit %d", n, limit)
		}
	})
}
