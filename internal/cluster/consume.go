package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/internal/journal"
)

// Consumer reads a pipeline's events topic for one sink, as a member of
// the sink's consumer group: the cluster's counterpart of a sink's journal
// cursor. It serves records one by one as journal entries (numbered in the
// order served) and commits a record's offset once Ack says it and every
// record served before it are written (marked records are also committed
// every 500ms and when a partition is revoked). At least once: a node that dies
// before committing leaves its last records to the next owner, which writes
// them again (sinks overwrite or drop them by their stable ids).
type Consumer struct {
	cl   *kgo.Client
	kind byte

	buf []*kgo.Record // polled, not yet served

	mu        sync.Mutex
	served    []*kgo.Record // served, not yet acknowledged; served[0] has seq acked+1
	seq       uint64        // seq of the last record served
	acked     uint64
	highs     map[int32]int64 // high watermark per partition, as last fetched
	committed time.Time       // when Ack last committed
	offsets   map[int32]int64 // next offset to serve per partition
}

// NewConsumer returns a Consumer of topic in group, serving entries of
// kind. From a group's first start it reads from the start of the topic.
func NewConsumer(conn Conn, topic, group string, kind byte) (*Consumer, error) {
	cl, err := kgo.NewClient(conn.opts(
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(10*time.Second),
		kgo.HeartbeatInterval(time.Second),
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(500*time.Millisecond),
	)...)
	if err != nil {
		return nil, fmt.Errorf("cluster: join group %s: %w", group, err)
	}
	return &Consumer{cl: cl, kind: kind, highs: map[int32]int64{}, offsets: map[int32]int64{}}, nil
}

// Next returns the next record, waiting for one until ctx ends.
func (c *Consumer) Next(ctx context.Context) (journal.Entry, error) {
	for len(c.buf) == 0 {
		fetches := c.cl.PollFetches(ctx)
		if fetches.IsClientClosed() {
			return journal.Entry{}, journal.ErrClosed
		}
		c.mu.Lock()
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if p.Err == nil {
				c.highs[p.Partition] = p.HighWatermark
			}
		})
		c.mu.Unlock()
		// A poll cut short by ctx may still return records: the client
		// counts them as consumed, so they are served, never dropped (a
		// dropped one would be committed past, unwritten).
		c.buf = fetches.Records()
		if len(c.buf) == 0 {
			if err := ctx.Err(); err != nil {
				return journal.Entry{}, err
			}
		}
	}
	r := c.buf[0]
	c.buf[0] = nil
	c.buf = c.buf[1:]
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	c.served = append(c.served, r)
	c.offsets[r.Partition] = r.Offset + 1
	return journal.Entry{Seq: c.seq, Kind: c.kind, Data: r.Value, Time: r.Timestamp}, nil
}

// commitEvery is how often Ack commits what it marked, at most: a node that
// dies writes again at most what its sink wrote in that time. (A commit per
// Ack cost a Kafka round trip per record for a sink that most records have
// nothing for, as an alert sink's: 6% of a node's CPU at 10,000 msg/s.)
const commitEvery = 50 * time.Millisecond

// Ack records that every entry up to seq is written, and commits their
// offsets, at most every commitEvery (the rest is committed with the next
// Ack, by the autocommit every 500ms, or when a partition is revoked).
func (c *Consumer) Ack(seq uint64) {
	c.mu.Lock()
	if seq <= c.acked {
		c.mu.Unlock()
		return
	}
	n := int(min(seq, c.seq) - c.acked)
	c.cl.MarkCommitRecords(c.served[:n]...)
	clear(c.served[:n])
	c.served = c.served[n:]
	c.acked += uint64(n)
	now := time.Now()
	commit := now.Sub(c.committed) >= commitEvery
	if commit {
		c.committed = now
	}
	c.mu.Unlock()
	if !commit {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A failed commit (a rebalance took the partition) leaves the offsets
	// marked: the next commit, or the revoke, takes them.
	c.cl.CommitMarkedOffsets(ctx)
}

// Acked returns the seq of the last entry acknowledged.
func (c *Consumer) Acked() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acked
}

// Lag is how many records of the partitions this node reads are not yet
// served, as of the last fetch.
func (c *Consumer) Lag() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var lag int64
	for p, h := range c.highs {
		if o, ok := c.offsets[p]; ok && h > o {
			lag += h - o
		}
	}
	return lag + int64(len(c.served))
}

// Close commits what was acknowledged and leaves the group.
func (c *Consumer) Close(ctx context.Context) error {
	err := c.cl.CommitMarkedOffsets(ctx)
	c.cl.Close()
	return err
}

// Pending is how many records were served and not yet acknowledged.
func (c *Consumer) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.served)
}
