package kafkaeval

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kversion"
)

// The set-up every client is measured on. The group settings are the same
// for every client; a killed member is noticed only when its session times
// out, so sessionTimeout bounds the pause of a kill from below.
const (
	partitions       = 12
	inTopic          = "in"
	outTopic         = "out"
	sessionTimeout   = 6 * time.Second
	heartbeat        = time.Second
	rebalanceTimeout = 30 * time.Second
	// txnTimeout is kept under the session timeout (kgo's advice): a killed
	// member's open transaction is aborted by the broker before its
	// partitions are handed to a survivor, so read_committed readers and the
	// next owner's offset fetch wait no longer than the session.
	txnTimeout   = 5 * time.Second
	fetchMaxWait = 500 * time.Millisecond
	maxBatch     = 1000
	valueSize    = 256
)

// cluster is a three-broker kfake with the input and output topics, either in
// this process or in a child process (so that this process's CPU time is the
// clients' alone).
type cluster struct {
	addrs []string
	pid   int // the child's, 0 in process
	close func()
}

// kafkaVersion is the Kafka the brokers speak: 3.9 by default, the one
// docker-compose.yml runs (no KIP-848 groups, no KIP-890 implicit
// transaction membership); SLUICE_KAFKAEVAL_KAFKA=latest for kfake's own.
func kafkaVersion() *kversion.Versions {
	if os.Getenv("SLUICE_KAFKAEVAL_KAFKA") == "latest" {
		return nil
	}
	return kversion.V3_9_0()
}

func clusterOpts(topics []string) []kfake.Opt {
	opts := []kfake.Opt{kfake.NumBrokers(3), kfake.SeedTopics(partitions, topics...)}
	if v := kafkaVersion(); v != nil {
		opts = append(opts, kfake.MaxVersions(v))
	}
	return opts
}

func startCluster(topics ...string) (*cluster, error) {
	c, err := kfake.NewCluster(clusterOpts(topics)...)
	if err != nil {
		return nil, fmt.Errorf("start kfake: %w", err)
	}
	return &cluster{addrs: c.ListenAddrs(), close: c.Close}, nil
}

// The child process is this test binary: TestMain serves the brokers when
// brokerEnv is set, prints their addresses and stops when stdin closes.
const (
	brokerEnv       = "SLUICE_KAFKAEVAL_BROKER"
	brokerTopicsEnv = "SLUICE_KAFKAEVAL_BROKER_TOPICS"
)

func serveBroker() int {
	c, err := kfake.NewCluster(clusterOpts(strings.Split(os.Getenv(brokerTopicsEnv), ","))...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(strings.Join(c.ListenAddrs(), ","))
	_, _ = io.Copy(io.Discard, os.Stdin)
	c.Close()
	return 0
}

func startChildCluster(topics ...string) (*cluster, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), brokerEnv+"=1", brokerTopicsEnv+"="+strings.Join(topics, ","))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start kfake process: %w", err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stdin.Close()
		_ = cmd.Wait()
		return nil, fmt.Errorf("kfake process: read its addresses: %w", err)
	}
	return &cluster{
		addrs: strings.Split(strings.TrimSpace(line), ","),
		pid:   cmd.Process.Pid,
		close: func() { stdin.Close(); _ = cmd.Wait() },
	}, nil
}

// netGate dials for one member and can cut it off the network: open
// connections close and new ones are refused. That is a process killed with
// SIGKILL as the brokers see it: no LeaveGroup, no EndTxn, its session and
// transaction time out.
type netGate struct {
	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]bool
	d     net.Dialer
}

var errCut = errors.New("member cut off the network")

func newGate() *netGate { return &netGate{conns: map[net.Conn]bool{}} }

func (g *netGate) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if g.isCut() {
		return nil, errCut
	}
	c, err := g.d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cut {
		c.Close()
		return nil, errCut
	}
	g.conns[c] = true
	return &gateConn{Conn: c, g: g}, nil
}

func (g *netGate) isCut() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cut
}

func (g *netGate) Cut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cut = true
	for c := range g.conns {
		c.Close()
	}
	clear(g.conns)
}

type gateConn struct {
	net.Conn
	g *netGate
}

func (c *gateConn) Close() error {
	c.g.mu.Lock()
	delete(c.g.conns, c.Conn)
	c.g.mu.Unlock()
	return c.Conn.Close()
}

// An output record names its input: key = input partition (4 bytes) and
// offset (8 bytes); it goes to the same partition of the output topic.
func outputKey(p int32, off int64) []byte {
	k := make([]byte, 12)
	binary.BigEndian.PutUint32(k, uint32(p))
	binary.BigEndian.PutUint64(k[4:], uint64(off))
	return k
}

