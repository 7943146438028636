package conf

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Bytes is a size in bytes, written in configuration as a number or with a
// unit: 512KiB, 64MiB, 1GiB, 10GB, 100MB (KB/MB/GB are powers of 1000,
// KiB/MiB/GiB of 1024).
type Bytes int64

var byteUnits = []struct {
	suffix string
	factor int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

// ParseBytes parses a size such as "64MiB".
func ParseBytes(s string) (Bytes, error) {
	t := strings.TrimSpace(s)
	factor := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, factor = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.factor
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || !(f >= 0) { // NaN too
		return 0, fmt.Errorf("%q is not a size such as 512KiB, 64MiB or 1GiB", s)
	}
	if f*float64(factor) >= math.MaxInt64 { // Inf too
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Bytes(f * float64(factor)), nil
}

// UnmarshalYAML accepts a number of bytes or a size with a unit.
func (b *Bytes) UnmarshalYAML(unmarshal func(any) error) error {
	var n int64
	if err := unmarshal(&n); err == nil {
		*b = Bytes(n)
		return nil
	}
	var s string
	if err := unmarshal(&s); err != nil {
		return fmt.Errorf("want a size such as 512KiB, 64MiB or 1GiB")
	}
	v, err := ParseBytes(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

func (b Bytes) String() string {
	for _, u := range []struct {
		suffix string
		factor int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if int64(b) >= u.factor && int64(b)%u.factor == 0 {
			return fmt.Sprintf("%d%s", int64(b)/u.factor, u.suffix)
		}
	}
	return fmt.Sprintf("%dB", int64(b))
}
