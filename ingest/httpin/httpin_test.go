package httpin_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/ingest/httpin"
)

// TestPublishReachesTheSink publishes single messages over HTTP and reads
// them back from the sink, with who sent them and how.
func TestPublishReachesTheSink(t *testing.T) {
	e := startEnv(t, envOptions{acl: aclYAML})

	cases := []struct {
		name    string
		path    string
		body    string
		headers []string
		topic   string
		want    map[string]any
	}{
		{
			name: "json with properties", path: "/v1/publish/devices/alice/boiler-1/telemetry", body: `{"t": 21.5}`,
			headers: []string{"Content-Type", "application/json", "X-Mqtt-Prop-Unit", "degC", "X-MQTT-PROP-SITE", "north"},
			topic:   "devices/alice/boiler-1/telemetry",
			want:    map[string]any{"t": 21.5, "user": "alice", "client": "http:alice", "ct": "application/json", "q": 1.0, "unit": "degC", "site": "north"},
		},
		{
			name: "qos 0 and a client id", path: "/v1/publish/clients/gw-7/line-2?qos=0", body: "t=3",
			headers: []string{"Content-Type", "text/plain", "X-Client-Id", "gw-7"},
			topic:   "clients/gw-7/line-2",
			want:    map[string]any{"t": 3.0, "user": "alice", "client": "gw-7", "ct": "text/plain", "q": 0.0},
		},
		{
			// curl -d sends this type: it says nothing about the payload.
			name: "form type dropped", path: "/v1/publish/devices/alice/form", body: `{"t": 1}`,
			headers: []string{"Content-Type", "application/x-www-form-urlencoded"},
			topic:   "devices/alice/form",
			want:    map[string]any{"t": 1.0, "ct": ""},
		},
		{
			name: "empty levels kept", path: "/v1/publish/devices/alice//x/", body: `{"t": 2}`,
			topic: "devices/alice//x/",
			want:  map[string]any{"t": 2.0},
		},
		{
			name: "percent-decoded", path: "/v1/publish/devices/alice/a%20b%2Fc", body: `{"t": 4}`,
			topic: "devices/alice/a b/c",
			want:  map[string]any{"t": 4.0},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(t, "POST", c.path, aliceToken, []byte(c.body), c.headers...)
			if r.status != 202 || r.body["accepted"] != 1.0 {
				t.Fatalf("got %d %s, want 202 {\"accepted\":1}", r.status, r.raw)
			}
			rec := e.waitRecord(t, c.topic)
			for k, v := range c.want {
				if rec.Fields[k] != v {
					t.Errorf("field %s = %#v, want %#v (record %+v)", k, rec.Fields[k], v, rec)
				}
			}
		})
	}
	if got := e.metric("sluice_messages_received_total", "listener", "http"); got != float64(len(cases)) {
		t.Errorf("sluice_messages_received_total{listener=http} = %v, want %d", got, len(cases))
	}
	if got := e.metric("sluice_messages_received_total", "listener", "http", "qos", "0"); got != 1 {
		t.Errorf("sluice_messages_received_total{qos=0} = %v, want 1", got)
	}
	if got := e.metric("sluice_received_bytes_total", "listener", "http"); got == 0 {
		t.Error("sluice_received_bytes_total{listener=http} is 0")
	}
}

