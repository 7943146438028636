package ingest

import (
	"context"
	"fmt"
	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/sluicehq/sluice/internal/ratelog"
)

// brokerLog is the slog handler of the embedded broker's (mochi's) logger.
// mochi logs per client and per packet, on paths a client drives: a
// subscriber that stops reading, or a device sending what the ACL denies,
// made it write a line per message. So each of its lines:
//
//   - is passed at warning level and above, and at every level when debug
//     logging is on: mochi's info lines repeat what sluice logs itself;
//   - is rate-limited as sluice's own hot-path lines are (internal/ratelog):
//     at most one line per message and listener every interval, the next
//     one saying how many were suppressed ("suppressed");
//   - carries no payload: a packet (mochi logs whole packets, payload
//     included) is replaced by its type, packet id, QoS, topic and payload
//     size, a will likewise, a byte slice by its length, and any other
//     value but an error or a plain one (string, number, time) by its type.
//
// It drops mochi's "publish packet error", which it logs at ERROR for every
// publish the ingest hook refuses: the hook counts those
// (sluice_messages_rejected_total) and logs them, rate-limited, itself.
type brokerLog struct {
	next     slog.Handler
	rlog     *ratelog.Logger
	listener string // from WithAttrs, for the rate limit's key
}

func newBrokerLog(next slog.Handler, rlog *ratelog.Logger) *brokerLog {
	return &brokerLog{next: next, rlog: rlog}
}

func (h *brokerLog) Enabled(ctx context.Context, l slog.Level) bool {
	if h.next.Enabled(ctx, slog.LevelDebug) {
		return true
	}
	return l >= slog.LevelWarn && h.next.Enabled(ctx, l)
}

func (h *brokerLog) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "publish packet error" {
		return nil
	}
	listener := h.listener
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "listener" && a.Value.Kind() == slog.KindString {
			listener = a.Value.String()
		}
		return true
	})
	ok, suppressed := h.rlog.Allow("broker:" + r.Level.String() + ":" + r.Message + ":" + listener)
	if !ok {
		return nil
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(withoutPayload(a))
		return true
	})
	if suppressed > 0 {
		out.AddAttrs(slog.Int("suppressed", suppressed))
	}
	return h.next.Handle(ctx, out)
}

func (h *brokerLog) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	clean := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clean[i] = withoutPayload(a)
		if a.Key == "listener" && a.Value.Kind() == slog.KindString {
			c.listener = a.Value.String()
		}
	}
	c.next = h.next.WithAttrs(clean)
	return &c
}

func (h *brokerLog) WithGroup(g string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(g)
	return &c
}

// withoutPayload replaces what may hold a message's payload: a packet by
// a summary of it, a byte slice by its length.
func withoutPayload(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindGroup:
		g := v.Group()
		clean := make([]any, len(g))
		for i, ga := range g {
			clean[i] = withoutPayload(ga)
		}
		return slog.Group(a.Key, clean...)
	case slog.KindAny:
	default:
		return a
	}
	switch x := v.Any().(type) {
	case packets.Packet:
		return slog.Attr{Key: a.Key, Value: packetSummary(&x)}
	case *packets.Packet:
		if x != nil {
			return slog.Attr{Key: a.Key, Value: packetSummary(x)}
		}
	case mqtt.Will:
		return slog.Group(a.Key, "topic", x.TopicName, "qos", x.Qos, "payload_bytes", len(x.Payload))
	case []byte:
		return slog.Int(a.Key+"_bytes", len(x))
	case error:
		return a
	default:
		// Anything else may hold a payload: its type only.
		return slog.String(a.Key, fmt.Sprintf("%T", x))
	}
	return a
}

// packetSummary is what a log line may say of a packet.
func packetSummary(pk *packets.Packet) slog.Value {
	attrs := []slog.Attr{slog.String("type", packets.PacketNames[pk.FixedHeader.Type])}
	if pk.PacketID != 0 {
		attrs = append(attrs, slog.Int("id", int(pk.PacketID)))
	}
	if pk.FixedHeader.Type == packets.Publish {
		attrs = append(attrs, slog.Int("qos", int(pk.FixedHeader.Qos)), slog.String("topic", pk.TopicName),
			slog.Int("payload_bytes", len(pk.Payload)))
	}
	return slog.GroupValue(attrs...)
}
