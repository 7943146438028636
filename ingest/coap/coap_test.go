package coap_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/ingest/coap"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/secret"
	"github.com/sluicehq/sluice/pipelines"
)

const rulesYAML = `rules:
  - name: coap
    match: plant/+site/+line/+device/telemetry
`

// env is a real sluice (pipelines.Service) whose one pipeline takes
// plant/# to a file sink writing records as JSON lines.
type env struct {
	dir     string
	out     string // the file sink's path
	svc     *pipelines.Service
	metrics *metrics.Metrics
}

type setup struct {
	out     string // file sink path; default <dir>/out/records.jsonl
	journal string // the pipeline's journal section, YAML flow map
	acl     string // ACL file contents
}

func startService(t *testing.T, dir string, s setup) *env {
	t.Helper()
	if s.out == "" {
		s.out = filepath.Join(dir, "out", "records.jsonl")
	}
	writeFile(t, filepath.Join(dir, "rules.yaml"), rulesYAML)
	auth := ""
	if s.acl != "" {
		writeFile(t, filepath.Join(dir, "acl.yaml"), s.acl)
		auth = "\n  auth: {acl_file: acl.yaml}"
	}
	journal := ""
	if s.journal != "" {
		journal = "\n    journal: " + s.journal
	}
	cfgPath := filepath.Join(dir, "sluice.yaml")
	writeFile(t, cfgPath, fmt.Sprintf(`data_dir: %s
shutdown_timeout: 1s
watch_rules: false
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]%s
pipelines:
  - name: p
    topics: ["plant/#"]
    rules: [rules.yaml]
    sinks: [out]%s
sinks:
  - name: out
    stream: records
    batch: {size: 1, interval: 10ms}
    retry: {initial: 20ms, max: 100ms}
    file: {path: %q}
`, filepath.Join(dir, "data"), auth, journal, s.out))
	cfg, err := pipelines.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	svc, err := pipelines.New(cfg, pipelines.Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close(context.Background()) })
	return &env{dir: dir, out: s.out, svc: svc, metrics: m}
}

// startCoAP starts a CoAP source on 127.0.0.1:0 feeding e's pipelines,
// with the broker's ACL.
func (e *env) startCoAP(t *testing.T, cfg coap.Config) *coap.Source {
	t.Helper()
	return e.startCoAPWith(t, cfg, e.svc)
}

