package window

import (
	"math"
	"testing"
	"time"
	"unsafe"
)

func TestEWMA(t *testing.T) {
	const s = time.Second
	nan := math.NaN()
	type step struct {
		at   time.Duration
		v    float64
		want float64
	}
	tests := []struct {
		name     string
		halfLife time.Duration
		steps    []step
	}{
		{"first sample sets it", 10 * s, []step{{0, 10, 10}}},
		{"one half-life halves the old weight", 10 * s, []step{{0, 10, 10}, {10 * s, 20, 15}}},
		{"irregular gaps", 10 * s, []step{{0, 10, 10}, {10 * s, 20, 15}, {30 * s, 35, 30}, {35 * s, 30, 30}}},
		{"same instant leaves it", 10 * s, []step{{0, 10, 10}, {0, 100, 10}}},
		{"late sample leaves it", 10 * s, []step{{0, 10, 10}, {10 * s, 20, 15}, {5 * s, 100, 15}, {20 * s, 15, 15}}},
		{"long gap forgets", 10 * s, []step{{0, 10, 10}, {100_000 * s, 3, 3}}},
		{"NaN before the first", 10 * s, []step{{0, nan, nan}, {s, 4, 4}}},
		{"NaN and Inf ignored", 10 * s, []step{{0, 10, 10}, {10 * s, nan, 10}, {10 * s, math.Inf(1), 10}, {10 * s, 20, 15}}},
		{"no half-life: latest value", 0, []step{{0, 10, 10}, {0, 20, 20}, {s, 30, 30}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEWMA(tt.halfLife)
			for i, st := range tt.steps {
				got := e.Add(at(st.at), st.v)
				if !near(got, st.want, 1e-12) && !(math.IsNaN(got) && math.IsNaN(st.want)) {
					t.Errorf("step %d: Add(%v, %v) = %v, want %v", i, st.at, st.v, got, st.want)
				}
			}
		})
	}
}

func TestLastNumbers(t *testing.T) {
	const s = time.Second
	nan := math.NaN()
	type step struct {
		at   time.Duration
		v    float64
		want float64
		ok   bool
	}
	tests := []struct {
		name  string
		f     func(*Last, int64, float64) (float64, bool)
		steps []step
	}{
		{"Delta", (*Last).Delta, []step{
			{0, 10, 0, false}, {s, 13, 3, true}, {2 * s, 7, -6, true},
			{3 * s, nan, 0, false}, {4 * s, 8, 1, true},
			{s, 9, 1, true}, // late: still the previous sample
		}},
		{"Rate", (*Last).Rate, []step{
			{0, 10, 0, false}, {10 * s, 30, 2, true},
			{10 * s, 40, 0, false}, // no time elapsed; 40 is recorded
			{15 * s, 50, 2, true},
			{12 * s, 60, 0, false}, // late: no time elapsed; 60 is recorded
			{20 * s, 50, -2, true}, // 5 s after 15 s
			{21 * s, math.Inf(1), 0, false},
			{22 * s, 56, 3, true},
		}},
		{"Increase", (*Last).Increase, []step{
			{0, 5, 0, false}, {s, 8, 3, true}, {2 * s, 8, 0, true},
			{3 * s, 2, 2, true}, // counter reset
			{4 * s, 6, 4, true}, {5 * s, nan, 0, false}, {6 * s, 7, 1, true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l Last
			for i, st := range tt.steps {
				got, ok := tt.f(&l, at(st.at), st.v)
				if ok != st.ok || !near(got, st.want, 1e-12) {
					t.Errorf("step %d (%v, %v) = %v, %v; want %v, %v", i, st.at, st.v, got, ok, st.want, st.ok)
				}
			}
		})
	}
}

func TestLastChanged(t *testing.T) {
	steps := []struct {
		v    any
		want bool
	}{
		{1.0, false}, // first
		{1.0, false},
		{1, false}, // an int is a number
		{uint8(1), false},
		{2.0, true},
		{"2", true}, // a string is not a number
		{"2", false},
		{"on", true},
		{true, true},
		{true, false},
		{false, true},
		{0.0, true}, // a bool is not a number
		{nil, true},
		{nil, false},
		{math.NaN(), true},
		{math.NaN(), false},
		{[]any{1.0, "a"}, true},
		{[]any{1.0, "a"}, false},
		{map[string]any{"a": 1.0, "b": 2.0}, true},
		{map[string]any{"b": 2.0, "a": 1.0}, false},
		{map[string]any{"a": 1.0}, true},
	}
	var l Last
	for i, st := range steps {
		if got := l.Changed(t0, st.v); got != st.want {
			t.Errorf("step %d: Changed(%#v) = %v, want %v", i, st.v, got, st.want)
		}
	}
}

// TestLastChangedCopiesString checks that Changed keeps its own copy of a
// string, not the caller's buffer, which may be reused for the next message.
func TestLastChangedCopiesString(t *testing.T) {
	buf := []byte("on")
	var l Last
	l.Changed(t0, unsafe.String(&buf[0], len(buf)))
	copy(buf, "of")
	if l.Changed(t0, "on") {
		t.Error(`Changed("on") after "on" = true: the stored string followed the caller's buffer`)
	}
}

func TestHeld(t *testing.T) {
	const s = time.Second
	steps := []struct {
		at   time.Duration
		cond bool
		want time.Duration
	}{
		{0, false, 0},
		{s, true, 0},
		{3 * s, true, 2 * s},
		{2 * s, true, 2 * s}, // late: taken as made at 3 s
		{5 * s, true, 4 * s},
		{5 * s, true, 4 * s},
		{6 * s, false, 0},
		{7 * s, true, 0},
		{4 * s, true, 0}, // late: taken as made at 7 s
		{9 * s, true, 2 * s},
	}
	var h Held
	for i, st := range steps {
		if got := h.Observe(at(st.at), st.cond); got != st.want {
			t.Errorf("step %d: Observe(%v, %v) = %v, want %v", i, st.at, st.cond, got, st.want)
		}
	}
}
