package influxdb_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/secret"
	"github.com/sluicehq/sluice/internal/secret/secrettest"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/sinks/influxdb"
)

const token = "sluice:tok-3Fq8zW"

// tlsProxy is an https front for a real influxd, as a TLS-terminating
// proxy in front of InfluxDB would be; it records the Authorization headers
// it passes on.
type tlsProxy struct {
	*httptest.Server
	mu   sync.Mutex
	auth []string
}

func newTLSProxy(t *testing.T, backend string, cfg *tls.Config) *tlsProxy {
	t.Helper()
	u, err := url.Parse(backend)
	if err != nil {
		t.Fatal(err)
	}
	p := &tlsProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.auth = append(p.auth, r.Header.Get("Authorization"))
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	p.Server.TLS = cfg
	p.Server.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point
	p.StartTLS()
	t.Cleanup(p.Close)
	return p
}

func (p *tlsProxy) seen() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.auth...)
}

// decode reads a sink config the way the config loader does.
func decode(t *testing.T, yaml string) influxdb.Config {
	t.Helper()
	var cfg influxdb.Config
	if _, err := conf.Decode("sluice.yaml", []byte(yaml), &cfg); err != nil {
		t.Fatalf("config:\n%s\n%v", yaml, err)
	}
	return cfg
}

func TestTLSAndTokenFromTheEnvironment(t *testing.T) {
	s := testsvc.Influxd(t)
	if err := s.CreateDatabase("db"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	t.Setenv("INFLUX_TEST_TOKEN", token)

	ca, other := secrettest.NewCA(t, "influx"), secrettest.NewCA(t, "other")
	server := ca.Server(t, "127.0.0.1")
	client, stranger := ca.Client(t, "sluice"), other.Client(t, "sluice")
	proxy := newTLSProxy(t, s.URL, &tls.Config{Certificates: []tls.Certificate{server.TLS}})
	mutual := newTLSProxy(t, s.URL, &tls.Config{Certificates: []tls.Certificate{server.TLS},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool})

	sink := func(t *testing.T, url, tls string) *influxdb.Sink {
		t.Helper()
		cfg := decode(t, fmt.Sprintf("url: %s\nbucket: db/autogen\ntimeout: 5s\ntoken: {env: INFLUX_TEST_TOKEN}\n%s", url, tls))
		sk := influxdb.New(cfg, sluice.StreamRecords)
		t.Cleanup(func() { sk.Close(ctx) })
		return sk
	}
	write := func(sk *influxdb.Sink, device string) error {
		return sk.Write(ctx, []sluice.Event{record(device, []sluice.Field{{Name: "temperature", Value: 20.5}}, t0)})
	}
	stored := func(t *testing.T, device string) bool {
		t.Helper()
		return len(query(t, s, `SELECT temperature FROM boiler WHERE device = '`+device+`'`)) == 1
	}
	refused := func(t *testing.T, err error, says string) {
		t.Helper()
		t.Logf("error: %v", err)
		if err == nil || sluice.IsPermanent(err) {
			t.Fatalf("got %v, want a retryable error", err)
		}
		if !strings.Contains(err.Error(), says) {
			t.Errorf("error does not say %q: %v", says, err)
		}
		if strings.Contains(err.Error(), token) {
			t.Errorf("error shows the token: %v", err)
		}
	}

	t.Run("the proxy's CA is trusted; the token goes along", func(t *testing.T) {
		sk := sink(t, proxy.URL, "tls: {ca_file: "+ca.CertFile+"}\n")
		if err := sk.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		if err := write(sk, "tls1"); err != nil {
			t.Fatal(err)
		}
		if !stored(t, "tls1") {
			t.Fatal("the point is not in influxd")
		}
		auth := proxy.seen()
		if len(auth) == 0 || auth[len(auth)-1] != "Token "+token {
			t.Fatalf("Authorization headers %q, want %q", auth, "Token "+token)
		}
	})

	for _, c := range []struct{ name, tls, says string }{
		{"another CA", "tls: {ca_file: " + other.CertFile + "}\n", "certificate signed by unknown authority"},
		{"the system roots", "", "certificate signed by unknown authority"},
		{"a server name the certificate lacks", "tls: {ca_file: " + ca.CertFile + ", server_name: influx.example}\n", "influx.example"},
		{"a missing CA file", "tls: {ca_file: /nonexistent/ca.pem}\n", "/nonexistent/ca.pem"},
	} {
		t.Run("refused with "+c.name, func(t *testing.T) {
			n := len(proxy.seen())
			sk := sink(t, proxy.URL, c.tls)
			refused(t, sk.Connect(ctx), c.says)
			refused(t, write(sk, "refused"), c.says)
			if len(proxy.seen()) != n {
				t.Error("a request got through")
			}
		})
	}

	t.Run("mutual TLS", func(t *testing.T) {
		sk := sink(t, mutual.URL, fmt.Sprintf("tls: {ca_file: %s, cert_file: %s, key_file: %s}\n", ca.CertFile, client.CertFile, client.KeyFile))
		if err := write(sk, "mtls"); err != nil {
			t.Fatal(err)
		}
		if !stored(t, "mtls") {
			t.Fatal("the point is not in influxd")
		}
		for _, tls := range []string{
			"tls: {ca_file: " + ca.CertFile + "}\n", // no client certificate
			fmt.Sprintf("tls: {ca_file: %s, cert_file: %s, key_file: %s}\n", ca.CertFile, stranger.CertFile, stranger.KeyFile),
		} {
			refused(t, write(sink(t, mutual.URL, tls), "refused"), "certificate required")
		}
	})

	if stored(t, "refused") {
		t.Error("a refused write was stored")
	}
}

func TestValidateTLS(t *testing.T) {
	var cfg influxdb.Config
	_, err := conf.Decode("sluice.yaml", []byte("url: http://influx:8086\nbucket: b\ntls: {cert_file: c.pem}\n"), &cfg)
	want := "sluice.yaml:3:1: tls: the url is http://, so TLS is not used; write https://\n" +
		"sluice.yaml:3:7: tls.cert_file: needs key_file: the client certificate's private key"
	if err == nil || err.Error() != want {
		t.Fatalf("got  %v\nwant %s", err, want)
	}
}

// TestConfigNeverShowsTheToken formats a config with a token every way a log
// line or an error might, and the sink holding it.
func TestConfigNeverShowsTheToken(t *testing.T) {
	cfg := influxdb.Config{URL: "https://127.0.0.1:1", Bucket: "telemetry", Token: secret.New(token), TLS: &secret.TLS{}}
	s := influxdb.New(cfg, sluice.StreamRecords)
	defer s.Close(context.Background())
	s.Connect(context.Background()) // sets up the client, with the token inside
	j, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("sink", "config", cfg, "sink", s)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("sink", "config", cfg)
	for _, out := range []string{
		fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg),
		fmt.Sprintf("%v", s), fmt.Sprintf("%+v", s), string(j), logged.String(),
	} {
		if strings.Contains(out, token) || strings.Contains(out, "tok-3Fq8zW") {
			t.Errorf("token shown: %s", out)
		}
		if !strings.Contains(out, "telemetry") {
			t.Errorf("nothing printed? %s", out)
		}
	}
}

