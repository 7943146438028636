package httpin_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/ingest/httpin"
)

// TestTLS publishes over HTTPS with HTTP/2 and HTTP/1.1, and renews the
// certificate under the running listener.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool := x509.NewCertPool()
	pool.AddCert(writeCert(t, certFile, keyFile, 1))
	e := startEnv(t, envOptions{cfg: httpin.Config{TLS: &ingest.TLSConfig{CertFile: certFile, KeyFile: keyFile}}})

	h2 := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	h1 := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool},
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	t.Cleanup(h2.CloseIdleConnections)
	t.Cleanup(h1.CloseIdleConnections)
	for _, c := range []struct {
		name   string
		client *http.Client
		proto  int
	}{{"h2", h2, 2}, {"http1.1", h1, 1}} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", e.base+"/v1/publish/tls/"+c.name, strings.NewReader("t=1"))
			req.Header.Set("Authorization", "Bearer "+aliceToken)
			resp, err := c.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 202 || resp.ProtoMajor != c.proto {
				t.Fatalf("%d over HTTP/%d, want 202 over HTTP/%d", resp.StatusCode, resp.ProtoMajor, c.proto)
			}
			e.waitRecord(t, "tls/"+c.name)
		})
	}
	if got := e.metric("sluice_tls_certificate_expiry_timestamp_seconds", "listener", "http"); got == 0 {
		t.Error("the certificate's expiry is not reported")
	}

	t.Run("plain HTTP refused", func(t *testing.T) {
		resp, err := http.Post("http://"+e.src.Addr()+"/v1/publish/tls/plain", "text/plain", nil)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 400 {
				t.Fatalf("plain HTTP to the TLS listener: %d", resp.StatusCode)
			}
		}
	})

	t.Run("renewed certificate", func(t *testing.T) {
		// The files are looked at once a second; make the change visible
		// by size too, should the clock's resolution hide it.
		writeCert(t, certFile, keyFile, 2)
		deadline := time.Now().Add(30 * time.Second)
		for {
			conn, err := tls.Dial("tcp", e.src.Addr(), &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				t.Fatal(err)
			}
			serial := conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
			conn.Close()
			if serial == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the renewed certificate was not served")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// TestStartFailures: a certificate that does not load, or an address in
// use, fails Start.
func TestStartFailures(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		cfg  httpin.Config
	}{
		{"address in use", httpin.Config{Address: ln.Addr().String(), AllowAnonymous: true}},
		{"missing certificate", httpin.Config{Address: "127.0.0.1:0", AllowAnonymous: true,
			TLS: &ingest.TLSConfig{CertFile: filepath.Join(dir, "nope.pem"), KeyFile: filepath.Join(dir, "nope.key")}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.cfg.TLS != nil {
				if err := c.cfg.CheckFiles(); err == nil || !strings.Contains(err.Error(), "nope.pem") {
					t.Errorf("CheckFiles: %v, want the certificate named", err)
				}
			}
			src, err := httpin.New(c.cfg, httpin.Options{Handler: nopHandler{}})
			if err != nil {
				t.Fatal(err)
			}
			if err := src.Start(t.Context()); err == nil {
				src.Close(t.Context())
				t.Fatal("Start succeeded")
			}
			if err := src.Close(t.Context()); err != nil {
				t.Fatalf("Close after a failed Start: %v", err)
			}
		})
	}
}

// writeCert writes a self-signed certificate for 127.0.0.1 with the given
// serial number, and its key, and returns it.
func writeCert(t *testing.T, certFile, keyFile string, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "sluice test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour * time.Duration(30+serial)),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// The key first: the pair must match when the certificate changes.
	if err := os.WriteFile(keyFile+".tmp", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile+".tmp", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(keyFile+".tmp", keyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(certFile+".tmp", certFile); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
