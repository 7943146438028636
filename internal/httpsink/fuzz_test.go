package httpsink

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzRetryAfter: whatever a server sends as Retry-After, the delay is
// between 0 and a day.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"", "7", "-1", "99999999999999999999", "Wed, 25 Nov 2026 12:01:30 GMT", "Monday, 02-Jan-06 15:04:05 MST", "1e3", " 5 "} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		if d := RetryAfter(v, now); d < 0 || d > 24*time.Hour {
			t.Fatalf("Retry-After %q: %v", v, d)
		}
	})
}

// FuzzCheck: whatever a server answers, the error keeps one line of valid
// UTF-8, at most 512 bytes of it and the mark of a cut.
func FuzzCheck(f *testing.F) {
	f.Add(400, "bad request")
	f.Add(500, strings.Repeat("é", 300))
	f.Add(503, "\xff\xfe\n\t x")
	f.Fuzz(func(t *testing.T, code int, body string) {
		if code < 100 || code > 999 {
			return
		}
		resp := &http.Response{StatusCode: code, Status: http.StatusText(code), Header: http.Header{}, Body: io.NopCloser(strings.NewReader(body))}
		err := Check(resp, time.Now())
		if code >= 200 && code < 300 {
			if err != nil {
				t.Fatal(err)
			}
			return
		}
		se := err.(*StatusError)
		if len(se.Body) > maxBody+4 || !utf8.ValidString(se.Body) || strings.ContainsAny(se.Body, "\n\r") {
			t.Fatalf("answer %q kept as %q", body, se.Body)
		}
	})
}
