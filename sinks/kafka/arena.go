package kafka

import (
	kafkago "github.com/segmentio/kafka-go"

	"github.com/sluicehq/sluice"
)

// arena carves the bytes of a batch's messages (values, keys, header
// values) and their headers out of shared chunks, so that encoding a batch
// costs an allocation per chunk rather than several per record (the Kafka
// sink was a fifth of the bytes sluice allocated under load, sluice bench
// -memprofile). An arena, its chunks and its message slices are used again
// by a later batch (the sink's encoders) once the batch is written: not
// after a write cut short by its context, which kafka-go may still be
// sending when Write returns (that arena is left to the collector).
type arena struct {
	bytes   []byte
	chunks  [][]byte // every chunk made, in order; bytes is chunks[cur]
	cur     int
	headers []kafkago.Header
	msgs    []kafkago.Message
	index   []int // msgs[i] is the batch's event index[i]
}

const (
	arenaChunk = 64 << 10
	// arenaRoom is the space left in a chunk below which a record starts
	// a new one: most records are smaller, and one that is not grows the
	// chunk it is in (correct, but it copies the chunk).
	arenaRoom = 4 << 10
)

func (a *arena) reserve(n int) {
	if cap(a.bytes)-len(a.bytes) >= n {
		return
	}
	if a.chunks == nil {
		a.bytes = make([]byte, 0, max(arenaChunk, n))
		a.chunks = [][]byte{a.bytes}
		return
	}
	a.chunks[a.cur] = a.bytes // it may have grown
	a.cur++
	if a.cur == len(a.chunks) {
		a.chunks = append(a.chunks, nil)
	}
	if cap(a.chunks[a.cur]) < n {
		// Too small for this record (or new): a larger chunk takes its
		// place, so that an arena holds no more chunks than one batch
		// needed.
		a.chunks[a.cur] = make([]byte, 0, max(arenaChunk, n))
	}
	a.bytes = a.chunks[a.cur][:0]
}

// reset readies the arena for another batch, its chunks to be written
// over.
func (a *arena) reset() {
	if len(a.chunks) > 0 {
		a.cur = 0
		a.bytes = a.chunks[0][:0]
	}
	clear(a.headers)
	clear(a.msgs)
	a.headers, a.msgs, a.index = a.headers[:0], a.msgs[:0], a.index[:0]
}

// done returns the bytes appended since start, capped so that later
// appends cannot write into them.
func (a *arena) done(start int) []byte {
	n := len(a.bytes)
	return a.bytes[start:n:n]
}

// encode returns the event's value: its JSON (or, for the raw stream, the
// payload itself, which is never modified).
func (a *arena) encode(e *sluice.Event) ([]byte, error) {
	if e.Stream == sluice.StreamRaw {
		return e.Message.Payload, nil
	}
	a.reserve(arenaRoom)
	start := len(a.bytes)
	b, err := e.AppendEncoded(a.bytes)
	if err != nil {
		return nil, err
	}
	a.bytes = b
	return a.done(start), nil
}

// copy returns s as bytes.
func (a *arena) copy(s string) []byte {
	a.reserve(len(s))
	start := len(a.bytes)
	a.bytes = append(a.bytes, s...)
	return a.done(start)
}

// header appends a header to the headers of the batch; the message being
// built takes its own from where they started (headersFrom).
func (a *arena) header(key, value string) {
	a.headers = append(a.headers, kafkago.Header{Key: key, Value: a.copy(value)})
}

// headersFrom returns the headers appended since start.
func (a *arena) headersFrom(start int) []kafkago.Header {
	n := len(a.headers)
	return a.headers[start:n:n]
}