// TestRefusals sends what must be refused, and checks the status, the
// reason given, and that nothing reached a journal.
func TestRefusals(t *testing.T) {
	e := startEnv(t, envOptions{acl: aclYAML, cfg: httpin.Config{MaxBodyBytes: 1024, MaxBatchLines: 3}})
	ok := "/v1/publish/devices/alice/t"
	cases := []struct {
		name    string
		method  string
		path    string
		token   string
		body    string
		headers []string
		status  int
		reason  string // in the error text
		header  [2]string
	}{
		{name: "no token", path: ok, status: 401, reason: "bearer token is required", header: [2]string{"WWW-Authenticate", `Bearer realm="sluice"`}},
		{name: "unknown token", path: ok, token: wrongToken, status: 401, reason: "not valid", header: [2]string{"WWW-Authenticate", `Bearer realm="sluice", error="invalid_token"`}},
		{name: "basic auth", path: ok, headers: []string{"Authorization", "Basic YWxpY2U6eA=="}, status: 401, reason: "not valid"},
		{name: "acl: another user's subtree", path: "/v1/publish/devices/bob/t", token: aliceToken, status: 403, reason: `user "alice", client id "http:alice"`},
		{name: "acl: another client id", path: "/v1/publish/clients/gw-1/t", token: aliceToken, headers: []string{"X-Client-Id", "gw-2"}, status: 403, reason: "does not let"},
		{name: "topic with +", path: "/v1/publish/devices/alice/%2B", token: aliceToken, status: 400, reason: "wildcard"},
		{name: "topic with #", path: "/v1/publish/devices/alice/%23", token: aliceToken, status: 400, reason: "wildcard"},
		{name: "topic with NUL", path: "/v1/publish/devices/alice/a%00b", token: aliceToken, status: 400, reason: "NUL"},
		{name: "topic not UTF-8", path: "/v1/publish/devices/alice/%FF", token: aliceToken, status: 400, reason: "UTF-8"},
		{name: "$ topic", path: "/v1/publish/$SYS/x", token: aliceToken, status: 400, reason: "starts with $"},
		{name: "empty topic", path: "/v1/publish/", token: aliceToken, status: 400, reason: "is empty"},
		{name: "qos 2", path: ok + "?qos=2", token: aliceToken, status: 400, reason: "exactly-once"},
		{name: "qos not a number", path: ok + "?qos=one", token: aliceToken, status: 400, reason: "want 0 or 1"},
		{name: "retain", path: ok + "?retain=true", token: aliceToken, status: 400, reason: "retain is not supported"},
		{name: "unknown parameter", path: ok + "?qso=1", token: aliceToken, status: 400, reason: `unknown query parameter "qso"`},
		{name: "body too large", path: ok, token: aliceToken, body: strings.Repeat("x", 1025), status: 413, reason: "max_body_bytes"},
		{name: "content encoding", path: ok, token: aliceToken, body: "x", headers: []string{"Content-Encoding", "gzip"}, status: 415, reason: "application/gzip"},
		{name: "multipart", path: ok, token: aliceToken, body: "x", headers: []string{"Content-Type", "multipart/form-data; boundary=x"}, status: 415, reason: "multipart"},
		{name: "batch not JSON lines", path: "/v1/publish", token: aliceToken, body: `{"topic":"a"}`, headers: []string{"Content-Type", "application/json"}, status: 415, reason: "application/x-ndjson"},
		{name: "batch too many lines", path: "/v1/publish", token: aliceToken, body: strings.Repeat(`{"topic":"devices/alice/t","payload":1}`+"\n", 4),
			headers: []string{"Content-Type", "application/x-ndjson"}, status: 413, reason: "max_batch_lines"},
		{name: "unknown path", path: "/v2/publish/a", token: aliceToken, status: 404, reason: "no such endpoint"},
		{name: "root", path: "/", status: 404, reason: "no such endpoint"},
		{name: "GET", method: "GET", path: ok, token: aliceToken, status: 405, reason: "use POST", header: [2]string{"Allow", "POST"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			method := c.method
			if method == "" {
				method = "POST"
			}
			r := e.do(t, method, c.path, c.token, []byte(c.body), c.headers...)
			if r.status != c.status || !strings.Contains(r.errorText(), c.reason) {
				t.Fatalf("got %d %s, want %d with %q", r.status, r.raw, c.status, c.reason)
			}
			if c.header[0] != "" && r.header.Get(c.header[0]) != c.header[1] {
				t.Errorf("%s: %q, want %q", c.header[0], r.header.Get(c.header[0]), c.header[1])
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
		})
	}
	if n := e.messages(t); n != 0 {
		t.Errorf("the pipeline took %d messages after only refusals", n)
	}
	if got := e.metric("sluice_broker_connections_refused_total", "listener", "http", "reason", "auth"); got != 3 {
		t.Errorf("refused{reason=auth} = %v, want 3", got)
	}
	if got := e.metric("sluice_broker_denied_total", "action", "publish", "reason", "acl"); got != 2 {
		t.Errorf("denied{reason=acl} = %v, want 2", got)
	}
}

// TestACLConfinesEachTokenToItsSubtree: one ACL rule, devices/%u/#, lets
// each token's user publish under its own name only.
func TestACLConfinesEachTokenToItsSubtree(t *testing.T) {
	e := startEnv(t, envOptions{acl: aclYAML})
	for _, c := range []struct {
		token, user string
	}{{aliceToken, "alice"}, {bobToken, "bob"}} {
		for _, owner := range []string{"alice", "bob"} {
			r := e.do(t, "POST", "/v1/publish/devices/"+owner+"/t", c.token, []byte(`{"t":1}`))
			want := 403
			if owner == c.user {
				want = 202
			}
			if r.status != want {
				t.Errorf("%s publishing to devices/%s: %d %s, want %d", c.user, owner, r.status, r.raw, want)
			}
		}
	}
	if got := e.waitRecord(t, "devices/bob/t").Fields["user"]; got != "bob" {
		t.Errorf("devices/bob/t came from user %v, want bob", got)
	}
}

// TestBatch publishes JSON lines: all accepted and in the sink, or, when a
// line is invalid or denied, none.
func TestBatch(t *testing.T) {
	e := startEnv(t, envOptions{acl: aclYAML})
	ndjson := []string{"Content-Type", "application/x-ndjson"}

	t.Run("all lines", func(t *testing.T) {
		body := `{"topic": "devices/alice/b1", "payload": {"t": 1}, "properties": {"unit": "degC"}}` + "\r\n" +
			"\n" +
			`{"topic": "devices/alice/b2", "payload_text": "t=2", "content_type": "text/plain", "qos": 0}` + "\n" +
			`{"topic": "devices/alice/b3", "payload_base64": "` + base64.StdEncoding.EncodeToString([]byte(`{"t": 3}`)) + `"}`
		r := e.do(t, "POST", "/v1/publish", aliceToken, []byte(body), append(ndjson, "X-Mqtt-Prop-Site", "north")...)
		if r.status != 202 || r.body["accepted"] != 3.0 {
			t.Fatalf("got %d %s, want 202 with 3 accepted", r.status, r.raw)
		}
		for i, want := range []map[string]any{
			{"t": 1.0, "unit": "degC", "site": "north", "ct": "application/json", "q": 1.0, "user": "alice"},
			{"t": 2.0, "site": "north", "ct": "text/plain", "q": 0.0},
			{"t": 3.0, "site": "north", "ct": "", "q": 1.0},
		} {
			rec := e.waitRecord(t, fmt.Sprintf("devices/alice/b%d", i+1))
			for k, v := range want {
				if rec.Fields[k] != v {
					t.Errorf("b%d: field %s = %#v, want %#v", i+1, k, rec.Fields[k], v)
				}
			}
		}
	})

	t.Run("a bad line: nothing accepted", func(t *testing.T) {
		before := e.messages(t)
		body := `{"topic": "devices/alice/ok", "payload": 1}` + "\n" +
			`{"topic": "devices/alice/+", "payload": 1}` + "\n" +
			`{"topic": "devices/alice/ok", "payload": 1, "retain": true}` + "\n"
		r := e.do(t, "POST", "/v1/publish", aliceToken, []byte(body), ndjson...)
		if r.status != 400 || !strings.HasPrefix(r.errorText(), "line 2: topic") || !strings.Contains(r.errorText(), "nothing was accepted") {
			t.Fatalf("got %d %s, want 400 naming line 2", r.status, r.raw)
		}
		lines, _ := r.body["lines"].([]any)
		if len(lines) != 2 || r.body["invalid_lines"] != 2.0 {
			t.Fatalf("lines %v, want lines 2 and 3", r.body["lines"])
		}
		if l3 := lines[1].(map[string]any); l3["line"] != 3.0 || !strings.Contains(l3["error"].(string), `unknown key "retain"`) {
			t.Errorf("line 3: %v", l3)
		}
		if after := e.messages(t); after != before {
			t.Errorf("the pipeline went from %d to %d messages", before, after)
		}
	})

	t.Run("a denied line: nothing accepted", func(t *testing.T) {
		before := e.messages(t)
		body := `{"topic": "devices/alice/ok", "payload": 1}` + "\n" + `{"topic": "devices/bob/t", "payload": 1}` + "\n"
		r := e.do(t, "POST", "/v1/publish", aliceToken, []byte(body), ndjson...)
		if r.status != 403 || !strings.HasPrefix(r.errorText(), "line 2:") || r.body["denied_lines"] != 1.0 {
			t.Fatalf("got %d %s, want 403 naming line 2", r.status, r.raw)
		}
		if after := e.messages(t); after != before {
			t.Errorf("the pipeline went from %d to %d messages", before, after)
		}
	})

	t.Run("empty", func(t *testing.T) {
		r := e.do(t, "POST", "/v1/publish", aliceToken, []byte("\n\n"), ndjson...)
		if r.status != 400 || !strings.Contains(r.errorText(), "no message") {
			t.Fatalf("got %d %s, want 400", r.status, r.raw)
		}
	})
}

// TestBackpressure fills a small journal whose sink cannot write: requests
// are answered 429 with Retry-After at once, and a batch cut short says
// which lines were accepted (exactly those the journal holds).
func TestBackpressure(t *testing.T) {
	dir := t.TempDir()
	// A file where the sink wants a folder: every write fails (retryable).
	blocker := writeFile(t, dir, "blocker", "")
	e := startEnv(t, envOptions{
		journal:  "{max_bytes: 128KiB, segment_bytes: 64KiB, overflow: block}",
		sinkPath: blocker + "/out.jsonl",
		cfg:      httpin.Config{AllowAnonymous: true, Tokens: []httpin.Token{}},
	})
	ndjson := []string{"Content-Type", "application/x-ndjson"}
	// Each message gives a record for the sink (one that gives none would
	// be done with at once, and free its room).
	payload := `{"t": 1, "pad": "` + strings.Repeat("x", 2000) + `"}`
	line := `{"topic": "sensors/d1", "payload": ` + payload + `}` + "\n"
	batch := []byte(strings.Repeat(line, 10))

	accepted := 0
	var busy response
	for i := 0; ; i++ {
		if i == 200 {
			st, _ := e.svc.JournalStats("p")
			t.Fatalf("no 429 after 200 batches of 20KB into a 128KiB journal: %+v\n%s", st, e.logs.String())
		}
		r := e.do(t, "POST", "/v1/publish", "", batch, ndjson...)
		if r.status == 202 {
			accepted += 10
			continue
		}
		busy = r
		break
	}
	if busy.status != 429 || busy.header.Get("Retry-After") != "1" || !strings.Contains(busy.errorText(), "journal is full") {
		t.Fatalf("got %d (Retry-After %q) %s, want 429 with Retry-After: 1", busy.status, busy.header.Get("Retry-After"), busy.raw)
	}
	n, _ := busy.body["accepted"].(float64)
	if busy.body["failed_line"] != n+1 {
		t.Errorf("accepted %v but failed_line %v: want the line after the accepted ones", n, busy.body["failed_line"])
	}
	accepted += int(n)
	if n := e.messages(t); n != accepted {
		t.Errorf("the answers say %d messages were accepted; the pipeline took %d", accepted, n)
	}

	// No larger than the line refused above, so it cannot fit either.
	r := e.do(t, "POST", "/v1/publish/sensors/d1", "", []byte(payload), "Content-Type", "application/json")
	if r.status != 429 || r.header.Get("Retry-After") != "1" {
		t.Fatalf("single publish into a full journal: %d %s, want 429", r.status, r.raw)
	}
	if got := e.metric("sluice_messages_rejected_total", "reason", "journal_full"); got != 2 {
		t.Errorf("rejected{reason=journal_full} = %v, want 2", got)
	}
}

// TestTokenNeverLogged sends good and bad tokens with debug logging on;
// the refusals are logged, the tokens are not. (Every test's env checks
// the log for the tokens too.)
func TestTokenNeverLogged(t *testing.T) {
	e := startEnv(t, envOptions{acl: aclYAML})
	e.do(t, "POST", "/v1/publish/devices/alice/t", aliceToken, []byte("t=1"))
	e.do(t, "POST", "/v1/publish/devices/bob/t", aliceToken, []byte("t=1"))
	e.do(t, "POST", "/v1/publish/devices/alice/t", wrongToken, []byte("t=1"))
	e.do(t, "POST", "/v1/publish/devices/alice/t", "", []byte("t=1"), "Authorization", "Basic "+wrongToken)
	e.waitRecord(t, "devices/alice/t")
	logs := e.logs.String()
	for _, want := range []string{"HTTP publish refused", "status=401", "status=403"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log has no %q:\n%s", want, logs)
		}
	}
	for _, tok := range []string{aliceToken, wrongToken} {
		if strings.Contains(logs, tok) {
			t.Fatalf("the token %q is in the log", tok)
		}
	}
}

