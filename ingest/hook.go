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

// OnPublish hands the message to the pipelines. For QoS 1 and 2 it waits
// until the message is safe (every sink wrote it) before returning, so the
// broker's PUBACK/PUBREC only ever acknowledges a message that cannot be lost.
// While it waits, this client's next packets wait too: that is the
// backpressure a slow sink puts on a fast device.
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

	latency := b.metrics.AckLatency
	if qos == 0 {
		// At most once: nothing to wait for.
		ack := sluice.NewAck(func(error) { latency.Observe(time.Since(msg.Received).Seconds()) })
		if err := b.handler.Handle(b.ctx, msg, ack); err != nil {
			b.metrics.Rejected.WithLabelValues("not_accepted").Inc()
		}
		ack.Done(nil)
		return pk, nil
	}

	done := make(chan error, 1)
	ack := sluice.NewAck(func(err error) {
		latency.Observe(time.Since(msg.Received).Seconds())
		done <- err
	})
	if err := b.handler.Handle(b.ctx, msg, ack); err != nil {
		b.metrics.Rejected.WithLabelValues("not_accepted").Inc()
		return pk, packets.ErrRejectPacket
	}
	ack.Done(nil) // the hook's own part: the message is handed on
	select {
	case err := <-done:
		if err == nil || cl.Properties.ProtocolVersion < 5 {
			return pk, nil
		}
		// Handled, but not stored as telemetry: tell an MQTT 5 client with
		// a reason code. (A 3.1.1 PUBACK has none.)
		if errors.Is(err, sluice.ErrBadPayload) {
			return pk, packets.ErrPayloadFormatInvalid
		}
		return pk, packets.ErrUnspecifiedError
	case <-b.ctx.Done():
		// Shutting down and out of time: do not acknowledge; the client
		// keeps the message and sends it again after reconnecting.
		b.metrics.Rejected.WithLabelValues("shutting_down").Inc()
		return pk, packets.ErrRejectPacket
	}
}

var qosLabel = [3]string{"0", "1", "2"}
