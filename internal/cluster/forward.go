package cluster

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/journal"
)

// Headers of an ingest record: where the message was accepted, so a rules
// node can tell a message sent again (after the ingest node restarted
// before its cursor was saved) from a new one.
const (
	HeaderOrigin = "sluice.origin" // the journal's origin id
	HeaderSeq    = "sluice.seq"    // the message's seq in that journal, 8 bytes big-endian
)

// Forwarder sends a journal's messages to the ingest topic, in journal
// order, each keyed by its partition key: the ingest half of a node. The
// journal reader moves past a message once Kafka has it; until then the
// message waits in the journal (through a Kafka outage, a restart). kgo's
// idempotent producer keeps each partition's records gapless and in order,
// which the rules side's duplicate check relies on.
type Forwarder struct {
	cl     *kgo.Client
	topic  string
	reader *journal.Reader
	key    func(topic string) string
	kind   byte // the journal kind of messages; other records are passed over
	origin []byte
	log    *slog.Logger

	mu       sync.Mutex
	inflight []flight // in seq order
	forward  uint64   // every seq up to here is in Kafka (or not a message)
	failed   error    // a produce failed: stop, drain, rewind
	// changed is closed (and replaced) when forward moves while someone
	// waits for it (Wait, for ack: kafka).
	changed chan struct{}
	waiters int
}

type flight struct {
	seq  uint64
	done bool
}

// NewForwarder returns a Forwarder of reader's records of kind to topic.
func NewForwarder(conn Conn, topic string, reader *journal.Reader, kind byte, key func(topic string) string, origin string, maxBytes int) (*Forwarder, error) {
	cl, err := kgo.NewClient(conn.opts(
		kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), // murmur2 of the key, as Kafka's own clients
		kgo.ProducerBatchMaxBytes(int32(maxBytes)),
		kgo.ProducerLinger(2*time.Millisecond),
	)...)
	if err != nil {
		return nil, err
	}
	return &Forwarder{
		cl: cl, topic: topic, reader: reader, key: key, kind: kind, origin: []byte(origin),
		log: conn.Log, forward: reader.Acked(), changed: make(chan struct{}),
	}, nil
}

// Run forwards until ctx ends. A failed produce (an authorisation error, a
// topic gone) stops it until what is in flight settles; it then starts
// again from the first message Kafka does not have, after a pause.
func (f *Forwarder) Run(ctx context.Context) {
	defer f.cl.Close()
	pause := time.Second
	for ctx.Err() == nil {
		err := f.forwardUntilFailed(ctx)
		if ctx.Err() != nil {
			break
		}
		f.log.Warn("cluster: forwarding to Kafka failed; the messages wait in the journal", "topic", f.topic, "error", err, "retry_in", pause)
		select {
		case <-time.After(pause):
		case <-ctx.Done():
		}
		pause = min(2*pause, 30*time.Second)
	}
	// What was produced and not yet confirmed stays in the journal: the
	// next start sends it again, and the rules side drops the copies.
	f.cl.Flush(context.WithoutCancel(ctx))
}

func (f *Forwarder) forwardUntilFailed(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f.mu.Lock()
	f.failed = nil
	f.mu.Unlock()
	for {
		e, err := f.reader.Next(ctx)
		if err != nil {
			return f.settle(err)
		}
		if e.Kind != f.kind {
			f.track(e.Seq, true)
			continue
		}
		msg, ok := e.Value.(*sluice.Message)
		if !ok {
			if msg, err = sluice.DecodeMessage(e.Data); err != nil {
				f.log.Error("cluster: unreadable message in the journal; skipped", "seq", e.Seq, "error", err)
				f.track(e.Seq, true)
				continue
			}
		}
		var seq [8]byte
		binary.BigEndian.PutUint64(seq[:], e.Seq)
		rec := &kgo.Record{
			Key:       []byte(f.key(msg.Topic)),
			Value:     append([]byte(nil), e.Data...), // e.Data is the reader's until its next Next
			Timestamp: msg.Received,
			Headers:   []kgo.RecordHeader{{Key: HeaderOrigin, Value: f.origin}, {Key: HeaderSeq, Value: seq[:]}},
		}
		f.track(e.Seq, false)
		s := e.Seq
		f.cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			if err != nil {
				f.fail(err)
				cancel()
				return
			}
			f.settled(s)
		})
		if f.hasFailed() {
			return f.settle(nil)
		}
	}
}

// settle waits for what is in flight, then rewinds the reader to the first
// message Kafka does not have.
func (f *Forwarder) settle(err error) error {
	f.cl.Flush(context.Background())
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inflight = f.inflight[:0] // none after Flush: done ones were acked, failed ones are resent
	f.reader.Rewind(f.forward)
	if f.failed != nil {
		return f.failed
	}
	return err
}

func (f *Forwarder) track(seq uint64, done bool) {
	f.mu.Lock()
	f.inflight = append(f.inflight, flight{seq, done})
	f.advance()
	f.mu.Unlock()
}

func (f *Forwarder) settled(seq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	// inflight is in seq order, and promises come mostly in order.
	if i, ok := slices.BinarySearchFunc(f.inflight, seq, func(x flight, s uint64) int { return cmp.Compare(x.seq, s) }); ok {
		f.inflight[i].done = true
	}
	f.advance()
}

// advance moves the forwarded mark past the done prefix of inflight and
// acknowledges it to the journal. f.mu is held.
func (f *Forwarder) advance() {
	n := 0
	for n < len(f.inflight) && f.inflight[n].done && f.failed == nil {
		f.forward = f.inflight[n].seq
		n++
	}
	if n == 0 {
		return
	}
	f.inflight = append(f.inflight[:0], f.inflight[n:]...)
	f.reader.Ack(f.forward)
	if f.waiters > 0 {
		close(f.changed)
		f.changed = make(chan struct{})
	}
}

func (f *Forwarder) fail(err error) {
	f.mu.Lock()
	if f.failed == nil && !errors.Is(err, context.Canceled) {
		f.failed = err
	}
	f.mu.Unlock()
}

func (f *Forwarder) hasFailed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed != nil
}

// Wait returns once the message at seq is in Kafka (for `ack: kafka`), or
// when ctx ends.
func (f *Forwarder) Wait(ctx context.Context, seq uint64) error {
	f.mu.Lock()
	f.waiters++
	defer func() {
		f.mu.Lock()
		f.waiters--
		f.mu.Unlock()
	}()
	for {
		done, changed := f.forward >= seq, f.changed
		f.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
		f.mu.Lock()
	}
}

// Forwarded returns the last seq Kafka has, with every one before it.
func (f *Forwarder) Forwarded() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.forward
}
