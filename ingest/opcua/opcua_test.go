package opcua_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"

	"github.com/sluicehq/sluice/ingest/opcua"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/secret"
	"github.com/sluicehq/sluice/pipelines"
)

// plc is an OPC UA server (gopcua's server package) holding variables
// whose values the test sets; each change notifies the subscribers.
type plc struct {
	srv *server.Server
	ns  *server.NodeNameSpace

	mu     sync.Mutex
	values map[string]any

	stopOnce sync.Once
}

// stop stops the server. gopcua's server frees its port at once but then
// waits (up to 10s) for its channels to end: tests run in parallel so the
// waits overlap.
func (p *plc) stop() { p.stopOnce.Do(func() { p.srv.Close() }) }

// startPLC starts a server on 127.0.0.1:port serving the variables in
// namespace 1 ("plant"), string node ids.
func startPLC(t *testing.T, port int, values map[string]any, opts ...server.Option) *plc {
	t.Helper()
	p := &plc{values: values}
	p.srv = server.New(append([]server.Option{
		server.EndPoint("127.0.0.1", port),
		server.EnableSecurity("None", ua.MessageSecurityModeNone),
		server.EnableAuthMode(ua.UserTokenTypeAnonymous),
	}, opts...)...)
	p.ns = server.NewNodeNameSpace(p.srv, "plant")
	root, err := p.srv.Namespace(0)
	if err != nil {
		t.Fatal(err)
	}
	root.Objects().AddRef(p.ns.Objects(), id.HasComponent, true)
	for name := range values {
		n := server.NewVariableNode(ua.NewStringNodeID(p.ns.ID(), name), name, func() *ua.DataValue {
			p.mu.Lock()
			v := p.values[name]
			p.mu.Unlock()
			now := time.Now()
			return &ua.DataValue{
				EncodingMask:    ua.DataValueValue | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp,
				Value:           ua.MustVariant(v),
				SourceTimestamp: now,
				ServerTimestamp: now,
			}
		})
		p.ns.AddNode(n)
		p.ns.Objects().AddRef(n, id.HasComponent, true)
	}
	if err := p.srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.stop)
	return p
}

// set changes a variable and notifies its subscribers.
func (p *plc) set(name string, v any) {
	p.mu.Lock()
	p.values[name] = v
	p.mu.Unlock()
	p.ns.ChangeNotification(ua.NewStringNodeID(p.ns.ID(), name))
}

// freePort returns a port nothing listens on: bound on 127.0.0.1:0, then
// freed, so the server can be stopped and started again on it.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

const rulesYAML = `rules:
  - name: opc
    match: plant/+site/opc/+tag
`

// startService runs sluice with one pipeline taking plant/# to a file sink
// writing records as JSON lines.
func startService(t *testing.T) (*pipelines.Service, string, *metrics.Metrics) {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "out", "records.jsonl")
	writeFile(t, filepath.Join(dir, "rules.yaml"), rulesYAML)
	cfgPath := filepath.Join(dir, "sluice.yaml")
	writeFile(t, cfgPath, fmt.Sprintf(`data_dir: %s
shutdown_timeout: 1s
watch_rules: false
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines:
  - name: p
    topics: ["plant/#"]
    rules: [rules.yaml]
    sinks: [out]
sinks:
  - name: out
    stream: records
    batch: {size: 1, interval: 10ms}
    file: {path: %q}
`, filepath.Join(dir, "data"), out))
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
	return svc, out, m
}

type record struct {
	Topic  string         `json:"topic"`
	Fields map[string]any `json:"fields"`
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
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			recs = append(recs, r)
		}
	}
	return recs
}

