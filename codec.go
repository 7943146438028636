package sluice

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// The journal stores messages and the events rules derive from them in a
// compact binary form. Everything is length-prefixed; decoding checks every
// length, so a corrupt record is an error, never a panic.
//
//	message: version(1) topic payload qos(1) retain(1) client_id username
//	         content_type props(n × key value) received(varint unix ns)
//	         expires(varint unix ns, 0 for never; from version 2)
//	events:  version(1) flags(1) message-without-or-with-payload n × event
//	event:   stream(1) then a record, an alert or a dead letter (raw: nothing)
//
// Strings and byte slices are uvarint length + bytes; times are varint unix
// nanoseconds; values are a type byte ('f' float64, 'i' int64, 'b' bool,
// 's' string, 'n' nil) and the value. The flags of events say whether the
// message's payload was kept (bit 0) and, when bit 7 is set, which streams
// the events are of (bit s for Stream s), so that a reader can pass over
// events of other streams without decoding them (EventStreams); records
// written before the streams were noted have bit 7 clear.

// codecVersion is what is written; version 1 records (before message
// expiry) and version 2 (before event ids and alert episodes) are still
// read.
const codecVersion = 3

// ErrCorrupt is returned when a record cannot be decoded.
var ErrCorrupt = errors.New("corrupt record")

// AppendBinary appends the message's binary form to b.
func (m *Message) AppendBinary(b []byte) []byte {
	b = append(b, codecVersion)
	return m.appendBody(b, true)
}

func (m *Message) appendBody(b []byte, payload bool) []byte {
	b = appendString(b, m.Topic)
	if payload {
		b = appendBytes(b, m.Payload)
	} else {
		b = binary.AppendUvarint(b, 0)
	}
	b = append(b, m.QoS, boolByte(m.Retain))
	b = appendString(b, m.ClientID)
	b = appendString(b, m.Username)
	b = appendString(b, m.ContentType)
	b = binary.AppendUvarint(b, uint64(len(m.UserProperties)))
	for _, p := range m.UserProperties {
		b = appendString(b, p.Key)
		b = appendString(b, p.Value)
	}
	b = appendTime(b, m.Received)
	// Most messages never expire: that is one byte (0), not a zero time.
	var expires int64
	if !m.Expires.IsZero() {
		expires = m.Expires.UnixNano()
	}
	return binary.AppendVarint(b, expires)
}

// DecodeMessage decodes a message written by AppendBinary.
func DecodeMessage(b []byte) (*Message, error) { return decodeMessage(b, nil) }

func decodeMessage(b []byte, names *Names) (*Message, error) {
	d := decoder{b: b, names: names}
	v := d.byte()
	if (v < 1 || v > codecVersion) && d.err == nil {
		return nil, fmt.Errorf("%w: message version %d", ErrCorrupt, v)
	}
	m := d.message(v)
	if err := d.done(); err != nil {
		return nil, err
	}
	return m, nil
}

// AppendEvents appends the binary form of the events rules derived from
// msg. The message's payload is kept only when an event needs it (a raw or
// dead-letter event).
func AppendEvents(b []byte, msg *Message, events []Event) []byte {
	b = append(b, codecVersion)
	payload := false
	flags := byte(streamsNoted)
	for i := range events {
		if events[i].Stream == StreamRaw || events[i].Stream == StreamDeadLetters {
			payload = true
		}
		if s := events[i].Stream; s > 0 && s < 7 {
			flags |= 1 << s
		}
	}
	b = append(b, flags|boolByte(payload))
	b = msg.appendBody(b, payload)
	b = binary.AppendUvarint(b, uint64(len(events)))
	for i := range events {
		b = appendEvent(b, &events[i])
	}
	return b
}

