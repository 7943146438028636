package sluice

import (
	"errors"
	"fmt"
	"time"
)

// ErrBusy means a message was not accepted because a pipeline's journal is
// full (overflow policy block). Ingest tells an MQTT 5 publisher "quota
// exceeded"; it may send the message again later.
var ErrBusy = errors.New("journal full")

// ErrStorage means a message was not accepted because a pipeline's journal
// cannot write (a full disk, an I/O error): nothing was acknowledged. Ingest
// refuses it (an MQTT 5 QoS 1 publisher is told "quota exceeded"; see
// docs/delivery.md for the others); the journal takes messages again by
// itself once a write succeeds.
var ErrStorage = errors.New("journal cannot write")

// RetryableError marks a failure that may succeed when tried again: a lost
// connection, a timeout, a 5xx, throttling. After, when set, is the delay the
// remote asked for (Retry-After).
type RetryableError struct {
	Err   error
	After time.Duration
}

func (e *RetryableError) Error() string { return e.Err.Error() }
func (e *RetryableError) Unwrap() error { return e.Err }

// PermanentError marks a failure that will fail again however often it is tried:
// a record the sink rejects. The record goes to the dead-letter stream.
type PermanentError struct {
	Err error
}

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Retryable wraps err as retryable, to be tried again no sooner than after.
func Retryable(err error, after time.Duration) error {
	return &RetryableError{Err: err, After: after}
}

// Permanent wraps err as permanent.
func Permanent(err error) error { return &PermanentError{Err: err} }

// IsPermanent reports whether err is, or wraps, a PermanentError. Anything not
// marked permanent is retried: an unknown failure must not lose data.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// RetryAfter returns the delay a RetryableError asked for, or 0.
func RetryAfter(err error) time.Duration {
	var r *RetryableError
	if errors.As(err, &r) {
		return r.After
	}
	return 0
}

// BatchError reports which items of a batch failed; items not listed were
// written. Sinks return it when the remote accepts part of a batch.
//
// An item the remote refused for good, and named, has a permanent error of
// its own: it goes to the dead letters. Items that share one permanent error
// value were refused together, the remote not saying which of them is bad
// (a request refused as a whole): they are written again, half by half,
// until each bad one is alone.
type BatchError struct {
	Errs map[int]error // index in the batch -> its error
}

func (e *BatchError) Error() string {
	for i, err := range e.Errs {
		return fmt.Sprintf("%d of the batch failed, e.g. item %d: %v", len(e.Errs), i, err)
	}
	return "batch failed"
}
