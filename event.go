package sluice

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Stream names what a sink consumes. A sink is configured with exactly one.
type Stream uint8

const (
	// StreamRecords carries the records rules derive from messages.
	StreamRecords Stream = iota + 1
	// StreamAlerts carries alert transitions (firing, resolved).
	StreamAlerts
	// StreamRaw carries every message routed to a pipeline, undecoded.
	StreamRaw
	// StreamDeadLetters carries messages that could not be processed, with the reason.
	StreamDeadLetters
)

var streamNames = map[Stream]string{
	StreamRecords:     "records",
	StreamAlerts:      "alerts",
	StreamRaw:         "raw",
	StreamDeadLetters: "dead_letters",
}

// Streams lists the stream names accepted in configuration.
func Streams() []string { return []string{"records", "alerts", "raw", "dead_letters"} }

func (s Stream) String() string {
	if n, ok := streamNames[s]; ok {
		return n
	}
	return fmt.Sprintf("stream(%d)", uint8(s))
}

// ParseStream turns a configured stream name into a Stream.
func ParseStream(name string) (Stream, error) {
	for s, n := range streamNames {
		if n == name {
			return s, nil
		}
	}
	return 0, fmt.Errorf("unknown stream %q (want one of records, alerts, raw, dead_letters)", name)
}

// Alert states.
const (
	AlertFiring   = "firing"
	AlertResolved = "resolved"
)

// Alert is one transition of an alert for one series: it started firing, or it resolved.
type Alert struct {
	Rule     string
	Severity string
	Status   string // AlertFiring or AlertResolved
	// Series is the series key the alert belongs to (by default the device segment).
	Series string
	// Device is the "device" tag when the rule names one, otherwise the series key.
	Device  string
	Value   any
	Message string
	// Time is when this transition happened; Since is when the episode started firing.
	Time  time.Time
	Since time.Time
	Topic string
	Tags  []Tag
	// Notification counts the notifications of this episode's firing state:
	// 1 for the first, 2 and up for re-notifications while it keeps firing.
	Notification int
	// Episode identifies the episode: its firing, re-notifications and
	// resolution share it. It is derived from the rule, the series and when
	// the episode started, so the same episode has the same id whichever
	// node evaluates it.
	Episode string
}

// Lookup resolves a name used in a sink template: an alert attribute (rule,
// severity, status, series, device, message, value, time, since,
// notification), then a tag. Times are RFC 3339 in UTC, as in the JSON.
func (a *Alert) Lookup(name string) (string, bool) {
	switch name {
	case "rule":
		return a.Rule, true
	case "severity":
		return a.Severity, true
	case "status":
		return a.Status, true
	case "series":
		return a.Series, true
	case "device":
		return a.Device, true
	case "message":
		return a.Message, true
	case "value":
		return FormatValue(a.Value), true
	case "time":
		return a.Time.UTC().Format(time.RFC3339Nano), true
	case "since":
		return a.Since.UTC().Format(time.RFC3339Nano), true
	case "notification":
		return strconv.Itoa(a.Notification), true
	}
	return findTag(a.Tags, name)
}

// MarshalJSON renders the alert as it appears on alert topics and in Kafka.
func (a *Alert) MarshalJSON() ([]byte, error) { return a.AppendJSON(nil), nil }

// AppendJSON appends the alert's JSON to b.
func (a *Alert) AppendJSON(b []byte) []byte {
	b = append(b, `{"rule":`...)
	b = AppendJSONString(b, a.Rule)
	b = append(b, `,"severity":`...)
	b = AppendJSONString(b, a.Severity)
	b = append(b, `,"status":`...)
	b = AppendJSONString(b, a.Status)
	b = append(b, `,"device":`...)
	b = AppendJSONString(b, a.Device)
	b = append(b, `,"series":`...)
	b = AppendJSONString(b, a.Series)
	b = append(b, `,"value":`...)
	b = AppendJSONValue(b, a.Value)
	b = append(b, `,"message":`...)
	b = AppendJSONString(b, a.Message)
	b = append(b, `,"time":"`...)
	b = a.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","since":"`...)
	b = a.Since.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","notification":`...)
	b = strconv.AppendInt(b, int64(a.Notification), 10)
	b = append(b, `,"topic":`...)
	b = AppendJSONString(b, a.Topic)
	b = append(b, `,"tags":`...)
	b = appendTags(b, a.Tags)
	return append(b, '}')
}

