package httpin_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/ingest/httpin"
)

var batchLimits = httpin.BatchLimits{MaxLines: 10, MaxPayload: 64, DefaultQoS: 1}

func TestParseBatch(t *testing.T) {
	msgs, err := httpin.ParseBatch([]byte(
		`{"topic": "a/b", "payload": {"t": [1, 2]}, "properties": {"z": "1", "a": "2", "z": "3"}}`+"\r\n"+
			"   \n"+
			`{"topic": "a/c", "payload_text": "t=2 ü", "qos": 0, "content_type": "text/plain"}`+"\n"+
			`{"topic": "a/d", "payload_base64": "AAEC"}`+"\n"+
			`{"topic": "a/e", "payload_base64": "AAE"}`+"\n"+
			`{"topic": "a/f", "payload": null}`), batchLimits)
	if err != nil {
		t.Fatal(err)
	}
	want := []httpin.BatchMessage{
		{Line: 1, Message: sluice.Message{Topic: "a/b", Payload: []byte(`{"t": [1, 2]}`), QoS: 1, ContentType: "application/json",
			UserProperties: []sluice.Property{{Key: "z", Value: "1"}, {Key: "a", Value: "2"}, {Key: "z", Value: "3"}}}},
		{Line: 3, Message: sluice.Message{Topic: "a/c", Payload: []byte("t=2 ü"), QoS: 0, ContentType: "text/plain"}},
		{Line: 4, Message: sluice.Message{Topic: "a/d", Payload: []byte{0, 1, 2}, QoS: 1}},
		{Line: 5, Message: sluice.Message{Topic: "a/e", Payload: []byte{0, 1}, QoS: 1}},
		{Line: 6, Message: sluice.Message{Topic: "a/f", Payload: []byte("null"), QoS: 1, ContentType: "application/json"}},
	}
	if len(msgs) != len(want) {
		t.Fatalf("%d messages, want %d: %+v", len(msgs), len(want), msgs)
	}
	for i, w := range want {
		g := msgs[i]
		if g.Line != w.Line || g.Message.Topic != w.Message.Topic || string(g.Message.Payload) != string(w.Message.Payload) ||
			g.Message.QoS != w.Message.QoS || g.Message.ContentType != w.Message.ContentType ||
			len(g.Message.UserProperties) != len(w.Message.UserProperties) {
			t.Errorf("message %d: %+v, want %+v", i, g, w)
			continue
		}
		for j, p := range w.Message.UserProperties {
			if g.Message.UserProperties[j] != p {
				t.Errorf("message %d property %d: %v, want %v", i, j, g.Message.UserProperties[j], p)
			}
		}
	}
}

