package kafkaeval

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	kafka "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// variant is one way to run a rule worker of the group.
type variant struct {
	name  string
	txn   bool // outputs and offsets in one transaction
	start func(memberConfig) (member, error)
}

var variants = []variant{
	{name: "kafka-go Reader (range, eager)", start: startKafkaGo},
	{name: "kgo eager (range), commit per batch", start: func(c memberConfig) (member, error) {
		return startKgo(c, kgo.RangeBalancer(), false)
	}},
	{name: "kgo cooperative-sticky, commit per batch", start: func(c memberConfig) (member, error) {
		return startKgo(c, kgo.CooperativeStickyBalancer(), false)
	}},
	{name: "kgo cooperative-sticky, marks + 1 s autocommit", start: func(c memberConfig) (member, error) {
		return startKgo(c, kgo.CooperativeStickyBalancer(), true)
	}},
	{name: "kgo GroupTransactSession (coop-sticky)", txn: true, start: startKgoTxn},
}

// markCommitInterval is how often the marks variant commits in the
// background (besides on revoke and on leave).
const markCommitInterval = time.Second

type memberConfig struct {
	id     int
	name   string // client id, and transactional id
	addrs  []string
	group  string
	output bool // produce one output record per input (read-process-write)
	rec    *recorder
	// fail reports an error the member cannot go on after; the run is void.
	fail func(error)
}

// member is one rule worker.
type member interface {
	// leave stops polling, finishes the batch in hand (outputs, commit),
	// and leaves the group.
	leave(ctx context.Context) error
	// kill cuts the member off at once: no more progress, no commit, no
	// LeaveGroup; its session and any open transaction time out.
	kill()
	// release frees a killed member's client.
	release()
}

var debug = os.Getenv("SLUICE_KAFKAEVAL_DEBUG") == "1"

// base is what every member has: a network that can be cut, a poll context
// (cancelled to leave) and a run context (cancelled to kill).
type base struct {
	cfg        memberConfig
	gate       *netGate
	alive      atomic.Bool
	pollCtx    context.Context
	stopPoll   context.CancelFunc
	runCtx     context.Context
	cancelRun  context.CancelFunc
	done       chan struct{}
	commitErrs atomic.Int64
	// unstable counts kgo's 1 s waits on UNSTABLE_OFFSET_COMMIT when it
	// fetches the committed offsets of newly assigned partitions.
	unstable atomic.Int64
}

// Level and Log make base a kgo.Logger that counts the waits on
// UNSTABLE_OFFSET_COMMIT (kgo logs each at info level) and drops the rest.
func (b *base) Level() kgo.LogLevel { return kgo.LogLevelInfo }

func (b *base) Log(_ kgo.LogLevel, msg string, keyvals ...any) {
	if debug {
		fmt.Fprintf(os.Stderr, "%s member %d: %s %v\n", time.Now().Format("15:04:05.000"), b.cfg.id, msg, keyvals)
	}
	if strings.HasPrefix(msg, "fetch offsets failed with retryable partition error") {
		for i := 0; i+1 < len(keyvals); i += 2 {
			if err, ok := keyvals[i+1].(error); ok && errors.Is(err, kerr.UnstableOffsetCommit) {
				b.unstable.Add(1)
				return
			}
		}
	}
}

func (b *base) init(cfg memberConfig) {
	b.cfg, b.gate, b.done = cfg, newGate(), make(chan struct{})
	b.alive.Store(true)
	b.runCtx, b.cancelRun = context.WithCancel(context.Background())
	b.pollCtx, b.stopPoll = context.WithCancel(b.runCtx)
}

func (b *base) kill() {
	b.alive.Store(false)
	b.gate.Cut()
	b.cancelRun()
}

// failed reports err unless the member was killed (then errors are expected).
func (b *base) failed(what string, err error) {
	if b.alive.Load() {
		b.cfg.fail(fmt.Errorf("member %d: %s: %w", b.cfg.id, what, err))
	}
}

func (b *base) progress(ss *spanSet) {
	if b.alive.Load() {
		b.cfg.rec.processed(b.cfg.id, ss.spans())
	}
}

func (b *base) waitDone(ctx context.Context) error {
	select {
	case <-b.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("member %d: leave: %w", b.cfg.id, ctx.Err())
	}
}

// kafka-go: a Reader with a GroupID, FetchMessage into batches, a synchronous
// Writer for the outputs, then CommitMessages. kafka-go has no revoke
// callback: a rebalance ends the generation under the application, and a
// commit issued during it is sent with the next generation.
type kafkagoMember struct {
	base
	r    *kafka.Reader
	w    *kafka.Writer
	msgs chan kafka.Message
}

// keyPartition sends an output to the partition its key names.
type keyPartition struct{}

func (keyPartition) Balance(msg kafka.Message, _ ...int) int {
	return int(binary.BigEndian.Uint32(msg.Key))
}

