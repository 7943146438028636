package ingest_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/testsvc"

	"log/slog"
)

// gate is a handler that blocks on the message with topic "block" until
// released.
type gate struct {
	recorder
	release chan struct{}
	once    sync.Once
	blocked chan struct{}
}

func (g *gate) Handle(ctx context.Context, msg *sluice.Message, refuse bool) error {
	if msg.Topic == "block" {
		g.once.Do(func() { close(g.blocked) })
		select {
		case <-g.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.recorder.Handle(ctx, msg, refuse)
}

// burst encodes QoS 1 PUBLISH packets (MQTT 3.1.1) for topics, ids from 1,
// to be written at once.
func burst(t *testing.T, topics ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	for i, topic := range topics {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: topic,
			PacketID: uint16(i + 1), Payload: []byte(`{"v":1}`), ProtocolVersion: 4}
		if err := pk.PublishEncode(&buf); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// TestBurstAcknowledged writes many publishes in one go, which the broker
// answers with coalesced acknowledgements: each is acknowledged once, in
// order, and each reached the handler.
func TestBurstAcknowledged(t *testing.T) {
	b, rec, _ := startBroker(t, ingest.Config{Listeners: anonListener()})
	c, code := dialV3(t, b.Addr("tcp"), "burst", 30)
	if code != 0 {
		t.Fatalf("CONNACK %#x", code)
	}
	const n = 2000 // more acknowledgements than fit in one coalesced write
	var topics []string
	for i := range n {
		topics = append(topics, fmt.Sprintf("plant/n/l1/d%d/telemetry", i))
	}
	if _, err := c.conn.Write(burst(t, topics...)); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		pk, err := c.read()
		if err != nil {
			t.Fatalf("after %d acknowledgements: %v", i, err)
		}
		if pk.FixedHeader.Type != packets.Puback || pk.PacketID != uint16(i+1) {
			t.Fatalf("packet %d: %s id %d, want PUBACK id %d", i, packets.PacketNames[pk.FixedHeader.Type], pk.PacketID, i+1)
		}
	}
	if got := rec.topics(); len(got) != n {
		t.Fatalf("the handler got %d messages, want %d", len(got), n)
	}
}

// TestAckNotHeldBehindBlockedPublish: a publish whose handling blocks (a
// full journal) does not hold back the acknowledgement of the one before
// it, even with more packets of the client's at hand.
func TestAckNotHeldBehindBlockedPublish(t *testing.T) {
	g := &gate{release: make(chan struct{}), blocked: make(chan struct{})}
	log := slog.New(slog.NewTextHandler(&testsvc.LogBuffer{}, nil))
	b := ingest.New(ingest.Config{Listeners: anonListener()}, g, log, metrics.New())
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	defer close(g.release)

	c, code := dialV3(t, b.Addr("tcp"), "blocked", 30)
	if code != 0 {
		t.Fatalf("CONNACK %#x", code)
	}
	if _, err := c.conn.Write(burst(t, "first", "block", "third")); err != nil {
		t.Fatal(err)
	}
	<-g.blocked
	pk, err := c.read() // within read's generous deadline
	if err != nil {
		t.Fatalf("no acknowledgement of the first publish while the second blocks: %v", err)
	}
	if pk.FixedHeader.Type != packets.Puback || pk.PacketID != 1 {
		t.Fatalf("got %s id %d, want PUBACK 1", packets.PacketNames[pk.FixedHeader.Type], pk.PacketID)
	}
}
