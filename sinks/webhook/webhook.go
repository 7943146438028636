// Package webhook is the webhook sink: it POSTs each alert (or record, or
// dead letter) as JSON to an HTTP endpoint — a chat tool's incoming webhook,
// a paging service, an operator's own service. The body is the event's JSON
// as on Kafka, or the shape a body template gives; a token or an HMAC
// signature of the body lets the receiver trust it. A write returns only
// once the receiver answered, so what it has not taken waits in the journal:
// 5xx, 408, 429 and network failures are retried (after Retry-After when
// the receiver sends one), any other 4xx sends the event to the dead letters
// with the receiver's answer as the reason.
package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/httpsink"
	"github.com/sluicehq/sluice/internal/secret"
)

// Config configures a webhook sink.
type Config struct {
	// URL receives the POSTs. It is a secret (inline, {env: NAME} or
	// {file: PATH}): chat tools put the credential in the webhook's path.
	// Logs and errors show only its scheme and host.
	URL secret.String `yaml:"url"`
	// Headers are sent with every request; their values are secrets too.
	Headers map[string]secret.String `yaml:"headers"`
	// Token, when set, is sent in TokenHeader: "Authorization: Bearer
	// <token>" by default; in another header, as is (X-Gitlab-Token style).
	Token       secret.String `yaml:"token"`
	TokenHeader string        `yaml:"token_header"`
	// Username and Password send HTTP basic authentication.
	Username string        `yaml:"username"`
	Password secret.String `yaml:"password"`
	// Signature signs each body with HMAC-SHA256, as GitHub and Grafana
	// webhooks do.
	Signature *Signature `yaml:"signature"`
	// Body is the shape of the JSON sent for an event, its strings
	// templates (see Body). Default: the event's JSON as on Kafka.
	Body *Body `yaml:"body"`
	// Array sends a batch as one request, a JSON array of the events'
	// bodies, rather than one request per event (the default).
	Array bool `yaml:"array"`
	// Timeout bounds one request (default 10s).
	Timeout time.Duration `yaml:"timeout"`
	// TLS sets what an https url trusts (default: the system's roots) and
	// the client certificate for mutual TLS.
	TLS *secret.TLS `yaml:"tls"`
}

// Signature is how a body is signed.
type Signature struct {
	// Secret is the HMAC key shared with the receiver.
	Secret secret.String `yaml:"secret"`
	// Header carries "sha256=" and the hex HMAC-SHA256 (default
	// X-Sluice-Signature-256).
	Header string `yaml:"header"`
	// TimestampHeader, when set, carries the Unix time of the request, and
	// the signature is of "<time>:<body>" (as Grafana does), so a receiver
	// can refuse an old request replayed.
	TimestampHeader string `yaml:"timestamp_header"`
}

// Defaults.
const (
	DefaultTokenHeader     = "Authorization"
	DefaultSignatureHeader = "X-Sluice-Signature-256"
	DefaultTimeout         = 10 * time.Second
)

