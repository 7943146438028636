package httpin_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/ingest/httpin"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/secret"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

// Tokens the tests use; none may ever appear in a log.
const (
	aliceToken = "alice-token-5f1c0e9a7d3b42c8"
	bobToken   = "bob-token-0c8e2d74a1f94b36ee"
	wrongToken = "wrong-token-93d1b0c2a6e8f471"
)

// A rule that writes who sent each message and how, as fields of its
// record, so a test reads them back from the file sink.
const rulesYAML = `rules:
  - name: m
    fields:
      user: username
      client: client_id
      ct: content_type
      q: qos
      unit: props["unit"]
      site: props["site"]
`

// aclYAML confines each token's user to its own subtree (%u), and each
// client id to its own (%c).
const aclYAML = `rules:
  - users: "*"
    allow: publish
    topics: ["devices/%u/#", "clients/%c/#"]
`

// env is a real sluice service (journal, rules, a file sink) with an HTTP
// source in front of it, on 127.0.0.1:0.
type env struct {
	t       *testing.T
	svc     *pipelines.Service
	src     *httpin.Source
	base    string // http(s)://host:port
	out     string // the file sink's path
	logs    *testsvc.LogBuffer
	metrics *metrics.Metrics
	client  *http.Client
}

type envOptions struct {
	// cfg is the HTTP source's config; Address and Tokens default to
	// 127.0.0.1:0 and alice and bob.
	cfg httpin.Config
	// acl is the ACL file's content (none when empty).
	acl string
	// journal is the pipeline's journal section (YAML flow mapping).
	journal string
	// sinkPath overrides the file sink's path.
	sinkPath string
	// wrap wraps the service as the handler.
	wrap func(ingest.Handler) ingest.Handler
}

func startEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, out: filepath.Join(dir, "out.jsonl"), logs: &testsvc.LogBuffer{}, metrics: metrics.New()}
	if o.sinkPath != "" {
		e.out = o.sinkPath
	}
	writeFile(t, dir, "rules.yaml", rulesYAML)
	auth := ""
	if o.acl != "" {
		writeFile(t, dir, "acl.yaml", o.acl)
		auth = "\n  auth: {acl_file: acl.yaml}"
	}
	journal := ""
	if o.journal != "" {
		journal = "\n    journal: " + o.journal
	}
	cfgText := fmt.Sprintf(`data_dir: %s
shutdown_timeout: 1s
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]%s
pipelines:
  - name: p
    topics: ["#"]
    rules: [rules.yaml]
    sinks: [out]
    workers: 1%s
sinks:
  - name: out
    batch: {size: 1, interval: 5ms}
    retry: {initial: 20ms, max: 100ms}
    file: {path: %q}
`, filepath.Join(dir, "data"), auth, journal, e.out)
	cfg, err := pipelines.Parse("sluice.yaml", []byte(cfgText), dir)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.svc, err = pipelines.New(cfg, pipelines.Options{Logger: log, Metrics: e.metrics})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := e.svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.svc.Close(ctx) })

	hc := o.cfg
	if hc.Address == "" {
		hc.Address = "127.0.0.1:0"
	}
	if hc.Tokens == nil {
		hc.Tokens = []httpin.Token{{User: "alice", Token: secret.New(aliceToken)}, {User: "bob", Token: secret.New(bobToken)}}
	}
	var h ingest.Handler = e.svc
	if o.wrap != nil {
		h = o.wrap(e.svc)
	}
	e.src, err = httpin.New(hc, httpin.Options{Name: "http", Handler: h, ACL: e.svc.Broker(), Logger: log, Metrics: e.metrics})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.src.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Stop ingest before the service, as the service stops its broker's.
	t.Cleanup(func() { e.src.Close(ctx) })
	t.Cleanup(func() {
		for _, tok := range []string{aliceToken, bobToken, wrongToken} {
			if strings.Contains(e.logs.String(), tok) {
				t.Errorf("a token appears in the log:\n%s", e.logs.String())
			}
		}
	})
	scheme := "http"
	if hc.TLS != nil {
		scheme = "https"
	}
	e.base = scheme + "://" + e.src.Addr()
	e.client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{}}
	t.Cleanup(e.client.CloseIdleConnections)
	return e
}

// response is an answer as a client sees it.
type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// do sends a request; headers are name, value pairs.
func (e *env) do(t *testing.T, method, path, token string, body []byte, headers ...string) response {
	t.Helper()
	return doWith(t, e.client, method, e.base+path, token, body, headers...)
}

func doWith(t *testing.T, c *http.Client, method, url, token string, body []byte, headers ...string) response {
	t.Helper()
	r, err := send(c, method, url, token, body, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// send is doWith for goroutines other than the test's.
func send(c *http.Client, method, url, token string, body []byte, headers ...string) (response, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return response{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, raw: string(data)}
	if err := json.Unmarshal(data, &r.body); err != nil {
		return r, fmt.Errorf("%s %s: %d with a body that is not a JSON object: %q", method, url, resp.StatusCode, data)
	}
	return r, nil
}

func (r response) errorText() string {
	s, _ := r.body["error"].(string)
	return s
}

// record is a line the file sink wrote.
type record struct {
	Rule   string         `json:"rule"`
	Topic  string         `json:"topic"`
	Fields map[string]any `json:"fields"`
}

// records returns the records in the sink's file.
func (e *env) records(t *testing.T) []record {
	t.Helper()
	f, err := os.Open(e.out)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []record
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 8<<20)
	for sc.Scan() {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue // a line being written
		}
		out = append(out, r)
	}
	return out
}

// waitRecord waits until a record for topic is in the sink, and returns it.
func (e *env) waitRecord(t *testing.T, topic string) record {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		for _, r := range e.records(t) {
			if r.Topic == topic {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no record for topic %q reached the sink; it holds %+v", topic, e.records(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metric sums the samples of the named counter or gauge whose labels
// include the given name, value pairs.
func (e *env) metric(name string, labels ...string) float64 {
	e.t.Helper()
	families, err := e.metrics.Registry.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	total := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return total
}

// messages returns how many messages the pipeline took, once its rules
// have caught up with its journal. (The journal's own count holds the
// records rules derive, too.)
func (e *env) messages(t *testing.T) int {
	t.Helper()
	waitFor(t, "the rules to catch up with the journal", func() bool {
		st, _ := e.svc.JournalStats("p")
		for _, r := range st.Readers {
			if r.Name == "rules" {
				return r.Lag == 0
			}
		}
		return false
	})
	return int(e.metric("sluice_pipeline_messages_total", "pipeline", "p"))
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
