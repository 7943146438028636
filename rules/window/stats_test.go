package window

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// statsWant is what a window answers at one moment; the answers are
// expected to be false when n is 0.
type statsWant struct {
	n                        int
	sum, mean, min, max, std float64
}

func checkStats(t *testing.T, s *Stats, now int64, want statsWant, tol float64) {
	t.Helper()
	if got := s.Count(now); got != want.n {
		t.Errorf("Count = %d, want %d", got, want.n)
	}
	if got := s.Sum(now); !near(got, want.sum, tol) {
		t.Errorf("Sum = %v, want %v", got, want.sum)
	}
	for _, q := range []struct {
		name string
		f    func(int64) (float64, bool)
		want float64
	}{
		{"Mean", s.Mean, want.mean},
		{"Min", s.Min, want.min},
		{"Max", s.Max, want.max},
		{"Stddev", s.Stddev, want.std},
	} {
		got, ok := q.f(now)
		if ok != (want.n > 0) {
			t.Errorf("%s ok = %v with %d samples", q.name, ok, want.n)
		}
		if ok && !near(got, q.want, tol) {
			t.Errorf("%s = %v, want %v", q.name, got, q.want)
		}
	}
}

func TestStats(t *testing.T) {
	const s = time.Second
	classic := []float64{2, 4, 4, 4, 5, 5, 7, 9} // mean 5, deviation 2
	tests := []struct {
		name    string
		samples []sample
		query   time.Duration
		want    statsWant
	}{
		{"empty", nil, 0, statsWant{}},
		{"one sample", []sample{{0, 7}}, 0, statsWant{1, 7, 7, 7, 7, 0}},
		{"one slice", spread(classic, 0), 0, statsWant{8, 40, 5, 2, 9, 2}},
		{"a slice each", spread(classic, s), 8 * s, statsWant{8, 40, 5, 2, 9, 2}},
		{"NaN and Inf ignored",
			[]sample{{0, 1}, {0, math.NaN()}, {0, math.Inf(1)}, {0, math.Inf(-1)}, {0, 3}},
			0, statsWant{2, 4, 2, 1, 3, 1}},
		{"same timestamp", []sample{{5 * s, 1}, {5 * s, 1}, {5 * s, 4}}, 5 * s, statsWant{3, 6, 2, 1, 4, math.Sqrt2}},
		{"negative values", []sample{{0, -1}, {s, -3}}, s, statsWant{2, -4, -2, -3, -1, 1}},
		{"oldest slice still in", []sample{{0, 1}, {s / 2, 3}, {s, 5}}, 16*s - 1, statsWant{3, 9, 3, 1, 5, math.Sqrt(8.0 / 3)}},
		{"oldest slice leaves whole", []sample{{0, 1}, {s / 2, 3}, {s, 5}}, 16 * s, statsWant{1, 5, 5, 5, 5, 0}},
		{"silence longer than span", []sample{{0, 1}, {s, 2}, {2 * s, 3}}, 100 * s, statsWant{}},
		{"slot reused after a lap", []sample{{0, 1}, {16 * s, 5}}, 16 * s, statsWant{1, 5, 5, 5, 5, 0}},
		{"slot reused after many laps", []sample{{3 * s, 1}, {3*s + 160*s, 5}}, 163 * s, statsWant{1, 5, 5, 5, 5, 0}},
		{"late sample counted at latest time",
			// 3 s is outside the window at 20.5 s; counted at 6 s it is in.
			[]sample{{5 * s, 1}, {6 * s, 2}, {3 * s, 6}},
			20*s + s/2, statsWant{3, 9, 3, 1, 6, math.Sqrt(14.0 / 3)}},
		{"late sample does not reset a newer slice",
			// Slot 2 holds the slice at 18 s; a sample at 2.5 s must not clear it.
			[]sample{{2 * s, 1}, {18 * s, 2}, {2*s + s/2, 3}},
			18 * s, statsWant{2, 5, 2.5, 2, 3, 0.5}},
		{"query before latest sample answered at latest", []sample{{0, 1}, {20 * s, 2}}, 0, statsWant{1, 2, 2, 2, 2, 0}},
		{"before 1970", []sample{{-t0D - 3*s, 1}, {-t0D - s, 3}}, -t0D - s, statsWant{2, 4, 2, 1, 3, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := NewStats(16 * time.Second)
			for _, x := range tt.samples {
				st.Add(at(x.at), x.v)
			}
			checkStats(t, &st, at(tt.query), tt.want, 1e-12)
		})
	}
}

