package window

import (
	"testing"
	"time"
	"unsafe"
)

// TestSizes keeps each type within the 1 KB per series budget, and the
// sizes in the package documentation true on 64-bit platforms.
func TestSizes(t *testing.T) {
	tests := []struct {
		name string
		size uintptr
		doc  uintptr // as documented, on 64-bit platforms
	}{
		{"Stats", unsafe.Sizeof(Stats{}), 920},
		{"Quantiles", unsafe.Sizeof(Quantiles{}), 792},
		{"EWMA", unsafe.Sizeof(EWMA{}), 32},
		{"Last", unsafe.Sizeof(Last{}), 48},
		{"Held", unsafe.Sizeof(Held{}), 24},
		{"Deriv", unsafe.Sizeof(Deriv{}), 920},
		{"DeltaOver", unsafe.Sizeof(DeltaOver{}), 536},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.size > 1024 {
				t.Errorf("%d bytes, want at most 1024", tt.size)
			}
			if unsafe.Sizeof(uintptr(0)) == 8 && tt.size != tt.doc {
				t.Errorf("%d bytes, the package documentation says %d", tt.size, tt.doc)
			}
		})
	}
}

// TestNoAllocs checks that the per-message calls do not allocate, so that
// state for many series costs only its own size.
func TestNoAllocs(t *testing.T) {
	stats := NewStats(5 * time.Minute)
	quant := NewQuantiles(5 * time.Minute)
	ewma := NewEWMA(time.Minute)
	var last, lastNum, lastBool, lastText Last
	flip := false
	var held Held
	deriv := NewDeriv(5 * time.Minute)
	delta := NewDeltaOver(5 * time.Minute)
	now := t0
	tick := func() int64 { now += int64(7 * time.Second); return now } // crosses slices
	tests := []struct {
		name string
		f    func()
	}{
		{"Stats.Add", func() { stats.Add(tick(), 1.5) }},
		{"Stats queries", func() {
			stats.Count(now)
			stats.Sum(now)
			stats.Mean(now)
			stats.Min(now)
			stats.Max(now)
			stats.Stddev(now)
		}},
		{"ZScore", func() { ZScore(&stats, tick(), 2, 2) }},
		{"Quantiles.Add", func() { quant.Add(tick(), 1.5, uint64(now)) }},
		{"Quantile", func() { quant.Quantile(now, 0.9) }},
		{"EWMA.Add", func() { ewma.Add(tick(), 1.5) }},
		{"Last numbers", func() {
			last.Delta(tick(), 1.5)
			last.Rate(tick(), 2.5)
			last.Increase(tick(), 3.5)
		}},
		{"Last.Changed", func() {
			flip = !flip
			if flip {
				lastNum.Changed(tick(), 1.5)
			} else {
				lastNum.Changed(tick(), 2.5)
			}
			lastBool.Changed(tick(), flip)
			lastText.Changed(tick(), "steady") // copied once, then equal
		}},
		{"Held.Observe", func() { held.Observe(tick(), true) }},
		{"Deriv", func() { deriv.Add(tick(), 1.5); deriv.Slope(now, 2) }},
		{"DeltaOver", func() { delta.Add(tick(), 1.5); delta.Value(now) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.f() // fill state first
			if n := testing.AllocsPerRun(1000, tt.f); n != 0 {
				t.Errorf("%v allocations per call, want 0", n)
			}
		})
	}
}
