// Package sluice holds the domain types shared by every stage of the pipeline:
// the Message a device published, the Record and Alert the rules derive from it,
// the Event a sink writes, the Ack that tells ingest when a message is safe, and
// the error classification sinks use to drive retries.
//
// The flow is
//
//	devices --MQTT--> ingest --Message--> pipelines --> rules --Event--> sinks
//
// and this package imports nothing but the standard library, so every stage can
// depend on it without depending on each other.
package sluice

import (
	"strings"
	"time"
)

// Message is one PUBLISH as it entered sluice. It is immutable once handed to the
// pipelines: several pipelines and sinks read it concurrently.
type Message struct {
	Topic    string
	Payload  []byte
	QoS      byte
	Retain   bool
	ClientID string
	Username string
	// ContentType is the MQTT 5 content-type property ("" for MQTT 3.1.1).
	ContentType string
	// UserProperties are the MQTT 5 user properties, in the order sent.
	UserProperties []Property
	// Received is when the broker read the message.
	Received time.Time
	// Expires is when the message stops being worth delivering (an MQTT 5
	// publisher's message expiry interval); zero for never.
	Expires time.Time
}

// Expired reports whether the message has expired at now.
func (m *Message) Expired(now time.Time) bool { return !m.Expires.IsZero() && !now.Before(m.Expires) }

// Property is an MQTT 5 user property.
type Property struct {
	Key, Value string
}

// Segments splits the topic into its levels: "plant/a/b" gives ["plant","a","b"].
func (m *Message) Segments() []string { return strings.Split(m.Topic, "/") }

// Property returns the value of the first user property named key.
func (m *Message) Property(key string) (string, bool) {
	for _, p := range m.UserProperties {
		if p.Key == key {
			return p.Value, true
		}
	}
	return "", false
}
