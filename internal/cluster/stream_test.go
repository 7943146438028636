package cluster

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// counter is a Task that counts the inputs of each key: its state is the
// count, its output "key=count". Counts that run 1..n without a gap or a
// repeat prove that no input was lost, none was counted twice, and the
// state moved with its partition.
type counter struct{}

func (counter) Open(p int32, state []KV) (Partition, error) {
	c := &countPart{counts: map[string]int{}, dirty: map[string]bool{}}
	for _, kv := range state {
		n, err := strconv.Atoi(string(kv.Value))
		if err != nil {
			return nil, err
		}
		c.counts[string(kv.Key)] = n
	}
	return c, nil
}

type countPart struct {
	counts map[string]int
	dirty  map[string]bool
}

func (c *countPart) Process(r *kgo.Record, emit Emit) {
	k := string(r.Key)
	c.counts[k]++
	c.dirty[k] = true
	emit(r.Key, []byte(fmt.Sprintf("%s=%d", k, c.counts[k])), nil)
}

func (c *countPart) Tick(time.Time, Emit) {}

func (c *countPart) Checkpoint(put func(key, value []byte)) {
	for k := range c.dirty {
		put([]byte(k), []byte(strconv.Itoa(c.counts[k])))
	}
	clear(c.dirty)
}

func (c *countPart) Close() {}

func startKafka(t *testing.T) Conn {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.Ports(0, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return Conn{Brokers: c.ListenAddrs(), ClientID: "test", Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))}
}

// TestStreamHandsOverState runs two members of a group over 6 partitions,
// produces inputs for 30 keys, stops one member halfway and starts another
// later: every key's outputs must count 1..n exactly once.
func TestStreamHandsOverState(t *testing.T) {
	conn := startKafka(t)
	ctx := context.Background()
	topics := TopicsFor("t", "p")
	if _, err := EnsureTopics(ctx, conn, topics, TopicSpec{Partitions: 6, ReplicationFactor: -1, MaxMessageBytes: 1 << 20, Retention: time.Hour}); err != nil {
		t.Fatal(err)
	}
	member := func(name string) (stop func()) {
		ctx, cancel := context.WithCancel(ctx)
		s := NewStream(StreamConfig{Conn: conn, Topics: topics, Group: "g", TransactionalID: "tx-" + name,
			CommitInterval: 20 * time.Millisecond, SessionTimeout: 6 * time.Second}, counter{})
		done := make(chan struct{})
		go func() { defer close(done); s.Run(ctx) }()
		return func() { cancel(); <-done }
	}
	stopA := member("a")
	stopB := member("b")

	prod, err := kgo.NewClient(conn.opts(kgo.DefaultProduceTopic(topics.Ingest), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	const keys, rounds = 30, 40
	send := func(from, to int) {
		for r := from; r < to; r++ {
			for k := range keys {
				var seq [8]byte
				binary.BigEndian.PutUint64(seq[:], uint64(r*keys+k+1))
				rec := &kgo.Record{Key: []byte(fmt.Sprintf("k%02d", k)), Value: []byte("x"),
					Headers: []kgo.RecordHeader{{Key: HeaderOrigin, Value: []byte("o1")}, {Key: HeaderSeq, Value: seq[:]}}}
				if err := prod.ProduceSync(ctx, rec).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	send(0, 10)
	stopA() // a planned stop: its partitions go to b with their state
	send(10, 20)
	stopC := member("c")
	send(20, 30)
	// A copy of an earlier message (an ingest node sending again after a
	// restart) must be dropped.
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], 5)
	prod.ProduceSync(ctx, &kgo.Record{Key: []byte("k04"), Value: []byte("x"),
		Headers: []kgo.RecordHeader{{Key: HeaderOrigin, Value: []byte("o1")}, {Key: HeaderSeq, Value: seq[:]}}})
	send(30, rounds)
	defer stopB()
	defer stopC()

	got := readAll(t, conn, topics.Events, keys*rounds)
	counts := map[string][]int{}
	for _, v := range got {
		k, n, _ := strings.Cut(v, "=")
		i, _ := strconv.Atoi(n)
		counts[k] = append(counts[k], i)
	}
	for k := range keys {
		key := fmt.Sprintf("k%02d", k)
		c := counts[key]
		if len(c) != rounds {
			t.Errorf("%s: %d outputs, want %d: %v", key, len(c), rounds, c)
			continue
		}
		for i, n := range c {
			if n != i+1 {
				t.Errorf("%s: outputs %v, want 1..%d", key, c, rounds)
				break
			}
		}
	}
}

// readAll reads want records of topic (read_committed), and then checks for
// a while that no more come.
func readAll(t *testing.T, conn Conn, topic string, want int) []string {
	t.Helper()
	cl, err := kgo.NewClient(conn.opts(kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var mu sync.Mutex
	var out []string
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			mu.Lock()
			out = append(out, string(r.Value))
			mu.Unlock()
		})
		if len(out) >= want {
			// Anything more would be a duplicate: give it a moment to show.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { out = append(out, string(r.Value)) })
			cancel()
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d records in %s after 90s, want %d", len(out), topic, want)
		}
	}
}