// TestSlowBodyFreesItsPlace: an authenticated upload whose body stalls is
// answered 408 once it falls behind min_body_rate (after body_grace), not
// after read_timeout (an hour here), and its max_inflight place (the only
// one) is free again; an upload slower than a burst but above the rate is
// taken.
func TestSlowBodyFreesItsPlace(t *testing.T) {
	e := startEnv(t, envOptions{cfg: httpin.Config{MaxInflight: 1, ReadTimeout: time.Hour,
		MinBodyRate: 1 << 10, BodyGrace: 200 * time.Millisecond}})
	addr := strings.TrimPrefix(e.base, "http://")
	request := func(topic string, length int) net.Conn {
		conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		fmt.Fprintf(conn, "POST /v1/publish/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n", topic, aliceToken, length)
		return conn
	}
	status := func(conn net.Conn) int {
		t.Helper()
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	stalled := request("devices/alice/stalled", 100_000)
	io.WriteString(stalled, `{"t": 1, "pad": "`) // and then nothing
	if got := status(stalled); got != http.StatusRequestTimeout {
		t.Fatalf("a stalled body: %d, want 408", got)
	}
	if got := e.metric("sluice_broker_connections_refused_total", "listener", "http", "reason", "slow"); got != 1 {
		t.Errorf("refused{reason=slow} = %v, want 1", got)
	}

	// 3,000 bytes in 500-byte parts every 100 ms: about 5 KiB/s.
	body := `{"t": 2, "pad": "` + strings.Repeat("x", 2981) + `"}`
	steady := request("devices/alice/steady", len(body))
	for i := 0; i < len(body); i += 500 {
		io.WriteString(steady, body[i:min(i+500, len(body))])
		time.Sleep(100 * time.Millisecond)
	}
	if got := status(steady); got != http.StatusAccepted {
		t.Fatalf("a steady body: %d, want 202", got)
	}
	e.waitRecord(t, "devices/alice/steady")
}

// failingJournal stands for pipelines whose journal cannot write (a full
// disk): every message is refused with sluice.ErrStorage.
type failingJournal struct{}

func (failingJournal) Handle(context.Context, *sluice.Message, bool) error {
	return fmt.Errorf("pipeline %q: %w", "p", sluice.ErrStorage)
}

// TestJournalWriteErrorIs503: a message a journal cannot write is answered
// 503 with Retry-After (send again later), counted as journal_write_error.
func TestJournalWriteErrorIs503(t *testing.T) {
	e := startEnv(t, envOptions{wrap: func(ingest.Handler) ingest.Handler { return failingJournal{} }})
	r := e.do(t, "POST", "/v1/publish/devices/alice/x", aliceToken, []byte(`{"t": 1}`), "Content-Type", "application/json")
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "1" || !strings.Contains(r.errorText(), "cannot write") {
		t.Fatalf("%d (Retry-After %q) %s, want 503 with Retry-After: 1", r.status, r.header.Get("Retry-After"), r.raw)
	}
	if got := e.metric("sluice_messages_rejected_total", "reason", "journal_write_error"); got != 1 {
		t.Errorf("rejected{reason=journal_write_error} = %v, want 1", got)
	}
}
