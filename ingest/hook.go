package ingest

import (
	"bytes"
	"errors"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/sluicehq/sluice"
)

// hook is sluice's mochi hook: it embeds the no-op base and overrides what
// ingest needs.
type hook struct {
	mqtt.HookBase
	b *Broker
}

func (h *hook) ID() string { return "sluice-ingest" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish}, []byte{b})
}

// OnConnectAuthenticate admits every client while the broker is open.
// (Authentication and ACLs are configured per listener; until they are, the
// default listener is bound to loopback only.)
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	return !h.b.isClosing()
}

// OnACLCheck allows every topic.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool { return true }

// OnPublish hands the message to the pipelines, which return once it is in
// their journals (durable as configured), so the broker's PUBACK/PUBREC only
// ever acknowledges a message that cannot be lost. While a journal is full,
// this client's next packets wait too: that is the backpressure a long sink
// outage puts on a fast device.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	b := h.b
	if cl.Net.Inline || isSysTopic(pk.TopicName) {
		return pk, nil // sluice's own publishes (alerts), not telemetry
	}
	if !b.enter() {
		b.metrics.Rejected.WithLabelValues("shutting_down").Inc()
		return pk, packets.ErrRejectPacket
	}
	defer b.inflight.Done()

	qos := pk.FixedHeader.Qos
	listener := cl.Net.Listener
	b.metrics.MessagesIn.WithLabelValues(listener, qosLabel[qos]).Inc()
	b.metrics.BytesIn.WithLabelValues(listener).Add(float64(len(pk.Payload)))

	msg := &sluice.Message{
		Topic:       pk.TopicName,
		Payload:     pk.Payload,
		QoS:         qos,
		Retain:      pk.FixedHeader.Retain,
		ClientID:    cl.ID,
		Username:    string(cl.Properties.Username),
		ContentType: pk.Properties.ContentType,
		Received:    time.Now(),
	}
	if n := len(pk.Properties.User); n > 0 {
		msg.UserProperties = make([]sluice.Property, n)
		for i, p := range pk.Properties.User {
			msg.UserProperties[i] = sluice.Property{Key: p.Key, Value: p.Val}
		}
	}

	// An MQTT 5 publisher of a QoS 1/2 message can be told the journal is
	// full (quota exceeded) and try again later; others wait for room.
	refuse := qos > 0 && cl.Properties.ProtocolVersion == 5
	err := b.handler.Handle(b.ctx, msg, refuse)
	switch {
	case err == nil:
		return pk, nil
	case errors.Is(err, sluice.ErrBusy):
		b.metrics.Rejected.WithLabelValues("journal_full").Inc()
		return pk, packets.ErrQuotaExceeded
	case b.ctx.Err() != nil:
		// Shutting down: not acknowledged, so the client keeps the message
		// and sends it again after reconnecting.
		b.metrics.Rejected.WithLabelValues("shutting_down").Inc()
		return pk, packets.ErrRejectPacket
	default:
		b.log.Error("publish not accepted", "topic", msg.Topic, "error", err)
		b.metrics.Rejected.WithLabelValues("error").Inc()
		return pk, packets.ErrRejectPacket
	}
}

var qosLabel = [3]string{"0", "1", "2"}