// startCoAPWith is startCoAP with h in place of the pipelines.
func (e *env) startCoAPWith(t *testing.T, cfg coap.Config, h ingest.Handler) *coap.Source {
	t.Helper()
	cfg.Address = "127.0.0.1:0"
	src, err := coap.New(cfg, coap.Options{Name: "coap", Handler: h, ACL: e.svc.Broker(), Metrics: e.metrics,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Ingest stops before the pipelines (cleanups run last first).
	t.Cleanup(func() {
		if err := src.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return src
}

type record struct {
	Rule   string            `json:"rule"`
	Topic  string            `json:"topic"`
	Tags   map[string]string `json:"tags"`
	Fields map[string]any    `json:"fields"`
}

// waitRecords waits until the sink's file holds n records and returns them.
func waitRecords(t *testing.T, path string, n int) []record {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		recs := readRecords(t, path)
		if len(recs) >= n {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d records, want %d", path, len(recs), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readRecords(t *testing.T, path string) []record {
	t.Helper()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var recs []record
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue // a line being written
		}
		recs = append(recs, r)
	}
	return recs
}

func dial(t *testing.T, addr string, opts ...udp.Option) *udpclient.Conn {
	t.Helper()
	cc, err := udp.Dial(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

type response struct {
	code   codes.Code
	body   string
	maxAge uint32
	size1  uint32
}

func post(t *testing.T, cc *udpclient.Conn, path string, cf message.MediaType, body []byte) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := cc.Post(ctx, path, cf, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return read(t, resp)
}

func read(t *testing.T, resp *pool.Message) response {
	t.Helper()
	r := response{code: resp.Code()}
	if b := resp.Body(); b != nil {
		data, err := io.ReadAll(b)
		if err != nil {
			t.Fatal(err)
		}
		r.body = string(data)
	}
	r.maxAge, _ = resp.GetOptionUint32(message.MaxAge)
	r.size1, _ = resp.GetOptionUint32(message.Size1)
	return r
}

func anonymous() coap.Config { return coap.Config{AllowAnonymous: true} }

// TestConfirmableAckedOnceDurable posts confirmable readings while the sink
// cannot write. Each is answered 2.04 only once the journal holds it on
// disk; sluice is then stopped and started again with a sink that works,
// and every acknowledged reading arrives.
func TestConfirmableAckedOnceDurable(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "blocker")
	writeFile(t, blocker, "a file where the sink wants a folder")
	e := startService(t, dir, setup{out: filepath.Join(blocker, "records.jsonl")})
	src := e.startCoAP(t, anonymous())
	cc := dial(t, src.Addr())

	const n = 5
	for i := range n {
		r := post(t, cc, fmt.Sprintf("/ps/plant/north/l1/d%d/telemetry", i), message.AppJSON, fmt.Appendf(nil, `{"seq": %d}`, i))
		if r.code != codes.Changed {
			t.Fatalf("POST %d: %v %q, want 2.04 Changed", i, r.code, r.body)
		}
		// Acknowledged: the journal has it on disk.
		st, _ := e.svc.JournalStats("p")
		if st.Durable < uint64(i+1) {
			t.Fatalf("POST %d acknowledged while the journal had %d records durable", i, st.Durable)
		}
	}
	if err := src.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.svc.Close(context.Background())

	// The same data folder, a sink that can write.
	e2 := startService(t, dir, setup{})
	recs := waitRecords(t, e2.out, n)
	seen := map[string]bool{}
	for _, r := range recs {
		seen[fmt.Sprintf("%s %v", r.Topic, r.Fields["seq"])] = true
	}
	for i := range n {
		if want := fmt.Sprintf("plant/north/l1/d%d/telemetry %d", i, i); !seen[want] {
			t.Errorf("no record %q after the restart; got %+v", want, recs)
		}
	}
}

// TestNonConfirmable sends a reading as a NON message: it is handled (QoS 0)
// and arrives.
func TestNonConfirmable(t *testing.T) {
	e := startService(t, t.TempDir(), setup{})
	src := e.startCoAP(t, anonymous())
	cc := dial(t, src.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := cc.NewPostRequest(ctx, "/ps/plant/south/l2/d9/telemetry", message.AppJSON, bytes.NewReader([]byte(`{"seq": 42}`)))
	if err != nil {
		t.Fatal(err)
	}
	req.SetType(message.NonConfirmable)
	resp, err := cc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if r := read(t, resp); r.code != codes.Changed {
		t.Fatalf("NON POST: %v %q", r.code, r.body)
	}
	recs := waitRecords(t, e.out, 1)
	if recs[0].Topic != "plant/south/l2/d9/telemetry" || recs[0].Fields["seq"] != 42.0 {
		t.Fatalf("record %+v", recs[0])
	}
}

// TestJournalFullAnswers503 fills a small journal whose sink cannot write
// (overflow block): the reading that does not fit is answered 5.03 with
// Max-Age, and is not in the journal.
func TestJournalFullAnswers503(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "blocker")
	writeFile(t, blocker, "a file where the sink wants a folder")
	e := startService(t, dir, setup{
		out:     filepath.Join(blocker, "records.jsonl"),
		journal: "{max_bytes: 128KiB, segment_bytes: 64KiB, overflow: block}",
	})
	src := e.startCoAP(t, coap.Config{AllowAnonymous: true, RetryAfter: 7 * time.Second})
	cc := dial(t, src.Addr())

	body := fmt.Appendf(nil, `{"pad": %q}`, strings.Repeat("x", 900))
	acked := 0
	var busy response
	for range 1000 {
		r := post(t, cc, "/ps/plant/north/l1/d1/telemetry", message.AppJSON, body)
		if r.code != codes.Changed {
			busy = r
			break
		}
		acked++
	}
	if busy.code != codes.ServiceUnavailable {
		t.Fatalf("after %d acknowledged readings: %v %q, want 5.03", acked, busy.code, busy.body)
	}
	if busy.maxAge != 7 || !strings.Contains(busy.body, "journal full") {
		t.Errorf("5.03 with Max-Age %d and %q, want Max-Age 7 and a reason", busy.maxAge, busy.body)
	}
	if got := counter(t, e.metrics, "sluice_messages_rejected_total", "journal_full"); got < 1 {
		t.Errorf("sluice_messages_rejected_total{reason=journal_full} = %v", got)
	}
}

// failingJournal stands for pipelines whose journal cannot write (a full
// disk): every message is refused with sluice.ErrStorage.
type failingJournal struct{}

func (failingJournal) Handle(context.Context, *sluice.Message, bool) error {
	return fmt.Errorf("pipeline %q: %w", "p", sluice.ErrStorage)
}

// TestJournalWriteErrorAnswers503: a reading a journal cannot write is
// answered 5.03 (try again later), counted as journal_write_error.
func TestJournalWriteErrorAnswers503(t *testing.T) {
	e := startService(t, t.TempDir(), setup{})
	src := e.startCoAPWith(t, coap.Config{AllowAnonymous: true}, failingJournal{})
	cc := dial(t, src.Addr())
	r := post(t, cc, "/ps/plant/north/l1/d1/telemetry", message.AppJSON, []byte(`{"t": 1}`))
	if r.code != codes.ServiceUnavailable || !strings.Contains(r.body, "cannot write") {
		t.Fatalf("%v %q, want 5.03 saying the journal cannot write", r.code, r.body)
	}
	if got := counter(t, e.metrics, "sluice_messages_rejected_total", "journal_write_error"); got != 1 {
		t.Errorf("sluice_messages_rejected_total{reason=journal_write_error} = %v, want 1", got)
	}
}

// TestACL checks publishes against the broker's ACL: anonymous clients may
// publish under plant/north only.
func TestACL(t *testing.T) {
	e := startService(t, t.TempDir(), setup{acl: `rules:
  - anonymous: true
    allow: publish
    topics: ["plant/north/#"]
`})
	src := e.startCoAP(t, anonymous())
	cc := dial(t, src.Addr())
	if r := post(t, cc, "/ps/plant/south/l1/d1/telemetry", message.AppJSON, []byte(`{"seq": 1}`)); r.code != codes.Forbidden {
		t.Fatalf("POST outside the ACL: %v %q, want 4.03", r.code, r.body)
	}
	if r := post(t, cc, "/ps/plant/north/l1/d1/telemetry", message.AppJSON, []byte(`{"seq": 2}`)); r.code != codes.Changed {
		t.Fatalf("POST inside the ACL: %v %q, want 2.04", r.code, r.body)
	}
	recs := waitRecords(t, e.out, 1)
	if len(recs) != 1 || recs[0].Topic != "plant/north/l1/d1/telemetry" {
		t.Fatalf("records %+v, want only the allowed one", recs)
	}
	if got := counter(t, e.metrics, "sluice_broker_denied_total", "publish", "acl"); got != 1 {
		t.Errorf("denied publishes counted %v, want 1", got)
	}
}

// TestRequestsRefused covers the answers to requests that publish nothing.
func TestRequestsRefused(t *testing.T) {
	e := startService(t, t.TempDir(), setup{})
	src := e.startCoAP(t, coap.Config{AllowAnonymous: true, MaxPayload: 2048})
	cc := dial(t, src.Addr())
	noBlocks := dial(t, src.Addr(), options.WithBlockwise(false, blockwise.SZX1024, time.Second))
	for _, tc := range []struct {
		name   string
		cc     *udpclient.Conn
		path   string
		body   []byte
		code   codes.Code
		detail string
	}{
		{"wildcard", cc, "/ps/plant/+/l1/d1/telemetry", []byte("{}"), codes.BadRequest, "wildcard"},
		{"reserved", cc, "/ps/$SYS/x", []byte("{}"), codes.BadRequest, "reserved"},
		{"outside the prefix", cc, "/other/plant/a", []byte("{}"), codes.NotFound, "/ps/<topic>"},
		{"prefix only", cc, "/ps", []byte("{}"), codes.BadRequest, "no topic"},
		{"block-wise over max_payload", cc, "/ps/plant/a/b/c/telemetry", bytes.Repeat([]byte("x"), 3000), codes.RequestEntityTooLarge, ""},
		{"one datagram over max_payload", noBlocks, "/ps/plant/a/b/c/telemetry", bytes.Repeat([]byte("x"), 2500), codes.RequestEntityTooLarge, "max_payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := post(t, tc.cc, tc.path, message.AppJSON, tc.body)
			if r.code != tc.code || !strings.Contains(r.body, tc.detail) {
				t.Fatalf("%v %q, want %v with %q", r.code, r.body, tc.code, tc.detail)
			}
			if tc.code == codes.RequestEntityTooLarge && r.size1 != 2048 {
				t.Errorf("4.13 with Size1 %d, want 2048", r.size1)
			}
		})
	}
	t.Run("GET", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		resp, err := cc.Get(ctx, "/ps/plant/a/b/c/telemetry")
		if err != nil {
			t.Fatal(err)
		}
		if r := read(t, resp); r.code != codes.MethodNotAllowed {
			t.Fatalf("GET: %v %q, want 4.05", r.code, r.body)
		}
	})
	// A body under the limit but over one block arrives whole.
	big := fmt.Appendf(nil, `{"seq": 7, "pad": %q}`, strings.Repeat("y", 1800))
	if r := post(t, cc, "/ps/plant/a/b/c/telemetry", message.AppJSON, big); r.code != codes.Changed {
		t.Fatalf("block-wise POST under max_payload: %v %q", r.code, r.body)
	}
	recs := waitRecords(t, e.out, 1)
	if len(recs) != 1 || recs[0].Fields["seq"] != 7.0 || len(recs[0].Fields["pad"].(string)) != 1800 {
		t.Fatalf("records %+v, want the one block-wise reading", recs)
	}
}

// TestDTLSPSK serves coaps with pre-shared keys: the identity is the
// username the ACL sees, and a wrong key fails the handshake.
func TestDTLSPSK(t *testing.T) {
	e := startService(t, t.TempDir(), setup{acl: `rules:
  - users: "*"
    allow: publish
    topics: ["plant/+/+/%u/#"]
`})
	src := e.startCoAP(t, coap.Config{DTLS: &coap.DTLSConfig{PSK: []coap.PSKIdentity{
		{Identity: "dev-a", Key: secret.New("key-a")},
		{Identity: "dev-b", Key: secret.New("key-b")},
	}}})
	devA := dialPSK(t, src.Addr(), "dev-a", "key-a")
	if r := post(t, devA, "/ps/plant/north/l1/dev-a/telemetry", message.AppJSON, []byte(`{"seq": 1}`)); r.code != codes.Changed {
		t.Fatalf("dev-a to its own topic: %v %q", r.code, r.body)
	}
	if r := post(t, devA, "/ps/plant/north/l1/dev-b/telemetry", message.AppJSON, []byte(`{"seq": 2}`)); r.code != codes.Forbidden {
		t.Fatalf("dev-a to dev-b's topic: %v %q, want 4.03", r.code, r.body)
	}
	recs := waitRecords(t, e.out, 1)
	if len(recs) != 1 || recs[0].Topic != "plant/north/l1/dev-a/telemetry" {
		t.Fatalf("records %+v", recs)
	}

	// A wrong key or an unknown identity fails the handshake. (pion's own
	// client, with a deadline: go-coap's client shakes hands on its first
	// write, and can wait forever for a server that says nothing.)
	raddr, err := net.ResolveUDPAddr("udp", src.Addr())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{{"dev-a", "wrong"}, {"nobody", "key-a"}} {
		conn, err := piondtls.DialWithOptions("udp", raddr,
			piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(c[1]), nil }),
			piondtls.WithPSKIdentityHint([]byte(c[0])),
			piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = conn.HandshakeContext(ctx)
		cancel()
		conn.Close()
		if err == nil {
			t.Fatalf("identity %q with key %q completed the handshake", c[0], c[1])
		}
	}
	if recs := readRecords(t, e.out); len(recs) != 1 {
		t.Fatalf("records %+v, want the one from dev-a", recs)
	}
}

func pskClient(identity, key string) dtls.DTLSClientOptions {
	return dtls.NewDTLSClientOptions(
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(key), nil }),
		piondtls.WithPSKIdentityHint([]byte(identity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
	)
}

func dialPSK(t *testing.T, addr, identity, key string) *udpclient.Conn {
	t.Helper()
	cc, err := dtls.Dial(addr, pskClient(identity, key))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestCheckFiles(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "bad.pem"), "not a certificate")
	for _, tc := range []struct {
		name string
		dtls *coap.DTLSConfig
		err  string
	}{
		{"no dtls", nil, ""},
		{"psk only", &coap.DTLSConfig{PSK: []coap.PSKIdentity{{Identity: "a", Key: secret.New("k")}}}, ""},
		{"missing certificate", &coap.DTLSConfig{CertFile: filepath.Join(dir, "nope.pem"), KeyFile: filepath.Join(dir, "nope.key")}, "nope.pem"},
		{"bad client CA", &coap.DTLSConfig{PSK: []coap.PSKIdentity{{Identity: "a", Key: secret.New("k")}}, ClientCAFile: filepath.Join(dir, "bad.pem")}, "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := coap.Config{AllowAnonymous: true, DTLS: tc.dtls}
			err := cfg.CheckFiles()
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("CheckFiles: %v, want %q", err, tc.err)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  coap.Config
		err  string
	}{
		{"anonymous", coap.Config{AllowAnonymous: true}, ""},
		{"nobody", coap.Config{}, "allow_anonymous"},
		{"psk", coap.Config{DTLS: &coap.DTLSConfig{PSK: []coap.PSKIdentity{{Identity: "a", Key: secret.New("k")}}}}, ""},
		{"psk without key", coap.Config{DTLS: &coap.DTLSConfig{PSK: []coap.PSKIdentity{{Identity: "a"}}}}, `dtls.psk[0]: missing required key "key"`},
		{"psk twice", coap.Config{DTLS: &coap.DTLSConfig{PSK: []coap.PSKIdentity{{Identity: "a", Key: secret.New("k")}, {Identity: "a", Key: secret.New("k")}}}}, "listed twice"},
		{"empty dtls", coap.Config{DTLS: &coap.DTLSConfig{}}, "dtls: set psk"},
		{"cert without identities", coap.Config{DTLS: &coap.DTLSConfig{CertFile: "c", KeyFile: "k"}}, "no client has an identity"},
		{"cert, client CAs", coap.Config{DTLS: &coap.DTLSConfig{CertFile: "c", KeyFile: "k", ClientCAFile: "ca"}}, ""},
		{"cert without key", coap.Config{DTLS: &coap.DTLSConfig{CertFile: "c", ClientCAFile: "ca"}}, "dtls.key_file"},
		{"bad prefix", coap.Config{AllowAnonymous: true, Prefix: "a//b"}, "prefix"},
		{"retry_after", coap.Config{AllowAnonymous: true, RetryAfter: 1500 * time.Millisecond}, "retry_after"},
		{"max_payload", coap.Config{AllowAnonymous: true, MaxPayload: 1 << 30}, "max_payload"},
		{"address", coap.Config{AllowAnonymous: true, Address: "5683"}, "address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.SetDefaults()
			err := tc.cfg.Validate()
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("got %v, want an error with %q", err, tc.err)
			}
		})
	}
}

