package rules

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/conf"
)

// TestFile is a rule test file (name_test.yaml, next to the rules it tests).
// docs/rules.md describes the format.
type TestFile struct {
	// Rules are the rule files under test, relative to the test file.
	// Default: the rule file of the same name (boilers_test.yaml tests
	// boilers.yaml).
	Rules []string   `yaml:"rules"`
	Tests []TestCase `yaml:"tests"`
}

// TestCase is one scenario on a simulated clock.
type TestCase struct {
	Name string `yaml:"name"`
	// Start is the simulated time of the first step (default
	// 2026-01-01T00:00:00Z).
	Start *time.Time `yaml:"start"`
	Steps []TestStep `yaml:"steps"`
}

// TestStep advances the clock, optionally publishes a message, and checks
// what came out.
type TestStep struct {
	// After advances the simulated clock before the step (timers run every
	// simulated second, as in sluice).
	After   time.Duration `yaml:"after"`
	Publish *TestMessage  `yaml:"publish"`
	// Expectations. Records are checked only when listed; alerts and dead
	// letters must match exactly what is listed (none when not listed).
	Records     []ExpectRecord     `yaml:"records"`
	Alerts      []ExpectAlert      `yaml:"alerts"`
	DeadLetters []ExpectDeadLetter `yaml:"dead_letters"`
	// Dropped expects the message to produce nothing at all.
	Dropped bool `yaml:"dropped"`
}

// TestMessage is a message to publish.
type TestMessage struct {
	Topic string `yaml:"topic"`
	// Payload is a mapping or list (sent as JSON) or a string (sent as is).
	Payload any `yaml:"payload"`
	// PayloadBase64 gives a binary payload instead.
	PayloadBase64 string `yaml:"payload_base64"`
	// Encode is applied to the payload bytes, in order: gzip, zlib,
	// deflate, zstd, snappy, base64.
	Encode      Steps             `yaml:"encode"`
	ContentType string            `yaml:"content_type"`
	Properties  map[string]string `yaml:"properties"`
	ClientID    string            `yaml:"client_id"`
	Username    string            `yaml:"username"`
	QoS         *int              `yaml:"qos"`
}

// ExpectRecord matches a record: the rule, and the listed tags and fields
// (others may be present; a field listed as null must be absent).
type ExpectRecord struct {
	Rule   string            `yaml:"rule"`
	Tags   map[string]string `yaml:"tags"`
	Fields map[string]any    `yaml:"fields"`
}

// ExpectAlert matches an alert transition on what is listed.
type ExpectAlert struct {
	Rule     string            `yaml:"rule"`
	Status   string            `yaml:"status"`
	Severity string            `yaml:"severity"`
	Device   string            `yaml:"device"`
	Series   string            `yaml:"series"`
	Value    any               `yaml:"value"`
	Message  Text              `yaml:"message"`
	Tags     map[string]string `yaml:"tags"`
	// At is the transition time as an offset from the test's start.
	At *time.Duration `yaml:"at"`
	// Notification: 1 for the first firing, 2 and up for re-notifications.
	Notification int `yaml:"notification"`
}

// ExpectDeadLetter matches a dead letter on what is listed: the rule, the
// stage, the reason.
type ExpectDeadLetter struct {
	Rule   string `yaml:"rule"`
	Stage  string `yaml:"stage"`
	Reason Text   `yaml:"reason"`
}

// Text is an expected text (an alert's message, a dead letter's reason),
// matched by one rule: a string matches exactly; {contains: part} matches
// a text that contains part. The zero Text is not checked.
type Text struct {
	Value    string
	Contains bool
}

// UnmarshalYAML accepts a string or {contains: part}.
func (t *Text) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err == nil {
		*t = Text{Value: s}
		return nil
	}
	var m map[string]any
	if err := unmarshal(&m); err != nil {
		return errors.New("want the exact text, or {contains: part of it}")
	}
	part, ok := m["contains"].(string)
	if len(m) != 1 || !ok || part == "" {
		for k, v := range m {
			// quoted last, so that the error is placed at that value
			return fmt.Errorf("want the exact text, or {contains: part of it}, not {%s: %q}", k, fmt.Sprint(v))
		}
		return errors.New("want the exact text, or {contains: part of it}")
	}
	*t = Text{Value: part, Contains: true}
	return nil
}