// DeadLetter says why a message could not be processed, and where.
type DeadLetter struct {
	// Stage is where it failed: "decode", "rule", or "sink".
	Stage  string
	Rule   string
	Sink   string
	Reason string
}

// Event is one unit a sink writes. Message is always set (for the raw stream it
// is the whole event); Record, Alert or DeadLetter is set for its own stream.
type Event struct {
	Stream Stream
	// ID identifies the event for consumers that must drop repeats: an
	// event written twice (a sink retried after a crash, a partition that
	// moved to another node) has the same ID both times. Empty when
	// unknown.
	ID         string
	Message    *Message
	Record     *Record
	Alert      *Alert
	DeadLetter *DeadLetter
}

// Lookup resolves a template name against the event's record or alert, then the
// source message: "topic", "client_id", "username", and "prop.NAME" for an
// MQTT 5 user property.
func (e *Event) Lookup(name string) (string, bool) {
	switch {
	case e.Record != nil:
		if v, ok := e.Record.Lookup(name); ok {
			return v, true
		}
	case e.Alert != nil:
		if v, ok := e.Alert.Lookup(name); ok {
			return v, true
		}
	}
	switch name {
	case "topic":
		return e.Message.Topic, true
	case "client_id":
		return e.Message.ClientID, true
	case "username":
		return e.Message.Username, true
	}
	if key, ok := strings.CutPrefix(name, "prop."); ok {
		return e.Message.Property(key)
	}
	return "", false
}

// FormatValue renders a field value the way templates and keys show it.
func FormatValue(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		if x == float64(int64(x)) && x < 1e15 && x > -1e15 {
			return fmt.Sprintf("%d", int64(x))
		}
		return fmt.Sprintf("%g", x)
	case nil:
		return ""
	default:
		return fmt.Sprint(x)
	}
}

// Encode returns the bytes byte-oriented sinks (Kafka, MQTT, files) write
// for the event: the original payload for the raw stream, JSON otherwise.
func (e *Event) Encode() ([]byte, error) {
	if e.Stream == StreamRaw {
		return e.Message.Payload, nil
	}
	return e.AppendEncoded(nil)
}

// AppendEncoded appends what Encode returns to b.
func (e *Event) AppendEncoded(b []byte) ([]byte, error) {
	switch e.Stream {
	case StreamRaw:
		return append(b, e.Message.Payload...), nil
	case StreamRecords:
		return e.Record.AppendJSON(b), nil
	case StreamAlerts:
		return e.Alert.AppendJSON(b), nil
	case StreamDeadLetters:
		doc, err := json.Marshal(deadLetterJSON(e))
		return append(b, doc...), err
	}
	return b, fmt.Errorf("event of unknown stream %d", e.Stream)
}

type deadLetterDoc struct {
	Reason   string    `json:"reason"`
	Stage    string    `json:"stage"`
	Rule     string    `json:"rule,omitempty"`
	Sink     string    `json:"sink,omitempty"`
	Topic    string    `json:"topic"`
	ClientID string    `json:"client_id"`
	QoS      byte      `json:"qos"`
	Received time.Time `json:"received"`
	// Payload is the original payload when it is valid UTF-8 text,
	// otherwise PayloadBase64 holds it.
	Payload       *string `json:"payload,omitempty"`
	PayloadBase64 []byte  `json:"payload_base64,omitempty"`
}

func deadLetterJSON(e *Event) deadLetterDoc {
	d := deadLetterDoc{
		Reason: e.DeadLetter.Reason, Stage: e.DeadLetter.Stage, Rule: e.DeadLetter.Rule, Sink: e.DeadLetter.Sink,
		Topic: e.Message.Topic, ClientID: e.Message.ClientID, QoS: e.Message.QoS, Received: e.Message.Received.UTC(),
	}
	if utf8.Valid(e.Message.Payload) {
		s := string(e.Message.Payload)
		d.Payload = &s
	} else {
		d.PayloadBase64 = e.Message.Payload
	}
	return d
}
