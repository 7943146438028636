package httpin_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/ingest/httpin"
	"github.com/sluicehq/sluice/internal/conf"
)

func TestConfig(t *testing.T) {
	t.Setenv("SLUICE_TEST_HTTP_TOKEN", "from-env-0123456789abcdef")
	cases := []struct {
		name string
		yaml string
		want string // in the error; "" for none
	}{
		{"tokens", "address: 127.0.0.1:0\ntokens:\n  - {user: gw, token: {env: SLUICE_TEST_HTTP_TOKEN}}\n", ""},
		{"anonymous", "address: 127.0.0.1:0\nallow_anonymous: true\n", ""},
		{"qos 0", "address: 127.0.0.1:0\nallow_anonymous: true\ndefault_qos: 0\n", ""},
		{"tls", "address: 127.0.0.1:0\nallow_anonymous: true\ntls: {cert_file: c.pem, key_file: k.pem, min_version: \"1.3\"}\n", ""},
		{"no address", "allow_anonymous: true\n", `missing required key "address"`},
		{"bad address", "address: nowhere\nallow_anonymous: true\n", `"nowhere" is not host:port`},
		{"nobody", "address: 127.0.0.1:0\n", "no client could publish"},
		{"short token", "address: \"127.0.0.1:0\"\ntokens: [{user: gw, token: abc}]\n", "want at least 16"},
		{"no user", "address: \"127.0.0.1:0\"\ntokens: [{token: 0123456789abcdef0}]\n", `missing required key "user"`},
		{"wildcard user", "address: \"127.0.0.1:0\"\ntokens: [{user: a/b, token: 0123456789abcdef0}]\n", "must not hold /"},
		{"same token twice", "address: \"127.0.0.1:0\"\ntokens:\n  - {user: a, token: 0123456789abcdef0}\n  - {user: b, token: 0123456789abcdef0}\n", "the same token as tokens[0]"},
		{"unset env", "address: \"127.0.0.1:0\"\ntokens: [{user: a, token: {env: SLUICE_TEST_UNSET_VAR}}]\n", "SLUICE_TEST_UNSET_VAR is not set"},
		{"qos 2", "address: \"127.0.0.1:0\"\nallow_anonymous: true\ndefault_qos: 2\n", "exactly-once"},
		{"client certs", "address: \"127.0.0.1:0\"\nallow_anonymous: true\ntls: {cert_file: c, key_file: k, client_ca_file: ca}\n", "client certificates"},
		{"tls without key", "address: \"127.0.0.1:0\"\nallow_anonymous: true\ntls: {cert_file: c}\n", `"key_file"`},
		{"retry after", "address: \"127.0.0.1:0\"\nallow_anonymous: true\nretry_after: 1500ms\n", "whole seconds"},
		{"unknown key", "address: \"127.0.0.1:0\"\nallow_anonymous: true\nmax_body: 1MiB\n", "max_body"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var cfg httpin.Config
			_, err := conf.Decode("http.yaml", []byte(c.yaml), &cfg)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("error %v, want one with %q", err, c.want)
			}
			if err != nil && strings.Contains(err.Error(), "0123456789abcdef") {
				t.Fatalf("the error shows a token: %v", err)
			}
		})
	}
}

func TestConfigDefaultsAndResolve(t *testing.T) {
	var cfg httpin.Config
	if _, err := conf.Decode("http.yaml", []byte("address: \"127.0.0.1:8080\"\nallow_anonymous: true\ntls: {cert_file: c.pem, key_file: /etc/k.pem}\n"), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxBodyBytes != 1<<20 || cfg.MaxBatchLines != 1000 || *cfg.DefaultQoS != 1 || cfg.TLS.MinVersion != "1.2" {
		t.Errorf("defaults: %+v", cfg)
	}
	cfg.Resolve("/srv/sluice")
	if cfg.TLS.CertFile != filepath.Join("/srv/sluice", "c.pem") || cfg.TLS.KeyFile != "/etc/k.pem" {
		t.Errorf("resolved: %s, %s", cfg.TLS.CertFile, cfg.TLS.KeyFile)
	}
}
