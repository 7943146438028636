package window

import (
	"math"
	"slices"
	"time"
)

// t0 is the simulated clock's start: a whole second, so with a 16 s span
// (1 s slices) offsets in whole seconds are slice starts.
const t0 = int64(1_700_000_000) * int64(time.Second)

// at returns the simulated time d after t0.
func at(d time.Duration) int64 { return t0 + int64(d) }

// sample is a value and when it arrived, as an offset from t0.
type sample struct {
	at time.Duration
	v  float64
}

// inWindow is the window rule spelled out: a sample counts at now when its
// slice starts in (now-span, now], slices being span/Buckets wide.
func inWindow(span time.Duration, now, t int64) bool {
	w := int64(span) / Buckets
	start := func(x int64) int64 { return x - x%w } // times here are > 0
	return start(t) > start(now)-Buckets*w
}

// live returns the values of samples (absolute times) in the window at now.
func live(span time.Duration, now int64, times []int64, vals []float64) []float64 {
	var out []float64
	for i, t := range times {
		if inWindow(span, now, t) {
			out = append(out, vals[i])
		}
	}
	return out
}

// quantile is numpy's default quantile: linear between closest ranks.
func quantile(vals []float64, p float64) float64 {
	s := slices.Sorted(slices.Values(vals))
	h := p * float64(len(s)-1)
	lo := math.Floor(h)
	if int(lo) == len(s)-1 {
		return s[len(s)-1]
	}
	return s[int(lo)] + (h-lo)*(s[int(lo)+1]-s[int(lo)])
}

// describe returns count, sum, mean, min, max and population deviation by
// two passes, as the reference for Stats.
func describe(vals []float64) (n int, sum, mean, lo, hi, sd float64) {
	if len(vals) == 0 {
		return 0, 0, 0, 0, 0, 0
	}
	lo, hi = vals[0], vals[0]
	for _, v := range vals {
		sum += v
		lo, hi = min(lo, v), max(hi, v)
	}
	mean = sum / float64(len(vals))
	ss := 0.0
	for _, v := range vals {
		ss += (v - mean) * (v - mean)
	}
	return len(vals), sum, mean, lo, hi, math.Sqrt(ss / float64(len(vals)))
}

// near reports whether got is within tol of want, relative for large values.
func near(got, want, tol float64) bool {
	return math.Abs(got-want) <= tol*max(1, math.Abs(want))
}