// influxQL runs a statement as user on an influxd with authentication on.
func influxQL(t *testing.T, base, user, pass, db, q string) []byte {
	t.Helper()
	creds := url.Values{"u": {user}, "p": {pass}}
	resp, err := http.PostForm(base+"/query?"+creds.Encode(), url.Values{"q": {q}, "db": {db}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || strings.Contains(string(body), `"error"`) {
		t.Fatalf("influxql %q: %v %s %s", q, err, resp.Status, body)
	}
	return body
}

// TestTokenFromTheEnvironmentAuthenticates runs influxd with authentication
// on: the token read from the environment is what lets the write in, and a
// wrong one is refused, retried, and not shown.
func TestTokenFromTheEnvironmentAuthenticates(t *testing.T) {
	t.Setenv("INFLUXDB_HTTP_AUTH_ENABLED", "true") // read by the influxd started below
	s := testsvc.Influxd(t)
	// With no user yet, influxd takes the first admin without credentials.
	if _, err := s.Query("", `CREATE USER admin WITH PASSWORD 'admin-pw' WITH ALL PRIVILEGES`); err != nil {
		t.Fatal(err)
	}
	influxQL(t, s.URL, "admin", "admin-pw", "", `CREATE DATABASE db`)
	influxQL(t, s.URL, "admin", "admin-pw", "", `CREATE USER sluice WITH PASSWORD 'tok-3Fq8zW'`)
	influxQL(t, s.URL, "admin", "admin-pw", "", `GRANT WRITE ON db TO sluice`)
	t.Setenv("INFLUX_TEST_TOKEN", token)
	t.Setenv("INFLUX_TEST_WRONG", "sluice:wrong-9Kd2")
	ctx := context.Background()
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	events := []sluice.Event{record("auth1", []sluice.Field{{Name: "temperature", Value: 20.5}}, t0)}

	sink := func(token string) *influxdb.Sink {
		sk := influxdb.New(decode(t, fmt.Sprintf("url: %s\nbucket: db/autogen\ntimeout: 5s\ntoken: %s\n", s.URL, token)), sluice.StreamRecords)
		t.Cleanup(func() { sk.Close(ctx) })
		return sk
	}
	if err := sink("{env: INFLUX_TEST_TOKEN}").Write(ctx, events); err != nil {
		t.Fatal(err)
	}
	body := influxQL(t, s.URL, "admin", "admin-pw", "db", `SELECT temperature FROM boiler WHERE device = 'auth1'`)
	if !strings.Contains(string(body), "20.5") {
		t.Fatalf("the point is not in influxd: %s", body)
	}

	for _, c := range []struct{ token, says string }{
		{"{env: INFLUX_TEST_WRONG}", "InfluxDB refused the request (the token from env INFLUX_TEST_WRONG)"},
		{`""`, "InfluxDB refused the request (no token is set)"},
	} {
		err := sink(c.token).Write(ctx, events)
		t.Logf("error: %v", err)
		if err == nil || sluice.IsPermanent(err) {
			t.Fatalf("token %s: got %v, want a retryable error", c.token, err)
		}
		if !strings.Contains(err.Error(), c.says) {
			t.Errorf("error does not say %q: %v", c.says, err)
		}
		if strings.Contains(err.Error(), "wrong-9Kd2") || strings.Contains(err.Error(), "tok-3Fq8zW") {
			t.Errorf("error shows a token: %v", err)
		}
	}
}
