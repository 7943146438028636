package httpin

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/sluicehq/sluice"
)

// BatchLimits bound what ParseBatch accepts.
type BatchLimits struct {
	// MaxLines bounds the messages (non-blank lines).
	MaxLines int
	// MaxPayload bounds each message's payload, in bytes.
	MaxPayload int
	// DefaultQoS is the QoS of a line that does not give one (0 or 1).
	DefaultQoS byte
}

// BatchMessage is one message of a batch, with the line it came from
// (1-based, blank lines counted).
type BatchMessage struct {
	Line    int
	Message sluice.Message
}

// LineError is what is wrong with one line of a batch.
type LineError struct {
	Line int    `json:"line"`
	Msg  string `json:"error"`
}

// BadLines is the error ParseBatch returns when lines are not valid: how
// many, and the first of them.
type BadLines struct {
	Total int
	First []LineError // at most maxReported
}

const maxReported = 20

func (b *BadLines) Error() string {
	if len(b.First) == 0 {
		return "invalid batch"
	}
	msg := fmt.Sprintf("line %d: %s", b.First[0].Line, b.First[0].Msg)
	if b.Total > 1 {
		msg += fmt.Sprintf(" (and %d more invalid lines)", b.Total-1)
	}
	return msg
}

func (b *BadLines) add(line int, format string, args ...any) {
	b.Total++
	if len(b.First) < maxReported {
		b.First = append(b.First, LineError{Line: line, Msg: fmt.Sprintf(format, args...)})
	}
}

// ErrTooManyLines is returned (wrapped) for a batch over BatchLimits.MaxLines.
var ErrTooManyLines = errors.New("too many lines in the batch")

// ErrEmptyBatch is returned for a batch with no message in it.
var ErrEmptyBatch = errors.New("the batch holds no message")

// lineDoc is one line of a batch:
//
//	{"topic": "plant/north/l1/b7/telemetry", "payload": {"t": 21.5}, "qos": 1}
//
// and exactly one of payload (any JSON value, published as its JSON text),
// payload_text (a string, published as its UTF-8 text) or payload_base64
// (bytes, standard base64).
type lineDoc struct {
	Topic         *string         `json:"topic"`
	Payload       json.RawMessage `json:"payload"`
	PayloadText   *string         `json:"payload_text"`
	PayloadBase64 *string         `json:"payload_base64"`
	QoS           *int            `json:"qos"`
	ContentType   *string         `json:"content_type"`
	Properties    properties      `json:"properties"`
}

// ParseBatch parses a batch of JSON lines (one message per line; blank lines
// are skipped) and checks every line. It returns the messages with Topic,
// Payload, QoS, ContentType and UserProperties set, or, when any line is
// invalid, a *BadLines naming them, ErrEmptyBatch, or an error wrapping
// ErrTooManyLines. A line's payload aliases data.
func ParseBatch(data []byte, lim BatchLimits) ([]BatchMessage, error) {
	var out []BatchMessage
	bad := &BadLines{}
	n := 0
	for lineNo := 1; len(data) > 0; lineNo++ {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if n++; n > lim.MaxLines {
			return nil, fmt.Errorf("%w: more than %d (max_batch_lines)", ErrTooManyLines, lim.MaxLines)
		}
		msg, err := parseLine(line, lim)
		if err != nil {
			bad.add(lineNo, "%s", err)
			continue
		}
		if bad.Total == 0 {
			out = append(out, BatchMessage{Line: lineNo, Message: msg})
		}
	}
	switch {
	case bad.Total > 0:
		return nil, bad
	case n == 0:
		return nil, ErrEmptyBatch
	}
	return out, nil
}

func parseLine(line []byte, lim BatchLimits) (sluice.Message, error) {
	var msg sluice.Message
	if !utf8.Valid(line) {
		return msg, errors.New("not valid UTF-8")
	}
	var doc lineDoc
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return msg, jsonProblem(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return msg, errors.New("more than one JSON value on the line")
	}

	if doc.Topic == nil {
		return msg, errors.New(`missing required key "topic"`)
	}
	if err := checkTopic(*doc.Topic); err != nil {
		return msg, fmt.Errorf("topic %s %w", quoteTopic(*doc.Topic), err)
	}
	msg.Topic = *doc.Topic

	given := 0
	for _, set := range []bool{doc.Payload != nil, doc.PayloadText != nil, doc.PayloadBase64 != nil} {
		if set {
			given++
		}
	}
	if given != 1 {
		return msg, errors.New("give exactly one of payload (JSON), payload_text or payload_base64")
	}
	switch {
	case doc.Payload != nil:
		msg.Payload = doc.Payload
		msg.ContentType = "application/json"
	case doc.PayloadText != nil:
		msg.Payload = []byte(*doc.PayloadText)
	default:
		b, err := decodeBase64(*doc.PayloadBase64)
		if err != nil {
			return msg, fmt.Errorf("payload_base64: %w", err)
		}
		msg.Payload = b
	}
	if len(msg.Payload) > lim.MaxPayload {
		return msg, fmt.Errorf("the payload is %d bytes, over the limit of %d (max_body_bytes)", len(msg.Payload), lim.MaxPayload)
	}

	msg.QoS = lim.DefaultQoS
	if doc.QoS != nil {
		q, err := checkQoS(*doc.QoS)
		if err != nil {
			return msg, fmt.Errorf("qos: %w", err)
		}
		msg.QoS = q
	}
	if doc.ContentType != nil {
		if err := checkString(*doc.ContentType); err != nil {
			return msg, fmt.Errorf("content_type: %w", err)
		}
		msg.ContentType = *doc.ContentType
	}
	for _, p := range doc.Properties {
		if err := checkString(p.Key); err != nil {
			return msg, fmt.Errorf("properties: key %q: %w", p.Key, err)
		}
		if err := checkString(p.Value); err != nil {
			return msg, fmt.Errorf("properties: %q: %w", p.Key, err)
		}
	}
	msg.UserProperties = doc.Properties
	return msg, nil
}