// SetDefaults fills in what the operator left out.
func (c *Config) SetDefaults() {
	if c.TokenHeader == "" {
		c.TokenHeader = DefaultTokenHeader
	}
	if c.Signature != nil && c.Signature.Header == "" {
		c.Signature.Header = DefaultSignatureHeader
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var p conf.Problems
	u, err := url.Parse(c.URL.Reveal())
	switch {
	case !c.URL.IsSet():
		p.Missing("url")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		// Not quoted: the url may hold a credential.
		p.Addf("url", "not an http(s) URL (from %s)", c.URL.Source())
	case u.User != nil:
		p.Addf("url", "no credentials in the url: use username and password, or token")
	case c.TLS != nil && u.Scheme == "http":
		p.Addf("tls", "the url is http://, so TLS is not used; write https://")
	}
	for name := range c.Headers {
		if !validHeaderName(name) {
			p.Addf("headers", "%q is not a valid header name", name)
		}
	}
	if c.Token.IsSet() && c.Username != "" && http.CanonicalHeaderKey(c.TokenHeader) == "Authorization" {
		p.Addf("token", "set token or username and password, not both: both use the Authorization header")
	}
	if c.TokenHeader != "" && !validHeaderName(c.TokenHeader) {
		p.Addf("token_header", "%q is not a valid header name", c.TokenHeader)
	}
	if c.Password.IsSet() && c.Username == "" {
		p.Addf("password", "needs username")
	}
	if s := c.Signature; s != nil {
		if !s.Secret.IsSet() {
			p.Missing("signature.secret")
		}
		if s.Header != "" && !validHeaderName(s.Header) {
			p.Addf("signature.header", "%q is not a valid header name", s.Header)
		}
		if s.TimestampHeader != "" && !validHeaderName(s.TimestampHeader) {
			p.Addf("signature.timestamp_header", "%q is not a valid header name", s.TimestampHeader)
		}
	}
	if c.Body != nil {
		p.Nest("body", c.Body.Validate())
	}
	if c.Timeout < 0 {
		p.Addf("timeout", "must not be negative")
	}
	if c.TLS != nil {
		p.Nest("tls", c.TLS.Validate())
	}
	return p.Err()
}

// validHeaderName reports whether name is an HTTP token (RFC 9110 5.1).
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c < 0x80 && c > ' ' && c != 0x7f && !isSeparator(c):
		default:
			return false
		}
	}
	return true
}

func isSeparator(c byte) bool {
	for i := 0; i < len(`()<>@,;:\"/[]?={}`); i++ {
		if c == `()<>@,;:\"/[]?={}`[i] {
			return true
		}
	}
	return false
}

// Sink posts events to a webhook. Only the sink's writer goroutine calls
// Write (the pipeline serialises a sink several pipelines share).
type Sink struct {
	cfg  Config
	url  string
	host string // what logs and errors show of url
	now  func() time.Time

	client httpsink.Client // made on first use, with the TLS settings
}

// New returns a sink for cfg (validated). It does no I/O: the TLS files
// are read by Connect or the first Write.
func New(cfg Config) *Sink {
	cfg.SetDefaults()
	s := &Sink{cfg: cfg, url: cfg.URL.Reveal(), now: time.Now, client: httpsink.Client{TLS: cfg.TLS}}
	if u, err := url.Parse(s.url); err == nil {
		s.host = httpsink.Host(u)
	}
	return s
}

// Connect sets the client up. It sends nothing: any request to a webhook
// is a delivery.
func (s *Sink) Connect(ctx context.Context) error {
	_, err := s.client.Get()
	return err
}

// Write posts the batch: each event in a request of its own, in order, or
// (array) all in one. An event whose body cannot be rendered, or that the
// receiver refuses with a 4xx, is reported permanent in a
// *sluice.BatchError; after a retryable failure, the events not yet sent
// wait with it.
func (s *Sink) Write(ctx context.Context, batch []sluice.Event) error {
	client, err := s.client.Get()
	if err != nil {
		return sluice.Retryable(fmt.Errorf("webhook %s: %w", s.host, err), 0)
	}
	if s.cfg.Array {
		return s.writeArray(ctx, client, batch)
	}
	errs := map[int]error{}
	for i := range batch {
		// A body of its own per request: the transport may still read
		// a body after a failed request returns.
		body, err := s.render(nil, &batch[i])
		if err != nil {
			errs[i] = sluice.Permanent(err)
			continue
		}
		if err := s.post(ctx, client, body); err != nil {
			if sluice.IsPermanent(err) {
				errs[i] = err
				continue
			}
			for j := i; j < len(batch); j++ {
				errs[j] = err
			}
			break
		}
	}
	if len(errs) > 0 {
		return &sluice.BatchError{Errs: errs}
	}
	return nil
}