func parseOutputKey(k []byte) (int32, int64, bool) {
	if len(k) != 12 {
		return 0, 0, false
	}
	return int32(binary.BigEndian.Uint32(k)), int64(binary.BigEndian.Uint64(k[4:])), true
}

// span is the part of one partition a batch processed.
type span struct {
	p           int32
	first, last int64
}

// spanSet collects the spans of a batch (records of a partition arrive in
// offset order).
type spanSet struct {
	has [partitions]bool
	s   [partitions]span
}

func (ss *spanSet) add(p int32, off int64) {
	if !ss.has[p] {
		ss.has[p], ss.s[p] = true, span{p: p, first: off, last: off}
		return
	}
	ss.s[p].last = off
}

func (ss *spanSet) spans() []span {
	var out []span
	for p := range ss.has {
		if ss.has[p] {
			out = append(out, ss.s[p])
		}
	}
	*ss = spanSet{}
	return out
}

// recorder keeps when each partition made progress and on which member.
// Progress is the moment a batch's outputs are durable and visible: after
// the output write (at least once) or after the transaction commits.
type recorder struct {
	mu      sync.Mutex
	parts   [partitions][]event
	maxLast [partitions]int64
	first   time.Time
}

type event struct {
	at     time.Time
	member int
}

func newRecorder() *recorder {
	r := &recorder{}
	for p := range r.maxLast {
		r.maxLast[p] = -1
	}
	return r
}

func (r *recorder) processed(member int, ss []span) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.first.IsZero() {
		r.first = now
	}
	for _, s := range ss {
		r.parts[s.p] = append(r.parts[s.p], event{now, member})
		r.maxLast[s.p] = max(r.maxLast[s.p], s.last)
	}
}

// covered says whether every partition was processed up to ends (exclusive).
func (r *recorder) covered(ends []int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, e := range ends {
		if r.maxLast[p] < e-1 {
			return false
		}
	}
	return true
}

// total is the number of records processed (up to the highest offset of
// each partition).
func (r *recorder) total() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	for _, l := range r.maxLast {
		n += l + 1
	}
	return n
}

// owners gives the member that last processed each partition, and whether
// every partition was processed since fresh.
func (r *recorder) owners(fresh time.Time) ([partitions]int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var o [partitions]int
	ok := true
	for p, evs := range r.parts {
		if len(evs) == 0 {
			o[p] = -1
			ok = false
			continue
		}
		last := evs[len(evs)-1]
		o[p] = last.member
		if last.at.Before(fresh) {
			ok = false
		}
	}
	return o, ok
}

// pause is how processing stalled between an event (a member joins, leaves
// or is killed) at t0 and tend, when the group had settled again.
type pause struct {
	// Moved is the longest gap in the processing of a partition that ended
	// on another member than it started on; Unmoved the same for a
	// partition that kept its member. A gap that straddles t0 counts whole.
	Moved, Unmoved time.Duration
	// AllStop is the longest time no partition was processed at all.
	AllStop time.Duration
	NMoved  int
}

func (r *recorder) pauseIn(t0, tend time.Time) pause {
	r.mu.Lock()
	defer r.mu.Unlock()
	var pz pause
	var all []time.Time
	var lastBefore time.Time // the last progress anywhere before t0
	for _, evs := range r.parts {
		i := 0 // the first event at or after t0
		for i < len(evs) && evs[i].at.Before(t0) {
			i++
		}
		prev, before, after := t0, -1, -1
		if i > 0 {
			prev, before = evs[i-1].at, evs[i-1].member
			if prev.After(lastBefore) {
				lastBefore = prev
			}
		}
		var gap time.Duration
		for _, e := range evs[i:] {
			if e.at.After(tend) {
				break
			}
			gap = max(gap, e.at.Sub(prev))
			prev, after = e.at, e.member
			all = append(all, e.at)
		}
		gap = max(gap, tend.Sub(prev))
		if after >= 0 && after == before {
			pz.Unmoved = max(pz.Unmoved, gap)
		} else {
			pz.Moved = max(pz.Moved, gap)
			pz.NMoved++
		}
	}
	if lastBefore.IsZero() {
		lastBefore = t0
	}
	slices.SortFunc(all, func(a, b time.Time) int { return a.Compare(b) })
	cur := lastBefore
	for _, at := range all {
		pz.AllStop = max(pz.AllStop, at.Sub(cur))
		cur = at
	}
	pz.AllStop = max(pz.AllStop, tend.Sub(cur))
	return pz
}

