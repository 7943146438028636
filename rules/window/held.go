package window

import "time"

// Held tracks how long a condition has been continuously true, for
// for(duration) in rules.
type Held struct {
	since int64 // when the condition became true, valid when on
	last  int64 // latest observation time, valid when seen
	on    bool
	seen  bool
}

// Observe records the condition at now and returns how long it has been
// continuously true: 0 when it is false or has just become true. An
// observation earlier than the latest one is taken as made at the latest.
func (h *Held) Observe(now int64, cond bool) time.Duration {
	if h.seen && now < h.last {
		now = h.last
	}
	h.last, h.seen = now, true
	switch {
	case !cond:
		h.on = false
		return 0
	case !h.on:
		h.on, h.since = true, now
		return 0
	}
	return time.Duration(now - h.since)
}
