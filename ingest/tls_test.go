package ingest_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/gorilla/websocket"

	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/ingest/auth"
	"github.com/sluicehq/sluice/internal/secret/secrettest"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/internal/wsstream"
)

// tlsSetup makes a CA, a server certificate it signs for 127.0.0.1, and
// the listener TLS config that serves it and takes client certificates
// from the same CA. The files are copies the test may overwrite.
func tlsSetup(t *testing.T) (*secrettest.CA, *ingest.TLSConfig) {
	t.Helper()
	dir := t.TempDir()
	root := secrettest.NewCA(t, "sluice-test")
	server := root.Server(t, "127.0.0.1")
	cfg := &ingest.TLSConfig{
		CertFile:     filepath.Join(dir, "server.crt"),
		KeyFile:      filepath.Join(dir, "server.key"),
		ClientCAFile: filepath.Join(dir, "clients-ca.pem"),
	}
	copyFile(t, server.CertFile, cfg.CertFile)
	copyFile(t, server.KeyFile, cfg.KeyFile)
	copyFile(t, root.CertFile, cfg.ClientCAFile)
	return root, cfg
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, string(data))
}

var tlsClients atomic.Int64

// connectTLS connects an MQTT 5 client over TLS and reports whether the
// broker accepted it (a CONNACK with reason 0).
func connectTLS(t *testing.T, addr string, conf *tls.Config, user, password string) (*testsvc.Client, error) {
	t.Helper()
	// Each its own client id: a client id's session belongs to one identity.
	id := fmt.Sprintf("tls-client-%d", tlsClients.Add(1))
	c, ca, err := testsvc.Connect(testsvc.MQTTOptions{Addr: addr, ClientID: id, TLS: conf, Username: user, Password: password})
	switch {
	case err == nil && ca.ReasonCode == 0:
		t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
		return c, nil
	case ca != nil:
		return nil, fmt.Errorf("CONNACK %#x", ca.ReasonCode)
	default:
		return nil, err
	}
}

func TestMutualTLS(t *testing.T) {
	root, tlsCfg := tlsSetup(t)
	b, rec, _ := startBroker(t, ingest.Config{Listeners: []ingest.ListenerConfig{
		{Name: "mqtts", Type: "tls", Address: "127.0.0.1:0", TLS: tlsCfg},
	}})
	addr := b.Addr("mqtts")
	other := secrettest.NewCA(t, "other")
	clientConf := func(certs ...tls.Certificate) *tls.Config {
		return &tls.Config{RootCAs: root.Pool, Certificates: certs, ServerName: "127.0.0.1"}
	}

	t.Run("valid client certificate", func(t *testing.T) {
		c, err := connectTLS(t, addr, clientConf(root.Client(t, "device-0042").TLS), "", "")
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		if code := c.Publish(t, "devices/device-0042/temp", 1, []byte("21.5")); code != 0 {
			t.Fatalf("publish: %#x", code)
		}
		// The certificate's subject CN is the client's username.
		if m := rec.last(); m == nil || m.Username != "device-0042" {
			t.Errorf("message username %v, want the certificate's CN device-0042", m)
		}
	})

	expired := root.Client(t, "device-old", secrettest.Expired).TLS
	refused := []struct {
		name string
		conf *tls.Config
	}{
		{"expired client certificate", clientConf(expired)},
		{"certificate from another CA", clientConf(other.Client(t, "device-0042").TLS)},
		{"no client certificate", clientConf()},
		{"TLS 1.1", func() *tls.Config {
			c := clientConf(root.Client(t, "device-0042").TLS)
			c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
			return c
		}()},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			if _, err := connectTLS(t, addr, c.conf, "", ""); err == nil {
				t.Fatal("connected; want refused")
			}
		})
	}

	t.Run("plain MQTT to the TLS port", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// A minimal MQTT 3.1.1 CONNECT, client id "p".
		conn.Write([]byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 1, 'p'})
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 64)
		n, err := conn.Read(buf)
		if n > 0 && buf[0] == 0x20 {
			t.Fatalf("got a CONNACK over plain TCP: % x", buf[:n])
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the broker kept a plain-TCP connection open on its TLS port")
		}
	})
}

func TestTLSOptionalClientCertificates(t *testing.T) {
	root, tlsCfg := tlsSetup(t)
	tlsCfg.ClientCerts = "optional"
	tlsCfg.Identity = "san_dns"
	pwFile := filepath.Join(t.TempDir(), "passwd")
	if err := auth.SetPassword(pwFile, "alice", []byte("alice-secret"), 4); err != nil {
		t.Fatal(err)
	}
	b, rec, _ := startBroker(t, ingest.Config{
		Listeners: []ingest.ListenerConfig{{Name: "mqtts", Address: "127.0.0.1:0", TLS: tlsCfg}},
		Auth:      ingest.AuthConfig{PasswordFile: pwFile},
	})
	addr := b.Addr("mqtts")
	conf := &tls.Config{RootCAs: root.Pool, ServerName: "127.0.0.1"}

	c, err := connectTLS(t, addr, conf, "alice", "alice-secret")
	if err != nil {
		t.Fatalf("password login without a certificate: %v", err)
	}
	c.Publish(t, "t", 1, nil)
	if m := rec.last(); m.Username != "alice" {
		t.Errorf("username %q, want alice", m.Username)
	}
	if _, err := connectTLS(t, addr, conf, "", ""); err == nil {
		t.Error("no certificate and no password: connected, want refused")
	}

	withCert := conf.Clone()
	withCert.Certificates = []tls.Certificate{root.Client(t, "pump-7", secrettest.DNSNames("pump-7.devices.example")).TLS}
	c2, err := connectTLS(t, addr, withCert, "", "")
	if err != nil {
		t.Fatalf("certificate login: %v", err)
	}
	c2.Publish(t, "t", 1, nil)
	if m := rec.last(); m.Username != "pump-7.devices.example" {
		t.Errorf("username %q, want the certificate's first DNS SAN", m.Username)
	}
}

