package ingest

import (
	"errors"
	"log/slog"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Protocol errors: a client that breaks the protocol (a malformed packet,
// an invalid UTF-8 topic, more QoS 1/2 publishes in flight than the
// Receive Maximum) has its connection closed, as the specification says.
// Each is counted, by listener and reason, in
// sluice_broker_protocol_errors_total, and logged (at most once per 10 s per
// listener and reason) with the client id: a device with a firmware bug
// shows up. A CONNECT that does not decode is a refused connection
// (sluice_broker_connections_refused_total{reason="protocol"}), logged
// with the client's address.

// protocolReasons are the reasons a connection ends with a protocol error,
// by MQTT reason code: the metric's label values.
var protocolReasons = map[byte]string{
	packets.ErrMalformedPacket.Code:            "malformed_packet",
	packets.ErrProtocolViolation.Code:          "protocol_error",
	packets.ErrTopicNameInvalid.Code:           "topic_name_invalid",
	packets.ErrReceiveMaximum.Code:             "receive_maximum_exceeded",
	packets.ErrTopicAliasInvalid.Code:          "topic_alias_invalid",
	packets.ErrPacketTooLarge.Code:             "packet_too_large",
	packets.ErrPayloadFormatInvalid.Code:       "payload_format_invalid",
	packets.ErrUnsupportedProtocolVersion.Code: "unsupported_protocol_version",
}

// protocolReasonList lists the reasons, for the metric's series to start at 0.
func protocolReasonList() []string {
	out := make([]string, 0, len(protocolReasons))
	for _, r := range protocolReasons {
		out = append(out, r)
	}
	return out
}

// errMalformedLength is a fixed header whose remaining length runs over
// four bytes.
var errMalformedLength = errors.New("malformed remaining length")

// protocolReason is the reason err, which ended a connection, is a
// protocol error; "" when it is not one (the client went away, timed out,
// was refused or disconnected by the broker for another reason).
func protocolReason(err error) string {
	var code packets.Code
	switch {
	case err == nil:
		return ""
	case errors.Is(err, errPacketTooLarge):
		return "packet_too_large"
	case errors.Is(err, errMalformedLength):
		return "malformed_packet"
	case errors.As(err, &code):
		return protocolReasons[code.Code]
	case strings.HasPrefix(err.Error(), "invalid packet type"), strings.HasPrefix(err.Error(), "no valid packet available"):
		// mochi's errors (without a code) for a packet type a client
		// may not send.
		return "protocol_error"
	}
	return ""
}

// protocolError counts and logs a connection cl's protocol error ends.
func (b *Broker) protocolError(listener, client, remote, reason string, err error) {
	b.metrics.ProtocolErrors.WithLabelValues(listener, reason).Inc()
	b.rlog.Log(slog.LevelWarn, "protocol:"+listener+":"+reason, "connection closed: the client broke the MQTT protocol",
		"listener", listener, "client", client, "remote", remote, "reason", reason, "error", err)
}

// markEstablished notes on cl's connection that its session is established
// (the listener then counts how it ends as a protocol error, not as a
// refused CONNECT), with the client id for the log.
func markEstablished(cl *mqtt.Client) {
	if c, ok := cl.Net.Conn.(*clientConn); ok {
		c.clientID.Store(&cl.ID)
	}
}
