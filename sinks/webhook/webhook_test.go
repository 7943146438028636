package webhook_test

import (
	"bufio"
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/secret"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/sinks/webhook"
)

const wait = 60 * time.Second // generous: the machine is shared

// boilerRules fire "boiler" while a boiler is above 90 °C.
const boilerRules = `
rules:
  - name: boiler
    match: plant/+site/+line/+device/telemetry
    alert:
      when: temperature > 90
      severity: critical
      message: "boiler {{ device }} at {{ temperature }} °C"
`

// receiver is the webhook's other end: an HTTP server that records each
// request and answers as the test says.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    []request
	answer func(n int) (int, http.Header, string) // for the n-th request (0-based)
}

type request struct {
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T, answer func(n int) (int, http.Header, string)) *receiver {
	r := &receiver{answer: answer}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		n := len(r.got)
		r.got = append(r.got, request{req.Header.Clone(), body})
		r.mu.Unlock()
		code, h, text := http.StatusOK, http.Header(nil), ""
		if r.answer != nil {
			code, h, text = r.answer(n)
		}
		for k, v := range h {
			w.Header()[k] = v
		}
		w.WriteHeader(code)
		io.WriteString(w, text)
	}))
	t.Cleanup(r.Close)
	return r
}

// body returns the body of the n-th request.
func (r *receiver) body(n int) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[n].body
}

