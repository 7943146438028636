package window

import (
	"math"
	"time"
)

// Deriv fits a straight line by least squares through the samples of the
// last span: Slope is the change per second, as Prometheus' deriv, and so
// tells a steady rise from noise where the rate between two readings
// cannot.
//
// It keeps the ring of slices of Stats: each slice holds its count, the
// means of its times and values, and their sums of squared and crossed
// deviations, updated as Welford does; a query merges the live slices
// pairwise (Chan et al.). Times are counted from the slice's start and
// values from its first sample, so neither a large epoch nor a large
// common offset of the values costs precision. Memory is fixed whatever the
// sample rate.
//
// The zero Deriv does not panic but is a window of 16 ns; use NewDeriv.
type Deriv struct {
	b    [Buckets]derivBucket
	ring ring
}

type derivBucket struct {
	start int64 // slice start, unix ns
	n     int64
	k     float64 // first sample of the slice; values are kept as v-k
	mt    float64 // mean time, seconds after start
	mv    float64 // mean of v-k
	m2t   float64 // sum of squared time deviations
	ctv   float64 // sum of crossed deviations of time and value
}

// NewDeriv returns an empty window of span. The span must be positive; it
// is rounded down to a multiple of Buckets nanoseconds.
func NewDeriv(span time.Duration) Deriv {
	return Deriv{ring: newRing(span)}
}

// Add records v at now. NaN and ±Inf are ignored. A sample earlier than one
// already added is counted at the latest time.
func (t *Deriv) Add(now int64, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	now = t.ring.observe(now)
	b := &t.b[t.ring.cur]
	if !t.ring.inCur(now, b.start) {
		i, start := t.ring.locate(now)
		b = &t.b[i]
		if b.start != start {
			*b = derivBucket{start: start}
		}
	}
	if b.n == 0 {
		b.k = v
	}
	b.n++
	x := float64(now-b.start) / 1e9
	y := v - b.k
	n := float64(b.n)
	dx := x - b.mt
	b.mt += dx / n
	b.mv += (y - b.mv) / n
	b.m2t += dx * (x - b.mt)
	b.ctv += dx * (y - b.mv)
}

// Count returns the number of samples in the window at now.
func (t *Deriv) Count(now int64) int {
	lo, hi := t.ring.live(now)
	n := int64(0)
	for i := range t.b {
		if b := &t.b[i]; b.start > lo && b.start <= hi {
			n += b.n
		}
	}
	return int(n)
}

// Slope returns the least-squares slope of the samples in the window at
// now, per second. It returns false with fewer than minSamples samples
// (at least 2), or when they were all taken at one time.
func (t *Deriv) Slope(now int64, minSamples int) (float64, bool) {
	lo, hi := t.ring.live(now)
	var (
		n        int64
		refT     int64
		refV     float64
		mt, mv   float64 // from refT (s) and refV
		m2t, ctv float64
		first    = true
	)
	for i := range t.b {
		b := &t.b[i]
		if b.n == 0 || b.start <= lo || b.start > hi {
			continue
		}
		if first {
			refT, refV, first = b.start, b.k, false
		}
		bt := float64(b.start-refT)/1e9 + b.mt
		bv := (b.k - refV) + b.mv
		if n == 0 {
			n, mt, mv, m2t, ctv = b.n, bt, bv, b.m2t, b.ctv
			continue
		}
		na, nb := float64(n), float64(b.n)
		f := nb / (na + nb)
		dt, dv := bt-mt, bv-mv
		mt += dt * f
		mv += dv * f
		m2t += b.m2t + dt*dt*na*f
		ctv += b.ctv + dt*dv*na*f
		n += b.n
	}
	if n < int64(max(minSamples, 2)) || m2t <= 0 {
		return 0, false
	}
	return ctv / m2t, true
}

// DeltaOver answers the last sample of the last span minus the first, as
// delta_over in rules. Each slice of its ring keeps its count and its first
// and last samples; as the oldest slice leaves the window whole, the first
// sample of the window is the first of the oldest live slice.
//
// The zero DeltaOver does not panic but is a window of 16 ns; use
// NewDeltaOver.
type DeltaOver struct {
	b    [Buckets]deltaBucket
	ring ring
}

type deltaBucket struct {
	start       int64
	n           int64
	first, last float64
}

// NewDeltaOver returns an empty window of span. The span must be positive;
// it is rounded down to a multiple of Buckets nanoseconds.
func NewDeltaOver(span time.Duration) DeltaOver {
	return DeltaOver{ring: newRing(span)}
}

// Add records v at now. NaN and ±Inf are ignored. A sample earlier than one
// already added is counted at the latest time, so it is the last sample.
func (d *DeltaOver) Add(now int64, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	now = d.ring.observe(now)
	b := &d.b[d.ring.cur]
	if !d.ring.inCur(now, b.start) {
		i, start := d.ring.locate(now)
		b = &d.b[i]
		if b.start != start {
			*b = deltaBucket{start: start}
		}
	}
	if b.n == 0 {
		b.first = v
	}
	b.n++
	b.last = v
}

// Value returns the last sample in the window at now minus the first,
// false with fewer than 2 samples.
func (d *DeltaOver) Value(now int64) (float64, bool) {
	lo, hi := d.ring.live(now)
	var oldest, newest *deltaBucket
	n := int64(0)
	for i := range d.b {
		b := &d.b[i]
		if b.n == 0 || b.start <= lo || b.start > hi {
			continue
		}
		n += b.n
		if oldest == nil || b.start < oldest.start {
			oldest = b
		}
		if newest == nil || b.start > newest.start {
			newest = b
		}
	}
	if n < 2 {
		return 0, false
	}
	return newest.last - oldest.first, true
}
