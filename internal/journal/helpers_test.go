package journal

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a fake clock for record times and MaxAge.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logBuf collects log output for tests that check what was logged.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

func open(t testing.TB, opts Options) *Journal {
	t.Helper()
	j, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func payload(seq int) []byte {
	return []byte(fmt.Sprintf("record %d %s", seq, strings.Repeat("x", seq%50)))
}

// appendN appends records payload(from) .. payload(from+n-1) and checks
// that they get those seqs.
func appendN(t testing.TB, j *Journal, from, n int) {
	t.Helper()
	ctx := ctxT(t)
	for i := from; i < from+n; i++ {
		seq, err := j.Append(ctx, byte(i%7), payload(i), i, false)
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		if seq != uint64(i) {
			t.Fatalf("Append %d: seq %d", i, seq)
		}
	}
}

// readN reads n records and checks they are from..from+n-1 as appendN made them.
func readN(t testing.TB, r *Reader, from, n int) []Entry {
	t.Helper()
	ctx := ctxT(t)
	var out []Entry
	for i := from; i < from+n; i++ {
		e, err := r.Next(ctx)
		if err != nil {
			t.Fatalf("reader %s: Next (want %d): %v", r.name, i, err)
		}
		checkEntry(t, e, i)
		e.Data = bytes.Clone(e.Data)
		out = append(out, e)
	}
	return out
}

func checkEntry(t testing.TB, e Entry, i int) {
	t.Helper()
	if e.Seq != uint64(i) || e.Kind != byte(i%7) || !bytes.Equal(e.Data, payload(i)) {
		t.Fatalf("got seq %d kind %d data %q, want seq %d kind %d data %q", e.Seq, e.Kind, e.Data, i, i%7, payload(i))
	}
	if e.Value != nil && e.Value != i {
		t.Fatalf("seq %d: value %v", i, e.Value)
	}
}

// eventually waits, with a deadline, for cond to hold.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// segFiles lists the segment files in dir by first seq.
func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	sort.Strings(m)
	return m
}

func lastSegment(t testing.TB, dir string) string {
	t.Helper()
	s := segFiles(t, dir)
	if len(s) == 0 {
		t.Fatal("no segments")
	}
	return filepath.Join(dir, s[len(s)-1])
}

func copyDir(t testing.TB, from string) string {
	t.Helper()
	to := t.TempDir()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

// frameSize is the bytes record i of appendN takes on disk, sync word
// included.
func frameSize(i int) int64 { return int64(syncSize + frameOverhead + len(payload(i))) }

// testSync is the sync word of the segments tests build themselves.
var testSync = []byte{0xa5, 0x5a, 0xc3, 0x3c}

// segmentHeader is the header of a plain segment tests build themselves.
func segmentHeader() []byte { return plainHeader(testSync) }