// waitFor waits until a record on topic has field value v.
func waitFor(t *testing.T, path, topic string, v any) record {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		for _, r := range readRecords(t, path) {
			if r.Topic == topic && r.Fields["value"] == v {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no record on %s with value %v; records: %+v", topic, v, readRecords(t, path))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func startSource(t *testing.T, cfg opcua.Config, svc *pipelines.Service, m *metrics.Metrics) *opcua.Source {
	t.Helper()
	src, err := opcua.New(cfg, opcua.Options{Name: "plc-1", Handler: svc, Metrics: m, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := src.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return src
}

// TestValueChangesBecomeRecords subscribes to two variables of a real OPC UA
// server and checks that their changes arrive as records, on the explicit
// topic and on the templated one.
func TestValueChangesBecomeRecords(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	p := startPLC(t, port, map[string]any{"Boiler1.Temperature": 20.5, "Pump1.Running": false})
	svc, out, m := startService(t)
	startSource(t, opcua.Config{
		Endpoint:           fmt.Sprintf("opc.tcp://127.0.0.1:%d", port),
		PublishingInterval: 50 * time.Millisecond,
		Topic:              "plant/north/opc/{name}",
		Nodes: []opcua.NodeConfig{
			{ID: fmt.Sprintf("ns=%d;s=Boiler1.Temperature", p.ns.ID()), Topic: "plant/north/opc/boiler1_temp"},
			{ID: fmt.Sprintf("ns=%d;s=Pump1.Running", p.ns.ID()), Name: "pump1"},
		},
	}, svc, m)

	// The initial values arrive once subscribed, then the changes.
	first := waitFor(t, out, "plant/north/opc/boiler1_temp", 20.5)
	if first.Fields["status"] != "Good" || first.Fields["node"] != fmt.Sprintf("ns=%d;s=Boiler1.Temperature", p.ns.ID()) {
		t.Errorf("record %+v", first)
	}
	for _, f := range []string{"source_time", "server_time"} {
		if s, _ := first.Fields[f].(string); s == "" {
			t.Errorf("record without %s: %+v", f, first)
		}
	}
	waitFor(t, out, "plant/north/opc/pump1", false)
	p.set("Boiler1.Temperature", 71.25)
	p.set("Pump1.Running", true)
	waitFor(t, out, "plant/north/opc/boiler1_temp", 71.25)
	waitFor(t, out, "plant/north/opc/pump1", true)
}

// TestServerRestartIsSurvived stops the server and starts a new one on the
// same address: the source reconnects, subscribes again, and the new
// server's values arrive.
func TestServerRestartIsSurvived(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	p := startPLC(t, port, map[string]any{"Boiler1.Temperature": 1.0})
	svc, out, m := startService(t)
	node := fmt.Sprintf("ns=%d;s=Boiler1.Temperature", p.ns.ID())
	startSource(t, opcua.Config{
		Endpoint:           fmt.Sprintf("opc.tcp://127.0.0.1:%d", port),
		PublishingInterval: 50 * time.Millisecond,
		KeepAlive:          500 * time.Millisecond,
		RequestTimeout:     2 * time.Second,
		Reconnect:          opcua.Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond},
		Nodes:              []opcua.NodeConfig{{ID: node, Topic: "plant/north/opc/boiler1"}},
	}, svc, m)
	waitFor(t, out, "plant/north/opc/boiler1", 1.0)
	p.set("Boiler1.Temperature", 2.0)
	waitFor(t, out, "plant/north/opc/boiler1", 2.0)

	// gopcua's server leaves its connections open when it stops, and
	// stops answering on them: the keep-alive read finds them dead.
	p.stop()
	p2 := startPLC(t, port, map[string]any{"Boiler1.Temperature": 3.0})
	if p2.ns.ID() != p.ns.ID() {
		t.Fatalf("namespace %d after the restart, was %d", p2.ns.ID(), p.ns.ID())
	}
	// The new subscription starts with the current value, then changes.
	waitFor(t, out, "plant/north/opc/boiler1", 3.0)
	p2.set("Boiler1.Temperature", 4.0)
	waitFor(t, out, "plant/north/opc/boiler1", 4.0)
}

// TestUnreachableServerIsRetried starts the source before its server: Start
// succeeds, and values arrive once the server is up.
func TestUnreachableServerIsRetried(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	svc, out, m := startService(t)
	startSource(t, opcua.Config{
		Endpoint:           fmt.Sprintf("opc.tcp://127.0.0.1:%d", port),
		PublishingInterval: 50 * time.Millisecond,
		Reconnect:          opcua.Backoff{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond},
		Nodes:              []opcua.NodeConfig{{ID: "ns=1;s=Level", Topic: "plant/south/opc/level"}},
	}, svc, m)
	p := startPLC(t, port, map[string]any{"Level": int32(42)})
	if p.ns.ID() != 1 {
		t.Fatalf("the test's node is in namespace 1, the server put it in %d", p.ns.ID())
	}
	waitFor(t, out, "plant/south/opc/level", 42.0)
}

// TestSecurityFiles checks Start with Basic256Sha256 SignAndEncrypt: the
// certificate and key are read from files, PEM or DER, and a file that does
// not load fails Start, naming it. (gopcua v0.8.0's server answers a secure
// OpenSecureChannel with BadServiceUnsupported, so no secure session is
// made in the tests: see README.md.)
func TestSecurityFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key := makeCert(t, "urn:sluice-test:sluice")
	certPEM, keyPEM, certDER, bad := filepath.Join(dir, "sluice.pem"), filepath.Join(dir, "sluice.key"), filepath.Join(dir, "sluice.der"), filepath.Join(dir, "bad.pem")
	writeFile(t, certPEM, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert})))
	writeFile(t, keyPEM, string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})))
	writeFile(t, certDER, string(cert))
	writeFile(t, bad, "not a key")
	svc, _, m := startService(t)
	for _, tc := range []struct {
		name       string
		cert, key  string
		serverCert string
		err        string
	}{
		{"pem", certPEM, keyPEM, "", ""},
		{"der and a pinned server certificate", certDER, keyPEM, certDER, ""},
		{"missing key", certPEM, filepath.Join(dir, "nope.key"), "", "key_file: open"},
		{"bad key", certPEM, bad, "", "key_file: " + bad + ": not an RSA private key"},
		{"bad certificate", bad, keyPEM, "", "cert_file: " + bad},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := opcua.Config{
				Endpoint:       "opc.tcp://127.0.0.1:1",
				SecurityPolicy: "Basic256Sha256",
				CertFile:       tc.cert,
				KeyFile:        tc.key,
				ServerCertFile: tc.serverCert,
				Username:       "operator",
				Password:       secret.New("s3cret"),
				Nodes:          []opcua.NodeConfig{{ID: "ns=1;s=Flow"}},
			}
			if err := cfg.CheckFiles(); (err == nil) != (tc.err == "") {
				t.Errorf("CheckFiles: %v", err)
			}
			src, err := opcua.New(cfg, opcua.Options{Handler: svc, Metrics: m})
			if err != nil {
				t.Fatal(err)
			}
			err = src.Start(context.Background())
			defer src.Close(context.Background())
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Start: %v, want an error with %q", err, tc.err)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	ok := func() opcua.Config {
		return opcua.Config{Endpoint: "opc.tcp://plc:4840", Nodes: []opcua.NodeConfig{{ID: "ns=2;s=Boiler1.Temperature"}}}
	}
	for _, tc := range []struct {
		name   string
		change func(*opcua.Config)
		err    string
	}{
		{"ok", func(*opcua.Config) {}, ""},
		{"endpoint", func(c *opcua.Config) { c.Endpoint = "http://plc:4840" }, "endpoint"},
		{"no nodes", func(c *opcua.Config) { c.Nodes = nil }, "nodes"},
		{"bad node id", func(c *opcua.Config) { c.Nodes[0].ID = "ns=2;i=abc" }, "nodes[0].id"},
		{"node twice", func(c *opcua.Config) { c.Nodes = append(c.Nodes, c.Nodes[0]) }, "listed twice"},
		{"wildcard topic", func(c *opcua.Config) { c.Nodes[0].Topic = "plant/+/x" }, "nodes[0].topic"},
		{"template placeholder", func(c *opcua.Config) { c.Topic = "opcua/{device}" }, "unknown placeholder"},
		{"secure without cert", func(c *opcua.Config) { c.SecurityPolicy = "Basic256Sha256" }, "cert_file"},
		{"mode without policy", func(c *opcua.Config) { c.SecurityMode = "Sign" }, "security_mode"},
		{"policy", func(c *opcua.Config) { c.SecurityPolicy = "Basic512" }, "security_policy"},
		{"password alone", func(c *opcua.Config) { c.Password = secret.New("x") }, "password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok()
			tc.change(&c)
			c.SetDefaults()
			err := c.Validate()
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

// makeCert makes a self-signed RSA certificate for an OPC UA application.
func makeCert(t *testing.T, uri string) ([]byte, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(uri)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: uri},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment |
			x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		URIs:                  []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
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