func appendEvent(b []byte, e *Event) []byte {
	b = append(b, byte(e.Stream))
	b = appendString(b, e.ID)
	switch e.Stream {
	case StreamRecords:
		r := e.Record
		b = appendString(b, r.Rule)
		b = appendString(b, r.Topic)
		b = appendTime(b, r.Time)
		b = appendBinaryTags(b, r.Tags)
		b = binary.AppendUvarint(b, uint64(len(r.Fields)))
		for _, f := range r.Fields {
			b = appendString(b, f.Name)
			b = appendValue(b, f.Value)
		}
	case StreamAlerts:
		a := e.Alert
		for _, s := range []string{a.Rule, a.Severity, a.Status, a.Series, a.Device, a.Message, a.Topic} {
			b = appendString(b, s)
		}
		b = appendValue(b, a.Value)
		b = appendTime(b, a.Time)
		b = appendTime(b, a.Since)
		b = appendBinaryTags(b, a.Tags)
		b = binary.AppendUvarint(b, uint64(a.Notification))
		b = appendString(b, a.Episode)
	case StreamDeadLetters:
		d := e.DeadLetter
		for _, s := range []string{d.Stage, d.Rule, d.Sink, d.Reason} {
			b = appendString(b, s)
		}
	}
	return b
}

// streamsNoted is set in an events record's flags when they list its
// streams.
const streamsNoted = 0x80

// EventStreams returns the streams of the events in b (written by
// AppendEvents) as a set of bits, bit s for Stream s, without decoding
// them; ok is false when b does not say (written before the streams were
// noted, or not events at all): decode it to know.
func EventStreams(b []byte) (streams uint8, ok bool) {
	if len(b) < 2 || b[0] < 1 || b[0] > codecVersion || b[1]&streamsNoted == 0 {
		return 0, false
	}
	return b[1] &^ (streamsNoted | 1), true
}

// DecodeEvents decodes events written by AppendEvents. They share one
// *Message.
func DecodeEvents(b []byte) ([]Event, error) { return decodeEvents(b, nil) }

// Names makes the strings that repeat from one record to the next (topics,
// client ids, rule and field names, tags, short text values) once, for a
// reader that decodes many records (a sink reading its backlog from the
// journal's files): its Message and Events decode as DecodeMessage and
// DecodeEvents do, sharing those strings. It holds at most 4,096 strings
// of up to 64 bytes. Not safe for concurrent use; the zero value is ready.
type Names struct {
	m map[string]string
}

// Message decodes a message written by AppendBinary.
func (n *Names) Message(b []byte) (*Message, error) { return decodeMessage(b, n) }

// Events decodes events written by AppendEvents.
func (n *Names) Events(b []byte) ([]Event, error) { return decodeEvents(b, n) }

const (
	maxNames   = 4096
	maxNameLen = 64
)

// get returns b as a string, made once.
func (n *Names) get(b []byte) string {
	if s, ok := n.m[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(b) <= maxNameLen {
		if n.m == nil || len(n.m) >= maxNames {
			n.m = make(map[string]string, 256)
		}
		n.m[s] = s
	}
	return s
}

func decodeEvents(b []byte, names *Names) ([]Event, error) {
	d := decoder{b: b, names: names}
	v := d.byte()
	if (v < 1 || v > codecVersion) && d.err == nil {
		return nil, fmt.Errorf("%w: events version %d", ErrCorrupt, v)
	}
	d.byte() // flags: whether the payload was kept, the streams
	msg := d.message(v)
	n := d.count()
	events := make([]Event, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		e := Event{Stream: Stream(d.byte()), Message: msg}
		if v >= 3 {
			e.ID = d.string()
		}
		switch e.Stream {
		case StreamRecords:
			r := &Record{Rule: d.name(), Topic: d.name(), Time: d.time(), Tags: d.tags()}
			nf := d.count()
			r.Fields = make([]Field, 0, nf)
			for j := 0; j < nf && d.err == nil; j++ {
				r.Fields = append(r.Fields, Field{Name: d.name(), Value: d.value()})
			}
			e.Record = r
		case StreamAlerts:
			a := &Alert{Rule: d.name(), Severity: d.name(), Status: d.name(), Series: d.name(),
				Device: d.name(), Message: d.string(), Topic: d.name()}
			a.Value = d.value()
			a.Time, a.Since = d.time(), d.time()
			a.Tags = d.tags()
			a.Notification = int(min(d.uvarint(), math.MaxInt32))
			if v >= 3 {
				a.Episode = d.string()
			}
			e.Alert = a
		case StreamDeadLetters:
			e.DeadLetter = &DeadLetter{Stage: d.string(), Rule: d.string(), Sink: d.string(), Reason: d.string()}
		case StreamRaw:
		default:
			d.fail("unknown stream %d", e.Stream)
		}
		events = append(events, e)
	}
	if err := d.done(); err != nil {
		return nil, err
	}
	return events, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// zeroTime stands for the zero time.Time, which has no unix nanoseconds.
const zeroTime = math.MinInt64

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(b, zeroTime)
	}
	return binary.AppendVarint(b, t.UnixNano())
}

