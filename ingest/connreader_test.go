package ingest

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

// TestConnReader reads a stream through connReader in random steps, from
// sources that return it in various pieces, and checks every byte; and
// that the large buffer is taken only when the small one fills.
func TestConnReader(t *testing.T) {
	stream := make([]byte, 50_000)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range stream {
		stream[i] = byte(rng.Uint32())
	}
	sources := map[string]func() io.Reader{
		"whole":    func() io.Reader { return bytes.NewReader(stream) },
		"one byte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) },
		"halves":   func() io.Reader { return iotest.HalfReader(bytes.NewReader(stream)) },
		"data+eof": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(stream)) },
	}
	for name, src := range sources {
		t.Run(name, func(t *testing.T) {
			c := newConnReader(src())
			var got bytes.Buffer
			for got.Len() < len(stream) {
				if rng.IntN(2) == 0 {
					b, err := c.ReadByte()
					if err != nil {
						t.Fatalf("ReadByte at %d: %v", got.Len(), err)
					}
					got.WriteByte(b)
					continue
				}
				if n := c.Buffered(); n > 0 && !bytes.Equal(c.Peek(n), stream[got.Len():got.Len()+n]) {
					t.Fatalf("Peek at %d differs", got.Len())
				}
				n := min(1+rng.IntN(3000), len(stream)-got.Len())
				if err := c.copyTo(&got, n); err != nil {
					t.Fatalf("copyTo at %d: %v", got.Len(), err)
				}
			}
			if !bytes.Equal(got.Bytes(), stream) {
				t.Fatal("the bytes read differ from the stream")
			}
			if _, err := c.ReadByte(); err != io.EOF {
				t.Fatalf("after the stream: %v, want EOF", err)
			}
			// Sources that return all they can fill the small buffer; those
			// that return less never do.
			if large := len(c.buf) == largeReadBuf; large != (name == "whole" || name == "data+eof") {
				t.Errorf("buffer of %d bytes", len(c.buf))
			}
		})
	}
	t.Run("a quiet client keeps the small buffer", func(t *testing.T) {
		var pings []byte
		for range 100 {
			pings = append(pings, 0xc0, 0)
		}
		c := newConnReader(iotest.OneByteReader(bytes.NewReader(pings)))
		for range pings {
			if _, err := c.ReadByte(); err != nil {
				t.Fatal(err)
			}
		}
		if len(c.buf) != smallReadBuf {
			t.Fatalf("buffer of %d bytes, want the small one", len(c.buf))
		}
	})
}
