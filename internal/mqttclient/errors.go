package mqttclient

import (
	"errors"
	"fmt"
)

// ErrNotConnected means there is no connection to the remote right now.
var ErrNotConnected = errors.New("not connected")

// ErrConnectionLost means the connection ended before the remote answered.
var ErrConnectionLost = errors.New("connection to the remote lost")

// RefusedError is a CONNACK refusing the connection.
type RefusedError struct {
	// Code is the reason code (MQTT 5) or return code (MQTT 3.1.1).
	Code byte
	// V3 says the code is an MQTT 3.1.1 return code.
	V3 bool
	// Reason is the remote's reason string, if it sent one.
	Reason string
}

func (e *RefusedError) Error() string {
	s := fmt.Sprintf("the remote refused the connection: %s (0x%02x)", e.meaning(), e.Code)
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// ProtocolRefused reports whether the remote refused the protocol version.
func (e *RefusedError) ProtocolRefused() bool {
	return (e.V3 && e.Code == 0x01) || (!e.V3 && e.Code == 0x84)
}

// Kind is a bounded label for metrics: auth, protocol, client_id,
// unavailable, other.
func (e *RefusedError) Kind() string {
	switch {
	case e.ProtocolRefused():
		return "protocol"
	case e.V3 && (e.Code == 0x04 || e.Code == 0x05), !e.V3 && (e.Code == 0x86 || e.Code == 0x87 || e.Code == 0x8a || e.Code == 0x8c):
		return "auth"
	case e.V3 && e.Code == 0x02, !e.V3 && e.Code == 0x85:
		return "client_id"
	case e.V3 && e.Code == 0x03, !e.V3 && (e.Code == 0x88 || e.Code == 0x89 || e.Code == 0x97 || e.Code == 0x9f):
		return "unavailable"
	}
	return "other"
}

func (e *RefusedError) meaning() string {
	if e.V3 {
		switch e.Code {
		case 0x01:
			return "unacceptable protocol version"
		case 0x02:
			return "client identifier rejected"
		case 0x03:
			return "server unavailable"
		case 0x04:
			return "bad user name or password"
		case 0x05:
			return "not authorized"
		}
		return "refused"
	}
	if m, ok := reasons[e.Code]; ok {
		return m
	}
	return "refused"
}

// reasons are the MQTT 5 reason codes of CONNACK, PUBACK, PUBREC and
// SUBACK that sluice may meet.
var reasons = map[byte]string{
	0x00: "normal disconnection",
	0x10: "no matching subscribers",
	0x80: "unspecified error",
	0x81: "malformed packet",
	0x82: "protocol error",
	0x83: "implementation specific error",
	0x84: "unsupported protocol version",
	0x85: "client identifier not valid",
	0x86: "bad user name or password",
	0x87: "not authorized",
	0x88: "server unavailable",
	0x89: "server busy",
	0x8a: "banned",
	0x8b: "server shutting down",
	0x8c: "bad authentication method",
	0x8d: "keep alive timeout",
	0x8e: "session taken over",
	0x8f: "topic filter invalid",
	0x90: "topic name invalid",
	0x91: "packet identifier in use",
	0x93: "receive maximum exceeded",
	0x94: "topic alias invalid",
	0x95: "packet too large",
	0x97: "quota exceeded",
	0x98: "administrative action",
	0x99: "payload format invalid",
	0x9a: "retain not supported",
	0x9b: "QoS not supported",
	0x9c: "use another server",
	0x9d: "server moved",
	0x9e: "shared subscriptions not supported",
	0x9f: "connection rate exceeded",
	0xa1: "subscription identifiers not supported",
	0xa2: "wildcard subscriptions not supported",
}

// Reason names an MQTT 5 reason code.
func Reason(code byte) string {
	if m, ok := reasons[code]; ok {
		return m
	}
	return fmt.Sprintf("reason 0x%02x", code)
}

// PublishError is a publish the remote answered with a failure reason code
// (MQTT 5).
type PublishError struct {
	Topic  string
	Code   byte
	Reason string // the remote's reason string, if any
}

func (e *PublishError) Error() string {
	s := fmt.Sprintf("publish to %q refused: %s (0x%02x)", e.Topic, Reason(e.Code), e.Code)
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Permanent reports whether sending the same message again will fail the
// same way: the remote refuses this topic or this message, not the moment.
func (e *PublishError) Permanent() bool {
	switch e.Code {
	case 0x87, 0x8f, 0x90, 0x95, 0x99, 0x9a, 0x9b:
		return true
	}
	return false
}
