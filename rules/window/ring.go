package window

import "time"

// ring maps sample times to the slices of a window and remembers the latest
// time seen, so that a late sample is counted as arriving at that time.
//
// Slice q covers [q*width, (q+1)*width) and lives in slot q%Buckets; a slot
// holds slice q only while its stored start equals q*width, which is how a
// slot left over from an earlier lap of the ring is told apart.
type ring struct {
	width  int64 // nanoseconds per slice; 0 only in a zero value
	latest int64 // latest sample time seen, valid when seen
	cur    uint8 // slot of the slice that took the last sample
	seen   bool
}

func newRing(span time.Duration) ring {
	return ring{width: max(int64(span)/Buckets, 1)}
}

// w is the slice width; a zero-value ring behaves as one of 1 ns slices
// rather than dividing by zero.
func (r *ring) w() int64 { return max(r.width, 1) }

// clamp returns now, or the latest sample time when now is earlier.
func (r *ring) clamp(now int64) int64 {
	if r.seen && now < r.latest {
		return r.latest
	}
	return now
}

// observe clamps now like clamp and records it as the latest time.
func (r *ring) observe(now int64) int64 {
	now = r.clamp(now)
	r.latest, r.seen = now, true
	return now
}

// inCur reports whether now falls in the slice starting at start, the
// start of the current slot's slice. It is the fast path of every Add: no
// division while samples keep landing in the same slice.
func (r *ring) inCur(now, start int64) bool {
	return uint64(now-start) < uint64(r.width)
}

// locate makes the slot of now's slice current and returns it with the
// slice's start.
func (r *ring) locate(now int64) (slot int, start int64) {
	w := r.w()
	q := now / w
	if now%w < 0 {
		q-- // floor division, for times before 1970
	}
	r.cur = uint8(q & (Buckets - 1))
	return int(r.cur), q * w
}

// live returns the bounds of the window at now: a slice is in it when
// lo < start <= hi, which holds for the Buckets most recent slices.
func (r *ring) live(now int64) (lo, hi int64) {
	now = r.clamp(now)
	w := r.w()
	q := now / w
	if now%w < 0 {
		q--
	}
	hi = q * w
	return hi - Buckets*w, hi
}
