package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A Task evaluates the partitions of the ingest topic that the consumer
// group gives this node.
type Task interface {
	// Open starts partition p with its state as last committed: the
	// latest value of each key of its changelog, in key order. Open
	// forgets any earlier state of p.
	Open(p int32, state []KV) (Partition, error)
}

// Partition evaluates one partition's records, in order. A Stream calls a
// Partition from one goroutine at a time.
type Partition interface {
	// Process evaluates one message (the value of an ingest record) and
	// emits what it derives.
	Process(rec *kgo.Record, emit Emit)
	// Tick runs what time alone decides (deadman alerts) at now.
	Tick(now time.Time, emit Emit)
	// Checkpoint puts the state changed since the last checkpoint: a
	// nil value deletes a key.
	Checkpoint(put func(key, value []byte))
	// Close forgets the partition's state.
	Close()
}

// Emit writes one record to the events topic, in the partition of the
// input; key and value are the record's, and are the Stream's from then on.
type Emit func(key, value []byte, headers []kgo.RecordHeader)

// KV is a key of a changelog and its latest value.
type KV struct {
	Key, Value []byte
}

var errNotCommitted = errors.New("not committed (a rebalance or a fenced node)")

// metaKey holds, in each state partition, the offset of the next input
// record the state does not include, and the duplicate marks.
const metaKey = "\x00sluice.meta"

// StreamConfig configures a Stream.
type StreamConfig struct {
	Conn   Conn
	Topics Topics
	// Group is the consumer group of the pipeline's rule workers.
	Group string
	// TransactionalID is unique to this node and pipeline.
	TransactionalID string
	// CommitInterval is how long a transaction gathers inputs (default
	// 100ms); TickEvery how often Tick runs (default 1s).
	CommitInterval time.Duration
	TickEvery      time.Duration
	// MaxRecords bounds the inputs of one transaction (default 5000).
	MaxRecords int
	// Workers evaluate partitions in parallel (default 1).
	Workers int
	// SessionTimeout is how long the group waits for a silent node before
	// giving its partitions to others (default 10s).
	SessionTimeout time.Duration
	// MaxRecordBytes is the largest record written (the topics'
	// max.message.bytes; default 1MiB).
	MaxRecordBytes int
	// Events is told about ownership changes, for the log and status;
	// Transaction about each transaction's end; Restored about each
	// restore of taken-over partitions (for metrics). Each may be nil.
	Events      func(assigned, revoked []int32)
	Transaction func(committed bool)
	Restored    func(partitions int, took time.Duration)
}

// Stream is a pipeline's rule workers on one node: a member of the
// pipeline's consumer group over the ingest topic. For each transaction it
// polls inputs, evaluates them with the state of their partition, and
// writes the events, the changed state and the input offsets together.
type Stream struct {
	cfg  StreamConfig
	task Task
	log  *slog.Logger

	mu        sync.Mutex
	assigned  map[int32]bool  // by the group, not yet open
	committed map[int32]int64 // where consumption of an assigned partition starts
	revoked   []int32
	lost      bool

	owned map[int32]*owned // open partitions; only the Run goroutine touches it
}

type owned struct {
	p     Partition
	marks *Marks
	next  int64 // offset of the next input
	// end is the partition's high watermark as last seen: the partition
	// is caught up when next reaches it. Only a caught-up partition runs
	// its timers, so a node taking over a backlog does not fire the
	// deadman of series whose readings are in it.
	end   int64
	dirty bool // processed something since the last transaction
}

// NewStream returns a Stream running task.
func NewStream(cfg StreamConfig, task Task) *Stream {
	if cfg.CommitInterval <= 0 {
		cfg.CommitInterval = 100 * time.Millisecond
	}
	if cfg.TickEvery <= 0 {
		cfg.TickEvery = time.Second
	}
	if cfg.MaxRecords <= 0 {
		cfg.MaxRecords = 5000
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 10 * time.Second
	}
	if cfg.MaxRecordBytes <= 0 {
		cfg.MaxRecordBytes = 1 << 20
	}
	return &Stream{
		cfg: cfg, task: task, log: cfg.Conn.Log,
		assigned: map[int32]bool{}, committed: map[int32]int64{}, owned: map[int32]*owned{},
	}
}

// Owned lists the partitions this node evaluates now.
func (s *Stream) Owned() []int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ps []int32
	for p := range s.committed {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	return ps
}

