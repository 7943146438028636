package window

import (
	"math/rand/v2"
	"testing"
	"time"
)

// The Add benchmarks feed one sample every 10 ms, so a 5 minute window
// moves to a new slice every 1875 samples, as a busy series would.
const benchStep = int64(10 * time.Millisecond)

func BenchmarkStatsAdd(b *testing.B) {
	s := NewStats(5 * time.Minute)
	now := t0
	v := 0.0
	for b.Loop() {
		now += benchStep
		v += 0.25
		s.Add(now, v)
	}
}

// BenchmarkStatsMean queries a full window (all 16 slices live).
func BenchmarkStatsMean(b *testing.B) {
	s := NewStats(5 * time.Minute)
	now := t0
	for i := range 30_000 {
		now += benchStep
		s.Add(now, float64(i%100))
	}
	for b.Loop() {
		s.Mean(now)
	}
}

func BenchmarkZScore(b *testing.B) {
	s := NewStats(5 * time.Minute)
	now := t0
	v := 0.0
	for b.Loop() {
		now += benchStep
		v += 0.25
		ZScore(&s, now, v, 2)
	}
}

func BenchmarkQuantilesAdd(b *testing.B) {
	q := NewQuantiles(5 * time.Minute)
	r := rand.New(rand.NewPCG(1, 2))
	now := t0
	v := 0.0
	for b.Loop() {
		now += benchStep
		v += 0.25
		q.Add(now, v, r.Uint64())
	}
}

// BenchmarkQuantile queries a full window: 64 kept samples to sort.
func BenchmarkQuantile(b *testing.B) {
	q := NewQuantiles(5 * time.Minute)
	r := rand.New(rand.NewPCG(1, 2))
	now := t0
	for range 30_000 {
		now += benchStep
		q.Add(now, 100*r.Float64(), r.Uint64())
	}
	for b.Loop() {
		q.Quantile(now, 0.9)
	}
}

func BenchmarkEWMAAdd(b *testing.B) {
	e := NewEWMA(time.Minute)
	now := t0
	v := 0.0
	for b.Loop() {
		now += benchStep
		v += 0.25
		e.Add(now, v)
	}
}