func (t Text) set() bool { return t.Value != "" }

func (t Text) match(got string) bool {
	if t.Contains {
		return strings.Contains(got, t.Value)
	}
	return got == t.Value
}

func (t Text) String() string {
	if t.Contains {
		return fmt.Sprintf("{contains: %q}", t.Value)
	}
	return fmt.Sprintf("%q", t.Value)
}

// mismatch says how got differs from t, for a failure.
func (t Text) mismatch(name, got string) string {
	if t.Contains {
		return fmt.Sprintf("%s %q does not contain %q", name, got, t.Value)
	}
	return fmt.Sprintf("%s %q, want %q", name, got, t.Value)
}

// TestResult is the outcome of one test case.
type TestResult struct {
	File     string
	Name     string
	Failures []string
}

// Passed reports whether the case passed.
func (r TestResult) Passed() bool { return len(r.Failures) == 0 }

var defaultTestStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// RunTests runs the rule test files found under paths (see ExpandTests) and
// returns a result per test case. An error means a test file or its rules
// could not be loaded.
func RunTests(paths ...string) ([]TestResult, error) {
	files, err := ExpandTests(paths...)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no rule test files (*_test.yaml) in %s", strings.Join(paths, ", "))
	}
	var results []TestResult
	var errs conf.ErrorList
	var other []error
	for _, f := range files {
		res, err := runTestFile(f)
		if err != nil {
			var list conf.ErrorList
			if errors.As(err, &list) {
				errs = append(errs, list...)
			} else {
				other = append(other, fmt.Errorf("%s: %w", f, err))
			}
			continue
		}
		results = append(results, res...)
	}
	if len(errs) > 0 {
		other = append(other, errs)
	}
	return results, errors.Join(other...)
}

func runTestFile(path string) ([]TestResult, error) {
	var tf TestFile
	doc, err := conf.DecodeFile(path, &tf)
	if err != nil {
		return nil, err
	}
	if len(tf.Tests) == 0 {
		return nil, conf.ErrorList{{File: path, Line: 1, Msg: `missing required key "tests"`}}
	}
	dir := filepath.Dir(path)
	var rulePaths []string
	for _, r := range tf.Rules {
		rulePaths = append(rulePaths, filepath.Join(dir, r))
	}
	if len(rulePaths) == 0 {
		base := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(path), ".yaml"), ".yml")
		base = strings.TrimSuffix(base, "_test")
		for _, ext := range []string{".yaml", ".yml"} {
			if _, err := os.Stat(filepath.Join(dir, base+ext)); err == nil {
				rulePaths = []string{filepath.Join(dir, base+ext)}
				break
			}
		}
		if rulePaths == nil {
			return nil, conf.ErrorList{{File: path, Line: 1, Msg: fmt.Sprintf("no %s.yaml next to it; say which rule files it tests with rules:", base)}}
		}
	}
	set, err := Load(rulePaths...)
	if err != nil {
		return nil, err
	}
	var results []TestResult
	for i := range tf.Tests {
		tc := &tf.Tests[i]
		name := tc.Name
		if name == "" {
			name = fmt.Sprintf("tests[%d]", i)
		}
		res := TestResult{File: path, Name: name}
		if err := runCase(set, tc, &res); err != nil {
			res.Failures = append(res.Failures, doc.ErrorAt(fmt.Sprintf("tests[%d]", i), 0, 0, err.Error()).Error())
		}
		results = append(results, res)
	}
	return results, nil
}