func TestTLSCertificateReload(t *testing.T) {
	root, tlsCfg := tlsSetup(t)
	tlsCfg.ClientCAFile = ""
	b, _, logs := startBroker(t, ingest.Config{Listeners: []ingest.ListenerConfig{
		{Name: "mqtts", Type: "tls", Address: "127.0.0.1:0", TLS: tlsCfg, AllowAnonymous: true},
	}})
	addr := b.Addr("mqtts")
	conf := &tls.Config{RootCAs: root.Pool, ServerName: "127.0.0.1"}
	served := func() *big.Int {
		conn, err := tls.Dial("tcp", addr, conf)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber
	}
	first := served()
	// A connected client stays connected through the renewal.
	c, err := connectTLS(t, addr, conf, "", "")
	if err != nil {
		t.Fatal(err)
	}

	// A renewal that does not load (a key that does not match) is logged
	// and the old certificate stays.
	copyFile(t, root.Server(t, "127.0.0.1").KeyFile, tlsCfg.KeyFile)
	waitFor(t, "the failed reload to be logged", func() bool {
		served()
		return strings.Contains(logs.String(), "do not load")
	})
	if got := served(); got.Cmp(first) != 0 {
		t.Fatalf("after a broken renewal, serving certificate %v, want %v", got, first)
	}

	renewed := root.Server(t, "127.0.0.1")
	copyFile(t, renewed.CertFile, tlsCfg.CertFile)
	copyFile(t, renewed.KeyFile, tlsCfg.KeyFile)
	want := renewed.TLS.Leaf.SerialNumber
	waitFor(t, "the renewed certificate to be served", func() bool { return served().Cmp(want) == 0 })
	if code := c.Publish(t, "still/connected", 1, nil); code != 0 {
		t.Errorf("the client connected before the renewal: %#x", code)
	}
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestWebSocketListeners(t *testing.T) {
	root, tlsCfg := tlsSetup(t)
	b, rec, _ := startBroker(t, ingest.Config{Listeners: []ingest.ListenerConfig{
		{Name: "ws", Type: "ws", Address: "127.0.0.1:0", AllowAnonymous: true, AllowedOrigins: []string{"https://ops.example.com"}},
		{Name: "wss", Type: "wss", Address: "127.0.0.1:0", TLS: tlsCfg},
	}})

	dial := func(url string, d *websocket.Dialer, origin string) (net.Conn, error) {
		h := map[string][]string{}
		if origin != "" {
			h["Origin"] = []string{origin}
		}
		ws, resp, err := d.Dial(url, h)
		if err != nil {
			if resp != nil {
				return nil, errors.New(resp.Status)
			}
			return nil, err
		}
		return wsstream.New(ws), nil
	}

	conn, err := dial("ws://"+b.Addr("ws")+"/mqtt", &websocket.Dialer{Subprotocols: []string{"mqtt"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	c, ca, err := testsvc.Connect(testsvc.MQTTOptions{Conn: conn, ClientID: "ws-client"})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("ws connect: %v", err)
	}
	defer c.Disconnect(&paho.Disconnect{})
	c.Publish(t, "over/ws", 1, []byte("hello"))
	if m := rec.last(); m == nil || m.Topic != "over/ws" || string(m.Payload) != "hello" {
		t.Errorf("over ws the pipelines got %+v", m)
	}

	if _, err := dial("ws://"+b.Addr("ws")+"/mqtt", &websocket.Dialer{Subprotocols: []string{"mqtt"}}, "https://evil.example"); err == nil {
		t.Error("a browser origin not in allowed_origins was upgraded")
	}
	if _, err := dial("ws://"+b.Addr("ws")+"/elsewhere", &websocket.Dialer{Subprotocols: []string{"mqtt"}}, ""); err == nil {
		t.Error("a path other than /mqtt was upgraded")
	}

	wssDialer := &websocket.Dialer{Subprotocols: []string{"mqtt"}, TLSClientConfig: &tls.Config{
		RootCAs: root.Pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{root.Client(t, "browser-gw").TLS},
	}}
	conn, err = dial("wss://"+b.Addr("wss")+"/mqtt", wssDialer, "")
	if err != nil {
		t.Fatal(err)
	}
	c2, ca, err := testsvc.Connect(testsvc.MQTTOptions{Conn: conn, ClientID: "wss-client"})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("wss connect: %v", err)
	}
	defer c2.Disconnect(&paho.Disconnect{})
	c2.Publish(t, "over/wss", 1, nil)
	if m := rec.last(); m == nil || m.Topic != "over/wss" || m.Username != "browser-gw" {
		t.Errorf("over wss the pipelines got %+v, want the certificate's CN as username", m)
	}

	noCert := &websocket.Dialer{Subprotocols: []string{"mqtt"}, TLSClientConfig: &tls.Config{RootCAs: root.Pool, ServerName: "127.0.0.1"}}
	if conn, err := dial("wss://"+b.Addr("wss")+"/mqtt", noCert, ""); err == nil {
		conn.Close()
		t.Error("wss without a client certificate was upgraded")
	}
}
