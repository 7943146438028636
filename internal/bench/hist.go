package bench

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Latencies are kept in log-linear buckets: exact below 64 ns, then 32
// buckets per power of two (about 3% wide), up to about 18 minutes. A
// recorder is a fixed array of counters that many goroutines add to without
// a lock; Hist is its copy, which can be merged, sent between processes and
// asked for percentiles.
const (
	subBits  = 5
	nBuckets = 64 << subBits
)

func bucketOf(ns int64) int {
	if ns < 0 {
		ns = 0
	}
	v := uint64(ns)
	shift := max(0, bits.Len64(v)-subBits-1)
	i := shift<<subBits + int(v>>shift)
	return min(i, nBuckets-1)
}

// bucketMid is the middle of bucket i, in nanoseconds.
func bucketMid(i int) int64 {
	if i < 2<<subBits {
		return int64(i)
	}
	shift := i>>subBits - 1
	m := int64(i - shift<<subBits)
	return m<<shift + (int64(1)<<shift)/2
}

// recorder records latencies from many goroutines.
type recorder struct {
	counts [nBuckets]atomic.Uint64
	max    atomic.Int64
}

func (r *recorder) record(d time.Duration) {
	ns := int64(d)
	r.counts[bucketOf(ns)].Add(1)
	for {
		m := r.max.Load()
		if ns <= m || r.max.CompareAndSwap(m, ns) {
			return
		}
	}
}

func (r *recorder) snapshot() Hist {
	h := Hist{Counts: make([]uint64, nBuckets), Max: time.Duration(r.max.Load())}
	for i := range r.counts {
		h.Counts[i] = r.counts[i].Load()
		h.N += h.Counts[i]
	}
	return h
}

// Hist is a latency histogram: how many samples fell in each bucket.
type Hist struct {
	Counts []uint64
	N      uint64
	Max    time.Duration
}

// Merge adds o's samples to h.
func (h *Hist) Merge(o Hist) {
	if len(o.Counts) == 0 {
		return
	}
	if len(h.Counts) == 0 {
		h.Counts = make([]uint64, nBuckets)
	}
	for i, c := range o.Counts {
		h.Counts[i] += c
	}
	h.N += o.N
	h.Max = max(h.Max, o.Max)
}

// Quantile returns the latency below which a fraction q of the samples
// fall (0 with no samples). Its error is the width of a bucket, about 3%.
func (h *Hist) Quantile(q float64) time.Duration {
	if h.N == 0 {
		return 0
	}
	rank := uint64(q*float64(h.N) + 0.5)
	rank = min(max(rank, 1), h.N)
	var seen uint64
	for i, c := range h.Counts {
		seen += c
		if seen >= rank {
			return min(time.Duration(bucketMid(i)), h.Max)
		}
	}
	return h.Max
}