func startKafkaGo(cfg memberConfig) (member, error) {
	m := &kafkagoMember{msgs: make(chan kafka.Message, maxBatch)}
	m.init(cfg)
	m.r = kafka.NewReader(kafka.ReaderConfig{
		Brokers:           cfg.addrs,
		GroupID:           cfg.group,
		Topic:             inTopic,
		Dialer:            &kafka.Dialer{ClientID: cfg.name, Timeout: 10 * time.Second, DialFunc: m.gate.DialContext},
		MinBytes:          1,
		MaxBytes:          10 << 20,
		MaxWait:           fetchMaxWait,
		QueueCapacity:     maxBatch,
		HeartbeatInterval: heartbeat,
		SessionTimeout:    sessionTimeout,
		RebalanceTimeout:  rebalanceTimeout,
		StartOffset:       kafka.FirstOffset,
		CommitInterval:    0, // synchronous CommitMessages
	})
	if cfg.output {
		m.w = &kafka.Writer{
			Addr:         kafka.TCP(cfg.addrs...),
			Topic:        outTopic,
			Balancer:     keyPartition{},
			RequiredAcks: kafka.RequireAll,
			BatchSize:    maxBatch,
			BatchTimeout: time.Millisecond, // as sinks/kafka does
			Transport:    &kafka.Transport{ClientID: cfg.name, Dial: m.gate.DialContext},
		}
	}
	go m.fetch()
	go m.process()
	return m, nil
}

func (m *kafkagoMember) fetch() {
	for {
		msg, err := m.r.FetchMessage(m.runCtx)
		if err != nil {
			return
		}
		select {
		case m.msgs <- msg:
		case <-m.runCtx.Done():
			return
		}
	}
}

func (m *kafkagoMember) process() {
	defer close(m.done)
	batch := make([]kafka.Message, 0, maxBatch)
	outs := make([]kafka.Message, 0, maxBatch)
	var ss spanSet
	for {
		select {
		case <-m.pollCtx.Done():
			return
		case msg := <-m.msgs:
			batch = append(batch[:0], msg)
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case msg := <-m.msgs:
				batch = append(batch, msg)
			default:
				break fill
			}
		}
		outs = outs[:0]
		for _, msg := range batch {
			ss.add(int32(msg.Partition), msg.Offset)
			if m.w != nil {
				outs = append(outs, kafka.Message{Key: outputKey(int32(msg.Partition), msg.Offset), Value: msg.Value})
			}
		}
		if m.w != nil {
			if err := m.w.WriteMessages(m.runCtx, outs...); err != nil {
				m.failed("write outputs", err)
				return
			}
		}
		m.progress(&ss)
		if err := m.r.CommitMessages(m.runCtx, batch...); err != nil {
			if !m.alive.Load() {
				return
			}
			m.commitErrs.Add(1)
		}
	}
}

func (m *kafkagoMember) leave(ctx context.Context) error {
	m.stopPoll()
	err := m.waitDone(ctx)
	m.cancelRun()
	m.r.Close() // leaves the group
	if m.w != nil {
		m.w.Close()
	}
	return err
}

func (m *kafkagoMember) release() {
	closeBounded(func() {
		m.r.Close()
		if m.w != nil {
			m.w.Close()
		}
	})
}

