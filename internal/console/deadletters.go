package console

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sluicehq/sluice"
)

// DeadLetter is a message that could not be processed, as the store keeps
// it: why, where, and the message itself (for a replay after a fix).
type DeadLetter struct {
	ID       uint64
	Pipeline string
	Time     time.Time // when it became a dead letter
	sluice.DeadLetter
	Message *sluice.Message
	// Truncated is set when the payload was too large to keep whole: the
	// store kept its first bytes, and it cannot be replayed.
	Truncated bool
	// Replay is what the last replay of it did, if any.
	Replay *ReplayOutcome
}

// ReplayOutcome is what replaying a dead letter did.
type ReplayOutcome struct {
	Time time.Time `json:"time,omitzero"`
	// Sent is true once the rule's records went to the sinks: the dead
	// letter is not replayed again (that would write them twice).
	Sent    bool `json:"sent"`
	Records int  `json:"records"`
	// Alerts the rule raised on the message; they are shown, not sent
	// (see docs/console.md).
	Alerts int `json:"alerts"`
	// Error says why it was not replayed, or why it failed again.
	Error string `json:"error,omitempty"`
}

// Bounds of the dead-letter store by default.
const (
	defaultDeadLetters     = 1000
	defaultDeadLetterBytes = 32 << 20
	// maxKeptPayload is the most of one payload the store keeps.
	maxKeptPayload = 1 << 20
)

// DeadLetters keeps the most recent dead letters of every pipeline in
// memory, bounded by count and by payload bytes, without any sink
// configured: what `sluice deadletters` and the console show.
type DeadLetters struct {
	mu       sync.Mutex
	max      int
	maxBytes int
	ring     []*DeadLetter // oldest first
	bytes    int
	nextID   uint64
	total    uint64
	now      func() time.Time
}

// NewDeadLetters returns a store of at most n dead letters and maxBytes of
// payloads (0: the defaults, 1000 and 32 MiB).
func NewDeadLetters(n, maxBytes int) *DeadLetters {
	if n <= 0 {
		n = defaultDeadLetters
	}
	if maxBytes <= 0 {
		maxBytes = defaultDeadLetterBytes
	}
	return &DeadLetters{max: n, maxBytes: maxBytes, now: time.Now}
}

// Add keeps a dead letter of pipeline, dropping the oldest past the bounds
// (a nil store keeps nothing).
func (d *DeadLetters) Add(pipeline string, msg *sluice.Message, dl *sluice.DeadLetter) {
	if d == nil {
		return
	}
	e := &DeadLetter{Pipeline: pipeline, DeadLetter: *dl, Message: msg}
	if len(msg.Payload) > maxKeptPayload {
		m := *msg
		m.Payload = append([]byte(nil), msg.Payload[:maxKeptPayload]...)
		e.Message, e.Truncated = &m, true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.nextID++
	d.total++
	e.ID, e.Time = d.nextID, d.now()
	d.ring = append(d.ring, e)
	d.bytes += len(e.Message.Payload)
	for len(d.ring) > d.max || (d.bytes > d.maxBytes && len(d.ring) > 1) {
		d.bytes -= len(d.ring[0].Message.Payload)
		d.ring[0] = nil
		d.ring = d.ring[1:]
	}
}

// List returns copies of the dead letters kept, oldest first.
func (d *DeadLetters) List() []DeadLetter {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]DeadLetter, len(d.ring))
	for i, e := range d.ring {
		out[i] = *e
	}
	return out
}

// Total is how many dead letters were added since start (kept or not).
func (d *DeadLetters) Total() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.total
}

// take marks the dead letter id, and the others of the same message and
// rule (its other readings that failed), as being replayed, and returns
// copies of them. It says why not when the store no longer holds id, its
// records were sent already (unless again), or a replay is under way.
func (d *DeadLetters) take(id uint64, again bool) ([]DeadLetter, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var first *DeadLetter
	for _, e := range d.ring {
		if e.ID == id {
			first = e
		}
	}
	if first == nil {
		return nil, fmt.Errorf("dead letter %d is no longer held (the store keeps the last %d)", id, d.max)
	}
	var group []*DeadLetter
	for _, e := range d.ring {
		if e.Message == first.Message && e.Rule == first.Rule && e.Pipeline == first.Pipeline && e.Stage == first.Stage {
			switch {
			case e.Replay != nil && e.Replay.Time.IsZero():
				return nil, fmt.Errorf("dead letter %d is being replayed", e.ID)
			case e.Replay != nil && e.Replay.Sent && !again:
				return nil, fmt.Errorf("dead letter %d was replayed at %s and its records sent: again would write them twice", e.ID, e.Replay.Time.Format(time.RFC3339))
			}
			group = append(group, e)
		}
	}
	out := make([]DeadLetter, len(group))
	for i, e := range group {
		e.Replay = &ReplayOutcome{} // under way: a zero time
		out[i] = *e
	}
	return out, nil
}

// replayed records what replaying the dead letters ids did.
func (d *DeadLetters) replayed(ids []uint64, o ReplayOutcome) {
	d.mu.Lock()
	defer d.mu.Unlock()
	o.Time = d.now()
	for _, e := range d.ring {
		if slices.Contains(ids, e.ID) {
			e.Replay = &o
		}
	}
}
