package httpin

import (
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/secret"
)

// Config is the HTTP ingest listener.
type Config struct {
	// Address is host:port to bind; port 0 picks a free port. Required.
	Address string `yaml:"address"`
	// TLS serves HTTPS (HTTP/1.1 and HTTP/2) with this certificate and key,
	// re-read when they change (a renewal applies from the next handshake).
	// Only cert_file, key_file and min_version apply: HTTP clients
	// authenticate with tokens, not client certificates.
	TLS *ingest.TLSConfig `yaml:"tls"`
	// Tokens are the bearer tokens clients send ("Authorization: Bearer
	// <token>"), each mapped to the user the ACL knows it as. A user may
	// have several tokens (for rotation); a token names one user.
	Tokens []Token `yaml:"tokens"`
	// AllowAnonymous lets requests without an Authorization header publish
	// as an anonymous client (no username for the ACL). Off by default. A
	// request with a wrong token is refused all the same.
	AllowAnonymous bool `yaml:"allow_anonymous"`
	// MaxBodyBytes bounds one message's payload: the body of a single
	// publish, or a batch line's decoded payload (default 1MiB, as the
	// broker's max_packet_size).
	MaxBodyBytes conf.Bytes `yaml:"max_body_bytes"`
	// MaxBatchBytes bounds the body of a batch (default 4MiB).
	MaxBatchBytes conf.Bytes `yaml:"max_batch_bytes"`
	// MaxBatchLines bounds the messages in one batch (default 1000).
	MaxBatchLines int `yaml:"max_batch_lines"`
	// DefaultQoS is the QoS of a message whose request does not say: 1
	// (the default: 202 only once the message is durable as its
	// pipelines' durability says) or 0 (202 once it is in the journals,
	// without waiting for the write to disk).
	DefaultQoS *int `yaml:"default_qos"`
	// MaxInflight bounds the requests handled at once (default 64); more
	// are answered 429. With max_batch_bytes it bounds the memory bodies
	// take.
	MaxInflight int `yaml:"max_inflight"`
	// RetryAfter is what a 429 tells the client to wait (whole seconds,
	// default 1s).
	RetryAfter time.Duration `yaml:"retry_after"`
	// ReadHeaderTimeout bounds reading a request's headers (default 10s),
	// ReadTimeout the whole request with its body (default 60s),
	// WriteTimeout the time from the end of the headers to the end of the
	// response (default 60s), and IdleTimeout how long a keep-alive
	// connection waits for its next request (default 120s).
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	// MinBodyRate is how fast a body must arrive, in bytes per second,
	// after the first BodyGrace (defaults 4KiB and 5s): a body coming
	// slower is answered 408, so that a slow or stalled upload holds its
	// max_inflight place for a time its size bounds, not read_timeout.
	MinBodyRate  conf.Bytes    `yaml:"min_body_rate"`
	BodyGrace    time.Duration `yaml:"body_grace"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	IdleTimeout  time.Duration `yaml:"idle_timeout"`
}

// Token maps a bearer token to a user.
type Token struct {
	// User is the username ACL rules name (and %u stands for).
	User string `yaml:"user"`
	// Token is the secret: inline, {env: NAME} or {file: PATH}. At least
	// 16 characters; `openssl rand -hex 32` makes a good one.
	Token secret.String `yaml:"token"`
}

// minTokenLen is the shortest token accepted: shorter ones can be guessed.
const minTokenLen = 16

// SetDefaults fills in what the operator left out.
func (c *Config) SetDefaults() {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = 4 << 20
	}
	if c.MaxBatchLines == 0 {
		c.MaxBatchLines = 1000
	}
	if c.DefaultQoS == nil {
		one := 1
		c.DefaultQoS = &one
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = 64
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.RetryAfter, time.Second)
	def(&c.ReadHeaderTimeout, 10*time.Second)
	def(&c.ReadTimeout, 60*time.Second)
	def(&c.BodyGrace, 5*time.Second)
	if c.MinBodyRate == 0 {
		c.MinBodyRate = 4 << 10
	}
	def(&c.WriteTimeout, 60*time.Second)
	def(&c.IdleTimeout, 120*time.Second)
	if c.TLS != nil && c.TLS.MinVersion == "" {
		c.TLS.MinVersion = "1.2"
	}
}

// Validate checks the section; SetDefaults runs first.
func (c *Config) Validate() error {
	var p conf.Problems
	if c.Address == "" {
		p.Missing("address")
	} else if _, _, err := net.SplitHostPort(c.Address); err != nil {
		p.Addf("address", "%q is not host:port", c.Address)
	}
	if t := c.TLS; t != nil {
		if t.CertFile == "" {
			p.Missing("tls.cert_file")
		}
		if t.KeyFile == "" {
			p.Missing("tls.key_file")
		}
		if t.MinVersion != "1.2" && t.MinVersion != "1.3" {
			p.Addf("tls.min_version", "%q: want 1.2 or 1.3", t.MinVersion)
		}
		if t.ClientCAFile != "" || t.ClientCerts != "" || t.Identity != "" {
			p.Addf("tls", "client certificates (client_ca_file, client_certs, identity) are not supported on the HTTP listener; clients authenticate with tokens")
		}
	}
	if len(c.Tokens) == 0 && !c.AllowAnonymous {
		p.Addf("tokens", "no tokens and allow_anonymous is off: no client could publish; list tokens (or set allow_anonymous: true)")
	}
	first := map[string]int{} // token → its first index
	for i, t := range c.Tokens {
		at := fmt.Sprintf("tokens[%d]", i)
		switch {
		case t.User == "":
			p.Missing(at + ".user")
		case strings.ContainsAny(t.User, "/+#"):
			p.Addf(at+".user", "%q: a user name must not hold /, + or # (ACL rules could not confine it with %%u)", t.User)
		}
		tok := t.Token.Reveal()
		switch {
		case !t.Token.IsSet():
			p.Missing(at + ".token")
		case len(tok) < minTokenLen:
			// Never the value, only where it came from.
			p.Addf(at+".token", "the token (from %s) is %d characters; want at least %d (e.g. openssl rand -hex 32)", t.Token.Source(), len(tok), minTokenLen)
		case strings.ContainsAny(tok, " \t\r\n"):
			p.Addf(at+".token", "the token (from %s) holds white space; a bearer token cannot", t.Token.Source())
		}
		if j, ok := first[tok]; ok && tok != "" {
			p.Addf(at+".token", "the same token as tokens[%d]: a token must name one user", j)
		} else {
			first[tok] = i
		}
	}
	if c.MaxBodyBytes < 1 || c.MaxBodyBytes > 256<<20 {
		p.Addf("max_body_bytes", "%v: want 1B to 256MiB", c.MaxBodyBytes)
	}
	if c.MaxBatchBytes < 1 {
		p.Addf("max_batch_bytes", "%v: want at least 1B", c.MaxBatchBytes)
	}
	if c.MaxBatchLines < 1 {
		p.Addf("max_batch_lines", "%d: want at least 1", c.MaxBatchLines)
	}
	if q := c.DefaultQoS; q != nil && *q != 0 && *q != 1 {
		p.Addf("default_qos", "%d: want 0 or 1 (HTTP has no exactly-once handshake)", *q)
	}
	if c.MaxInflight < 1 {
		p.Addf("max_inflight", "%d: want at least 1", c.MaxInflight)
	}
	if c.MinBodyRate < 1 {
		p.Addf("min_body_rate", "%v: want at least 1B (per second)", c.MinBodyRate)
	}
	if c.RetryAfter < time.Second || c.RetryAfter%time.Second != 0 {
		p.Addf("retry_after", "%v: want whole seconds, at least 1s", c.RetryAfter)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"read_header_timeout", c.ReadHeaderTimeout}, {"read_timeout", c.ReadTimeout}, {"body_grace", c.BodyGrace},
		{"write_timeout", c.WriteTimeout}, {"idle_timeout", c.IdleTimeout},
	} {
		if d.v < 0 {
			p.Addf(d.key, "must not be negative")
		}
	}
	return p.Err()
}

// Resolve makes the TLS file paths absolute against dir (the config file's
// folder). Token files are read when the config is loaded, from the
// working directory, as every secret is.
func (c *Config) Resolve(dir string) {
	if c.TLS == nil || dir == "" {
		return
	}
	for _, f := range []*string{&c.TLS.CertFile, &c.TLS.KeyFile} {
		if *f != "" && !filepath.IsAbs(*f) {
			*f = filepath.Join(dir, *f)
		}
	}
}

// CheckFiles loads the TLS certificate and key, as Start would, and
// reports a problem (for sluice validate).
func (c *Config) CheckFiles() error {
	if c.TLS == nil {
		return nil
	}
	if _, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile); err != nil {
		return fmt.Errorf("http ingest: certificate %s, key %s: %w", c.TLS.CertFile, c.TLS.KeyFile, err)
	}
	return nil
}

func (c *Config) defaultQoS() byte {
	if c.DefaultQoS == nil {
		return 1
	}
	return byte(*c.DefaultQoS)
}
