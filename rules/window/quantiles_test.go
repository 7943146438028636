package window

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	const s = time.Second
	tests := []struct {
		name    string
		samples []sample
		query   time.Duration
		p       float64
		want    float64
		ok      bool
	}{
		{"empty", nil, 0, 0.5, 0, false},
		{"p below 0", spread([]float64{1}, 0), 0, -0.1, 0, false},
		{"p above 1", spread([]float64{1}, 0), 0, 1.1, 0, false},
		{"p NaN", spread([]float64{1}, 0), 0, math.NaN(), 0, false},
		{"one sample", spread([]float64{7}, 0), 0, 0.9, 7, true},
		{"p0 is the min", spread([]float64{4, 1, 3, 2}, 0), 0, 0, 1, true},
		{"p25 interpolates", spread([]float64{4, 1, 3, 2}, 0), 0, 0.25, 1.75, true},
		{"p50 interpolates", spread([]float64{4, 1, 3, 2}, 0), 0, 0.5, 2.5, true},
		{"p100 is the max", spread([]float64{4, 1, 3, 2}, 0), 0, 1, 4, true},
		{"across slices", spread([]float64{10, 40, 20, 30, 50}, s), 4 * s, 0.5, 30, true},
		{"NaN and Inf ignored", []sample{{0, 1}, {0, math.NaN()}, {0, math.Inf(1)}, {0, 3}}, 0, 1, 3, true},
		{"oldest slice leaves whole", []sample{{0, 100}, {s / 2, 100}, {s, 5}}, 16 * s, 1, 5, true},
		{"silence longer than span", spread([]float64{1, 2, 3}, s), 100 * s, 0.5, 0, false},
		{"slot reused after a lap", []sample{{0, 100}, {16 * s, 5}}, 16 * s, 1, 5, true},
		{"late sample counted at latest time", []sample{{5 * s, 1}, {6 * s, 2}, {3 * s, 6}}, 20*s + s/2, 1, 6, true},
		{"late sample does not reset a newer slice", []sample{{2 * s, 1}, {18 * s, 2}, {2*s + s/2, 3}}, 18 * s, 0, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := NewQuantiles(16 * time.Second)
			for i, x := range tt.samples {
				q.Add(at(x.at), x.v, uint64(i))
			}
			got, ok := q.Quantile(at(tt.query), tt.p)
			if ok != tt.ok || (ok && !near(got, tt.want, 1e-12)) {
				t.Errorf("Quantile(%v) = %v, %v; want %v, %v", tt.p, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestQuantileExact checks that with at most SamplesPerBucket samples per
// slice the answer is numpy's, over a stream that keeps the window full.
func TestQuantileExact(t *testing.T) {
	const span = 5 * time.Minute
	r := rand.New(rand.NewPCG(5, 6))
	q := NewQuantiles(span)
	step := int64(span) / Buckets / SamplesPerBucket // 4 samples per slice
	var times []int64
	var vals []float64
	for i := range int64(200) {
		now := t0 + i*step
		v := math.Round(1000*r.NormFloat64()) / 10
		q.Add(now, v, r.Uint64())
		times, vals = append(times, now), append(vals, v)
		in := live(span, now, times, vals)
		for _, p := range []float64{0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1} {
			got, ok := q.Quantile(now, p)
			if want := quantile(in, p); !ok || !near(got, want, 1e-12) {
				t.Fatalf("after %d samples, Quantile(%v) = %v, %v; want %v", i+1, p, got, ok, want)
			}
		}
	}
}

// TestQuantileWeights checks that a kept sample stands for its slice's
// count: one slice with 1000 samples of 10 outweighs one with a 20.
func TestQuantileWeights(t *testing.T) {
	q := NewQuantiles(16 * time.Second)
	for i := range 1000 {
		q.Add(t0, 10, uint64(i)*0x9e3779b97f4a7c15)
	}
	q.Add(at(time.Second), 20, 0)
	for _, tt := range []struct{ p, want float64 }{{0, 10}, {0.5, 10}, {0.999, 10}, {0.9995, 15}, {1, 20}} {
		if got, _ := q.Quantile(at(time.Second), tt.p); !near(got, tt.want, 1e-12) {
			t.Errorf("Quantile(%v) = %v, want %v", tt.p, got, tt.want)
		}
	}
}

// TestRanks checks the weighted selection against the samples written out
// weight times each and sorted, with many repeated values.
func TestRanks(t *testing.T) {
	r := rand.New(rand.NewPCG(10, 11))
	for trial := range 2000 {
		m := 1 + r.IntN(Buckets*SamplesPerBucket)
		vals, wts := make([]float64, m), make([]float64, m)
		var expanded []float64
		for i := range vals {
			vals[i], wts[i] = float64(r.IntN(10)), float64(1+r.IntN(5))
			for range int(wts[i]) {
				expanded = append(expanded, vals[i])
			}
		}
		slices.Sort(expanded)
		rank := r.IntN(len(expanded))
		wantA, wantB := expanded[rank], expanded[min(rank+1, len(expanded)-1)]
		if a, b := ranks(vals, wts, float64(rank)); a != wantA || b != wantB {
			t.Fatalf("trial %d: ranks %d and %d = %v, %v; want %v, %v", trial, rank, rank+1, a, b, wantA, wantB)
		}
	}
}

// TestReservoirUniform checks that every sample of a busy slice is equally
// likely to be kept.
func TestReservoirUniform(t *testing.T) {
	const n, trials = 100, 20_000
	r := rand.New(rand.NewPCG(7, 8))
	var kept [n]int
	for range trials {
		q := NewQuantiles(time.Minute)
		for v := range n {
			q.Add(t0, float64(v), r.Uint64())
		}
		for _, v := range q.b[q.ring.cur].v {
			kept[int(v)]++
		}
	}
	// Each value is kept with probability 4/100: 800 times, sd about 28.
	want := float64(trials * SamplesPerBucket / n)
	for v, k := range kept {
		if math.Abs(float64(k)-want) > 5*math.Sqrt(want) {
			t.Errorf("value %d kept %d times, want about %.0f", v, k, want)
		}
	}
}

// TestQuantileAccuracy measures the error on values uniform in [0, 100]
// over many independent windows, for the rates the package doc quotes. It
// fails if the error grows past those figures.
func TestQuantileAccuracy(t *testing.T) {
	tests := []struct {
		name         string
		perSec, secs int
		maxRMS50     float64 // p50 error, units of the [0, 100] range
		maxRMS90     float64
	}{
		{"burst of 10000 in 1 s", 10_000, 1, 22, 22},
		{"1/s for 10 min", 1, 600, 7, 5},
		{"100/s for 6 min", 100, 360, 7, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const trials = 500
			var sq50, sq90 float64
			for seed := range uint64(trials) {
				r := rand.New(rand.NewPCG(seed, 9))
				q := NewQuantiles(5 * time.Minute)
				var now int64
				var lo, hi float64 = 100, 0
				for i := range tt.perSec * tt.secs {
					now = t0 + int64(i)*int64(time.Second)/int64(tt.perSec)
					v := 100 * r.Float64()
					lo, hi = min(lo, v), max(hi, v)
					q.Add(now, v, r.Uint64())
				}
				var prev float64
				for i, p := range []float64{0, 0.1, 0.5, 0.9, 1} {
					got, ok := q.Quantile(now, p)
					if !ok || got < lo || got > hi || (i > 0 && got < prev) {
						t.Fatalf("seed %d: Quantile(%v) = %v, %v after %v (samples in [%v, %v])", seed, p, got, ok, prev, lo, hi)
					}
					prev = got
					switch p {
					case 0.5:
						sq50 += (got - 50) * (got - 50)
					case 0.9:
						sq90 += (got - 90) * (got - 90)
					}
				}
			}
			rms50, rms90 := math.Sqrt(sq50/trials), math.Sqrt(sq90/trials)
			t.Logf("RMS error: p50 %.1f, p90 %.1f", rms50, rms90)
			if rms50 > tt.maxRMS50 || rms90 > tt.maxRMS90 {
				t.Errorf("RMS error p50 %.1f, p90 %.1f; want at most %v, %v", rms50, rms90, tt.maxRMS50, tt.maxRMS90)
			}
		})
	}
}

// TestQuantileSilenceThenResume checks that nothing from before a silence
// longer than the span survives.
func TestQuantileSilenceThenResume(t *testing.T) {
	q := NewQuantiles(5 * time.Minute)
	sec := int64(time.Second)
	for i := range int64(120) {
		q.Add(t0+i*sec, 1000, uint64(i))
	}
	resume := t0 + (120+360)*sec
	if got, ok := q.Quantile(resume, 0.5); ok {
		t.Errorf("after the silence Quantile = %v, true; want false", got)
	}
	var vals []float64
	for i := range int64(60) {
		v := float64(i % 7)
		q.Add(resume+i*sec, v, uint64(i)*0x9e3779b97f4a7c15)
		vals = append(vals, v)
	}
	if got, _ := q.Quantile(resume+59*sec, 1); got != slices.Max(vals) {
		t.Errorf("max after resuming = %v, want %v", got, slices.Max(vals))
	}
}

func TestQuantilesZeroValue(t *testing.T) {
	var q Quantiles
	q.Add(t0, 1, 0)
	q.Add(t0, 3, 0)
	if got, ok := q.Quantile(t0, 0.5); !ok || got != 2 {
		t.Errorf("Quantile = %v, %v; want 2, true", got, ok)
	}
}
