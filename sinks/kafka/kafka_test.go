package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/secret"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/sinks/kafka"
)

func event(stream sluice.Stream, device, payload string) sluice.Event {
	msg := &sluice.Message{Topic: "plant/north/l1/" + device + "/telemetry", ClientID: "gw", Payload: []byte(payload),
		Received: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), ContentType: "application/json",
		UserProperties: []sluice.Property{{Key: "unit", Value: "C"}}}
	e := sluice.Event{Stream: stream, Message: msg}
	if stream == sluice.StreamRecords {
		e.Record = &sluice.Record{Rule: "r", Topic: msg.Topic, Time: msg.Received,
			Tags: []sluice.Tag{{Key: "device", Value: device}}, Fields: []sluice.Field{{Name: "v", Value: 1.5}}}
	}
	return e
}

func TestWritesRecordsWithKeyAndHeaders(t *testing.T) {
	cluster := testsvc.Kafka(t, "raw", "records")
	ctx := context.Background()

	raw := kafka.New(kafka.Config{Brokers: cluster.Addrs(), Topic: "raw", Key: "{3}"}, 100)
	defer raw.Close(ctx)
	if err := raw.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 2<<20) // over the 1 MiB batch limit
	err := raw.Write(ctx, []sluice.Event{
		event(sluice.StreamRaw, "b1", `{"t":1}`),
		event(sluice.StreamRaw, "b2", big),
		event(sluice.StreamRaw, "b3", `{"t":3}`),
	})
	var be *sluice.BatchError
	if !errors.As(err, &be) || len(be.Errs) != 3 || !sluice.IsPermanent(be.Errs[1]) || sluice.IsPermanent(be.Errs[0]) {
		// kafka-go refuses the whole call for one oversized message: the
		// oversized one is permanent, the others are retryable.
		t.Fatalf("got %v, want item 1 permanent and the others retryable", err)
	}
	// The retry (as the pipeline does it) writes the others.
	if err := raw.Write(ctx, []sluice.Event{event(sluice.StreamRaw, "b1", `{"t":1}`), event(sluice.StreamRaw, "b3", `{"t":3}`)}); err != nil {
		t.Fatal(err)
	}
	msgs := testsvc.ReadKafka(t, cluster.Addrs(), "raw", 2, 30*time.Second)
	got := map[string]string{}
	for _, m := range msgs {
		got[string(m.Key)] = string(m.Value)
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
		}
		if h["mqtt.topic"] != "plant/north/l1/"+string(m.Key)+"/telemetry" || h["mqtt.client_id"] != "gw" ||
			h["sluice.stream"] != "raw" || h["content-type"] != "application/json" || h["unit"] != "C" {
			t.Errorf("headers %v", h)
		}
	}
	if got["b1"] != `{"t":1}` || got["b3"] != `{"t":3}` || len(got) != 2 {
		t.Fatalf("records by key: %v", got)
	}

	t.Run("a key the event cannot fill is permanent", func(t *testing.T) {
		s := kafka.New(kafka.Config{Brokers: cluster.Addrs(), Topic: "records", Key: "{nosuch}"}, 100)
		defer s.Close(ctx)
		err := s.Write(ctx, []sluice.Event{event(sluice.StreamRecords, "b1", "")})
		if !errors.As(err, &be) || !sluice.IsPermanent(be.Errs[0]) {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("no broker is retryable", func(t *testing.T) {
		s := kafka.New(kafka.Config{Brokers: []string{"127.0.0.1:1"}, Topic: "records", Timeout: time.Second}, 100)
		defer s.Close(ctx)
		err := s.Write(ctx, []sluice.Event{event(sluice.StreamRecords, "b1", "")})
		if err == nil || sluice.IsPermanent(err) {
			t.Fatalf("got %v, want retryable", err)
		}
		if s.Connect(ctx) == nil {
			t.Fatal("Connect succeeded with no broker")
		}
	})
}

// BenchmarkWrite writes batches into the in-process Kafka stand-in. B/op
// guards against kafka-go preallocating huge batches (BatchSize must match
// sluice's batch size).
func BenchmarkWrite(b *testing.B) {
	cluster := testsvc.Kafka(b, "bench")
	for _, c := range []struct {
		size   int
		stream sluice.Stream
	}{{1, sluice.StreamRaw}, {100, sluice.StreamRaw}, {400, sluice.StreamRecords}} {
		size := c.size
		b.Run(fmt.Sprintf("%s batch=%d", c.stream, size), func(b *testing.B) {
			s := kafka.New(kafka.Config{Brokers: cluster.Addrs(), Topic: "bench", Key: "{3}"}, 500)
			defer s.Close(context.Background())
			batch := make([]sluice.Event, size)
			for i := range batch {
				batch[i] = event(c.stream, fmt.Sprintf("d%d", i), `{"t":21.5}`)
				if c.stream == sluice.StreamRecords {
					// A reading of 21 fields, as sluice bench's devices send.
					batch[i].ID = fmt.Sprintf("sluice-bench:%d:0", i)
					for k := range 20 {
						batch[i].Record.Fields = append(batch[i].Record.Fields, sluice.Field{Name: fmt.Sprintf("aux%02d", k), Value: 1000 + float64(k)*11.1})
					}
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := s.Write(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// TestSilentBrokerEndsConnectAndWrite points the sink at an address that
// takes connections and never answers: Connect and Write must give up
// within the timeout (before, Connect waited for ever for the broker's
// ApiVersions answer, and with SASL the dial itself did).
func TestSilentBrokerEndsConnectAndWrite(t *testing.T) {
	silent := testsvc.Silent(t)
	for _, tc := range []struct {
		name string
		sasl *kafka.SASLConfig
	}{
		{"plaintext", nil},
		{"sasl", &kafka.SASLConfig{Mechanism: "PLAIN", Username: "u", Password: secret.New("p")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := kafka.New(kafka.Config{Brokers: []string{silent.Addr}, Topic: "t", Timeout: 300 * time.Millisecond, SASL: tc.sasl}, 10)
			defer sink.Close(context.Background())
			for _, op := range []struct {
				name string
				do   func(context.Context) error
			}{
				{"connect", sink.Connect},
				{"write", func(ctx context.Context) error {
					return sink.Write(ctx, []sluice.Event{event(sluice.StreamRaw, "b1", `{"t":1}`)})
				}},
			} {
				done := make(chan error, 1)
				go func() { done <- op.do(context.Background()) }()
				select {
				case err := <-done:
					if err == nil || sluice.IsPermanent(err) {
						t.Errorf("%s: got %v, want a retryable error", op.name, err)
					}
				case <-time.After(60 * time.Second):
					t.Fatalf("%s to a silent broker did not end", op.name)
				}
			}
		})
	}
}
