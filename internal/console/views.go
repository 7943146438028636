package console

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/rules"
)

// The JSON the API answers with. Records and alerts are as sinks write
// them (sluice.Record and sluice.Alert JSON), with the pipeline added.

// MessageView is a message and what the rules made of it: one line of the
// tail, one message of the playground.
type MessageView struct {
	Pipeline string    `json:"pipeline,omitempty"`
	Seq      uint64    `json:"seq,omitempty"`
	Time     time.Time `json:"time"`
	Topic    string    `json:"topic"`
	ClientID string    `json:"client_id,omitempty"`
	QoS      byte      `json:"qos"`
	Retain   bool      `json:"retain,omitempty"`
	Payload
	// Decoded is the payload as the first matching rule decodes it, one
	// object per reading.
	Decoded     []json.RawMessage `json:"decoded,omitempty"`
	DecodeError string            `json:"decode_error,omitempty"`
	// Rules are the rules whose topic matched, and what each made of it.
	Rules       []RuleOutcome     `json:"rules,omitempty"`
	Records     []json.RawMessage `json:"records,omitempty"`
	Alerts      []json.RawMessage `json:"alerts,omitempty"`
	DeadLetters []DeadLetterBrief `json:"dead_letters,omitempty"`
	// Timer is set for an alert raised by time alone (a deadman, a
	// re-notification): no message came.
	Timer bool `json:"timer,omitempty"`
}

// Payload is a payload shown safely: as text when it is printable UTF-8,
// otherwise in hex.
type Payload struct {
	Text *string `json:"payload,omitempty"`
	Hex  string  `json:"payload_hex,omitempty"`
}

// ShowPayload renders b safely.
func ShowPayload(b []byte) Payload {
	if printable(b) {
		s := string(b)
		return Payload{Text: &s}
	}
	return Payload{Hex: hex.EncodeToString(b)}
}

func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) && !unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

// RuleOutcome is what one rule whose topic matched made of a message:
// "record", "alert firing", "alert resolved", "dead letter" (several,
// comma-separated), or "nothing" (its where was false, it keeps no
// records, or its alert did not change).
type RuleOutcome struct {
	Rule   string `json:"rule"`
	Result string `json:"result"`
}

// DeadLetterBrief is a dead letter as part of a message's outcome.
type DeadLetterBrief struct {
	Stage  string `json:"stage"`
	Rule   string `json:"rule,omitempty"`
	Sink   string `json:"sink,omitempty"`
	Reason string `json:"reason"`
}

// viewMessage builds the view of a message and its events. With set, it
// says what each matching rule did and decodes the payload as they do.
func viewMessage(pipeline string, msg *sluice.Message, events []sluice.Event, set *rules.Set, limits rules.Limits) MessageView {
	v := MessageView{Pipeline: pipeline, Time: msg.Received, Topic: msg.Topic, ClientID: msg.ClientID, QoS: msg.QoS,
		Retain: msg.Retain, Payload: ShowPayload(msg.Payload), Timer: set == nil}
	results := map[string][]string{}
	note := func(rule, what string) {
		for _, w := range results[rule] {
			if w == what {
				return
			}
		}
		results[rule] = append(results[rule], what)
	}
	for i := range events {
		e := &events[i]
		switch {
		case e.Record != nil:
			v.Records = append(v.Records, e.Record.AppendJSON(nil))
			note(e.Record.Rule, "record")
		case e.Alert != nil:
			v.Alerts = append(v.Alerts, e.Alert.AppendJSON(nil))
			note(e.Alert.Rule, "alert "+e.Alert.Status)
		case e.DeadLetter != nil:
			d := e.DeadLetter
			v.DeadLetters = append(v.DeadLetters, DeadLetterBrief{Stage: d.Stage, Rule: d.Rule, Sink: d.Sink, Reason: d.Reason})
			note(d.Rule, "dead letter")
		}
	}
	if set == nil {
		return v
	}
	for _, name := range set.Matching(msg.Topic) {
		r := strings.Join(results[name], ", ")
		if r == "" {
			r = "nothing"
		}
		v.Rules = append(v.Rules, RuleOutcome{Rule: name, Result: r})
	}
	if _, readings, err := set.Decode(msg, limits); err != nil {
		v.DecodeError = err.Error()
	} else {
		for _, fields := range readings {
			v.Decoded = append(v.Decoded, fieldsJSON(fields))
		}
	}
	return v
}

// fieldsJSON renders fields as a JSON object, in their order.
func fieldsJSON(fields []sluice.Field) json.RawMessage {
	b := []byte{'{'}
	for i, f := range fields {
		if i > 0 {
			b = append(b, ',')
		}
		b = sluice.AppendJSONString(b, f.Name)
		b = append(b, ':')
		b = sluice.AppendJSONValue(b, f.Value)
	}
	return append(b, '}')
}

// alertJSON renders an alert as sinks write it, with its pipeline.
func alertJSON(pipeline string, a *sluice.Alert) json.RawMessage {
	b := []byte(`{"pipeline":`)
	b = sluice.AppendJSONString(b, pipeline)
	b = append(b, ',')
	return append(b, a.AppendJSON(nil)[1:]...)
}

// DeadLetterView is a dead letter the store holds.
type DeadLetterView struct {
	ID       uint64    `json:"id"`
	Pipeline string    `json:"pipeline"`
	Time     time.Time `json:"time"`
	DeadLetterBrief
	Topic    string    `json:"topic"`
	ClientID string    `json:"client_id,omitempty"`
	QoS      byte      `json:"qos"`
	Received time.Time `json:"received"`
	Payload
	Truncated bool           `json:"truncated,omitempty"`
	Replay    *ReplayOutcome `json:"replay,omitempty"`
}

func viewDeadLetter(d *DeadLetter) DeadLetterView {
	m := d.Message
	return DeadLetterView{ID: d.ID, Pipeline: d.Pipeline, Time: d.Time,
		DeadLetterBrief: DeadLetterBrief{Stage: d.Stage, Rule: d.Rule, Sink: d.Sink, Reason: d.Reason},
		Topic:           m.Topic, ClientID: m.ClientID, QoS: m.QoS, Received: m.Received,
		Payload: ShowPayload(m.Payload), Truncated: d.Truncated, Replay: d.Replay}
}

// LintError is a problem in a rule file, at file:line:col.
type LintError struct {
	File    string `json:"file"`
	Line    int    `json:"line,omitempty"`
	Column  int    `json:"column,omitempty"`
	Key     string `json:"key,omitempty"`
	Message string `json:"message"`
	// Text is the whole problem as the CLI prints it (file:line:col: ...).
	Text string `json:"text"`
}

func lintErrors(file string, err error) []LintError {
	var list conf.ErrorList
	if !errors.As(err, &list) {
		return []LintError{{File: file, Message: err.Error(), Text: file + ": " + err.Error()}}
	}
	out := make([]LintError, len(list))
	for i, e := range list {
		out[i] = LintError{File: e.File, Line: e.Line, Column: e.Column, Key: e.Key, Message: e.Msg, Text: e.Error()}
	}
	return out
}
