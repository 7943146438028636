package ingest

import (
	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// maxPendingWrites is how many packets mochi queues for a client's writer
// (its MaximumClientWritesPending, left at mochi's default): a message to
// a subscriber whose queue is full is dropped. With max_queued it bounds
// what a subscriber that does not read can hold (docs/operations.md).
const maxPendingWrites = 8192

// OnPublishDropped counts a message not delivered to a subscriber that
// does not keep up: it holds max_queued QoS 1/2 messages unacknowledged,
// or its write queue is full (mochi calls this hook for both; sluice's
// copy of mochi for the first, where upstream logged a warning per
// message). The log line is rate-limited per listener.
func (h *hook) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	b := h.b
	b.metrics.SubDropped.WithLabelValues(cl.Net.Listener).Inc()
	b.rlog.Log(slog.LevelWarn, "subscriber_dropped:"+cl.Net.Listener,
		"messages to a subscriber that does not keep up are dropped (sluice_broker_subscriber_dropped_total)",
		"listener", cl.Net.Listener, "client", cl.ID, "topic", pk.TopicName,
		"max_queued", b.cfg.Limits.MaxQueued, "max_pending_writes", maxPendingWrites)
}
