package secret_test

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/secret"
	"github.com/sluicehq/sluice/internal/secret/secrettest"
)

func TestTLSLoad(t *testing.T) {
	ca := secrettest.NewCA(t, "test")
	client, other := ca.Client(t, "sluice"), ca.Client(t, "other")
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}

	c, err := (&secret.TLS{CAFile: ca.CertFile, CertFile: client.CertFile, KeyFile: client.KeyFile, ServerName: "kafka.example"}).Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.MinVersion != tls.VersionTLS12 || c.RootCAs == nil || len(c.Certificates) != 1 || c.ServerName != "kafka.example" || c.InsecureSkipVerify {
		t.Errorf("config %+v", c)
	}
	if c, err := (&secret.TLS{}).Load(); err != nil || c.RootCAs != nil || c.MinVersion != tls.VersionTLS12 {
		t.Errorf("defaults: %+v, %v (want the system roots and TLS 1.2)", c, err)
	}

	key, err := os.ReadFile(client.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		tls  secret.TLS
		want string
	}{
		{"missing CA file", secret.TLS{CAFile: "/nonexistent/ca.pem"}, "tls: ca_file: open /nonexistent/ca.pem: no such file or directory"},
		{"CA file without PEM", secret.TLS{CAFile: notPEM}, "tls: ca_file " + notPEM + ": no PEM certificate in it"},
		{"key of another certificate", secret.TLS{CertFile: client.CertFile, KeyFile: other.KeyFile},
			"tls: cert_file " + client.CertFile + ", key_file " + other.KeyFile + ": tls: private key does not match public key"},
		{"key where the certificate goes", secret.TLS{CertFile: client.KeyFile, KeyFile: client.KeyFile}, "tls: cert_file " + client.KeyFile},
		{"certificate without key", secret.TLS{CertFile: client.CertFile}, "tls: cert_file and key_file go together"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.tls.Load()
			if err == nil || !strings.HasPrefix(err.Error(), c.want) {
				t.Fatalf("got  %v\nwant %s", err, c.want)
			}
			if strings.Contains(err.Error(), strings.TrimSpace(string(key[40:80]))) {
				t.Errorf("error shows the key: %v", err)
			}
		})
	}
}