func counter(t *testing.T, m *metrics.Metrics, name string, labels ...string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metric:
		for _, mt := range f.GetMetric() {
			values := map[string]bool{}
			for _, l := range mt.GetLabel() {
				values[l.GetValue()] = true
			}
			for _, want := range labels {
				if !values[want] {
					continue metric
				}
			}
			sum += mt.GetCounter().GetValue()
		}
	}
	return sum
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCoapClient runs the README's examples with libcoap's coap-client
// (Debian's libcoap3-bin), over UDP and over DTLS with a pre-shared key.
func TestCoapClient(t *testing.T) {
	bin, err := exec.LookPath("coap-client-openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("coap-client-openssl is not installed: .ci/run installs libcoap3-bin")
		}
		t.Skip("coap-client-openssl is not installed (apt-get install libcoap3-bin)")
	}
	e := startService(t, t.TempDir(), setup{})
	plain := e.startCoAP(t, anonymous())
	psk := e.startCoAP(t, coap.Config{DTLS: &coap.DTLSConfig{PSK: []coap.PSKIdentity{{Identity: "boiler-7", Key: secret.New("s3cret-psk")}}}})
	for _, args := range [][]string{
		{"-m", "post", "-t", "json", "-e", `{"seq": 1}`, "coap://" + plain.Addr() + "/ps/plant/north/l1/boiler-7/telemetry"},
		{"-m", "put", "-t", "json", "-e", `{"seq": 2}`, "-u", "boiler-7", "-k", "s3cret-psk", "coaps://" + psk.Addr() + "/ps/plant/north/l1/boiler-7/telemetry"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("coap-client %v: %v\n%s", args, err, out)
		}
	}
	recs := waitRecords(t, e.out, 2)
	for i, r := range recs {
		if r.Topic != "plant/north/l1/boiler-7/telemetry" || r.Fields["seq"] != float64(i+1) {
			t.Errorf("record %d: %+v", i, r)
		}
	}
}