// wait returns the first n requests once they have arrived.
func (r *receiver) wait(t *testing.T, n int) []request {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		r.mu.Lock()
		got := append([]request(nil), r.got...)
		r.mu.Unlock()
		if len(got) >= n {
			return got[:n]
		}
		if time.Now().After(deadline) {
			t.Fatalf("the receiver got %d requests within %v, want %d", len(got), wait, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sluiceWith starts a real sluice whose pipeline runs rules over plant/#
// and writes to a webhook sink "hook" (the YAML given, under webhook:) and
// a file sink of dead letters, and returns it with a device connected to
// its broker and the dead-letter file's path.
func sluiceWith(t *testing.T, rules, hook string) (*pipelines.Service, *testsvc.Client, string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(dir, "dead.jsonl")
	cfg, err := pipelines.Parse("sluice.yaml", fmt.Appendf(nil, `
log: {level: warn}
data_dir: %s
shutdown_timeout: 2s
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines:
  - name: plant
    topics: ["plant/#"]
    rules: [rules.yaml]
    sinks: [hook, dead]
sinks:
  - name: dead
    stream: dead_letters
    batch: {size: 1}
    file: {path: %s}
  - name: hook
    retry: {initial: 10ms, max: 100ms}
    webhook:
%s`, filepath.Join(dir, "data"), dead, indent(hook, "      ")), dir)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := pipelines.New(cfg, pipelines.Options{Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close(context.Background()) })
	return svc, testsvc.MQTT(t, svc.Broker().Addr("tcp"), "boiler-7"), dead
}

func indent(text, by string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		b.WriteString(by + l + "\n")
	}
	return b.String()
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func publish(t *testing.T, c *testsvc.Client, device string, temperature float64) {
	t.Helper()
	if rc := c.Publish(t, "plant/north/line1/"+device+"/telemetry", 1, fmt.Appendf(nil, `{"temperature": %v}`, temperature)); rc != 0 {
		t.Fatalf("publish: reason code %#x", rc)
	}
}

// TestAlertsReachTheReceiver: a boiler overheats and cools down; the
// receiver gets the firing alert, then the resolved one, each in a request
// of its own, as JSON, with the configured header, the bearer token, and a
// signature it can check.
func TestAlertsReachTheReceiver(t *testing.T) {
	r := newReceiver(t, nil)
	t.Setenv("HOOK_TOKEN", "t0ken")
	_, dev, _ := sluiceWith(t, boilerRules, fmt.Sprintf(`
url: %s/hooks/sluice
headers: {X-Team: boilers}
token: {env: HOOK_TOKEN}
signature: {secret: s3cret, timestamp_header: X-Sluice-Timestamp}`, r.URL))

	publish(t, dev, "boiler-7", 95.5)
	publish(t, dev, "boiler-7", 60)
	got := r.wait(t, 2)
	for i, want := range []string{sluice.AlertFiring, sluice.AlertResolved} {
		req := got[i]
		var a struct{ Rule, Status, Device, Message string }
		if err := json.Unmarshal(req.body, &a); err != nil {
			t.Fatalf("request %d: %v: %s", i, err, req.body)
		}
		if a.Rule != "boiler" || a.Status != want || a.Device != "boiler-7" {
			t.Errorf("request %d: %s; want boiler %s for boiler-7", i, req.body, want)
		}
		h := req.header
		if h.Get("Content-Type") != "application/json" || h.Get("X-Team") != "boilers" || h.Get("Authorization") != "Bearer t0ken" {
			t.Errorf("request %d headers: %v", i, h)
		}
		// What a receiver does: recompute, compare in constant time.
		want := webhook.Sign("s3cret", h.Get("X-Sluice-Timestamp"), req.body)
		if h.Get("X-Sluice-Timestamp") == "" || !hmac.Equal([]byte(h.Get("X-Sluice-Signature-256")), []byte(want)) {
			t.Errorf("request %d: signature %q, timestamp %q; want %q", i, h.Get("X-Sluice-Signature-256"), h.Get("X-Sluice-Timestamp"), want)
		}
	}
	if got[0].body[0] != '{' {
		t.Errorf("one alert per request is an object, not an array: %s", got[0].body)
	}
}

// TestSignatureLikeGitHub: without a timestamp the signature is GitHub's:
// "sha256=" and the hex HMAC-SHA256 of the body (the value is the one
// GitHub's documentation gives for this secret and body).
func TestSignatureLikeGitHub(t *testing.T) {
	got := webhook.Sign("It's a Secret to Everybody", "", []byte("Hello, World!"))
	want := "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	if got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

// docPayload returns the JSON block that follows marker in a doc file.
func docPayload(t *testing.T, path, marker string) string {
	t.Helper()
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), marker)
	if !ok {
		t.Fatalf("%s: no %q", path, marker)
	}
	_, rest, ok = strings.Cut(rest, "```json\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatalf("%s: no ```json block after %q", path, marker)
	}
	return strings.TrimSpace(block)
}

var times = regexp.MustCompile(`"(time|since)":"[^"]*"`)

// TestDocumentedPayload: the payload docs/operations.md and the sink's
// README show is, byte for byte, what the sink sends for the alert they
// describe (but for the times, which are when the test runs).
func TestDocumentedPayload(t *testing.T) {
	const marker = "<!-- webhook payload: TestDocumentedPayload -->"
	docs := docPayload(t, "../../docs/operations.md", marker)
	if readme := docPayload(t, "README.md", marker); readme != docs {
		t.Fatalf("README.md and docs/operations.md show different payloads:\n%s\n%s", readme, docs)
	}
	r := newReceiver(t, nil)
	_, dev, _ := sluiceWith(t, boilerRules, "url: "+r.URL)
	publish(t, dev, "boiler-7", 95.5)
	body := string(r.wait(t, 1)[0].body)
	for _, m := range times.FindAllStringSubmatch(body, -1) {
		if _, err := time.Parse(time.RFC3339Nano, strings.Split(m[0], `"`)[3]); err != nil {
			t.Errorf("%s: %v", m[0], err)
		}
	}
	docTimes := times.FindAllString(docs, -1)
	i := 0
	body = times.ReplaceAllStringFunc(body, func(string) string {
		i++
		if i > len(docTimes) {
			return "(more times than documented)"
		}
		return docTimes[i-1]
	})
	if body != docs {
		t.Fatalf("the sink sent\n%s\nthe docs show\n%s", body, docs)
	}
}

// TestBodyTemplateAndArray: a body template gives the receiver its own
// shape (a chat tool's {"text": ...}), with the message escaped as JSON
// needs; array sends a batch in one request.
func TestBodyTemplateAndArray(t *testing.T) {
	r := newReceiver(t, nil)
	rules := strings.Replace(boilerRules, `message: "boiler {{ device }} at {{ temperature }} °C"`,
		`message: "boiler \"{{ device }}\"\nat {{ temperature }} °C"`, 1)
	_, dev, _ := sluiceWith(t, rules, fmt.Sprintf(`
url: %s
array: true
body:
  text: "[{severity}] {rule} on {device}: {message}"
  status: "{status}"
  channel: "#plant"
  fields: [{site: "{site}", value: "{value}"}]
  priority: 2
  urgent: true`, r.URL))

	// Three boilers overheat at once: the firing alerts reach the sink
	// together or in a few batches.
	for _, d := range []string{"b1", "b2", "b3"} {
		publish(t, dev, d, 91)
	}
	var items []map[string]any
	for n := 1; len(items) < 3; n++ {
		got := r.wait(t, n)
		var batch []map[string]any
		if err := json.Unmarshal(got[n-1].body, &batch); err != nil {
			t.Fatalf("request %d is not a JSON array: %v: %s", n, err, got[n-1].body)
		}
		items = append(items, batch...)
	}
	want := map[string]any{
		"text":   "[critical] boiler on b1: boiler \"b1\"\nat 91 °C",
		"status": "firing", "channel": "#plant",
		"fields":   []any{map[string]any{"site": "north", "value": "91"}},
		"priority": 2.0, "urgent": true,
	}
	// The workers evaluate the three series in parallel: their alerts
	// come in any order.
	var b1 map[string]any
	for _, it := range items {
		if text, _ := it["text"].(string); strings.Contains(text, " on b1:") {
			b1 = it
		}
	}
	if fmt.Sprint(b1) != fmt.Sprint(want) {
		t.Errorf("b1's item\n got %v\nwant %v", b1, want)
	}
	if len(items) != 3 {
		t.Errorf("got %d items, want 3", len(items))
	}
}

// deadLetters returns the dead letters in the file once there are n.
func deadLetters(t *testing.T, path string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		var got []map[string]any
		if f, err := os.Open(path); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				var d map[string]any
				if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
					t.Fatalf("dead letter %s: %v", sc.Bytes(), err)
				}
				got = append(got, d)
			}
			f.Close()
		}
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d dead letters within %v, want %d", len(got), wait, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRefusedAlertIsDeadLettered: a receiver that refuses an alert with a
// 4xx refuses it for good: it goes to the dead letters with the receiver's
// answer as the reason, and the next alert is delivered.
func TestRefusedAlertIsDeadLettered(t *testing.T) {
	var r *receiver
	r = newReceiver(t, func(n int) (int, http.Header, string) {
		if strings.Contains(string(r.body(n)), `"status":"firing"`) {
			return http.StatusUnprocessableEntity, nil, `{"error": "unknown channel \"#plant\""}`
		}
		return http.StatusNoContent, nil, ""
	})
	_, dev, dead := sluiceWith(t, boilerRules, "url: "+r.URL)
	publish(t, dev, "boiler-7", 95.5)
	publish(t, dev, "boiler-7", 60)

	d := deadLetters(t, dead, 1)[0]
	reason, _ := d["reason"].(string)
	if d["stage"] != "sink" || d["sink"] != "hook" || !strings.Contains(reason, "422") || !strings.Contains(reason, `unknown channel \"#plant\"`) {
		t.Errorf("dead letter %v: want stage sink, sink hook, and the 422 with its body in the reason", d)
	}
	// The resolved alert is delivered all the same.
	deadline := time.Now().Add(wait)
	for n := 1; ; n++ {
		if strings.Contains(string(r.wait(t, n)[n-1].body), `"status":"resolved"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the resolved alert did not arrive")
		}
	}
}

// TestRetriedUntilTaken: a receiver that answers 503, then 500, then takes
// it: the alert waits in the journal and arrives.
func TestRetriedUntilTaken(t *testing.T) {
	r := newReceiver(t, func(n int) (int, http.Header, string) {
		switch n {
		case 0:
			return http.StatusServiceUnavailable, http.Header{"Retry-After": {"1"}}, "down for maintenance"
		case 1:
			return http.StatusInternalServerError, nil, "oops"
		}
		return http.StatusOK, nil, ""
	})
	_, dev, _ := sluiceWith(t, boilerRules, "url: "+r.URL)
	publish(t, dev, "boiler-7", 95.5)
	got := r.wait(t, 3)
	for i, req := range got {
		if !strings.Contains(string(req.body), `"status":"firing"`) {
			t.Errorf("request %d: %s; want the firing alert again", i, req.body)
		}
	}
}

// TestClassify: how the sink reports each answer to the pipeline, which
// retries, or sends to the dead letters.
func TestClassify(t *testing.T) {
	cases := []struct {
		code      int
		header    http.Header
		permanent bool
		after     time.Duration
	}{
		{http.StatusOK, nil, false, 0},
		{http.StatusBadRequest, nil, true, 0},
		{http.StatusUnauthorized, nil, true, 0},
		{http.StatusNotFound, nil, true, 0},
		{http.StatusRequestTimeout, nil, false, 0},
		{http.StatusTooManyRequests, http.Header{"Retry-After": {"7"}}, false, 7 * time.Second},
		{http.StatusServiceUnavailable, http.Header{"Retry-After": {time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)}}, false, 89 * time.Second},
		{http.StatusBadGateway, nil, false, 0},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.code), func(t *testing.T) {
			r := newReceiver(t, func(int) (int, http.Header, string) { return c.code, c.header, "no" })
			s := webhook.New(webhook.Config{URL: secretURL(r.URL)})
			defer s.Close(context.Background())
			err := s.Write(context.Background(), []sluice.Event{alertEvent()})
			if c.code == http.StatusOK {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var be *sluice.BatchError
			if !errors.As(err, &be) || be.Errs[0] == nil {
				t.Fatalf("got %v, want a BatchError for item 0", err)
			}
			ierr := be.Errs[0]
			if sluice.IsPermanent(ierr) != c.permanent {
				t.Errorf("%v: permanent %v, want %v", ierr, sluice.IsPermanent(ierr), c.permanent)
			}
			if a := sluice.RetryAfter(ierr); a < c.after || a > c.after+2*time.Second {
				t.Errorf("%v: retry after %v, want %v", ierr, a, c.after)
			}
			if !strings.Contains(ierr.Error(), fmt.Sprint(c.code)) || !strings.Contains(ierr.Error(), ": no") {
				t.Errorf("error %q does not give the status and the answer", ierr)
			}
		})
	}
}

// TestURLNotInErrors: a webhook url carries its credential in the path
// (Slack's do); a failure names the host only.
func TestURLNotInErrors(t *testing.T) {
	r := newReceiver(t, nil)
	r.Close()
	s := webhook.New(webhook.Config{URL: secretURL(r.URL + "/services/T000/B000/XXXXSECRET")})
	defer s.Close(context.Background())
	err := s.Write(context.Background(), []sluice.Event{alertEvent()})
	if err == nil || strings.Contains(err.Error(), "XXXXSECRET") || !strings.Contains(err.Error(), strings.TrimPrefix(r.URL, "http://")) {
		t.Fatalf("got %v; want a connection error naming the host, not the path", err)
	}
	if sluice.IsPermanent(err) {
		t.Fatalf("a receiver that is down is retried: %v", err)
	}
}

func alertEvent() sluice.Event {
	at := time.Date(2026, 11, 25, 12, 0, 1, 0, time.UTC)
	msg := &sluice.Message{Topic: "plant/north/line1/boiler-7/telemetry", Received: at}
	return sluice.Event{Stream: sluice.StreamAlerts, Message: msg, Alert: &sluice.Alert{
		Rule: "boiler", Severity: "critical", Status: sluice.AlertFiring, Series: "boiler-7", Device: "boiler-7",
		Value: 95.5, Message: "hot", Time: at, Since: at, Topic: msg.Topic, Notification: 1}}
}

// TestConfigErrors: mistakes in a webhook sink's config are reported at
// their file, line and key.
func TestConfigErrors(t *testing.T) {
	cases := []struct{ name, sink, want string }{
		{"typo", "webhook: {url: http://x, hedaers: {a: b}}", `sluice.yaml:11:30: sinks[0].webhook.hedaers: unknown key (did you mean "headers"?)`},
		{"no url", "webhook: {array: true}", "sluice.yaml:11:5: sinks[0].webhook: missing required key \"url\""},
		{"not http", "webhook: {url: ftp://x}", "sluice.yaml:11:15: sinks[0].webhook.url: not an http(s) URL (from config)"},
		{"credentials", "webhook: {url: \"https://u:p@x\"}", "sinks[0].webhook.url: no credentials in the url"},
		{"raw", "stream: raw\n    webhook: {url: http://x}", "sinks[0].stream: the webhook sink posts JSON: records, alerts or dead_letters, not raw"},
		{"template", "webhook:\n      url: http://x\n      body:\n        text: \"{rule\"", `sluice.yaml:14:9: sinks[0].webhook.body.text: template "{rule": unclosed {`},
		{"header", "webhook: {url: http://x, headers: {\"a b\": c}}", `sinks[0].webhook.headers: "a b" is not a valid header name`},
		{"no secret", "webhook: {url: http://x, signature: {header: X-Sig}}", `sinks[0].webhook.signature: missing required key "secret"`},
		{"token and basic", "webhook: {url: http://x, token: t, username: u}", "sinks[0].webhook.token: set token or username and password, not both"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := pipelines.Parse("sluice.yaml", []byte(`
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0"}]
pipelines:
  - name: p
    topics: ["#"]
    sinks: [hook]
sinks:
  - name: hook
    batch: {size: 1}
    `+c.sink+"\n"), t.TempDir())
			var list conf.ErrorList
			if !errors.As(err, &list) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v\nwant %s", err, c.want)
			}
		})
	}
}

func secretURL(u string) secret.String { return secret.New(u) }