// decodeBase64 takes standard base64, padded or not.
func decodeBase64(s string) ([]byte, error) {
	enc := base64.StdEncoding
	if len(s)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	b, err := enc.DecodeString(s)
	if err != nil {
		return nil, errors.New("not standard base64")
	}
	return b, nil
}

// jsonProblem says what is wrong with a line's JSON in the terms of the
// line format, not of Go's types.
func jsonProblem(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Errorf("not a JSON object: %s (at byte %d)", strings.TrimPrefix(syn.Error(), "json: "), syn.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("not a JSON object: it ends too early")
	case errors.As(err, &typ):
		if typ.Field == "" {
			return errors.New("not a JSON object")
		}
		want := map[string]string{
			"topic": "a string", "payload_text": "a string", "payload_base64": "a string",
			"content_type": "a string", "qos": "0 or 1",
		}[typ.Field]
		if want == "" {
			want = "another type"
		}
		return fmt.Errorf("%s: want %s, not a JSON %s", typ.Field, want, typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Errorf("unknown key %s (want topic, payload, payload_text, payload_base64, qos, content_type, properties)",
			strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return errors.New(strings.TrimPrefix(err.Error(), "json: "))
}

// properties are MQTT 5 user properties, written as a JSON object of
// strings and kept in the order written.
type properties []sluice.Property

func (p *properties) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if t == nil { // null
		*p = nil
		return nil
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return errors.New("properties: want an object of strings, such as {\"unit\": \"degC\"}")
	}
	var out properties
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return err
		}
		v, err := dec.Token()
		if err != nil {
			return err
		}
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("properties: %q: want a string value", k)
		}
		out = append(out, sluice.Property{Key: k.(string), Value: s})
	}
	*p = out
	return nil
}

// maxTopicLen is MQTT's bound on a topic name (a two-byte length).
const maxTopicLen = 65535

// checkTopic reports why topic cannot be published to, as an MQTT PUBLISH
// could not: a topic name is non-empty UTF-8 without NUL and without
// wildcards [MQTT-4.7.3-1, 4.7.3-2, 3.3.2-2]. Topics starting with $ are the
// broker's own ($SYS), not telemetry.
func checkTopic(topic string) error {
	switch {
	case topic == "":
		return errors.New("is empty")
	case len(topic) > maxTopicLen:
		return fmt.Errorf("is %d bytes, over MQTT's %d", len(topic), maxTopicLen)
	case !utf8.ValidString(topic):
		return errors.New("is not valid UTF-8")
	case strings.IndexByte(topic, 0) >= 0:
		return errors.New("holds a NUL character")
	case strings.ContainsAny(topic, "+#"):
		return errors.New("holds a wildcard (+ or #): a message is published to one topic")
	case topic[0] == '$':
		return errors.New("starts with $: such topics are the broker's own")
	}
	return nil
}

// checkString reports why s cannot be an MQTT UTF-8 string (a content
// type, a property, a client id).
func checkString(s string) error {
	switch {
	case len(s) > maxTopicLen:
		return fmt.Errorf("is %d bytes, over MQTT's %d", len(s), maxTopicLen)
	case !utf8.ValidString(s):
		return errors.New("is not valid UTF-8")
	case strings.IndexByte(s, 0) >= 0:
		return errors.New("holds a NUL character")
	}
	return nil
}

func checkQoS(q int) (byte, error) {
	switch q {
	case 0, 1:
		return byte(q), nil
	case 2:
		return 0, errors.New("2 is not offered over HTTP (no exactly-once handshake); use 1, acknowledged once durable")
	}
	return 0, fmt.Errorf("%d: want 0 or 1", q)
}

// quoteTopic quotes a topic for an error message, shortened when long.
func quoteTopic(t string) string {
	const max = 200
	if len(t) > max {
		return fmt.Sprintf("%q... (%d bytes)", t[:max], len(t))
	}
	return fmt.Sprintf("%q", t)
}
