package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/expr-lang/expr/vm"

	"github.com/sluicehq/sluice"
)

// Evaluator runs a Set against messages and keeps the per-series state of
// one shard (alert episodes). It is not safe for concurrent use: each worker
// has its own, and a series always goes to the same worker.
type Evaluator struct {
	set    *Set
	env    Env
	vm     vm.VM
	alerts []map[string]*alertState // per rule, by series key
	segs   []string

	// Per-message decode cache, shared by the rules that match it.
	decoded bool
	payload map[string]any
	flat    map[string]any
	decErr  error
}

type alertState struct {
	since time.Time
}

// NewEvaluator returns an Evaluator with empty state.
func (s *Set) NewEvaluator() *Evaluator {
	ev := &Evaluator{set: s, alerts: make([]map[string]*alertState, len(s.rules))}
	for i := range ev.alerts {
		ev.alerts[i] = map[string]*alertState{}
	}
	maxSegs := 0
	for _, r := range s.rules {
		maxSegs = max(maxSegs, len(r.segNames))
	}
	ev.segs = make([]string, maxSegs)
	ev.env.Segments = map[string]string{}
	ev.env.Props = map[string]string{}
	return ev
}

// Outcome summarises what the rules did with one message.
type Outcome struct {
	Matched  int // rules whose topic filter matched
	Filtered int // of those, rules whose where was false
	Failed   int // of those, rules that failed (decode or evaluation)
}

// Eval evaluates every rule against msg and appends what they produce to
// out: a record per rule that matched and passed its filter, an alert per
// alert transition, a dead letter per failure. Events have no Ack set.
func (ev *Evaluator) Eval(msg *sluice.Message, out []sluice.Event) ([]sluice.Event, Outcome) {
	var o Outcome
	ev.decoded, ev.payload, ev.flat, ev.decErr = false, nil, nil, nil
	ev.setMessage(msg)
	for i, r := range ev.set.rules {
		segs := ev.segs[:len(r.segNames)]
		if r.filter != nil && !r.filter.Match(msg.Topic, segs) {
			continue
		}
		o.Matched++
		var err error
		out, err = ev.evalRule(i, r, msg, segs, &o, out)
		if err != nil {
			o.Failed++
			out = append(out, deadLetter(msg, r.name, err))
		}
	}
	return out, o
}

// stageError says which stage of a rule failed.
type stageError struct {
	stage string
	err   error
}

func (e *stageError) Error() string { return e.stage + ": " + e.err.Error() }
func (e *stageError) Unwrap() error { return e.err }

func deadLetter(msg *sluice.Message, rule string, err error) sluice.Event {
	stage := "rule"
	var se *stageError
	if errors.As(err, &se) && se.stage == "decode" {
		stage = "decode"
	}
	return sluice.Event{
		Stream:     sluice.StreamDeadLetters,
		Message:    msg,
		DeadLetter: &sluice.DeadLetter{Stage: stage, Rule: rule, Reason: err.Error()},
	}
}

func (ev *Evaluator) setMessage(msg *sluice.Message) {
	e := &ev.env
	e.Topic, e.ClientID, e.Username = msg.Topic, msg.ClientID, msg.Username
	e.QoS, e.Retain, e.Received = int(msg.QoS), msg.Retain, msg.Received
	clear(e.Props)
	for _, p := range msg.UserProperties {
		if _, ok := e.Props[p.Key]; !ok {
			e.Props[p.Key] = p.Value
		}
	}
}

func (ev *Evaluator) evalRule(i int, r *rule, msg *sluice.Message, segs []string, o *Outcome, out []sluice.Event) ([]sluice.Event, error) {
	if err := ev.decode(r, msg); err != nil {
		return out, err
	}
	e := &ev.env
	e.Payload = ev.payload
	clear(e.Segments)
	for j, n := range r.segNames {
		e.Segments[n] = segs[j]
	}
	fields := make(map[string]any, len(ev.flat)+len(r.fields))
	for k, v := range ev.flat {
		fields[k] = v
	}
	e.Fields = fields

	if r.where != nil {
		ok, err := ev.runBool(r.where, "where")
		if err != nil {
			return out, err
		}
		if !ok {
			o.Filtered++
			return out, nil
		}
	}
	for _, d := range r.fields {
		v, err := ev.run(d.prog)
		if err != nil {
			return out, &stageError{"fields." + d.name, err}
		}
		if v == nil {
			delete(fields, d.name)
			continue
		}
		fields[d.name] = normalize(v)
	}
	keyVal, err := ev.run(r.key)
	if err != nil {
		return out, &stageError{"key", err}
	}
	series := sluice.FormatValue(keyVal)

	tags := make(map[string]string, len(r.segNames))
	for j, n := range r.segNames {
		tags[n] = segs[j]
	}
	rec := &sluice.Record{Rule: r.name, Topic: msg.Topic, Time: msg.Received, Tags: tags, Fields: fields}
	out = append(out, sluice.Event{Stream: sluice.StreamRecords, Message: msg, Record: rec})

	if r.alert != nil {
		a, err := ev.evalAlert(i, r, msg, series, tags)
		if err != nil {
			return out, err
		}
		if a != nil {
			out = append(out, sluice.Event{Stream: sluice.StreamAlerts, Message: msg, Alert: a})
		}
	}
	return out, nil
}

