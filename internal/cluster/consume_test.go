package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestConsumerServesEveryRecordWhateverItsDeadlines: a sink asks for the
// next record with a deadline (its batch interval) and often gets none in
// time; a poll cut short may still have brought records, which must be
// served, not dropped (the client counts them consumed: a dropped record
// would be committed past, and never written).
func TestConsumerServesEveryRecordWhateverItsDeadlines(t *testing.T) {
	conn := startKafka(t)
	// The race takes a poll that ends with records just as its deadline
	// passes: several rounds make it likely.
	for round := range 4 {
		consumeRound(t, conn, round)
	}
}

func consumeRound(t *testing.T, conn Conn, round int) {
	ctx := context.Background()
	topics := TopicsFor("t", fmt.Sprint("c", round))
	if _, err := EnsureTopics(ctx, conn, topics, TopicSpec{Partitions: 3, ReplicationFactor: -1, MaxMessageBytes: 1 << 20, Retention: time.Hour}); err != nil {
		t.Fatal(err)
	}
	prod, err := NewProducer(conn, topics.Events)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	const n = 2000
	go func() {
		// Records arrive while the consumer waits, so that polls end
		// both ways: with records, and at their deadline.
		for i := range n {
			prod.Produce(ctx, []byte(fmt.Sprint(i%7)), []byte(fmt.Sprint(i)))
			if i%10 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	c, err := NewConsumer(conn, topics.Events, fmt.Sprint("g", round), 'E')
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	seen := map[string]bool{}
	deadline := time.Now().Add(60 * time.Second)
	for len(seen) < n && time.Now().Before(deadline) {
		short, cancel := context.WithTimeout(ctx, time.Duration(1+len(seen)%3)*time.Millisecond)
		e, err := c.Next(short)
		cancel()
		if err != nil {
			continue
		}
		seen[string(e.Data)] = true
		c.Ack(e.Seq)
	}
	if len(seen) != n {
		t.Fatalf("round %d: %d of %d records served", round, len(seen), n)
	}
}
