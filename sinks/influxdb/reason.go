package influxdb

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"unicode/utf8"
)

// Reasons from InfluxDB. A refused write is reported as the dead letters'
// reason; what InfluxDB says must reach it whole, and what it echoes of our
// request need not.

// fullErrors makes InfluxDB 1.x's error bodies reach the client whole.
// influxd 1.x answers a failed write with {"error": "..."}; the client
// reads only the code and message fields InfluxDB 2.x sends, and otherwise
// takes the X-Influxdb-Error header, which influxd cuts at 1,024 bytes: a
// long echo of the line protocol pushes the cause out. So a JSON error body
// with "error" and no "message" is put in that header whole.
type fullErrors struct{ next http.RoundTripper }

// maxErrorBody bounds the error body read: it echoes at most the request.
const maxErrorBody = 64 << 20

func (t fullErrors) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp.StatusCode < 300 {
		return resp, err
	}
	if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); ct != "application/json" {
		return resp, nil
	}
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if rerr != nil {
		return resp, nil
	}
	var e struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" && e.Message == "" {
		resp.Header.Set("X-Influxdb-Error", e.Error)
	}
	return resp, nil
}

// Shortening: a line of an error that echoes a point keeps echoKeep bytes
// of it, when it is longer than echoMax; an error keeps errorLines lines.
const (
	echoMax    = 256
	echoKeep   = 120
	errorLines = 5
)

// shortenEcho shortens the points InfluxDB echoes in an error ("unable to
// parse '<line protocol>': <cause>"), never the cause, and keeps the first
// errorLines lines of an error about many points.
func shortenEcho(msg string) string {
	lines := strings.Split(msg, "\n")
	more := 0
	if len(lines) > errorLines {
		lines, more = lines[:errorLines], len(lines)-errorLines
	}
	for i, l := range lines {
		const open = "unable to parse '"
		start := strings.Index(l, open)
		end := strings.LastIndex(l, "': ")
		if start < 0 || end < start+len(open) {
			continue
		}
		echo := l[start+len(open) : end]
		if len(echo) <= echoMax {
			continue
		}
		cut := echoKeep
		for cut > 0 && !utf8.RuneStart(echo[cut]) {
			cut--
		}
		lines[i] = fmt.Sprintf("%s%s… (%d bytes)%s", l[:start+len(open)], echo[:cut], len(echo), l[end:])
	}
	out := strings.Join(lines, "\n")
	if more > 0 {
		out += fmt.Sprintf("\n(and %d more lines like these)", more)
	}
	return out
}