// evalAlert evaluates the alert condition for one series and returns the
// transition it causes, if any: firing when the condition becomes true,
// resolved when it becomes false. While it stays true nothing more is sent
// (one alert per series per episode).
func (ev *Evaluator) evalAlert(i int, r *rule, msg *sluice.Message, series string, tags map[string]string) (*sluice.Alert, error) {
	ar := r.alert
	firing, err := ev.runBool(ar.when, "alert.when")
	if err != nil {
		return nil, err
	}
	states := ev.alerts[i]
	st, wasFiring := states[series]
	if firing == wasFiring {
		return nil, nil
	}
	now := msg.Received
	a := &sluice.Alert{
		Rule: r.name, Severity: ar.severity, Series: series, Device: series,
		Time: now, Topic: msg.Topic, Tags: tags,
	}
	if d, ok := tags["device"]; ok {
		a.Device = d
	}
	if ar.value != nil {
		v, err := ev.run(ar.value)
		if err != nil {
			return nil, &stageError{"alert.value", err}
		}
		a.Value = normalize(v)
	}
	if a.Message, err = ev.render(ar.message); err != nil {
		return nil, &stageError{"alert.message", err}
	}
	if firing {
		states[series] = &alertState{since: now}
		a.Status, a.Since = sluice.AlertFiring, now
	} else {
		delete(states, series)
		a.Status, a.Since = sluice.AlertResolved, st.since
	}
	return a, nil
}

func (ev *Evaluator) render(t template) (string, error) {
	if len(t) == 1 && t[0].prog == nil {
		return t[0].text, nil
	}
	var b strings.Builder
	for _, p := range t {
		if p.prog == nil {
			b.WriteString(p.text)
			continue
		}
		v, err := ev.run(p.prog)
		if err != nil {
			return "", err
		}
		b.WriteString(sluice.FormatValue(normalize(v)))
	}
	return b.String(), nil
}

// run evaluates one program against the current environment. A panic in an
// expression fails this evaluation only.
func (ev *Evaluator) run(p *vm.Program) (out any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("expression panicked: %v", r)
		}
	}()
	return ev.vm.Run(p, &ev.env)
}

func (ev *Evaluator) runBool(p *vm.Program, stage string) (bool, error) {
	v, err := ev.run(p)
	if err != nil {
		return false, &stageError{stage, err}
	}
	b, ok := v.(bool)
	if !ok {
		return false, &stageError{stage, fmt.Errorf("want true or false, got %T %v", v, v)}
	}
	return b, nil
}

// decode decodes the payload once per message for all rules using the same
// decoding.
func (ev *Evaluator) decode(r *rule, msg *sluice.Message) error {
	if r.decode == "none" {
		ev.payload, ev.flat = nil, nil
		return nil
	}
	if !ev.decoded {
		ev.decoded = true
		ev.payload, ev.decErr = decodeJSON(msg.Payload)
		if ev.decErr == nil {
			ev.flat = make(map[string]any, len(ev.payload))
			flatten("", ev.payload, ev.flat)
		}
	}
	if ev.decErr != nil {
		return &stageError{"decode", ev.decErr}
	}
	return nil
}

func decodeJSON(b []byte) (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return nil, fmt.Errorf("json: payload is %s, want an object", ute.Value)
		}
		return nil, fmt.Errorf("json: %w", err)
	}
	if m == nil {
		return nil, fmt.Errorf("json: payload is null, want an object")
	}
	return m, nil
}

// flatten copies the scalar values of a decoded object into dst; nested
// objects become prefix_name. Arrays and nulls are left out of records.
func flatten(prefix string, m map[string]any, dst map[string]any) {
	for k, v := range m {
		name := k
		if prefix != "" {
			name = prefix + "_" + k
		}
		switch x := v.(type) {
		case map[string]any:
			flatten(name, x, dst)
		case float64, string, bool:
			dst[name] = x
		}
	}
}

// normalize turns expression results into the value types records carry:
// float64, int64, bool and string.
func normalize(v any) any {
	switch x := v.(type) {
	case int:
		return int64(x)
	case int32:
		return int64(x)
	case uint64:
		return int64(x)
	case float32:
		return float64(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case time.Duration:
		return x.Seconds()
	}
	return v
}
