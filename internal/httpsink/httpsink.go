// Package httpsink holds what the sinks that POST over HTTP (webhook,
// alertmanager) share: the client they send with (TLS, a timeout, redirects
// that keep the method), the error an answer other than 2xx becomes, and
// the delay a Retry-After asks for.
package httpsink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/internal/secret"
)

// Client is a sink's HTTP client, made on first use: its TLS files are read
// then, and read again on the next use while that fails, so a file fixed
// while sluice runs is picked up without a restart.
type Client struct {
	TLS *secret.TLS

	mu     sync.Mutex
	client *http.Client
	closed bool
}

// Get returns the client, making it if it is not made yet.
func (c *Client) Get() (*http.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("sink closed")
	}
	if c.client == nil {
		hc, err := NewClient(c.TLS)
		if err != nil {
			return nil, err
		}
		c.client = hc
	}
	return c.client, nil
}

// Close ends the client's idle connections; Get fails from then on. It is
// idempotent.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed && c.client != nil {
		c.client.CloseIdleConnections()
	}
	c.closed = true
}

// NewClient returns the client a sink sends with: Go's default transport
// (which honours HTTPS_PROXY and NO_PROXY) with the TLS settings given, if
// any, read now. A redirect is followed only when it keeps the method and
// the body (307, 308): a POST turned into a GET would be reported as
// delivered and deliver nothing.
func NewClient(t *secret.TLS) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if t != nil {
		cfg, err := t.Load()
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = cfg
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.Method != via[0].Method {
				return fmt.Errorf("redirected to %s, which would turn %s into %s: set the url to the address that answers", Host(req.URL), via[0].Method, req.Method)
			}
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			return nil
		},
	}, nil
}

// StatusError is an answer other than 2xx.
type StatusError struct {
	Code int
	// Status is the status line's text, e.g. "400 Bad Request".
	Status string
	// Body is the start of the answer's body (what the server said was
	// wrong), on one line.
	Body string
	// RetryAfter is the delay the Retry-After header asked for, or 0.
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	if e.Body == "" {
		return "answered " + e.Status
	}
	return "answered " + e.Status + ": " + e.Body
}

// maxBody is how much of an error answer's body is kept in the error (and
// so in a dead letter's reason).
const maxBody = 512

// Check returns nil for a 2xx answer, otherwise a *StatusError holding the
// start of the body. It reads and closes the body either way, so the
// connection can be reused.
func Check(resp *http.Response, now time.Time) error {
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	text := strings.Join(strings.Fields(strings.ToValidUTF8(string(b), "\uFFFD")), " ")
	// Made valid, the text may be longer than what was read.
	if len(b) > maxBody || len(text) > maxBody {
		text = text[:min(len(text), maxBody)]
		for !utf8.ValidString(text) {
			text = text[:len(text)-1]
		}
		text += " ..."
	}
	return &StatusError{Code: resp.StatusCode, Status: resp.Status, Body: text, RetryAfter: RetryAfter(resp.Header.Get("Retry-After"), now)}
}

// maxRetryAfter bounds the seconds a Retry-After may ask for: a day.
const maxRetryAfter = 24 * 60 * 60

// RetryAfter parses a Retry-After header: seconds, or an HTTP date. It
// returns 0 for none, or for one that cannot be read or lies in the past,
// and at most a day.
func RetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, maxRetryAfter)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter*time.Second)
	}
	return 0
}

// Post sends body to url with the headers set by header, and returns the
// checked answer (see Check). ctx bounds the whole exchange.
func Post(ctx context.Context, c *http.Client, url string, body []byte, header func(http.Header)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sluice")
	if header != nil {
		header(req.Header)
	}
	resp, err := c.Do(req)
	if err != nil {
		// The url may hold a credential (a Slack webhook's path does):
		// the error names its host only.
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("post to %s: %w", Host(req.URL), err)
	}
	return Check(resp, time.Now())
}

// Host is what errors and logs show of a url that may hold a credential:
// its scheme and host, e.g. "https://hooks.slack.com".
func Host(u *neturl.URL) string { return u.Scheme + "://" + u.Host }