func appendBinaryTags(b []byte, tags []Tag) []byte {
	b = binary.AppendUvarint(b, uint64(len(tags)))
	for _, t := range tags {
		b = appendString(b, t.Key)
		b = appendString(b, t.Value)
	}
	return b
}

func appendValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case float64:
		b = append(b, 'f')
		return binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
	case int64:
		return binary.AppendVarint(append(b, 'i'), x)
	case int:
		return binary.AppendVarint(append(b, 'i'), int64(x))
	case bool:
		return append(b, 'b', boolByte(x))
	case string:
		return appendString(append(b, 's'), x)
	case nil:
		return append(b, 'n')
	}
	return appendString(append(b, 's'), FormatValue(v))
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// decoder reads a record; the first problem sticks in err and every later
// read returns a zero value. With names, strings that repeat are shared.
type decoder struct {
	b     []byte
	err   error
	names *Names
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
	}
	d.b = nil
}

func (d *decoder) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d bytes left over", len(d.b))
	}
	return d.err
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad length")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a count, which cannot exceed the bytes left (every element
// takes at least one byte).
func (d *decoder) count() int {
	v := d.uvarint()
	if v > uint64(len(d.b))+1 {
		d.fail("count %d larger than the record", v)
		return 0
	}
	return int(v)
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("length %d beyond the record", n)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.bytes()) }

// name reads a string that repeats from record to record (a topic, a field
// name, a tag).
func (d *decoder) name() string {
	if d.names == nil {
		return d.string()
	}
	b := d.bytes()
	if len(b) == 0 {
		return ""
	}
	return d.names.get(b)
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) time() time.Time {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad time")
		return time.Time{}
	}
	d.b = d.b[n:]
	if v == zeroTime {
		return time.Time{}
	}
	return time.Unix(0, v)
}

func (d *decoder) tags() []Tag {
	n := d.count()
	if n == 0 {
		return nil
	}
	tags := make([]Tag, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		tags = append(tags, Tag{Key: d.name(), Value: d.name()})
	}
	return tags
}

func (d *decoder) value() any {
	switch t := d.byte(); t {
	case 'f':
		if len(d.b) < 8 {
			d.fail("truncated float")
			return nil
		}
		v := math.Float64frombits(binary.LittleEndian.Uint64(d.b))
		d.b = d.b[8:]
		return v
	case 'i':
		v, n := binary.Varint(d.b)
		if n <= 0 {
			d.fail("bad integer")
			return nil
		}
		d.b = d.b[n:]
		return v
	case 'b':
		return d.byte() == 1
	case 's':
		return d.name()
	case 'n':
		return nil
	default:
		if d.err == nil {
			d.fail("unknown value type %q", t)
		}
		return nil
	}
}

func (d *decoder) message(version byte) *Message {
	m := &Message{Topic: d.name()}
	if p := d.bytes(); len(p) > 0 {
		m.Payload = append([]byte(nil), p...)
	}
	m.QoS = d.byte()
	m.Retain = d.byte() == 1
	m.ClientID, m.Username, m.ContentType = d.name(), d.name(), d.name()
	if n := d.count(); n > 0 {
		m.UserProperties = make([]Property, 0, n)
		for i := 0; i < n && d.err == nil; i++ {
			m.UserProperties = append(m.UserProperties, Property{Key: d.name(), Value: d.string()})
		}
	}
	m.Received = d.time()
	if version >= 2 {
		if v := d.varint(); v != 0 {
			m.Expires = time.Unix(0, v)
		}
	}
	return m
}