// closeBounded closes a killed member's client without waiting more than a
// few seconds for it: its network is cut, it can only give up.
func closeBounded(fn func()) {
	done := make(chan struct{})
	go func() { fn(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

func kgoGroupOpts(b *base, balancer kgo.GroupBalancer) []kgo.Opt {
	cfg := b.cfg
	return []kgo.Opt{
		kgo.WithLogger(b),
		kgo.SeedBrokers(cfg.addrs...),
		kgo.ClientID(cfg.name),
		kgo.Dialer(b.gate.DialContext),
		kgo.ConsumerGroup(cfg.group),
		kgo.ConsumeTopics(inTopic),
		kgo.Balancers(balancer),
		kgo.SessionTimeout(sessionTimeout),
		kgo.HeartbeatInterval(heartbeat),
		kgo.RebalanceTimeout(rebalanceTimeout),
		kgo.FetchMaxWait(fetchMaxWait),
		kgo.DefaultProduceTopic(outTopic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerLinger(0),
	}
}

func outputOf(r *kgo.Record) *kgo.Record {
	return &kgo.Record{Partition: r.Partition, Key: outputKey(r.Partition, r.Offset), Value: r.Value}
}

// kgo at least once: BlockRebalanceOnPoll so that a rebalance (and its
// OnPartitionsRevoked) waits until the polled batch is processed; the revoke
// callback commits what was processed. Either a synchronous commit after
// every batch (which kgo holds while the member is in JoinGroup/SyncGroup,
// so processing waits for the rebalance), or marks: the processed records
// are marked and kgo commits them in the background every
// markCommitInterval, on revoke and on leave.
type kgoMember struct {
	base
	cl    *kgo.Client
	marks bool
}

func startKgo(cfg memberConfig, balancer kgo.GroupBalancer, marks bool) (member, error) {
	m := &kgoMember{marks: marks}
	m.init(cfg)
	opts := append(kgoGroupOpts(&m.base, balancer),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, _ map[string][]int32) {
			if err := m.commit(ctx); err != nil && m.alive.Load() {
				m.commitErrs.Add(1)
			}
		}),
	)
	if marks {
		opts = append(opts, kgo.AutoCommitMarks(), kgo.AutoCommitInterval(markCommitInterval))
	} else {
		opts = append(opts, kgo.DisableAutoCommit())
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	m.cl = cl
	go m.loop()
	return m, nil
}

func (m *kgoMember) loop() {
	defer close(m.done)
	var ss spanSet
	for {
		fs := m.cl.PollRecords(m.pollCtx, maxBatch)
		if fs.IsClientClosed() {
			return
		}
		recs := fs.Records()
		if len(recs) > 0 && !m.process(recs, &ss) {
			return
		}
		m.cl.AllowRebalance()
		if m.pollCtx.Err() != nil {
			return
		}
	}
}

func (m *kgoMember) process(recs []*kgo.Record, ss *spanSet) bool {
	if m.cfg.output {
		outs := make([]*kgo.Record, len(recs))
		for i, r := range recs {
			outs[i] = outputOf(r)
		}
		if err := m.cl.ProduceSync(m.runCtx, outs...).FirstErr(); err != nil {
			m.failed("write outputs", err)
			return false
		}
	}
	for _, r := range recs {
		ss.add(r.Partition, r.Offset)
	}
	m.progress(ss)
	if m.marks {
		m.cl.MarkCommitRecords(recs...)
		return true
	}
	if err := m.cl.CommitUncommittedOffsets(m.runCtx); err != nil {
		if !m.alive.Load() {
			return false
		}
		m.commitErrs.Add(1)
	}
	return true
}

// commit commits what was processed.
func (m *kgoMember) commit(ctx context.Context) error {
	if m.marks {
		return m.cl.CommitMarkedOffsets(ctx)
	}
	return m.cl.CommitUncommittedOffsets(ctx)
}

func (m *kgoMember) leave(ctx context.Context) error {
	m.stopPoll()
	err := m.waitDone(ctx)
	if cerr := m.commit(ctx); cerr != nil {
		err = errors.Join(err, fmt.Errorf("member %d: commit before leaving: %w", m.cfg.id, cerr))
	}
	m.cl.CloseAllowingRebalance() // revokes and leaves the group
	m.cancelRun()
	return err
}

func (m *kgoMember) release() {
	closeBounded(func() {
		cancelled, cancel := context.WithCancel(context.Background())
		cancel()
		_ = m.cl.LeaveGroupContext(cancelled)
		m.cl.Close()
	})
}

// kgo exactly once: poll, Begin, produce the outputs, End(TryCommit), which
// commits the input offsets in the transaction (TxnOffsetCommit) and aborts
// if the group rebalanced since the poll; after an abort the session rewinds
// to the committed offsets and the records come again.
type kgoTxnMember struct {
	base
	s       *kgo.GroupTransactSession
	aborted atomic.Int64
}

func startKgoTxn(cfg memberConfig) (member, error) {
	m := &kgoTxnMember{}
	m.init(cfg)
	opts := append(kgoGroupOpts(&m.base, kgo.CooperativeStickyBalancer()),
		kgo.TransactionalID(cfg.name),
		kgo.TransactionTimeout(txnTimeout),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	s, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return nil, err
	}
	m.s = s
	go m.loop()
	return m, nil
}

func (m *kgoTxnMember) loop() {
	defer close(m.done)
	var ss spanSet
	var mu sync.Mutex
	var produceErr error
	for {
		fs := m.s.PollRecords(m.pollCtx, maxBatch)
		if fs.IsClientClosed() {
			return
		}
		recs := fs.Records()
		if len(recs) == 0 {
			if m.pollCtx.Err() != nil {
				return
			}
			continue
		}
		if err := m.s.Begin(); err != nil {
			m.failed("begin transaction", err)
			return
		}
		for _, r := range recs {
			m.s.Produce(m.runCtx, outputOf(r), func(_ *kgo.Record, err error) {
				if err != nil {
					mu.Lock()
					produceErr = err
					mu.Unlock()
				}
			})
		}
		committed, err := m.s.End(m.runCtx, kgo.TryCommit)
		if err != nil {
			m.failed("end transaction", err)
			return
		}
		mu.Lock()
		perr := produceErr
		mu.Unlock()
		if perr != nil {
			m.failed("produce outputs", perr)
			return
		}
		if committed {
			for _, r := range recs {
				ss.add(r.Partition, r.Offset)
			}
			m.progress(&ss)
		} else {
			m.aborted.Add(1)
		}
		if m.pollCtx.Err() != nil {
			return
		}
	}
}

func (m *kgoTxnMember) leave(ctx context.Context) error {
	m.stopPoll()
	err := m.waitDone(ctx)
	m.s.Close() // leaves the group
	m.cancelRun()
	return err
}

func (m *kgoTxnMember) release() {
	closeBounded(func() {
		cancelled, cancel := context.WithCancel(context.Background())
		cancel()
		_ = m.s.Client().LeaveGroupContext(cancelled)
		m.s.Close()
	})
}