// Run takes part in the group until ctx ends, then leaves it (its
// partitions go to the other nodes at once, with their state as of the
// last transaction).
func (s *Stream) Run(ctx context.Context) error {
	sess, err := kgo.NewGroupTransactSession(s.cfg.Conn.opts(
		kgo.ConsumerGroup(s.cfg.Group),
		kgo.ConsumeTopics(s.cfg.Topics.Ingest),
		kgo.TransactionalID(s.cfg.TransactionalID),
		// A node that dies mid-transaction holds its partitions back until
		// the transaction times out (or the node restarts): shorter than
		// the session, so it is gone by the time the group moves them.
		kgo.TransactionTimeout(max(5*s.cfg.CommitInterval, s.cfg.SessionTimeout-time.Second)),
		kgo.HeartbeatInterval(time.Second),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.BlockRebalanceOnPoll(),
		kgo.SessionTimeout(s.cfg.SessionTimeout),
		kgo.RebalanceTimeout(60*time.Second),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchMaxBytes(int32(s.cfg.MaxRecordBytes)),
		kgo.OnPartitionsAssigned(s.onAssigned),
		kgo.OnPartitionsRevoked(s.onRevoked),
		kgo.OnPartitionsLost(s.onLost),
		kgo.AdjustFetchOffsetsFn(s.onOffsets),
	)...)
	if err != nil {
		return fmt.Errorf("cluster: join group %s: %w", s.cfg.Group, err)
	}
	defer func() {
		for p, o := range s.owned {
			o.p.Close()
			delete(s.owned, p)
		}
		// Polls block rebalances until allowed: leaving the group waits
		// for one.
		sess.CloseAllowingRebalance()
	}()
	lastTick := time.Now()
	for ctx.Err() == nil {
		wait := min(s.cfg.CommitInterval*5, time.Until(lastTick.Add(s.cfg.TickEvery)))
		pollCtx, cancel := context.WithTimeout(ctx, max(wait, time.Millisecond))
		fetches := sess.PollRecords(pollCtx, s.cfg.MaxRecords)
		cancel()
		if fetches.IsClientClosed() || ctx.Err() != nil {
			break
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				s.log.Warn("cluster: fetch", "topic", topic, "partition", p, "error", err)
			}
		})
		revoked, err := s.applyOwnership(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Error("cluster: cannot restore the state of a partition; will try again", "error", err)
		}
		if revoked {
			// The session aborts the transaction after a revocation, to be
			// safe: there is none open (revocations wait for
			// AllowRebalance), so end that state now rather than lose the
			// next transaction's work to it.
			sess.End(ctx, kgo.TryAbort)
		}
		tick := time.Since(lastTick) >= s.cfg.TickEvery
		if fetches.NumRecords() == 0 && !tick {
			sess.AllowRebalance()
			continue
		}
		err = s.transact(ctx, sess, fetches, tick)
		if s.cfg.Transaction != nil {
			s.cfg.Transaction(err == nil)
		}
		if err != nil {
			// A rebalance that changed the group's generation under the
			// transaction is routine; anything else is worth a warning.
			level := slog.LevelWarn
			if errors.Is(err, errNotCommitted) {
				level = slog.LevelInfo
			}
			s.log.Log(ctx, level, "cluster: transaction aborted; the partitions restart from their last commit", "error", err)
			s.reopenAll(ctx)
		}
		if tick {
			lastTick = time.Now()
		}
		sess.AllowRebalance()
	}
	return nil
}

