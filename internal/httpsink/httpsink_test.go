package httpsink

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":                              0,
		"7":                             7 * time.Second,
		" 120 ":                         2 * time.Minute,
		"0":                             0,
		"-5":                            0,
		"soon":                          0,
		"99999999999999":                24 * time.Hour,
		"Wed, 25 Nov 2026 12:01:30 GMT": 90 * time.Second,
		"Wed, 25 Nov 2026 11:59:00 GMT": 0,
		"Fri, 25 Dec 2026 12:00:00 GMT": 24 * time.Hour,
	} {
		if got := RetryAfter(v, now); got != want {
			t.Errorf("Retry-After %q: %v, want %v", v, got, want)
		}
	}
}

// TestCheckKeepsTheStartOfTheAnswer: an error answer's body is kept on one
// line, cut at 512 bytes on a character boundary.
func TestCheckKeepsTheStartOfTheAnswer(t *testing.T) {
	resp := func(code int, body string) *http.Response {
		return &http.Response{StatusCode: code, Status: http.StatusText(code), Header: http.Header{}, Body: io.NopCloser(strings.NewReader(body))}
	}
	if err := Check(resp(204, ""), time.Now()); err != nil {
		t.Fatal(err)
	}
	err := Check(resp(400, "bad\n  channel"), time.Now()).(*StatusError)
	if err.Body != "bad channel" || err.Code != 400 {
		t.Errorf("got %+v", err)
	}
	long := strings.Repeat("é", 400) // 800 bytes
	err = Check(resp(500, long), time.Now()).(*StatusError)
	if !strings.HasSuffix(err.Body, " ...") || len(err.Body) > 512+4 || !utf8.ValidString(err.Body) {
		t.Errorf("long answer kept as %d bytes: %q", len(err.Body), err.Body)
	}
}