func runCase(set *Set, tc *TestCase, res *TestResult) error {
	start := defaultTestStart
	if tc.Start != nil {
		start = *tc.Start
	}
	ev := set.NewEvaluator(nil, Limits{})
	now := start
	for i, step := range tc.Steps {
		var got []sluice.Event
		// Time passes: timers run every simulated second.
		if step.After > 0 {
			end := now.Add(step.After)
			for now.Before(end) {
				now = now.Add(min(time.Second, end.Sub(now)))
				got = ev.Tick(now, got)
			}
		}
		desc := fmt.Sprintf("step %d (at %v)", i+1, now.Sub(start))
		dropped := false
		if m := step.Publish; m != nil {
			msg, err := m.message(now)
			if err != nil {
				return fmt.Errorf("%s: %w", desc, err)
			}
			desc = fmt.Sprintf("step %d (at %v, %s)", i+1, now.Sub(start), m.Topic)
			n := len(got)
			got, _ = ev.Eval(msg, got)
			dropped = len(got) == n
		}
		res.Failures = append(res.Failures, check(desc, &step, got, dropped, start)...)
	}
	return nil
}

// Message is the message m describes, received at now: what a test step
// publishes, and what `sluice rules try` and `rules lint --sample` read
// from a file of payloads.
func (m *TestMessage) Message(now time.Time) (*sluice.Message, error) { return m.message(now) }

func (m *TestMessage) message(now time.Time) (*sluice.Message, error) {
	if m.Topic == "" {
		return nil, errors.New("publish: missing topic")
	}
	var payload []byte
	switch p := m.Payload.(type) {
	case nil:
		if m.PayloadBase64 != "" {
			b, err := base64.StdEncoding.DecodeString(m.PayloadBase64)
			if err != nil {
				return nil, fmt.Errorf("payload_base64: %w", err)
			}
			payload = b
		}
	case string:
		payload = []byte(p)
	default:
		b, err := json.Marshal(jsonable(p))
		if err != nil {
			return nil, fmt.Errorf("payload: %w", err)
		}
		payload = b
	}
	for _, step := range m.Encode {
		var err error
		if payload, err = encode(step, payload); err != nil {
			return nil, fmt.Errorf("encode %s: %w", step, err)
		}
	}
	msg := &sluice.Message{Topic: m.Topic, Payload: payload, QoS: 1, ClientID: m.ClientID, Username: m.Username,
		ContentType: m.ContentType, Received: now}
	if m.ClientID == "" {
		msg.ClientID = "test"
	}
	if m.QoS != nil {
		msg.QoS = byte(*m.QoS)
	}
	keys := make([]string, 0, len(m.Properties))
	for k := range m.Properties {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		msg.UserProperties = append(msg.UserProperties, sluice.Property{Key: k, Value: m.Properties[k]})
	}
	return msg, nil
}

// jsonable turns YAML-decoded values into what encoding/json accepts.
func jsonable(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = jsonable(e)
		}
		return x
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case []any:
		for i, e := range x {
			x[i] = jsonable(e)
		}
	}
	return v
}