// worstGap is the longest gap in any partition's processing in [from, to):
// the noise floor the pauses compare with.
func (r *recorder) worstGap(from, to time.Time) time.Duration {
	pz := r.pauseIn(from, to)
	return max(pz.Moved, pz.Unmoved)
}

// load produces to the input topic, round robin over its partitions, and
// keeps the end offset of each partition from the acknowledgements.
type load struct {
	cl   *kgo.Client
	mu   sync.Mutex
	ends [partitions]int64
	err  error
	next atomic.Int32

	stop chan struct{}
	done chan struct{}
}

func newLoad(addrs []string) (*load, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(addrs...),
		kgo.DefaultProduceTopic(inTopic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerLinger(5*time.Millisecond),
	)
	if err != nil {
		return nil, err
	}
	return &load{cl: cl}, nil
}

var payload = []byte(strings.Repeat("x", valueSize))

func (l *load) produce(ctx context.Context, n int) {
	for range n {
		r := &kgo.Record{Partition: (l.next.Add(1) - 1) % partitions, Value: payload}
		l.cl.Produce(ctx, r, func(r *kgo.Record, err error) {
			l.mu.Lock()
			defer l.mu.Unlock()
			if err != nil {
				l.err = errors.Join(l.err, err)
				return
			}
			l.ends[r.Partition] = max(l.ends[r.Partition], r.Offset+1)
		})
	}
}

// fill produces n records and waits for them.
func (l *load) fill(ctx context.Context, n int) ([]int64, error) {
	l.produce(ctx, n)
	return l.flush(ctx)
}

// steady produces rate records a second until stopped.
func (l *load) steady(ctx context.Context, rate int) {
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(l.done)
		start, sent := time.Now(), 0
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
				due := int(time.Since(start).Seconds()*float64(rate)) - sent
				l.produce(ctx, due)
				sent += due
			}
		}
	}()
}

// halt stops a steady load and returns the end offsets.
func (l *load) halt(ctx context.Context) ([]int64, error) {
	close(l.stop)
	<-l.done
	return l.flush(ctx)
}

func (l *load) flush(ctx context.Context) ([]int64, error) {
	if err := l.cl.Flush(ctx); err != nil {
		return nil, fmt.Errorf("produce input: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ends[:]), l.err
}

func (l *load) close() { l.cl.Close() }

// tally is what a downstream read_committed consumer of the output sees,
// against the inputs acknowledged to the producer.
type tally struct {
	Lost, Dup, Outputs int
}

// verify reads the whole output topic with read_committed once no
// transaction is open on it, and counts each input's outputs.
func verify(ctx context.Context, addrs []string, ends []int64) (tally, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(addrs...),
		kgo.ConsumeTopics(outTopic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond),
	)
	if err != nil {
		return tally{}, err
	}
	defer cl.Close()
	counts := make([][]uint8, partitions)
	for p := range counts {
		counts[p] = make([]uint8, ends[p])
	}
	var tl tally
	var seen, hwm, lso [partitions]int64
	for p := range seen {
		seen[p], hwm[p], lso[p] = -1, -1, -1
	}
	done := func() bool {
		for p := range seen {
			want := ends[p] > 0 || hwm[p] > 0
			if want && (hwm[p] < 0 || lso[p] != hwm[p] || seen[p] != hwm[p]-1) {
				return false
			}
		}
		return true
	}
	for !done() {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return tl, fmt.Errorf("read output: seen %v, high watermarks %v, last stable %v: %w", seen, hwm, lso, err)
		}
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			p := fp.Partition
			hwm[p], lso[p] = fp.HighWatermark, fp.LastStableOffset
			for _, r := range fp.Records {
				seen[p] = r.Offset
				if r.Attrs.IsControl() {
					continue
				}
				tl.Outputs++
				ip, off, ok := parseOutputKey(r.Key)
				if !ok || ip < 0 || ip >= partitions || off < 0 || off >= ends[ip] {
					continue
				}
				if counts[ip][off] < 255 {
					counts[ip][off]++
				}
			}
		})
	}
	for _, cs := range counts {
		for _, c := range cs {
			switch {
			case c == 0:
				tl.Lost++
			case c > 1:
				tl.Dup += int(c) - 1
			}
		}
	}
	return tl, nil
}

// waitFor polls cond every 20 ms until it holds or the deadline passes.
func waitFor(ctx context.Context, d time.Duration, what string, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not within %v", what, d)
		case <-tick.C:
		}
	}
	return nil
}

// cpuSelf is this process's CPU time (user + system).
func cpuSelf() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuOf is a child's CPU time from /proc (clock ticks of 10 ms).
func cpuOf(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * 10 * time.Millisecond
}
