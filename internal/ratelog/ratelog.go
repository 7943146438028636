// Package ratelog rate-limits log lines on hot paths: a device sending a bad
// payload a thousand times a second must not produce a thousand log lines.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Logger logs at most one line per key per interval. The next line logged
// for a key says how many were suppressed since the last one. Keys must be
// of bounded number (a pipeline, a rule, a sink; never a device).
type Logger struct {
	log   *slog.Logger
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	keys map[string]*entry
}

type entry struct {
	last       time.Time
	suppressed int
}

// New returns a Logger writing to log at most once per key per every.
func New(log *slog.Logger, every time.Duration, now func() time.Time) *Logger {
	if now == nil {
		now = time.Now
	}
	return &Logger{log: log, every: every, now: now, keys: map[string]*entry{}}
}

// Log logs msg at level unless a line was logged for key less than the
// interval ago.
func (l *Logger) Log(level slog.Level, key, msg string, args ...any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	ok, suppressed := l.Allow(key)
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.log.Log(context.Background(), level, msg, args...)
}

// Allow reports whether a line for key may be written now (none was less
// than the interval ago) and, if so, how many were suppressed since the
// last one; for a caller that writes the line itself (a slog.Handler
// passing on another library's records). Log uses it.
func (l *Logger) Allow(key string) (ok bool, suppressed int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e, seen := l.keys[key]
	if !seen {
		e = &entry{}
		l.keys[key] = e
	}
	if seen && now.Sub(e.last) < l.every {
		e.suppressed++
		return false, 0
	}
	suppressed = e.suppressed
	e.last, e.suppressed = now, 0
	return true, suppressed
}

// Warn logs at warning level; see Log.
func (l *Logger) Warn(key, msg string, args ...any) { l.Log(slog.LevelWarn, key, msg, args...) }

// Error logs at error level; see Log.
func (l *Logger) Error(key, msg string, args ...any) { l.Log(slog.LevelError, key, msg, args...) }