// encode applies one encoding to a test payload.
func encode(step string, b []byte) ([]byte, error) {
	var buf bytes.Buffer
	var w io.WriteCloser
	switch step {
	case "base64":
		return []byte(base64.StdEncoding.EncodeToString(b)), nil
	case "snappy":
		return snappy.Encode(nil, b), nil
	case "zstd":
		enc, err := zstd.NewWriter(nil)
		if err != nil {
			return nil, err
		}
		return enc.EncodeAll(b, nil), nil
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "zlib":
		w = zlib.NewWriter(&buf)
	case "deflate":
		fw, err := flate.NewWriter(&buf, flate.DefaultCompression)
		if err != nil {
			return nil, err
		}
		w = fw
	default:
		return nil, fmt.Errorf("unknown encoding %q (want gzip, zlib, deflate, zstd, snappy or base64)", step)
	}
	if _, err := w.Write(b); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// check compares what one step produced with what it expects.
func check(desc string, step *TestStep, got []sluice.Event, dropped bool, start time.Time) []string {
	var records, alerts, dead []sluice.Event
	for _, e := range got {
		switch e.Stream {
		case sluice.StreamRecords:
			records = append(records, e)
		case sluice.StreamAlerts:
			alerts = append(alerts, e)
		case sluice.StreamDeadLetters:
			dead = append(dead, e)
		}
	}
	var fails []string
	if step.Dropped && !dropped {
		fails = append(fails, fmt.Sprintf("%s: want the message dropped, got:\n%s", desc, describeAll(got, start)))
	}
	if step.Records != nil {
		fails = append(fails, compare(desc, "records", len(step.Records), records, start, func(i int, e sluice.Event) []string {
			return matchRecord(&step.Records[i], e.Record)
		}, func(i int) string { return describeExpectRecord(&step.Records[i]) })...)
	}
	fails = append(fails, compare(desc, "alerts", len(step.Alerts), alerts, start, func(i int, e sluice.Event) []string {
		return matchAlert(&step.Alerts[i], e.Alert, start)
	}, func(i int) string { return describeExpectAlert(&step.Alerts[i]) })...)
	fails = append(fails, compare(desc, "dead letters", len(step.DeadLetters), dead, start, func(i int, e sluice.Event) []string {
		return matchDeadLetter(&step.DeadLetters[i], e.DeadLetter)
	}, func(i int) string {
		d := step.DeadLetters[i]
		return fmt.Sprintf("{rule: %s, stage: %s, reason: %s}", d.Rule, d.Stage, d.Reason)
	})...)
	return fails
}

func compare(desc, what string, want int, got []sluice.Event, start time.Time, match func(int, sluice.Event) []string, describe func(int) string) []string {
	var diffs []string
	for i := 0; i < max(want, len(got)); i++ {
		switch {
		case i >= len(got):
			diffs = append(diffs, "  - want "+describe(i)+"\n    got  nothing")
		case i >= want:
			diffs = append(diffs, "  - want nothing\n    got  "+describeEvent(got[i], start))
		default:
			if m := match(i, got[i]); len(m) > 0 {
				diffs = append(diffs, "  - want "+describe(i)+"\n    got  "+describeEvent(got[i], start)+"\n    ("+strings.Join(m, "; ")+")")
			}
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	return []string{fmt.Sprintf("%s: %s (want %d, got %d):\n%s", desc, what, want, len(got), strings.Join(diffs, "\n"))}
}

func matchRecord(want *ExpectRecord, r *sluice.Record) []string {
	var m []string
	if want.Rule != "" && want.Rule != r.Rule {
		m = append(m, fmt.Sprintf("rule %s, want %s", r.Rule, want.Rule))
	}
	for k, v := range want.Tags {
		if got, _ := r.Tag(k); got != v {
			m = append(m, fmt.Sprintf("tag %s=%q, want %q", k, got, v))
		}
	}
	keys := sortedKeys(want.Fields)
	for _, k := range keys {
		got, ok := r.Field(k)
		if want.Fields[k] == nil {
			if ok {
				m = append(m, fmt.Sprintf("field %s=%v, want it absent", k, got))
			}
			continue
		}
		if !ok {
			m = append(m, fmt.Sprintf("field %s is missing, want %v", k, want.Fields[k]))
		} else if !sameValue(got, want.Fields[k]) {
			m = append(m, fmt.Sprintf("field %s=%v, want %v", k, got, want.Fields[k]))
		}
	}
	return m
}

func matchAlert(want *ExpectAlert, a *sluice.Alert, start time.Time) []string {
	var m []string
	str := func(name, got, w string) {
		if w != "" && got != w {
			m = append(m, fmt.Sprintf("%s %q, want %q", name, got, w))
		}
	}
	str("rule", a.Rule, want.Rule)
	str("status", a.Status, want.Status)
	str("severity", a.Severity, want.Severity)
	str("device", a.Device, want.Device)
	str("series", a.Series, want.Series)
	if want.Message.set() && !want.Message.match(a.Message) {
		m = append(m, want.Message.mismatch("message", a.Message))
	}
	if want.Value != nil && !sameValue(a.Value, want.Value) {
		m = append(m, fmt.Sprintf("value %v, want %v", a.Value, want.Value))
	}
	for k, v := range want.Tags {
		if got, _ := findTag(a.Tags, k); got != v {
			m = append(m, fmt.Sprintf("tag %s=%q, want %q", k, got, v))
		}
	}
	if want.At != nil && a.Time.Sub(start) != *want.At {
		m = append(m, fmt.Sprintf("at %v, want %v", a.Time.Sub(start), *want.At))
	}
	if want.Notification != 0 && a.Notification != want.Notification {
		m = append(m, fmt.Sprintf("notification %d, want %d", a.Notification, want.Notification))
	}
	return m
}

func matchDeadLetter(want *ExpectDeadLetter, d *sluice.DeadLetter) []string {
	var m []string
	if want.Rule != "" && d.Rule != want.Rule {
		m = append(m, fmt.Sprintf("rule %s, want %s", d.Rule, want.Rule))
	}
	if want.Stage != "" && d.Stage != want.Stage {
		m = append(m, fmt.Sprintf("stage %s, want %s", d.Stage, want.Stage))
	}
	if want.Reason.set() && !want.Reason.match(d.Reason) {
		m = append(m, want.Reason.mismatch("reason", d.Reason))
	}
	return m
}

// sameValue compares a produced value with an expected one from YAML:
// numbers numerically (to 1e-9, relative), the rest as text.
func sameValue(got, want any) bool {
	gf, gok := asFloat(got)
	wf, wok := asFloat(want)
	if gok && wok {
		if gf == wf {
			return true
		}
		return math.Abs(gf-wf) <= 1e-9*math.Max(math.Abs(gf), math.Abs(wf))
	}
	return fmt.Sprint(got) == fmt.Sprint(want)
}

func asFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	case int:
		return float64(x), true
	}
	return 0, false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func describeAll(events []sluice.Event, start time.Time) string {
	if len(events) == 0 {
		return "    nothing"
	}
	lines := make([]string, len(events))
	for i, e := range events {
		lines[i] = "    " + describeEvent(e, start)
	}
	return strings.Join(lines, "\n")
}

func describeEvent(e sluice.Event, start time.Time) string {
	switch {
	case e.Record != nil:
		var parts []string
		for _, t := range e.Record.Tags {
			parts = append(parts, fmt.Sprintf("%s: %s", t.Key, t.Value))
		}
		var fields []string
		for _, f := range e.Record.Fields {
			fields = append(fields, fmt.Sprintf("%s: %s", f.Name, sluice.FormatValue(f.Value)))
		}
		return fmt.Sprintf("record {rule: %s, tags: {%s}, fields: {%s}}", e.Record.Rule, strings.Join(parts, ", "), strings.Join(fields, ", "))
	case e.Alert != nil:
		a := e.Alert
		return fmt.Sprintf("alert {rule: %s, status: %s, severity: %s, device: %s, value: %v, message: %q, at: %v, notification: %d}",
			a.Rule, a.Status, a.Severity, a.Device, sluice.FormatValue(a.Value), a.Message, a.Time.Sub(start), a.Notification)
	case e.DeadLetter != nil:
		d := e.DeadLetter
		return fmt.Sprintf("dead letter {rule: %s, stage: %s, reason: %q}", d.Rule, d.Stage, d.Reason)
	}
	return "event"
}

func describeExpectRecord(r *ExpectRecord) string {
	var parts []string
	if r.Rule != "" {
		parts = append(parts, "rule: "+r.Rule)
	}
	if len(r.Tags) > 0 {
		var t []string
		for _, k := range sortedKeys(r.Tags) {
			t = append(t, k+": "+r.Tags[k])
		}
		parts = append(parts, "tags: {"+strings.Join(t, ", ")+"}")
	}
	if len(r.Fields) > 0 {
		var f []string
		for _, k := range sortedKeys(r.Fields) {
			f = append(f, fmt.Sprintf("%s: %v", k, r.Fields[k]))
		}
		parts = append(parts, "fields: {"+strings.Join(f, ", ")+"}")
	}
	return "record {" + strings.Join(parts, ", ") + "}"
}

func describeExpectAlert(a *ExpectAlert) string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+": "+v)
		}
	}
	add("rule", a.Rule)
	add("status", a.Status)
	add("severity", a.Severity)
	add("device", a.Device)
	if a.Value != nil {
		add("value", fmt.Sprint(a.Value))
	}
	if a.Message.set() {
		add("message", a.Message.String())
	}
	if a.At != nil {
		add("at", a.At.String())
	}
	if a.Notification != 0 {
		add("notification", fmt.Sprint(a.Notification))
	}
	return "alert {" + strings.Join(parts, ", ") + "}"
}
