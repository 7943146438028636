package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestRateLimitsPerKey(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(0, 0)
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), time.Second, func() time.Time { return now })
	for range 100 {
		l.Warn("decode:a", "bad payload")
	}
	l.Warn("decode:b", "bad payload")
	now = now.Add(2 * time.Second)
	l.Warn("decode:a", "bad payload")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[2], "suppressed=99") {
		t.Fatalf("last line does not count the suppressed ones: %s", lines[2])
	}
}
