package window

import (
	"math"
	"time"
)

// Buckets is the number of slices a Stats or Quantiles window is cut into.
// It is a power of two so that a slice number maps to its slot with a mask.
const Buckets = 16

// Stats aggregates the samples of the last span: count, sum, mean, min, max
// and population standard deviation.
//
// It keeps a fixed ring of Buckets slices of span/Buckets each. A query at
// now counts the slices whose start is in (now-span, now], so whole slices
// leave the window at once and a window covers between span-span/Buckets
// and span of samples. Memory is fixed whatever the sample rate: a Stats is
// a plain value with no pointers, to be embedded in per-series state.
//
// The zero Stats does not panic but is a window of 16 ns; use NewStats.
type Stats struct {
	b    [Buckets]statsBucket
	ring ring
}

// statsBucket holds one slice's samples as sums of their differences from
// the slice's first sample, k. Differences of nearby floats are exact, so
// the deviation stays accurate when the values share a large offset (1e9 +
// noise), where a plain sum of squares loses every digit; and since k is
// one of the samples, the variance is at least (k-mean)^2/n, which bounds
// the cancellation in sq - s^2/n.
type statsBucket struct {
	start    int64 // slice start, unix ns
	n        int64
	k        float64 // first sample of the slice
	s, sq    float64 // sums of v-k and (v-k)^2
	min, max float64
}

// NewStats returns an empty window of span. The span must be positive; it
// is rounded down to a multiple of Buckets nanoseconds.
func NewStats(span time.Duration) Stats {
	return Stats{ring: newRing(span)}
}

// Add records v at now. NaN and ±Inf are ignored: they are not readings, and
// one would turn the sum, mean and deviation into NaN until it expired. A
// sample earlier than one already added is counted at the latest time.
func (s *Stats) Add(now int64, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	now = s.ring.observe(now)
	b := &s.b[s.ring.cur]
	if !s.ring.inCur(now, b.start) {
		i, start := s.ring.locate(now)
		b = &s.b[i]
		if b.start != start {
			*b = statsBucket{start: start}
		}
	}
	if b.n == 0 {
		b.k, b.min, b.max = v, v, v
	} else {
		b.min = min(b.min, v)
		b.max = max(b.max, v)
	}
	b.n++
	d := v - b.k
	b.s += d
	b.sq += d * d
}

// Count returns the number of samples in the window at now.
func (s *Stats) Count(now int64) int {
	lo, hi := s.ring.live(now)
	n := int64(0)
	for i := range s.b {
		if b := &s.b[i]; b.start > lo && b.start <= hi {
			n += b.n
		}
	}
	return int(n)
}

// Sum returns the sum of the samples in the window at now, 0 when empty.
func (s *Stats) Sum(now int64) float64 {
	lo, hi := s.ring.live(now)
	sum := 0.0
	for i := range s.b {
		if b := &s.b[i]; b.start > lo && b.start <= hi {
			sum += float64(b.n)*b.k + b.s
		}
	}
	return sum
}

// Mean returns the mean of the samples in the window at now; false when the
// window is empty.
func (s *Stats) Mean(now int64) (float64, bool) {
	a := s.merge(now)
	return a.ref + a.mean, a.n > 0
}

// Min returns the smallest sample in the window at now; false when empty.
func (s *Stats) Min(now int64) (float64, bool) {
	a := s.merge(now)
	return a.min, a.n > 0
}

// Max returns the largest sample in the window at now; false when empty.
func (s *Stats) Max(now int64) (float64, bool) {
	a := s.merge(now)
	return a.max, a.n > 0
}

// Stddev returns the population standard deviation of the samples in the
// window at now: 0 for one sample, false when empty.
func (s *Stats) Stddev(now int64) (float64, bool) {
	a := s.merge(now)
	return a.stddev(), a.n > 0
}

// ZScore returns how many standard deviations v lies from the mean of the
// window at now, computed before v is added, and then adds v. It returns
// false when the window holds fewer than minSamples samples (at least 2:
// a deviation of a few samples is no baseline) or they are all equal, and
// for NaN or ±Inf, which are not added.
func ZScore(s *Stats, now int64, v float64, minSamples int) (float64, bool) {
	a := s.merge(now)
	s.Add(now, v)
	sd := a.stddev()
	if a.n < int64(max(minSamples, 2)) || sd == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	return ((v - a.ref) - a.mean) / sd, true
}

// summary is the merge of the live slices of a Stats. The mean is kept as
// an offset from ref, the first sample of one of the slices, so that a large
// common offset does not swamp the differences between slice means.
type summary struct {
	n        int64
	ref      float64
	mean     float64 // mean - ref
	m2       float64 // sum of squared deviations from the mean
	min, max float64
}

func (a summary) stddev() float64 {
	if a.n == 0 {
		return 0
	}
	return math.Sqrt(a.m2 / float64(a.n))
}

// merge combines the live slices at now with Chan et al.'s pairwise update
// of mean and squared deviations.
func (s *Stats) merge(now int64) summary {
	lo, hi := s.ring.live(now)
	var a summary
	for i := range s.b {
		b := &s.b[i]
		if b.n == 0 || b.start <= lo || b.start > hi {
			continue
		}
		nb := float64(b.n)
		if a.n == 0 {
			a.ref = b.k
		}
		ds := b.s / nb // slice mean - k
		mean := (b.k - a.ref) + ds
		m2 := max(b.sq-b.s*ds, 0)
		if a.n == 0 {
			a.n, a.mean, a.m2, a.min, a.max = b.n, mean, m2, b.min, b.max
			continue
		}
		na := float64(a.n)
		f := nb / (na + nb)
		d := mean - a.mean
		a.mean += d * f
		a.m2 += m2 + d*d*na*f
		a.n += b.n
		a.min = min(a.min, b.min)
		a.max = max(a.max, b.max)
	}
	return a
}
