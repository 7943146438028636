// Package window holds the bounded per-series state of the stateful rule
// functions: windowed aggregates (Stats, Quantiles, and ZScore on a Stats),
// the least-squares slope Deriv and DeltaOver (last minus first) of a
// window, the exponentially weighted average EWMA, Last for delta, rate,
// increase and changed, and Held for for(duration).
//
// A fleet can have 100,000 series or more, each with its own state per
// function, so every type here is a fixed-size value with no slices, maps or
// pointers (Last's string aside): it is embedded in the series' state, its
// methods do not allocate, and its size does not grow with the sample rate.
// None is safe for concurrent use: a series' state belongs to the one
// worker that evaluates that series.
//
// There is no clock in the package. Every method takes the sample or query
// time in unix nanoseconds, so rules can be tested with a simulated clock.
// Samples are expected in time order per series; one that is earlier than
// the latest seen is treated as arriving at the latest time: it is never an
// error, and never disturbs older state. Each type says what a sample at
// the latest time means for it.
//
// # Bucketing
//
// Stats, Quantiles, Deriv and DeltaOver cut time into slices of
// span/Buckets (18.75 s for a 5 m span), aligned on multiples of that width
// since the epoch, and keep the last Buckets of them in a ring. Each slot stores the start time of its
// slice: a sample landing in a slot that still holds an older slice (the
// ring has come round, or the series was silent) resets it first, and a
// query counts only the slices whose start lies in (now-span, now]. So the
// oldest slice leaves the window all at once: at any moment the window
// covers between span-span/Buckets and span of samples (4 m 41 s to 5 m for
// a 5 m span), and after a silence longer than span it is empty.
//
// # Accuracy
//
// Stats is exact up to float64 rounding. Each slice keeps its count, min,
// max, first sample k, and the sums of v-k and (v-k)^2; a query merges the
// slices pairwise (Chan et al.) around the first sample of one of them. As
// the differences from k are exact for nearby values, Mean and Stddev stay
// accurate (1e-15 relative in TestStddevStability) for values with a large
// common offset, such as 1e9 plus noise of 1e-3, where a plain sum of
// squares loses every digit and Welford's running update keeps about five.
//
// Deriv is exact up to float64 rounding in the same way: each slice keeps
// the means of its times (from the slice's start) and values (from its
// first sample) and their sums of squared and crossed deviations, and a
// query merges them (1e-6 relative against a direct fit, for values of 1e6
// plus noise of 0.05, in TestDerivSteadyStream). DeltaOver keeps each
// slice's first and last sample, and is exact.
//
// Quantiles keeps, per slice, the count and a uniform reservoir of
// SamplesPerBucket samples, and weights each kept sample by count/kept. It
// is exact while no live slice got more than SamplesPerBucket samples (one
// sample every 5 s for a 5 m span). Beyond that an estimate is a quantile of
// at most 64 samples. Measured on values uniform in [0, 100] by
// TestQuantileAccuracy:
//
//	samples in the window            p50 error (RMS)   p90 error (RMS)
//	spread over all 16 slices         6                 4
//	all in one slice (a burst)       19                19
//
// so it tells a typical value from an outlier but is no substitute for a
// histogram when a quantile must be close.
//
// # Memory
//
// Sizes on 64-bit platforms, checked by TestSizes:
//
//	Stats       920 bytes (16 slices of 56 bytes, 24 of ring state)
//	Quantiles   792 bytes (16 slices of 48 bytes, 24 of ring state)
//	Deriv       920 bytes (16 slices of 56 bytes, 24 of ring state)
//	DeltaOver   536 bytes (16 slices of 32 bytes, 24 of ring state)
//	EWMA         32 bytes
//	Last         48 bytes, plus the previous string for Changed on strings
//	Held         24 bytes
package window
