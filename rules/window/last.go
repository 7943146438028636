package window

import (
	"fmt"
	"math"
	"strings"
)

// Last keeps the previous sample of a series, for delta, rate, increase and
// changed. Delta, Rate and Increase share one previous number, so a Last
// serves one of them for one series; Changed keeps its own previous value.
type Last struct {
	prev float64 // previous number, for Delta, Rate and Increase
	at   int64   // time of prev
	set  bool

	kind kind // previous value for Changed: kind, number or text
	cset bool
	num  float64
	text string
}

type kind uint8

const (
	kindNil kind = iota
	kindNum
	kindBool
	kindString
	kindOther
)

// Delta returns v minus the previous sample, false on the first sample, and
// records v. NaN and ±Inf are ignored: false, and nothing is recorded.
func (l *Last) Delta(now int64, v float64) (float64, bool) {
	prev, ok := l.record(now, v)
	if !ok {
		return 0, false
	}
	return v - prev, true
}

// Rate returns the change per second since the previous sample, and records
// v. It returns false on the first sample, when no time has elapsed (a
// sample at or before the previous one's time is taken as arriving then),
// and for NaN and ±Inf, which are not recorded.
func (l *Last) Rate(now int64, v float64) (float64, bool) {
	at := l.at
	prev, ok := l.record(now, v)
	if !ok || now <= at {
		return 0, false
	}
	return (v - prev) / (float64(now-at) / 1e9), true
}

// Increase is Delta for counters: when v is below the previous sample the
// counter was reset, and the increase is v itself, as in Prometheus. It
// records v; false on the first sample and for NaN and ±Inf.
func (l *Last) Increase(now int64, v float64) (float64, bool) {
	prev, ok := l.record(now, v)
	if !ok {
		return 0, false
	}
	if v < prev {
		return v, true
	}
	return v - prev, true
}

// record stores v as the previous sample and returns the one it replaces,
// false when there was none or v is not finite (then nothing is stored).
func (l *Last) record(now int64, v float64) (float64, bool) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	prev, ok := l.prev, l.set
	l.prev, l.set = v, true
	if !ok || now > l.at {
		l.at = now
	}
	return prev, ok
}

// Changed reports whether v differs from the previous value, false on the
// first, and records v. Values are compared as rule values: any Go number is
// a number (1 equals 1.0, NaN equals NaN), and a number never equals a
// string or a bool. Numbers, bools and nil are stored without allocating. A
// string is copied when it changes, so a Last never holds on to the buffer
// the string came from. Other values (maps and slices from JSON) are
// compared by their printed form.
func (l *Last) Changed(now int64, v any) bool {
	k, num, text := classify(v)
	changed := l.cset && (k != l.kind || !sameNum(num, l.num) || text != l.text)
	if !l.cset || changed {
		if k == kindString {
			text = strings.Clone(text)
		}
		l.kind, l.num, l.text, l.cset = k, num, text, true
	}
	return changed
}

func sameNum(a, b float64) bool {
	return a == b || (math.IsNaN(a) && math.IsNaN(b))
}

func classify(v any) (kind, float64, string) {
	switch x := v.(type) {
	case nil:
		return kindNil, 0, ""
	case float64:
		return kindNum, x, ""
	case string:
		return kindString, 0, x
	case bool:
		if x {
			return kindBool, 1, ""
		}
		return kindBool, 0, ""
	case float32:
		return kindNum, float64(x), ""
	case int:
		return kindNum, float64(x), ""
	case int8:
		return kindNum, float64(x), ""
	case int16:
		return kindNum, float64(x), ""
	case int32:
		return kindNum, float64(x), ""
	case int64:
		return kindNum, float64(x), ""
	case uint:
		return kindNum, float64(x), ""
	case uint8:
		return kindNum, float64(x), ""
	case uint16:
		return kindNum, float64(x), ""
	case uint32:
		return kindNum, float64(x), ""
	case uint64:
		return kindNum, float64(x), ""
	}
	return kindOther, 0, fmt.Sprintf("%#v", v)
}
