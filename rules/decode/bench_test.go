package decode

import (
	"bytes"
	"testing"

	"github.com/klauspost/compress/gzip"
)

// benchPayload is a typical flat telemetry object: 256 bytes, 12 fields of
// strings, numbers and a bool.
var benchPayload = []byte(`{"device":"boiler-07","site":"north","ts":1718000000123,"temperature":61.25,` +
	`"humidity":40.5,"pressure":1013.2,"rpm":1480,"status":"running","alarm":false,` +
	`"fw":"2.4.1-rc3","voltage":229.8,"note":"line 3, bay 12: scheduled service due on 2026-07-14 at 9:00"}`)

func benchDecode(b *testing.B, chain []string, payload []byte) {
	c, err := ParseChain(chain)
	if err != nil {
		b.Fatal(err)
	}
	d := NewDecoder(Limits{})
	if _, err := d.Decode(c, payload, Options{}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Decode(c, payload, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeJSON(b *testing.B) { benchDecode(b, []string{"json"}, benchPayload) }

func BenchmarkDecodeAuto(b *testing.B) { benchDecode(b, []string{"auto"}, benchPayload) }

func BenchmarkDecodeGzipJSON(b *testing.B) {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(benchPayload)
	w.Close()
	benchDecode(b, []string{"auto"}, buf.Bytes())
}