// transact evaluates the fetched records and the tick, and commits the
// outputs, the state and the offsets in one transaction.
func (s *Stream) transact(ctx context.Context, sess *kgo.GroupTransactSession, fetches kgo.Fetches, tick bool) error {
	if err := sess.Begin(); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	byPart := map[int32][]*kgo.Record{}
	var unopened []int32
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		o, ok := s.owned[fp.Partition]
		if !ok {
			if len(fp.Records) > 0 {
				unopened = append(unopened, fp.Partition)
			}
			return
		}
		if fp.Err == nil {
			o.end = max(o.end, fp.HighWatermark)
		}
		byPart[fp.Partition] = append(byPart[fp.Partition], fp.Records...)
	})
	// The transaction is finished even when ctx ends (a stop commits what
	// was done): its records are not tied to ctx, and a record that fails
	// anyway aborts it.
	txCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var produceErr error
	var errMu sync.Mutex
	produce := func(r *kgo.Record) {
		sess.Produce(txCtx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				errMu.Lock()
				produceErr = errors.Join(produceErr, err)
				errMu.Unlock()
			}
		})
	}
	now := time.Now()
	sem := make(chan struct{}, s.cfg.Workers)
	var wg sync.WaitGroup
	for p, o := range s.owned {
		recs := byPart[p]
		if len(recs) == 0 && !tick {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			emit := func(key, value []byte, headers []kgo.RecordHeader) {
				produce(&kgo.Record{Topic: s.cfg.Topics.Events, Partition: p, Key: key, Value: value, Headers: headers})
			}
			for _, r := range recs {
				o.next = r.Offset + 1
				o.dirty = true
				if !o.marks.fresh(r) {
					continue // a copy the ingest node sent again
				}
				o.p.Process(r, emit)
			}
			if tick && o.next >= o.end {
				o.p.Tick(now, emit)
			}
			o.p.Checkpoint(func(key, value []byte) {
				o.dirty = true
				produce(&kgo.Record{Topic: s.cfg.Topics.State, Partition: p, Key: key, Value: value})
			})
			if o.dirty {
				o.dirty = false
				produce(&kgo.Record{Topic: s.cfg.Topics.State, Partition: p, Key: []byte(metaKey), Value: o.marks.encode(o.next)})
			}
		})
	}
	wg.Wait()
	// Every record's fate is known before the transaction ends: one that
	// failed means the outputs are incomplete, and the transaction must
	// not commit its offsets. (An open transaction would also hold the
	// partitions' readers back until it timed out: it always ends.)
	flushErr := sess.Client().Flush(txCtx)
	errMu.Lock()
	failed := errors.Join(produceErr, flushErr)
	errMu.Unlock()
	if failed != nil {
		sess.End(txCtx, kgo.TryAbort)
		return fmt.Errorf("produce: %w", failed)
	}
	if len(unopened) > 0 {
		// Inputs of a partition whose state could not be restored were
		// polled and not evaluated: committing would skip them.
		sess.End(txCtx, kgo.TryAbort)
		return fmt.Errorf("partitions %v have inputs but no state yet", unopened)
	}
	committed, err := sess.End(txCtx, kgo.TryCommit)
	switch {
	case err != nil:
		return fmt.Errorf("end: %w", err)
	case !committed:
		return errNotCommitted
	}
	s.mu.Lock()
	for p, o := range s.owned {
		s.committed[p] = o.next
	}
	s.mu.Unlock()
	return nil
}

// onAssigned, onRevoked and onLost run in kgo's group goroutine, between
// polls (BlockRebalanceOnPoll): they note the change for Run.
func (s *Stream) onAssigned(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range m[s.cfg.Topics.Ingest] {
		s.assigned[p] = true
	}
}

func (s *Stream) onRevoked(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revoked = append(s.revoked, m[s.cfg.Topics.Ingest]...)
}

func (s *Stream) onLost(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revoked = append(s.revoked, m[s.cfg.Topics.Ingest]...)
	s.lost = true
}

// onOffsets learns where consumption of newly assigned partitions starts:
// the offsets are fetched stable (no transaction of a former owner still
// open), so the changelog read next holds the state that goes with them.
func (s *Stream) onOffsets(_ context.Context, m map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p, o := range m[s.cfg.Topics.Ingest] {
		s.committed[p] = o.EpochOffset().Offset // negative: none committed
	}
	return m, nil
}

// applyOwnership closes revoked partitions and opens assigned ones whose
// start offset is known, restoring their state. It reports whether any was
// revoked.
func (s *Stream) applyOwnership(ctx context.Context) (bool, error) {
	s.mu.Lock()
	revoked := s.revoked
	s.revoked = nil
	var ready []int32
	for p := range s.assigned {
		if _, ok := s.committed[p]; ok {
			ready = append(ready, p)
		}
	}
	for _, p := range revoked {
		delete(s.assigned, p)
		delete(s.committed, p)
	}
	s.lost = false
	s.mu.Unlock()

	var closed []int32
	for _, p := range revoked {
		if o, ok := s.owned[p]; ok {
			o.p.Close()
			delete(s.owned, p)
			closed = append(closed, p)
		}
	}
	if len(ready) == 0 {
		if len(closed) > 0 && s.cfg.Events != nil {
			s.cfg.Events(nil, closed)
		}
		return len(revoked) > 0, nil
	}
	began := time.Now()
	states, err := readState(ctx, s.cfg.Conn, s.cfg.Topics.State, ready)
	if err != nil {
		return len(revoked) > 0, err
	}
	if s.cfg.Restored != nil {
		s.cfg.Restored(len(ready), time.Since(began))
	}
	ends, err := endOffsets(ctx, s.cfg.Conn, s.cfg.Topics.Ingest, ready)
	if err != nil {
		return len(revoked) > 0, err
	}
	var opened []int32
	for _, p := range ready {
		o, err := s.open(p, states[p])
		if err != nil {
			return len(revoked) > 0, err
		}
		o.end = ends[p]
		s.owned[p] = o
		s.mu.Lock()
		delete(s.assigned, p)
		s.mu.Unlock()
		opened = append(opened, p)
	}
	if s.cfg.Events != nil {
		s.cfg.Events(opened, closed)
	}
	return len(revoked) > 0, nil
}

