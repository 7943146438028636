package bench

import (
	"bytes"
	"context"
	"fmt"
	"math/bits"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// kafkaTail reads the records and alerts topics from their start while the
// load runs, as a downstream consumer would. It counts what arrived (every
// record, and each reading once, by device and seq) and measures each
// record's latency: from sent_us in its fields (the publish) to when the
// consumer has it. A record can only be read once Kafka has appended it,
// which is when it acknowledges the sink's write; so this is the sink
// acknowledgement plus the fetch.
type kafkaTail struct {
	records, alerts atomic.Int64
	unparsed        atomic.Int64
	lat             recorder

	mu      sync.Mutex
	arrived [][]uint64 // per device: reading seqs seen (bits)
	unique  int64

	cancel context.CancelFunc
	wg     sync.WaitGroup
	errMu  sync.Mutex
	err    error
}

// TailCounts is what the tail has seen so far.
type TailCounts struct {
	Records, Unique, Alerts, Unparsed int64
}

func startKafkaTail(ctx context.Context, brokers []string, recordsTopic, alertsTopic string, devices int) (*kafkaTail, error) {
	ctx, cancel := context.WithCancel(ctx)
	t := &kafkaTail{cancel: cancel, arrived: make([][]uint64, devices)}
	for _, topic := range []string{recordsTopic, alertsTopic} {
		parts, err := partitions(ctx, brokers[0], topic)
		if err != nil {
			cancel()
			t.wg.Wait()
			return nil, err
		}
		for _, p := range parts {
			r := kafkago.NewReader(kafkago.ReaderConfig{
				Brokers: brokers, Topic: topic, Partition: p,
				MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 50 * time.Millisecond,
				ReadLagInterval: -1,
			})
			t.wg.Add(1)
			go func() {
				defer t.wg.Done()
				defer r.Close()
				for {
					m, err := r.ReadMessage(ctx)
					if err != nil {
						if ctx.Err() == nil {
							t.fail(fmt.Errorf("kafka tail %s/%d: %w", topic, p, err))
						}
						return
					}
					if topic == alertsTopic {
						t.alerts.Add(1)
						continue
					}
					t.record(m.Key, m.Value, time.Now())
				}
			}()
		}
	}
	return t, nil
}

func partitions(ctx context.Context, broker, topic string) ([]int, error) {
	conn, err := kafkago.DialContext(ctx, "tcp", broker)
	if err != nil {
		return nil, fmt.Errorf("kafka tail: %w", err)
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions(topic)
	if err != nil {
		return nil, fmt.Errorf("kafka tail: partitions of %q: %w", topic, err)
	}
	ids := make([]int, len(parts))
	for i, p := range parts {
		ids[i] = p.ID
	}
	return ids, nil
}

func (t *kafkaTail) fail(err error) {
	t.errMu.Lock()
	defer t.errMu.Unlock()
	if t.err == nil {
		t.err = err
	}
}

// record notes one record of the records topic: key is the device, the
// value sluice's record JSON with seq and sent_us among its fields.
func (t *kafkaTail) record(key, value []byte, at time.Time) {
	t.records.Add(1)
	dev, ok := deviceIndex(key)
	seq, ok2 := fieldInt(value, `"seq":`)
	us, ok3 := fieldInt(value, `"sent_us":`)
	if !ok || !ok2 || !ok3 || dev < 0 || dev >= len(t.arrived) || seq < 0 {
		t.unparsed.Add(1)
		return
	}
	t.lat.record(at.Sub(time.UnixMicro(us)))
	t.mu.Lock()
	set := t.arrived[dev]
	if !hasSeq(set, uint64(seq)) {
		t.arrived[dev] = markSeqs(set, uint64(seq), 1)
		t.unique++
	}
	t.mu.Unlock()
}

// fieldInt finds name (`"seq":`) in the record's fields and reads the
// number after it (JSON numbers: sluice writes fields as floats).
func fieldInt(value []byte, name string) (int64, bool) {
	f := bytes.Index(value, []byte(`"fields":{`))
	if f < 0 {
		return 0, false
	}
	i := bytes.Index(value[f:], []byte(name))
	if i < 0 {
		return 0, false
	}
	rest := value[f+i+len(name):]
	end := bytes.IndexAny(rest, ",}")
	if end < 0 {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(rest[:end]), 64)
	if err != nil {
		return 0, false
	}
	return int64(v), true
}

func (t *kafkaTail) counts() TailCounts {
	t.mu.Lock()
	u := t.unique
	t.mu.Unlock()
	return TailCounts{Records: t.records.Load(), Unique: u, Alerts: t.alerts.Load(), Unparsed: t.unparsed.Load()}
}

// lost counts the readings in acked (per device, bits) that never arrived.
func (t *kafkaTail) lost(acked func(dev int) []uint64) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var n int64
	for dev := range t.arrived {
		got := t.arrived[dev]
		for w, bitsAcked := range acked(dev) {
			var have uint64
			if w < len(got) {
				have = got[w]
			}
			n += int64(bits.OnesCount64(bitsAcked &^ have))
		}
	}
	return n
}

func (t *kafkaTail) close() error {
	t.cancel()
	t.wg.Wait()
	t.errMu.Lock()
	defer t.errMu.Unlock()
	return t.err
}
