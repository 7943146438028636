package window

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// leastSquares is the slope of the line fitted to (t, v), t in seconds,
// computed directly from the samples.
func leastSquares(times []int64, vals []float64) (float64, bool) {
	if len(times) < 2 {
		return 0, false
	}
	var mt, mv float64
	for i := range times {
		mt += float64(times[i]-times[0]) / 1e9
		mv += vals[i]
	}
	n := float64(len(times))
	mt, mv = mt/n, mv/n
	var sxx, sxy float64
	for i := range times {
		x := float64(times[i]-times[0])/1e9 - mt
		sxx += x * x
		sxy += x * (vals[i] - mv)
	}
	if sxx == 0 {
		return 0, false
	}
	return sxy / sxx, true
}

// TestDerivSteadyStream feeds a noisy ramp (one sample every 1.3 s for 15
// minutes, on a large offset) into a 5 minute window and checks every slope
// and delta against the samples in the window.
func TestDerivSteadyStream(t *testing.T) {
	const span = 5 * time.Minute
	rnd := rand.New(rand.NewPCG(1, 2))
	d, delta := NewDeriv(span), NewDeltaOver(span)
	var times []int64
	var vals []float64
	for i := range 700 {
		now := t0 + int64(i)*int64(1300*time.Millisecond)
		v := 1e6 + 0.01*float64(i)*1.3 + rnd.NormFloat64()*0.05
		if i > 400 {
			v -= 0.03 * float64(i-400) * 1.3 // then it falls
		}
		d.Add(now, v)
		delta.Add(now, v)
		times, vals = append(times, now), append(vals, v)

		var wt []int64
		var wv []float64
		for j := range times {
			if inWindow(span, now, times[j]) {
				wt, wv = append(wt, times[j]), append(wv, vals[j])
			}
		}
		want, wok := leastSquares(wt, wv)
		got, ok := d.Slope(now, 2)
		if ok != wok || !near(got, want, 1e-6) {
			t.Fatalf("sample %d: Slope = %v, %v; want %v, %v", i, got, ok, want, wok)
		}
		if n := d.Count(now); n != len(wt) {
			t.Fatalf("sample %d: Count = %d, want %d", i, n, len(wt))
		}
		got, ok = delta.Value(now)
		if ok != (len(wv) >= 2) || (ok && !near(got, wv[len(wv)-1]-wv[0], 1e-9)) {
			t.Fatalf("sample %d: delta = %v, %v; want %v", i, got, ok, wv[len(wv)-1]-wv[0])
		}
	}
}

func TestDerivEdges(t *testing.T) {
	s := time.Second
	tests := []struct {
		name    string
		samples []sample
		query   time.Duration
		min     int
		slope   float64
		ok      bool
		delta   float64
		dok     bool
	}{
		{"empty", nil, 0, 2, 0, false, 0, false},
		{"one sample", []sample{{0, 1}}, 0, 2, 0, false, 0, false},
		{"two samples", []sample{{0, 1}, {2 * s, 5}}, 2 * s, 2, 2, true, 4, true},
		{"one time", []sample{{s, 1}, {s, 5}}, s, 2, 0, false, 4, true},
		{"fewer than min", []sample{{0, 1}, {s, 2}, {2 * s, 3}}, 2 * s, 4, 0, false, 2, true},
		{"at min", []sample{{0, 1}, {s, 2}, {2 * s, 3}}, 2 * s, 3, 1, true, 2, true},
		{"NaN and Inf ignored", []sample{{0, 1}, {s, math.NaN()}, {s, math.Inf(1)}, {2 * s, 3}}, 2 * s, 2, 1, true, 2, true},
		{"oldest slice leaves whole", []sample{{0, 9}, {s, 1}, {2 * s, 2}, {3 * s, 3}}, 16 * s, 2, 1, true, 2, true},
		{"silence longer than span", []sample{{0, 1}, {s, 2}}, 100 * s, 2, 0, false, 0, false},
		{"late sample counted at latest time", []sample{{0, 0}, {2 * s, 2}, {s, 5}}, 2 * s, 2, 1.75, true, 5, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, delta := NewDeriv(16*time.Second), NewDeltaOver(16*time.Second)
			for _, x := range tt.samples {
				d.Add(at(x.at), x.v)
				delta.Add(at(x.at), x.v)
			}
			got, ok := d.Slope(at(tt.query), tt.min)
			if ok != tt.ok || !near(got, tt.slope, 1e-12) {
				t.Errorf("Slope = %v, %v; want %v, %v", got, ok, tt.slope, tt.ok)
			}
			got, ok = delta.Value(at(tt.query))
			if ok != tt.dok || !near(got, tt.delta, 1e-12) {
				t.Errorf("delta = %v, %v; want %v, %v", got, ok, tt.delta, tt.dok)
			}
		})
	}
}
