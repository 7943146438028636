package sluice

import "sync/atomic"

// Ack tracks the outstanding parts of one message and reports once, when the
// last part completes. A message fans out to several pipelines and each pipeline
// to several sinks; each adds its parts with Add and completes them with Done.
// The message is acknowledged (done is called) only when every part is done.
//
// An Ack starts with one part, held by its creator, who must call Done once it
// has handed the message on. A nil *Ack is valid and does nothing.
type Ack struct {
	pending atomic.Int32
	err     atomic.Pointer[error]
	done    func(error)
}

// NewAck returns an Ack holding one part. done receives nil when every part
// succeeded, or the first error reported.
func NewAck(done func(error)) *Ack {
	a := &Ack{done: done}
	a.pending.Store(1)
	return a
}

// Add registers n more parts.
func (a *Ack) Add(n int) {
	if a != nil {
		a.pending.Add(int32(n))
	}
}

// Done completes one part, with the error that part ended in (nil for success).
func (a *Ack) Done(err error) {
	if a == nil {
		return
	}
	if err != nil {
		a.err.CompareAndSwap(nil, &err)
	}
	if a.pending.Add(-1) != 0 || a.done == nil {
		return
	}
	var first error
	if p := a.err.Load(); p != nil {
		first = *p
	}
	a.done(first)
}
