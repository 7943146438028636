package window

import (
	"math"
	"time"
)

// EWMA is an exponentially weighted moving average with a half-life rather
// than a per-sample factor, so irregular sampling is handled: a sample dt
// after the previous one keeps weight 0.5^(dt/halfLife) for the old average.
type EWMA struct {
	halfLife float64 // nanoseconds
	avg      float64
	last     int64
	set      bool
}

// NewEWMA returns an empty average with the given half-life. A half-life of
// 0 or less gives no smoothing: the average is the latest sample.
func NewEWMA(halfLife time.Duration) EWMA {
	return EWMA{halfLife: float64(halfLife)}
}

// Add folds v in at now and returns the new average; the first sample sets
// it. A sample at the time of the previous one, or earlier, is treated as
// arriving at that time, where the old average keeps all its weight, so it
// leaves the average as it was. NaN and ±Inf are ignored, and the average is
// returned unchanged (NaN before the first sample).
func (e *EWMA) Add(now int64, v float64) float64 {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		if !e.set {
			return math.NaN()
		}
		return e.avg
	case !e.set || e.halfLife <= 0:
		e.avg, e.last, e.set = v, max(now, e.last), true
		return v
	case now <= e.last:
		return e.avg
	}
	keep := math.Exp2(-float64(now-e.last) / e.halfLife)
	e.avg = v + keep*(e.avg-v)
	e.last = now
	return e.avg
}

// Value returns the average as it stands, NaN before the first sample.
func (e *EWMA) Value() float64 {
	if !e.set {
		return math.NaN()
	}
	return e.avg
}
