package coap

import (
	"fmt"
	"math"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/secret"
)

// Config is the CoAP ingest: a UDP (or DTLS) listener that turns each POST
// or PUT under Prefix into a message on the topic the rest of the path
// names. README.md beside this file describes every key.
type Config struct {
	// Address is the UDP host:port to bind; port 0 picks a free port.
	// Default 127.0.0.1:5683, or 127.0.0.1:5684 with dtls: loopback only
	// until an operator opens it up.
	Address string `yaml:"address"`
	// Prefix is the URI path a request must start with; the rest of the
	// path is the topic. One or more segments ("ps", "ingest/v1"); "/"
	// means no prefix. Default "ps".
	Prefix string `yaml:"prefix"`
	// MaxPayload bounds a request's body, block-wise transfers included;
	// a larger body is refused with 4.13 (default 64KiB, at most 16MiB).
	MaxPayload conf.Bytes `yaml:"max_payload"`
	// RetryAfter is the Max-Age of a 5.03 Service Unavailable response
	// (journal full, shutting down): when the client may try again.
	// Whole seconds (default 5s).
	RetryAfter time.Duration `yaml:"retry_after"`
	// AllowAnonymous accepts requests from clients with no identity: all
	// of them without dtls, and DTLS clients that presented neither a PSK
	// identity nor a verified certificate. Anonymous requests have no
	// username for the ACL. Off by default.
	AllowAnonymous bool `yaml:"allow_anonymous"`
	// DTLS, when set, serves CoAP over DTLS 1.2 (coaps) instead of plain
	// UDP.
	DTLS *DTLSConfig `yaml:"dtls"`
}

// DTLSConfig is the DTLS setup: pre-shared keys, a certificate, or both.
type DTLSConfig struct {
	// PSK lists the clients that authenticate with a pre-shared key. The
	// identity a client presents becomes its username for the ACL.
	PSK []PSKIdentity `yaml:"psk"`
	// CertFile and KeyFile are the server's PEM certificate (with its
	// chain) and private key (ECDSA or RSA), for certificate cipher suites.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile is a PEM bundle of the CAs that sign client
	// certificates. Setting it requires a client certificate on the
	// certificate suites; its subject common name becomes the username.
	ClientCAFile string `yaml:"client_ca_file"`
}

// PSKIdentity is one client's pre-shared key.
type PSKIdentity struct {
	// Identity is what the client sends (libcoap: coap-client -u).
	Identity string `yaml:"identity"`
	// Key is the shared secret, as text (libcoap: coap-client -k): inline,
	// {env: NAME} or {file: PATH}.
	Key secret.String `yaml:"key"`
}

const (
	defaultAddress     = "127.0.0.1:5683"
	defaultDTLSAddress = "127.0.0.1:5684"
	defaultPrefix      = "ps"
	maxMaxPayload      = 16 << 20
)

// SetDefaults fills in what the operator left out.
func (c *Config) SetDefaults() {
	if c.Address == "" {
		c.Address = defaultAddress
		if c.DTLS != nil {
			c.Address = defaultDTLSAddress
		}
	}
	if c.Prefix == "" {
		c.Prefix = defaultPrefix
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = 64 << 10
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = 5 * time.Second
	}
}

// Validate checks the configuration without reading the files it names.
func (c *Config) Validate() error {
	var p conf.Problems
	if c.Address == "" {
		p.Missing("address")
	} else if _, _, err := net.SplitHostPort(c.Address); err != nil {
		p.Addf("address", "%q is not host:port", c.Address)
	}
	if _, err := parsePrefix(c.Prefix); err != nil {
		p.Addf("prefix", "%v", err)
	}
	if c.MaxPayload < 1 || c.MaxPayload > maxMaxPayload {
		p.Addf("max_payload", "%v: want 1B to 16MiB", c.MaxPayload)
	}
	if c.RetryAfter < time.Second || c.RetryAfter > math.MaxUint32*time.Second || c.RetryAfter%time.Second != 0 {
		p.Addf("retry_after", "%v: want whole seconds, at least 1s (it is sent as Max-Age)", c.RetryAfter)
	}
	if c.DTLS == nil && !c.AllowAnonymous {
		p.Addf("", "without dtls every request is anonymous, so none would be accepted: "+
			"set allow_anonymous: true (and keep the port on a trusted network), or configure dtls")
	}
	if d := c.DTLS; d != nil {
		p.Nest("dtls", d.validate(c.AllowAnonymous))
	}
	return p.Err()
}

func (d *DTLSConfig) validate(anonymous bool) error {
	var p conf.Problems
	if len(d.PSK) == 0 && d.CertFile == "" {
		p.Addf("", "set psk identities, a certificate (cert_file, key_file), or both")
	}
	seen := map[string]bool{}
	for i, k := range d.PSK {
		at := fmt.Sprintf("psk[%d]", i)
		switch {
		case k.Identity == "":
			p.Missing(at + ".identity")
		case seen[k.Identity]:
			p.Addf(at+".identity", "identity %q is listed twice", k.Identity)
		}
		seen[k.Identity] = true
		if !k.Key.IsSet() {
			p.Missing(at + ".key")
		}
	}
	if d.CertFile != "" && d.KeyFile == "" {
		p.Addf("key_file", "needs to be set with cert_file: the certificate's private key")
	}
	if d.KeyFile != "" && d.CertFile == "" {
		p.Addf("cert_file", "needs to be set with key_file")
	}
	if d.ClientCAFile != "" && d.CertFile == "" {
		p.Addf("client_ca_file", "client certificates need the server's own certificate (cert_file, key_file)")
	}
	if len(d.PSK) == 0 && d.CertFile != "" && d.ClientCAFile == "" && !anonymous {
		p.Addf("", "with a certificate but neither psk nor client_ca_file no client has an identity, "+
			"so none would be accepted: add client_ca_file or psk, or set allow_anonymous: true")
	}
	return p.Err()
}

// Resolve makes the file paths in c absolute against dir (the config
// file's folder).
func (c *Config) Resolve(dir string) {
	if c.DTLS == nil || dir == "" {
		return
	}
	for _, f := range []*string{&c.DTLS.CertFile, &c.DTLS.KeyFile, &c.DTLS.ClientCAFile} {
		if *f != "" && !filepath.IsAbs(*f) {
			*f = filepath.Join(dir, *f)
		}
	}
}

// CheckFiles reads the certificate files dtls names, as Start would, and
// reports what does not load (for sluice validate).
func (c *Config) CheckFiles() error {
	if c.DTLS == nil {
		return nil
	}
	if _, err := c.DTLS.load(); err != nil {
		return fmt.Errorf("coap: dtls: %w", err)
	}
	return nil
}

// parsePrefix splits a configured prefix into path segments; "/" is none.
func parsePrefix(prefix string) ([]string, error) {
	trimmed := strings.Trim(prefix, "/")
	if trimmed == "" {
		if prefix == "" {
			return nil, fmt.Errorf("empty: use \"/\" for no prefix")
		}
		return nil, nil
	}
	segs := strings.Split(trimmed, "/")
	for _, s := range segs {
		if s == "" {
			return nil, fmt.Errorf("%q has an empty segment", prefix)
		}
	}
	return segs, nil
}
