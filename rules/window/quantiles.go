package window

import (
	"math"
	"math/bits"
	"slices"
	"time"
)

// SamplesPerBucket is how many samples a Quantiles keeps of each slice.
const SamplesPerBucket = 4

// Quantiles estimates quantiles of the samples of the last span.
//
// It slices time like Stats. Of each slice it keeps the count of samples and
// a uniform reservoir of up to SamplesPerBucket of them; an estimate weights
// each kept sample by count/kept of its slice. The estimate is exact while
// no live slice got more than SamplesPerBucket samples; beyond that it is a
// sample of at most Buckets*SamplesPerBucket values, and its error is that of
// the quantile of such a sample (see the package documentation).
//
// The zero Quantiles does not panic but is a window of 16 ns; use
// NewQuantiles.
type Quantiles struct {
	b    [Buckets]quantBucket
	ring ring
}

type quantBucket struct {
	start int64 // slice start, unix ns
	n     int64 // samples seen in the slice, kept or not
	v     [SamplesPerBucket]float64
}

// NewQuantiles returns an empty window of span. The span must be positive;
// it is rounded down to a multiple of Buckets nanoseconds.
func NewQuantiles(span time.Duration) Quantiles {
	return Quantiles{ring: newRing(span)}
}

// Add records v at now. rnd is a uniformly random number from the caller
// (its high bits count most), used to choose which sample a full reservoir
// replaces, so that the package holds no random source and tests are
// deterministic. NaN and ±Inf are
// ignored. A sample earlier than one already added is counted at the latest
// time.
func (q *Quantiles) Add(now int64, v float64, rnd uint64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	now = q.ring.observe(now)
	b := &q.b[q.ring.cur]
	if !q.ring.inCur(now, b.start) {
		i, start := q.ring.locate(now)
		b = &q.b[i]
		if b.start != start {
			*b = quantBucket{start: start}
		}
	}
	if b.n < SamplesPerBucket {
		b.v[b.n] = v
	} else {
		// Algorithm R: the (n+1)th sample replaces a kept one with
		// probability SamplesPerBucket/(n+1). j is rnd scaled to [0, n+1)
		// by a multiply instead of a division.
		if j, _ := bits.Mul64(rnd, uint64(b.n)+1); j < SamplesPerBucket {
			b.v[j] = v
		}
	}
	b.n++
}

// Quantile returns the p-quantile of the samples in the window at now, with
// p in [0, 1]: linear interpolation between the closest ranks, as numpy's
// default, where a kept sample standing for w samples fills w ranks. It
// returns false when the window is empty or p is outside [0, 1].
func (q *Quantiles) Quantile(now int64, p float64) (float64, bool) {
	if !(p >= 0 && p <= 1) {
		return 0, false
	}
	lo, hi := q.ring.live(now)
	var vals, wts [Buckets * SamplesPerBucket]float64
	m := 0
	total := int64(0)
	for i := range q.b {
		b := &q.b[i]
		if b.n == 0 || b.start <= lo || b.start > hi {
			continue
		}
		total += b.n
		k := min(b.n, SamplesPerBucket)
		w := float64(b.n) / float64(k)
		for _, v := range b.v[:k] {
			vals[m], wts[m] = v, w
			m++
		}
	}
	if m == 0 {
		return 0, false
	}

	// Ranks run from 0 to total-1; the answer lies between ranks r and r+1.
	h := p * float64(total-1)
	r := math.Floor(h)
	a, b := ranks(vals[:m], wts[:m], r)
	if h == r {
		return a, true
	}
	return a + (h-r)*(b-a), true
}

// ranks returns the values at ranks r and r+1 of samples where a sample of
// weight w fills w consecutive ranks, as if repeated w times. It is a
// quickselect with three-way partitions, reordering vals and wts: a full
// window has 64 samples, and sorting them takes five times as long.
func ranks(vals, wts []float64, r float64) (float64, float64) {
	below := 0.0 // weight of vals[:lo], all smaller than vals[lo:hi]
	lo, hi := 0, len(vals)
	for lo < hi {
		// Partition vals[lo:hi] into < p, == p and > p.
		p := vals[lo+(hi-lo)/2]
		lt, i, gt := lo, lo, hi
		less, equal := 0.0, 0.0
		for i < gt {
			switch v := vals[i]; {
			case v < p:
				less += wts[i]
				vals[i], vals[lt] = vals[lt], vals[i]
				wts[i], wts[lt] = wts[lt], wts[i]
				lt++
				i++
			case v > p:
				gt--
				vals[i], vals[gt] = vals[gt], vals[i]
				wts[i], wts[gt] = wts[gt], wts[i]
			default:
				equal += wts[i]
				i++
			}
		}
		switch {
		case r < below+less:
			hi = lt
		case r < below+less+equal:
			if r+1 < below+less+equal || gt == len(vals) {
				return p, p
			}
			return p, slices.Min(vals[gt:]) // everything past gt is > p
		default:
			below += less + equal
			lo = gt
		}
	}
	// r beyond the top rank, which only rounding of fractional weights can
	// cause: the largest value.
	top := slices.Max(vals)
	return top, top
}
