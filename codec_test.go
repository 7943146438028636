package sluice_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
)

func sampleMessage() *sluice.Message {
	return &sluice.Message{Topic: "plant/n/l1/b7/telemetry", Payload: []byte(`{"t":91.5}`), QoS: 1, Retain: true,
		ClientID: "dev-7", Username: "u", ContentType: "application/json",
		UserProperties: []sluice.Property{{Key: "unit", Value: "C"}, {Key: "unit", Value: "F"}},
		Received:       time.Unix(1795694401, 123456789)}
}

func TestMessageRoundTrip(t *testing.T) {
	m := sampleMessage()
	got, err := sluice.DecodeMessage(m.AppendBinary(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("got %+v\nwant %+v", got, m)
	}
}

func TestMessageExpiryRoundTrip(t *testing.T) {
	m := sampleMessage()
	m.Expires = m.Received.Add(90 * time.Second)
	got, err := sluice.DecodeMessage(m.AppendBinary(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Expires.Equal(m.Expires) {
		t.Fatalf("expires %v, want %v", got.Expires, m.Expires)
	}
	if got.Expired(m.Received) || !got.Expired(m.Expires) {
		t.Error("Expired is wrong at receipt or at expiry")
	}
}

// TestDecodeVersion1 reads a message as sluice wrote it before message
// expiry (codec version 1): journals written then are still replayed.
func TestDecodeVersion1(t *testing.T) {
	m := sampleMessage()
	b := m.AppendBinary(nil)
	b[0] = 1
	b = b[:len(b)-1] // version 1 ends at the receive time; never-expires is one byte
	got, err := sluice.DecodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("got %+v\nwant %+v", got, m)
	}
}

func TestEventsRoundTrip(t *testing.T) {
	m := sampleMessage()
	tags := []sluice.Tag{{Key: "device", Value: "b7"}}
	events := []sluice.Event{
		{Stream: sluice.StreamRecords, Message: m, Record: &sluice.Record{Rule: "r", Topic: m.Topic, Time: m.Received, Tags: tags,
			Fields: []sluice.Field{{Name: "f", Value: 91.5}, {Name: "i", Value: int64(-3)}, {Name: "b", Value: true}, {Name: "s", Value: "x"}, {Name: "n", Value: nil}}}},
		{Stream: sluice.StreamAlerts, Message: m, Alert: &sluice.Alert{Rule: "r", Severity: "critical", Status: "firing", Series: "b7", Device: "b7",
			Value: 91.5, Message: "hot", Time: m.Received, Since: m.Received, Topic: m.Topic, Tags: tags, Notification: 2}},
		{Stream: sluice.StreamDeadLetters, Message: m, DeadLetter: &sluice.DeadLetter{Stage: "decode", Rule: "r", Reason: "json: bad"}},
		{Stream: sluice.StreamRaw, Message: m},
	}
	got, err := sluice.DecodeEvents(sluice.AppendEvents(nil, m, events))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, events) {
		t.Fatalf("got %+v\nwant %+v", got, events)
	}
	// Without raw or dead-letter events the payload is not kept.
	got, err = sluice.DecodeEvents(sluice.AppendEvents(nil, m, events[:2]))
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Message.Payload != nil || got[0].Message.Topic != m.Topic {
		t.Fatalf("%+v", got[0].Message)
	}
	// A zero time survives.
	got, err = sluice.DecodeEvents(sluice.AppendEvents(nil, m, []sluice.Event{{Stream: sluice.StreamAlerts, Message: m, Alert: &sluice.Alert{}}}))
	if err != nil {
		t.Fatal(err)
	}
	if !got[0].Alert.Since.IsZero() {
		t.Fatalf("%v", got[0].Alert.Since)
	}
}

// An events record says which streams it holds, so a sink of another
// stream passes over it without decoding it; a record written before
// that (no streams noted) says it cannot tell.
func TestEventStreams(t *testing.T) {
	m := sampleMessage()
	rec := sluice.Event{Stream: sluice.StreamRecords, Message: m, Record: &sluice.Record{Rule: "r"}}
	alert := sluice.Event{Stream: sluice.StreamAlerts, Message: m, Alert: &sluice.Alert{Rule: "r"}}
	dead := sluice.Event{Stream: sluice.StreamDeadLetters, Message: m, DeadLetter: &sluice.DeadLetter{Stage: "decode"}}
	for _, c := range []struct {
		events []sluice.Event
		want   uint8
	}{
		{[]sluice.Event{rec}, 1 << sluice.StreamRecords},
		{[]sluice.Event{rec, alert}, 1<<sluice.StreamRecords | 1<<sluice.StreamAlerts},
		{[]sluice.Event{dead}, 1 << sluice.StreamDeadLetters},
		{nil, 0},
	} {
		b := sluice.AppendEvents(nil, m, c.events)
		got, ok := sluice.EventStreams(b)
		if !ok || got != c.want {
			t.Errorf("%d events: streams %08b (%v), want %08b", len(c.events), got, ok, c.want)
		}
		if _, err := sluice.DecodeEvents(b); err != nil {
			t.Errorf("%d events: %v", len(c.events), err)
		}
		// As written before: the flags byte held the payload bit alone.
		old := append([]byte(nil), b...)
		old[1] &= 1
		if _, ok := sluice.EventStreams(old); ok {
			t.Errorf("%d events: a record without its streams noted says it knows them", len(c.events))
		}
		if _, err := sluice.DecodeEvents(old); err != nil {
			t.Errorf("%d events, as written before: %v", len(c.events), err)
		}
	}
}

func TestDecodeCorrupt(t *testing.T) {
	m := sampleMessage()
	full := sluice.AppendEvents(nil, m, []sluice.Event{{Stream: sluice.StreamRecords, Message: m,
		Record: &sluice.Record{Rule: "r", Fields: []sluice.Field{{Name: "f", Value: 1.0}}}}})
	for i := range full {
		if _, err := sluice.DecodeEvents(full[:i]); !errors.Is(err, sluice.ErrCorrupt) {
			t.Fatalf("truncated at %d: %v", i, err)
		}
	}
	if _, err := sluice.DecodeEvents(append(full, 0)); !errors.Is(err, sluice.ErrCorrupt) {
		t.Fatalf("trailing byte: %v", err)
	}
}

func FuzzDecodeEvents(f *testing.F) {
	m := sampleMessage()
	f.Add(sluice.AppendEvents(nil, m, []sluice.Event{{Stream: sluice.StreamRecords, Message: m,
		Record: &sluice.Record{Rule: "r", Fields: []sluice.Field{{Name: "f", Value: 1.0}, {Name: "s", Value: "x"}}}}}))
	f.Add(sluice.AppendEvents(nil, m, []sluice.Event{{Stream: sluice.StreamAlerts, Message: m, Alert: &sluice.Alert{Rule: "r"}}}))
	f.Add(m.AppendBinary(nil))
	f.Add([]byte{1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		// Must not panic; what decodes must encode back to the same bytes.
		events, err := sluice.DecodeEvents(b)
		if err == nil && len(events) > 0 {
			again := sluice.AppendEvents(nil, events[0].Message, events)
			if _, err := sluice.DecodeEvents(again); err != nil {
				t.Fatalf("re-encoded events do not decode: %v", err)
			}
		}
		sluice.DecodeMessage(b)
	})
}

// Names decodes what DecodeMessage and DecodeEvents do, sharing the
// strings that repeat between records.
func TestNamesDecode(t *testing.T) {
	m := sampleMessage()
	events := []sluice.Event{
		{Stream: sluice.StreamRecords, ID: "a:1:0", Message: m, Record: &sluice.Record{Rule: "r", Topic: m.Topic, Time: m.Received,
			Tags: []sluice.Tag{{Key: "device", Value: "b7"}}, Fields: []sluice.Field{{Name: "f", Value: 91.5}, {Name: "s", Value: "on"}}}},
		{Stream: sluice.StreamAlerts, ID: "a:1:1", Message: m, Alert: &sluice.Alert{Rule: "r", Severity: "critical", Status: "firing",
			Series: "b7", Device: "b7", Value: 91.5, Message: "hot", Time: m.Received, Since: m.Received, Topic: m.Topic, Notification: 1}},
		{Stream: sluice.StreamDeadLetters, Message: m, DeadLetter: &sluice.DeadLetter{Stage: "decode", Rule: "r", Reason: "json: bad"}},
	}
	var names sluice.Names
	data := sluice.AppendEvents(nil, m, events)
	for range 3 {
		got, err := names.Events(data)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := sluice.DecodeEvents(data)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v\nwant %+v", got, want)
		}
		msg, err := names.Message(m.AppendBinary(nil))
		if err != nil || !reflect.DeepEqual(msg, m) {
			t.Fatalf("message: got %+v (%v), want %+v", msg, err, m)
		}
	}
	if _, err := names.Events(data[:len(data)-1]); err == nil {
		t.Error("a truncated record decoded")
	}
}