// open opens partition p with its changelog.
func (s *Stream) open(p int32, kvs []KV) (*owned, error) {
	marks := newMarks()
	var next int64 = -1
	state := kvs[:0:0]
	for _, kv := range kvs {
		if string(kv.Key) == metaKey {
			var err error
			if next, marks, err = decodeMarks(kv.Value); err != nil {
				return nil, fmt.Errorf("partition %d: %w", p, err)
			}
			continue
		}
		state = append(state, kv)
	}
	s.mu.Lock()
	start := s.committed[p]
	s.mu.Unlock()
	if start >= 0 && next >= 0 && next != start {
		// The state and the offsets are committed together; a difference
		// means the changelog lost records (deleted topic, retention).
		s.log.Warn("cluster: the state of a partition does not match its committed offset", "partition", p, "state_at", next, "offset", start)
	}
	s.log.Info("cluster: partition opened", "partition", p, "state_keys", len(state), "state_at", next, "offset", start)
	part, err := s.task.Open(p, state)
	if err != nil {
		return nil, fmt.Errorf("partition %d: %w", p, err)
	}
	return &owned{p: part, marks: marks, next: max(next, start, 0)}, nil
}

// reopenAll restores every owned partition from its changelog: after an
// aborted transaction the state in memory is ahead of what was committed.
func (s *Stream) reopenAll(ctx context.Context) {
	s.mu.Lock()
	for p, o := range s.owned {
		o.p.Close()
		delete(s.owned, p)
		s.assigned[p] = true
	}
	s.mu.Unlock()
	if _, err := s.applyOwnership(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("cluster: cannot restore the state of a partition; will try again", "error", err)
	}
}

// readState reads the changelog partitions ps to their last committed
// record and returns each key's latest value (deleted keys left out).
func readState(ctx context.Context, conn Conn, topic string, ps []int32) (map[int32][]KV, error) {
	offsets := map[int32]kgo.Offset{}
	for _, p := range ps {
		offsets[p] = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(conn.opts(
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Control records tell where a transaction ended: the last
		// stable offset is always one, so reading reaches it.
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	end, err := lastStable(ctx, cl, topic, ps)
	if err != nil {
		return nil, err
	}
	conn.Log.Info("cluster: reading state", "partitions", ps, "ends", end)
	latest := map[int32]map[string][]byte{}
	todo := 0
	for _, p := range ps {
		latest[p] = map[string][]byte{}
		if end[p] > 0 {
			todo++
		}
	}
	for todo > 0 {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var ferr error
		fetches.EachError(func(_ string, p int32, err error) { ferr = fmt.Errorf("read state partition %d: %w", p, err) })
		if ferr != nil {
			return nil, ferr
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if r.Offset >= end[r.Partition] {
				return
			}
			if !r.Attrs.IsControl() {
				if r.Value == nil {
					delete(latest[r.Partition], string(r.Key))
				} else {
					latest[r.Partition][string(r.Key)] = r.Value
				}
			}
			if r.Offset == end[r.Partition]-1 {
				todo--
			}
		})
	}
	out := map[int32][]KV{}
	for p, m := range latest {
		kvs := make([]KV, 0, len(m))
		for k, v := range m {
			kvs = append(kvs, KV{Key: []byte(k), Value: v})
		}
		sort.Slice(kvs, func(i, j int) bool { return string(kvs[i].Key) < string(kvs[j].Key) })
		out[p] = kvs
	}
	return out, nil
}

// endOffsets returns the high watermark of each partition of topic.
func endOffsets(ctx context.Context, conn Conn, topic string, ps []int32) (map[int32]int64, error) {
	cl, err := kgo.NewClient(conn.opts()...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	listed, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	out := map[int32]int64{}
	for _, p := range ps {
		if o, ok := listed.Lookup(topic, p); ok && o.Err == nil {
			out[p] = o.Offset
		}
	}
	return out, nil
}

// lastStable returns the last stable offset of each partition: the end of
// what read_committed consumers can read.
func lastStable(ctx context.Context, cl *kgo.Client, topic string, ps []int32) (map[int32]int64, error) {
	listed, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	out := map[int32]int64{}
	for _, p := range ps {
		o, ok := listed.Lookup(topic, p)
		if !ok {
			return nil, fmt.Errorf("list offsets of %s: no partition %d", topic, p)
		}
		if o.Err != nil {
			return nil, fmt.Errorf("list offsets of %s partition %d: %w", topic, p, o.Err)
		}
		out[p] = o.Offset
	}
	return out, nil
}