// t0D is t0 as a Duration, to write times before 1970 as offsets.
const t0D = time.Duration(t0)

// spread returns vals as samples step apart from time 0.
func spread(vals []float64, step time.Duration) []sample {
	out := make([]sample, len(vals))
	for i, v := range vals {
		out[i] = sample{time.Duration(i) * step, v}
	}
	return out
}

// TestStatsSteadyStream feeds one sample a second for 10 minutes into a 5
// minute window and checks every answer against the samples themselves.
func TestStatsSteadyStream(t *testing.T) {
	const span = 5 * time.Minute
	start := t0 + int64(300*time.Millisecond) // not on a slice boundary
	s := NewStats(span)
	var times []int64
	var vals []float64
	for i := range 600 {
		now := start + int64(i)*int64(time.Second)
		v := 20 + 5*math.Sin(float64(i)/10)
		s.Add(now, v)
		times, vals = append(times, now), append(vals, v)

		n, sum, mean, lo, hi, sd := describe(live(span, now, times, vals))
		checkStats(t, &s, now, statsWant{n, sum, mean, lo, hi, sd}, 1e-9)
		// Once full, the window covers span-span/Buckets to span.
		if i >= 300 && (n < 281 || n > 300) {
			t.Errorf("at %d s the window holds %d samples, want 281 to 300", i, n)
		}
		if t.Failed() {
			t.Fatalf("after sample %d", i)
		}
	}
}

// TestStatsBurst adds 10,000 samples within one second.
func TestStatsBurst(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	s := NewStats(5 * time.Minute)
	vals := make([]float64, 10_000)
	var now int64
	for i := range vals {
		now = t0 + int64(i)*int64(100*time.Microsecond)
		vals[i] = 100 * r.Float64()
		s.Add(now, vals[i])
	}
	n, sum, mean, lo, hi, sd := describe(vals)
	checkStats(t, &s, now, statsWant{n, sum, mean, lo, hi, sd}, 1e-9)
}

// TestStatsSilenceThenResume checks that nothing from before a silence
// longer than the span survives, in reused slots or others.
func TestStatsSilenceThenResume(t *testing.T) {
	const span = 5 * time.Minute
	s := NewStats(span)
	sec := int64(time.Second)
	for i := range int64(120) {
		s.Add(t0+i*sec, 100)
	}
	resume := t0 + (120+360)*sec
	checkStats(t, &s, resume, statsWant{}, 0)
	for i := range int64(60) {
		s.Add(resume+i*sec, 1)
	}
	checkStats(t, &s, resume+59*sec, statsWant{60, 60, 1, 1, 1, 0}, 1e-12)
}

// TestStatsPartialExpiry checks a silence shorter than the span: the older
// samples leave slice by slice.
func TestStatsPartialExpiry(t *testing.T) {
	const span = 16 * time.Second
	s := NewStats(span)
	sec := int64(time.Second)
	for i := range int64(8) {
		s.Add(t0+i*sec, float64(i))
	}
	for _, tt := range []struct {
		query int64
		n     int
	}{{7, 8}, {15, 8}, {16, 7}, {20, 3}, {23, 0}} {
		if got := s.Count(t0 + tt.query*sec); got != tt.n {
			t.Errorf("Count at %d s = %d, want %d", tt.query, got, tt.n)
		}
	}
}

