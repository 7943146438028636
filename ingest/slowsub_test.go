package ingest_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/metrics"
)

// TestSlowSubscriberDoesNotStallPublishers: a QoS 1 subscriber to "#"
// that reads nothing, once its connection's buffers are full, does not
// hold up a publisher: every publish is acknowledged. (mochi's writer to
// the subscriber, blocked on the full connection, held the lock mochi
// takes to give the next message a packet id: the publisher's goroutine
// waited on it, until the subscriber's keep-alive ran out.)
func TestSlowSubscriberDoesNotStallPublishers(t *testing.T) {
	b := ingest.New(ingest.Config{Listeners: anonListener()}, &ackHandler{}, slog.New(slog.DiscardHandler), metrics.New())
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	addr := b.Addr("tcp")

	slow, _ := dialWire(t, addr, wireConnect{version: v5, clientID: "slow", clean: true})
	slow.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "#", Qos: 1})

	// 40 MB: more than the connection's socket buffers hold.
	pub, _ := dialWire(t, addr, wireConnect{version: v5, clientID: "pub", clean: true})
	payload := make([]byte, 100<<10)
	for i := range 400 {
		pub.publish("plant/a/big", 1, uint16(i+1), payload, packets.Properties{})
		pub.expect(packets.Puback)
	}
}