func TestParseBatchRejects(t *testing.T) {
	cases := []struct {
		name, line, want string
	}{
		{"not JSON", `topic=a`, "not a JSON object"},
		{"truncated", `{"topic": "a", "payload": `, "ends too early"},
		{"an array", `[1]`, "not a JSON object"},
		{"two values", `{"topic": "a", "payload": 1} {}`, "more than one JSON value"},
		{"no topic", `{"payload": 1}`, `missing required key "topic"`},
		{"topic a number", `{"topic": 1, "payload": 1}`, "topic: want a string"},
		{"wildcard", `{"topic": "a/#", "payload": 1}`, "wildcard"},
		{"NUL", `{"topic": "a\u0000b", "payload": 1}`, "NUL"},
		{"dollar", `{"topic": "$SYS/x", "payload": 1}`, "starts with $"},
		{"empty topic", `{"topic": "", "payload": 1}`, "is empty"},
		{"no payload", `{"topic": "a"}`, "exactly one of payload"},
		{"two payloads", `{"topic": "a", "payload": 1, "payload_text": "x"}`, "exactly one of payload"},
		{"bad base64", `{"topic": "a", "payload_base64": "!!"}`, "not standard base64"},
		{"too large", `{"topic": "a", "payload_text": "` + strings.Repeat("x", 65) + `"}`, "over the limit of 64"},
		{"qos 2", `{"topic": "a", "payload": 1, "qos": 2}`, "exactly-once"},
		{"qos string", `{"topic": "a", "payload": 1, "qos": "1"}`, "qos: want 0 or 1"},
		{"unknown key", `{"topic": "a", "payload": 1, "retain": true}`, `unknown key "retain"`},
		{"property not a string", `{"topic": "a", "payload": 1, "properties": {"a": 1}}`, "want a string value"},
		{"properties not an object", `{"topic": "a", "payload": 1, "properties": ["a"]}`, "want an object"},
		{"not UTF-8", "{\"topic\": \"a\xff\", \"payload\": 1}", "not valid UTF-8"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := httpin.ParseBatch([]byte(`{"topic": "ok", "payload": 1}`+"\n"+c.line+"\n"), batchLimits)
			var bad *httpin.BadLines
			if !errors.As(err, &bad) {
				t.Fatalf("error %v, want BadLines", err)
			}
			if bad.Total != 1 || bad.First[0].Line != 2 || !strings.Contains(bad.First[0].Msg, c.want) {
				t.Fatalf("%+v, want line 2 with %q", bad, c.want)
			}
		})
	}
	if _, err := httpin.ParseBatch([]byte(strings.Repeat(`{"topic": "a", "payload": 1}`+"\n", 11)), batchLimits); !errors.Is(err, httpin.ErrTooManyLines) {
		t.Errorf("11 lines: %v, want ErrTooManyLines", err)
	}
	if _, err := httpin.ParseBatch([]byte("\n \r\n"), batchLimits); !errors.Is(err, httpin.ErrEmptyBatch) {
		t.Errorf("blank lines: %v, want ErrEmptyBatch", err)
	}
}

// FuzzParseBatch: whatever a client sends, ParseBatch does not panic, and
// what it accepts is within its limits and publishable.
func FuzzParseBatch(f *testing.F) {
	f.Add([]byte(`{"topic": "a/b", "payload": {"t": 1}}` + "\n"))
	f.Add([]byte(`{"topic": "a/b", "payload_base64": "AAE", "qos": 0, "properties": {"k": "v"}}` + "\r\n\n" + `{"topic": "c", "payload_text": "x"}`))
	f.Add([]byte(`{"topic": "a/+", "payload": 1}` + "\n" + `{"properties": {"a": {"b": 1}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, err := httpin.ParseBatch(data, batchLimits)
		if err != nil {
			var bad *httpin.BadLines
			if errors.As(err, &bad) {
				if bad.Total < len(bad.First) || len(bad.First) == 0 || len(bad.First) > 20 {
					t.Fatalf("BadLines %d with %d listed", bad.Total, len(bad.First))
				}
				for _, l := range bad.First {
					if l.Line < 1 || l.Line > strings.Count(string(data), "\n")+1 {
						t.Fatalf("line %d out of range", l.Line)
					}
				}
			} else if !errors.Is(err, httpin.ErrTooManyLines) && !errors.Is(err, httpin.ErrEmptyBatch) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(msgs) == 0 || len(msgs) > batchLimits.MaxLines {
			t.Fatalf("%d messages", len(msgs))
		}
		last := 0
		for _, m := range msgs {
			if m.Line <= last {
				t.Fatalf("lines out of order: %d after %d", m.Line, last)
			}
			last = m.Line
			tp := m.Message.Topic
			if tp == "" || !utf8.ValidString(tp) || strings.ContainsAny(tp, "+#\x00") || tp[0] == '$' {
				t.Fatalf("accepted topic %q", tp)
			}
			if len(m.Message.Payload) > batchLimits.MaxPayload || m.Message.QoS > 1 {
				t.Fatalf("accepted %d bytes at QoS %d", len(m.Message.Payload), m.Message.QoS)
			}
		}
	})
}