// TestStddevStability uses values with a large common offset, where a sum
// of squares would lose every digit of the deviation.
func TestStddevStability(t *testing.T) {
	for _, tt := range []struct {
		name   string
		offset float64
		value  func(i int, r *rand.Rand) float64 // added to offset
	}{
		{"1e9 + 1e-3 noise", 1e9, func(_ int, r *rand.Rand) float64 { return 1e-3 * r.NormFloat64() }},
		{"1e9 + unit noise", 1e9, func(_ int, r *rand.Rand) float64 { return r.NormFloat64() }},
		{"-1e12 + 0.5 noise", -1e12, func(_ int, r *rand.Rand) float64 { return 0.5 * r.NormFloat64() }},
		{"1e9 + ramp", 1e9, func(i int, _ *rand.Rand) float64 { return 1e-3 * float64(i) }},
		{"1e9 + spike first", 1e9, func(i int, r *rand.Rand) float64 {
			if i%200 == 0 {
				return 50 // the first sample of each slice is an outlier
			}
			return 1e-3 * r.NormFloat64()
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(3, 4))
			s := NewStats(16 * time.Second)
			vals := make([]float64, 2000)
			shifted := make([]float64, len(vals))
			var now int64
			for i := range vals {
				now = t0 + int64(i)*int64(5*time.Millisecond) // 10 slices
				vals[i] = tt.offset + tt.value(i, r)
				shifted[i] = vals[i] - tt.offset // exact: the reference works on these
				s.Add(now, vals[i])
			}
			_, _, mean, _, _, sd := describe(shifted)
			if got, _ := s.Stddev(now); math.Abs(got-sd) > 1e-9*sd {
				t.Errorf("Stddev = %v, want %v", got, sd)
			}
			// The mean cannot be closer than the float64 spacing at offset.
			ulp := math.Nextafter(math.Abs(tt.offset), math.Inf(1)) - math.Abs(tt.offset)
			if got, _ := s.Mean(now); math.Abs(got-(tt.offset+mean)) > ulp {
				t.Errorf("Mean = %v, want %v", got, tt.offset+mean)
			}
		})
	}
}

func TestZScore(t *testing.T) {
	classic := []float64{2, 4, 4, 4, 5, 5, 7, 9} // mean 5, deviation 2
	tests := []struct {
		name   string
		window []float64
		v      float64
		want   float64
		ok     bool
		count  int // samples afterwards
		min    int
	}{
		{"empty window", nil, 3, 0, false, 1, 0},
		{"one sample", []float64{1}, 3, 0, false, 2, 0},
		{"all equal", []float64{4, 4, 4}, 5, 0, false, 4, 0},
		{"two above", classic, 9, 2, true, 9, 0},
		{"one below", classic, 3, -1, true, 9, 0},
		{"at the mean", classic, 5, 0, true, 9, 0},
		{"NaN not added", classic, math.NaN(), 0, false, 8, 0},
		{"fewer than the minimum", classic, 9, 0, false, 9, 9},
		{"at the minimum", classic, 9, 2, true, 9, 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStats(time.Minute)
			for _, v := range tt.window {
				s.Add(t0, v)
			}
			got, ok := ZScore(&s, t0, tt.v, tt.min)
			if ok != tt.ok || !near(got, tt.want, 1e-12) {
				t.Errorf("ZScore = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
			if n := s.Count(t0); n != tt.count {
				t.Errorf("afterwards Count = %d, want %d", n, tt.count)
			}
		})
	}
}

// TestZScoreExcludesExpired checks that the score uses the window at now,
// not slices that expire as v arrives.
func TestZScoreExcludesExpired(t *testing.T) {
	s := NewStats(16 * time.Second)
	s.Add(t0, 1000) // expired by 20 s
	for i, v := range []float64{2, 4, 4, 4, 5, 5, 7, 9} {
		s.Add(at(time.Duration(10+i)*time.Second), v)
	}
	if got, ok := ZScore(&s, at(20*time.Second), 9, 2); !ok || !near(got, 2, 1e-12) {
		t.Errorf("ZScore = %v, %v; want 2, true", got, ok)
	}
}

func TestStatsZeroValue(t *testing.T) {
	var s Stats
	s.Add(t0, 1)
	s.Add(t0, 3)
	if n := s.Count(t0); n != 2 {
		t.Errorf("Count = %d, want 2", n)
	}
	if n := s.Count(t0 + 16); n != 0 {
		t.Errorf("Count 16 ns later = %d, want 0", n)
	}
}

func TestNewStatsTinySpan(t *testing.T) {
	s := NewStats(1) // less than one nanosecond per slice
	s.Add(t0, 1)
	if n := s.Count(t0); n != 1 {
		t.Errorf("Count = %d, want 1", n)
	}
}
