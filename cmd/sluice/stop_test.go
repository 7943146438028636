package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/sluicehq/sluice/internal/testsvc"
)

// TestStopSaysWhatItWaitsForAndASecondInterruptStopsNow stops sluice while
// its Kafka is unreachable: the stop says which sink it waits for, how many
// records and how long is left, and that a second Ctrl-C stops at once; the
// second interrupt stops it long before shutdown_timeout (10 minutes), and
// the records it did not write are written after the next start (they
// stayed in the journal). It was 30 s of silence, and a second Ctrl-C did
// nothing.
func TestStopSaysWhatItWaitsForAndASecondInterruptStopsNow(t *testing.T) {
	kafka := testsvc.Kafka(t, "records")
	kafka.Cut()
	dir := t.TempDir()
	writeFile(t, dir, "rules.yaml", "rules:\n  - name: r\n    fields: {v: v}\n")
	path := writeFile(t, dir, "sluice.yaml", `log: {level: info}
shutdown_timeout: 10m
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines:
  - {name: p, topics: ["#"], rules: [rules.yaml], sinks: [events]}
sinks:
  - name: events
    retry: {initial: 50ms, max: 200ms}
    kafka: {brokers: ["`+kafka.Addrs()[0]+`"], topic: records, timeout: 1s}
`)
	run := func(ctx context.Context, stderr *testsvc.LogBuffer) chan int {
		exited := make(chan int, 1)
		go func() { exited <- Main(ctx, []string{"run", path}, &testsvc.LogBuffer{}, stderr) }()
		return exited
	}
	first, stop := context.WithCancel(context.Background())
	now, stopNow := context.WithCancel(context.Background())
	defer stop()
	defer stopNow()
	var stderr testsvc.LogBuffer
	exited := run(context.WithValue(first, stopNowKey{}, now), &stderr)
	pub := testsvc.MQTT(t, waitForListener(t, &stderr), "pub")
	for i := range 3 {
		if rc := pub.Publish(t, "s/a", 1, []byte(`{"v": `+string(rune('0'+i))+`}`)); rc != 0 {
			t.Fatalf("publish: reason %#x", rc)
		}
	}
	pub.Client.Disconnect(&paho.Disconnect{})

	stop() // the first Ctrl-C
	waitForLog(t, &stderr, regexp.MustCompile(`(shutdown: waiting for sink events: \d+ journal records, \d+m\d+s left; press Ctrl-C again to stop now, the rest stays in the journal)`))
	stopNow() // the second
	select {
	case code := <-exited:
		if code != exitOK {
			t.Fatalf("exit %d after a second interrupt\n%s", code, stderr.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("a second interrupt did not stop sluice\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "stopping now; what the sinks have not written stays in the journal") {
		t.Errorf("no word of stopping now:\n%s", stderr.String())
	}

	// What was not written was kept: Kafka back, the next start writes it.
	kafka.Restore()
	ctx, cancel := context.WithCancel(context.Background())
	stderr = testsvc.LogBuffer{}
	exited = run(ctx, &stderr)
	defer func() { cancel(); <-exited }()
	if got := readRecords(t, kafka.Addrs(), "records", 3); len(got) != 3 {
		t.Errorf("%d records in Kafka after the restart, want 3\n%s", len(got), stderr.String())
	}
}

// readRecords reads up to want records of a topic from its start (every
// partition), waiting for them for up to a minute.
func readRecords(t *testing.T, brokers []string, topic string, want int) []kafkago.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := kafkago.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan kafkago.Message)
	for _, p := range parts {
		r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p.ID, MaxWait: 100 * time.Millisecond})
		defer r.Close()
		go func() {
			for {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					return
				}
				select {
				case got <- m:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	var out []kafkago.Message
	for len(out) < want {
		select {
		case m := <-got:
			out = append(out, m)
		case <-ctx.Done():
			return out
		}
	}
	return out
}
