package decode

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math"
	"testing"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
)

// Encoders for building test payloads.

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zlibbed(b []byte) []byte {
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func deflated(b []byte) []byte {
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.BestCompression)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zstded(b []byte) []byte {
	enc, _ := zstd.NewWriter(nil)
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

// zstdStream compresses as a streaming encoder does: no content size in the
// frame header, and a declared window of window bytes.
func zstdStream(b []byte, window int) []byte {
	var buf bytes.Buffer
	w, _ := zstd.NewWriter(&buf, zstd.WithWindowSize(window))
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func snappyFramed(b []byte) []byte {
	var buf bytes.Buffer
	w := snappy.NewBufferedWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func snappyBlock(b []byte) []byte { return snappy.Encode(nil, b) }

func b64(b []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(b)) }

func b64url(b []byte) []byte { return []byte(base64.RawURLEncoding.EncodeToString(b)) }

// r builds a Reading from name, value pairs.
func r(kv ...any) Reading {
	var rd Reading
	for i := 0; i < len(kv); i += 2 {
		rd = append(rd, Field{Name: kv[i].(string), Value: kv[i+1]})
	}
	return rd
}

// show renders readings for comparison and messages.
func show(rs []Reading) string {
	var b bytes.Buffer
	for i, rd := range rs {
		if i > 0 {
			b.WriteString(" | ")
		}
		for j, f := range rd {
			if j > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%s=%#v", f.Name, f.Value)
		}
	}
	return b.String()
}

// checkReadings asserts what must hold of any successful decoding: every
// field has a name and a float64 (finite), string or bool value, names do
// not repeat within a reading, and the numbers of fields and readings are
// within the limit.
func checkReadings(t testing.TB, d *Decoder, rs []Reading) {
	t.Helper()
	total := len(rs)
	for i, rd := range rs {
		seen := make(map[string]bool, len(rd))
		for _, f := range rd {
			if f.Name == "" {
				t.Fatalf("reading %d has a field without a name: %s", i, show(rs))
			}
			if seen[f.Name] {
				t.Fatalf("reading %d repeats %q: %s", i, f.Name, show(rs))
			}
			seen[f.Name] = true
			switch v := f.Value.(type) {
			case float64:
				if math.IsNaN(v) || math.IsInf(v, 0) {
					t.Fatalf("field %q is %v", f.Name, v)
				}
			case string, bool:
			default:
				t.Fatalf("field %q has a value of type %T", f.Name, f.Value)
			}
		}
		total += len(rd)
	}
	if total > d.out.maxFields {
		t.Fatalf("%d fields and readings, more than the limit of %d", total, d.out.maxFields)
	}
}

// checkBuffers asserts that the decoder's buffers stay within the limits.
func checkBuffers(t testing.TB, d *Decoder) {
	t.Helper()
	most := d.limits.MaxSize + 1 + zstdHeadroom
	for i, b := range d.bufs {
		if cap(b) > most {
			t.Fatalf("buffer %d has grown to %d bytes, past %d", i, cap(b), most)
		}
	}
}

func mustChain(t testing.TB, steps ...string) *Chain {
	t.Helper()
	c, err := ParseChain(steps)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