// writeArray posts the batch as one JSON array of the bodies it can
// render.
func (s *Sink) writeArray(ctx context.Context, client *http.Client, batch []sluice.Event) error {
	errs := map[int]error{}
	body := []byte{'['}
	n := 0
	for i := range batch {
		mark := len(body)
		if n > 0 {
			body = append(body, ',')
		}
		var err error
		if body, err = s.render(body, &batch[i]); err != nil {
			body = body[:mark]
			errs[i] = sluice.Permanent(err)
			continue
		}
		n++
	}
	body = append(body, ']')
	if n > 0 {
		if err := s.post(ctx, client, body); err != nil {
			for i := range batch {
				if _, bad := errs[i]; !bad {
					errs[i] = err
				}
			}
		}
	}
	if len(errs) > 0 {
		return &sluice.BatchError{Errs: errs}
	}
	return nil
}

// render appends the body sent for e to dst.
func (s *Sink) render(dst []byte, e *sluice.Event) ([]byte, error) {
	if s.cfg.Body != nil {
		return s.cfg.Body.appendJSON(dst, e)
	}
	if e.Stream == sluice.StreamRaw {
		return dst, errors.New("the webhook sink posts JSON: records, alerts or dead letters, not raw messages")
	}
	return e.AppendEncoded(dst)
}

// post sends one request and classifies its failure.
func (s *Sink) post(ctx context.Context, client *http.Client, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	err := httpsink.Post(ctx, client, s.url, body, func(h http.Header) { s.header(h, body) })
	if err == nil {
		return nil
	}
	return s.classify(err)
}

// header sets the configured headers, the credentials and the signature.
func (s *Sink) header(h http.Header, body []byte) {
	for name, v := range s.cfg.Headers {
		h.Set(name, v.Reveal())
	}
	if s.cfg.Token.IsSet() {
		v := s.cfg.Token.Reveal()
		if http.CanonicalHeaderKey(s.cfg.TokenHeader) == "Authorization" {
			v = "Bearer " + v
		}
		h.Set(s.cfg.TokenHeader, v)
	}
	if s.cfg.Username != "" {
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(s.cfg.Username+":"+s.cfg.Password.Reveal())))
	}
	if sig := s.cfg.Signature; sig != nil {
		h.Set(sig.Header, Sign(sig.Secret.Reveal(), s.timestamp(h), body))
	}
}

// timestamp sets the signature's timestamp header, if there is one, and
// returns its value ("" without).
func (s *Sink) timestamp(h http.Header) string {
	if s.cfg.Signature.TimestampHeader == "" {
		return ""
	}
	ts := strconv.FormatInt(s.now().Unix(), 10)
	h.Set(s.cfg.Signature.TimestampHeader, ts)
	return ts
}

// Sign returns the signature header's value for body: "sha256=" and the
// hex HMAC-SHA256 of body under key, or of "<timestamp>:<body>" when a
// timestamp is sent. A receiver computes the same and compares in constant
// time.
func Sign(key, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(key))
	if timestamp != "" {
		mac.Write([]byte(timestamp + ":"))
	}
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// classify sorts a failed request: 408, 429 and 5xx are retried (after
// Retry-After, when sent), as are network and TLS failures and redirects
// that cannot be followed; any other 4xx is permanent: the event goes to
// the dead letters with the receiver's answer.
func (s *Sink) classify(err error) error {
	var se *httpsink.StatusError
	if !errors.As(err, &se) {
		if secret.IsTLSFailure(err) {
			err = fmt.Errorf("TLS failed; check tls in the config (ca_file, cert_file, key_file, server_name): %w", err)
		}
		return sluice.Retryable(fmt.Errorf("webhook: %w", err), 0)
	}
	err = fmt.Errorf("webhook %s %w", s.host, err)
	switch c := se.Code; {
	case c == http.StatusRequestTimeout, c == http.StatusTooManyRequests, c >= 500:
		return sluice.Retryable(err, se.RetryAfter)
	case c >= 400:
		return sluice.Permanent(err)
	}
	return sluice.Retryable(err, se.RetryAfter)
}

// Close releases idle connections. It is idempotent.
func (s *Sink) Close(ctx context.Context) error {
	s.client.Close()
	return nil
}
