package decode

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// bomb is a payload that expands far past the limits.
type bomb struct {
	step    string
	payload []byte
}

// bombs compress 2 MiB of JSON-ish padding; each compressed payload is
// about 1 to 2 KB or less.
func bombs() []bomb {
	plain := append([]byte(`{"a":"`), bytes.Repeat([]byte("0"), 2<<20)...)
	plain = append(plain, `"}`...)
	return []bomb{
		{"gzip", gzipped(plain)},
		{"zlib", zlibbed(plain)},
		{"deflate", deflated(plain)},
		{"zstd", zstded(plain)},                                // declares its size
		{"zstd", zstdStream(plain, 8<<20)},                     // does not
		{"zstd", zstdStream(plain, 1<<20)},                     // nor this, with a smaller window
		{"snappy", snappyFramed(plain)},                        // about 100 KB: snappy compresses 20:1 at most
		{"snappy", snappyBlock(plain)},                         // declares its size
		{"base64", b64(b64(bytes.Repeat([]byte("x"), 1<<20)))}, // no bomb, just too big
	}
}

func TestDecompressionBombs(t *testing.T) {
	for _, lim := range []struct {
		name   string
		limits Limits
		msg    string // %s is the step
	}{
		{"MaxSize", Limits{MaxRatio: -1}, "%s: output exceeds the 1048576-byte limit (input "},
		{"MaxRatio", Limits{}, "%s: output exceeds "},
	} {
		for _, b := range bombs() {
			name := fmt.Sprintf("%s/%s/%d bytes", lim.name, b.step, len(b.payload))
			t.Run(name, func(t *testing.T) {
				if b.step == "base64" && lim.name == "MaxRatio" {
					t.Skip("base64 shrinks, so the ratio never applies")
				}
				for _, chain := range [][]string{{b.step, "json"}, {"auto"}} {
					if chain[0] == "auto" && (b.step == "deflate" || b.step == "snappy" && !bytes.HasPrefix(b.payload, snappyMagic)) {
						continue // auto does not detect raw DEFLATE or the snappy block format
					}
					d := NewDecoder(lim.limits)
					c := mustChain(t, chain...)
					var err error
					peak := allocated(func() { _, err = d.Decode(c, b.payload, Options{}) })
					if !errors.Is(err, ErrTooLarge) {
						t.Fatalf("%s: error = %v, want one wrapping ErrTooLarge", c, err)
					}
					if want := fmt.Sprintf(lim.msg, b.step); !strings.Contains(err.Error(), want) ||
						!strings.HasSuffix(err.Error(), "rejected as a decompression bomb") {
						t.Fatalf("%s: error = %q, want it to contain %q", c, err, want)
					}
					t.Logf("%s: %v; allocated %d KiB", c, err, peak>>10)
					if peak > 4<<20 {
						t.Errorf("%s: allocated %d bytes to reject a %d-byte bomb", c, peak, len(b.payload))
					}
					checkBuffers(t, d)
				}
			})
		}
	}
}

func TestLimitMessages(t *testing.T) {
	payload := gzipped(bytes.Repeat([]byte(" "), 200<<10))
	for _, tt := range []struct {
		limits Limits
		want   string
	}{
		{Limits{MaxRatio: -1, MaxSize: 100 << 10},
			fmt.Sprintf("gzip: output exceeds the 102400-byte limit (input %d bytes): rejected as a decompression bomb", len(payload))},
		{Limits{},
			fmt.Sprintf("gzip: output exceeds 65536 bytes, 100 times the %d-byte payload: rejected as a decompression bomb", len(payload))},
	} {
		_, err := NewDecoder(tt.limits).Decode(mustChain(t, "gzip", "json"), payload, Options{})
		if err == nil || err.Error() != tt.want {
			t.Errorf("limits %+v: error = %v, want %q", tt.limits, err, tt.want)
		}
	}
}

func TestWithinLimits(t *testing.T) {
	// A small payload may expand more than MaxRatio while its output stays
	// under 64 KiB.
	small := append(bytes.Repeat([]byte(" "), 60<<10), `{"a":1}`...)
	// A large one may expand up to MaxRatio and MaxSize.
	var large bytes.Buffer
	large.WriteString(`{"readings":[`)
	for i := range 20000 {
		if i > 0 {
			large.WriteByte(',')
		}
		fmt.Fprintf(&large, `{"t":%d.5,"id":"sensor-%d"}`, i, i%10)
	}
	large.WriteString(`]}`)
	for _, tt := range []struct {
		name     string
		payload  []byte
		opts     Options
		readings int
	}{
		{"ratio over 100 under 64 KiB", gzipped(small), Options{}, 1},
		{"600 KB of JSON", zstded(large.Bytes()), Options{Split: "readings"}, 20000},
		{"600 KB of base64 JSON", b64(zstded(large.Bytes())), Options{Split: "readings"}, 20000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder(Limits{})
			rs, err := d.Decode(mustChain(t, "auto"), tt.payload, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != tt.readings {
				t.Errorf("%d readings, want %d", len(rs), tt.readings)
			}
			checkReadings(t, d, rs)
		})
	}
}

func TestSmallMaxSize(t *testing.T) {
	d := NewDecoder(Limits{MaxSize: 100})
	_, err := d.Decode(mustChain(t, "base64", "json"), b64(bytes.Repeat([]byte("x"), 101)), Options{})
	if !errors.Is(err, ErrTooLarge) || !strings.HasPrefix(err.Error(), "base64: output exceeds the 100-byte limit (input 136 bytes)") {
		t.Fatalf("error = %v", err)
	}
	if _, err := d.Decode(mustChain(t, "base64", "json"), b64([]byte(`{"a":"`+strings.Repeat("x", 92)+`"}`)), Options{}); err != nil {
		t.Fatalf("100 bytes: %v", err)
	}
}

// Split multiplies the top-level fields by the number of elements: that is
// bounded too.
func TestFieldLimit(t *testing.T) {
	var top, elems strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&top, `"f%d":%d,`, i, i)
		if i > 0 {
			elems.WriteByte(',')
		}
		elems.WriteString(`{}`)
	}
	split := []byte(`{` + top.String() + `"readings":[` + elems.String() + `]}`)
	many := []byte("[" + strings.Repeat("{},", 300000) + "{}]")
	for _, tt := range []struct {
		name    string
		payload []byte
		opts    Options
	}{
		{"split", split, Options{Split: "readings"}},
		{"readings", many, Options{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder(Limits{})
			var err error
			peak := allocated(func() { _, err = d.Decode(mustChain(t, "json"), tt.payload, tt.opts) })
			if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "json: payload gives more than 262144 fields and readings") {
				t.Fatalf("error = %v", err)
			}
			if peak > 32<<20 {
				t.Errorf("allocated %d bytes for a %d-byte payload", peak, len(tt.payload))
			}
		})
	}
}

// allocated returns the bytes that f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
