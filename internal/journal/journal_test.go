package journal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var modes = []Mode{Memory, Process, Fsync}

func optsFor(t testing.TB, m Mode) Options {
	o := Options{Mode: m}
	if m != Memory {
		o.Dir = t.TempDir()
	}
	return o
}

func TestRoundTrip(t *testing.T) {
	for _, m := range modes {
		for _, wait := range []bool{false, true} {
			t.Run(m.String()+map[bool]string{false: "/nowait", true: "/wait"}[wait], func(t *testing.T) {
				clk := newClock()
				o := optsFor(t, m)
				o.Now = clk.Now
				o.SegmentBytes = 2048 // several segments
				j := open(t, o)
				a, b := j.Reader("a"), j.Reader("b")
				ctx := ctxT(t)
				for i := 1; i <= 200; i++ {
					clk.Advance(time.Second)
					seq, err := j.Append(ctx, byte(i%7), payload(i), i, wait)
					if err != nil || seq != uint64(i) {
						t.Fatalf("Append %d: seq %d, %v", i, seq, err)
					}
					if wait && j.Durable() < seq {
						t.Fatalf("Append %d returned before durable (%d)", i, j.Durable())
					}
				}
				if err := j.WaitDurable(ctx, 200); err != nil {
					t.Fatal(err)
				}
				for _, r := range []*Reader{a, b} {
					for i, e := range readN(t, r, 1, 200) {
						if e.Value != i+1 {
							t.Fatalf("seq %d: value %v, want it from the cache", e.Seq, e.Value)
						}
						if want := newClock().Now().Add(time.Duration(i+1) * time.Second); !e.Time.Equal(want) {
							t.Fatalf("seq %d: time %v, want %v", e.Seq, e.Time, want)
						}
					}
				}
				if st := j.Stats(); st.First != 1 || st.Last != 200 || st.Durable != 200 || st.Segments < 5 {
					t.Fatalf("stats %+v", st)
				}
				a.Ack(150)
				b.Ack(200)
				st := j.Stats()
				if st.First < 100 || st.First > 151 || st.Last != 200 {
					t.Fatalf("stats after acks %+v", st)
				}
				ra := st.Readers[0]
				if ra.Name != "a" || ra.Acked != 150 || ra.Lag != 50 || ra.OldestAge != 49*time.Second || ra.LagBytes <= 0 {
					t.Fatalf("reader a stats %+v", ra)
				}
				if rb := st.Readers[1]; rb.Lag != 0 || rb.OldestAge != 0 {
					t.Fatalf("reader b stats %+v", rb)
				}
				if err := j.Close(); err != nil {
					t.Fatal(err)
				}
				if err := j.Close(); err != nil {
					t.Fatalf("second Close: %v", err)
				}
				if _, err := j.Append(ctx, 0, nil, nil, false); !errors.Is(err, ErrClosed) {
					t.Fatalf("Append after Close: %v", err)
				}
			})
		}
	}
}

func TestReopen(t *testing.T) {
	for _, m := range []Mode{Process, Fsync} {
		t.Run(m.String(), func(t *testing.T) {
			o := optsFor(t, m)
			o.SegmentBytes = 1024
			j := open(t, o)
			a := j.Reader("a")
			appendN(t, j, 1, 100)
			readN(t, a, 1, 40)
			a.Ack(40)
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}

			j = open(t, o)
			if st := j.Stats(); st.Last != 100 || st.Recovered.Records == 0 || st.Recovered.CutBytes != 0 {
				t.Fatalf("after reopen: %+v", st)
			}
			a = j.Reader("a")
			if a.Acked() != 40 {
				t.Fatalf("acked %d after reopen, want 40", a.Acked())
			}
			// A new reader starts at the first record held: the segments
			// "a" had passed are gone.
			b := j.Reader("b")
			first := j.Stats().First
			if first <= 1 || first > 41 {
				t.Fatalf("first held %d", first)
			}
			readN(t, b, int(first), 3)
			// Records read back from disk have no value.
			for _, e := range readN(t, a, 41, 60) {
				if e.Value != nil {
					t.Fatalf("seq %d from disk has value %v", e.Seq, e.Value)
				}
			}
			appendN(t, j, 101, 10) // seqs continue
			readN(t, a, 101, 10)
			a.Ack(110)
			b.Ack(110)
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}

			// Everything acknowledged and reclaimed but the last segment:
			// seqs still continue.
			j = open(t, o)
			appendN(t, j, 111, 1)
			if r := j.Reader("a"); r.Acked() != 110 {
				t.Fatalf("acked %d", r.Acked())
			}
		})
	}
}

func TestCursorsSavedInBackground(t *testing.T) {
	o := optsFor(t, Process)
	j := open(t, o)
	r := j.Reader("sink")
	appendN(t, j, 1, 10)
	r.Ack(7)
	path := filepath.Join(o.Dir, cursorsFile)
	eventually(t, "cursors file with ack 7", func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		var doc cursorsDoc
		return json.Unmarshal(b, &doc) == nil && doc.Readers["sink"].Acked == 7
	})
}

func TestCursorNeverPassesDurable(t *testing.T) {
	o := optsFor(t, Fsync)
	gate := make(chan struct{})
	o.syncFile = func(f *os.File) error {
		if strings.HasSuffix(f.Name(), ".seg") {
			<-gate
		}
		return f.Sync()
	}
	j := open(t, o)
	r := j.Reader("sink")
	appendN(t, j, 1, 5)
	readN(t, r, 1, 5)
	r.Ack(5)
	if err := j.saveCursors(); err != nil {
		t.Fatal(err)
	}
	var doc cursorsDoc
	b, _ := os.ReadFile(filepath.Join(o.Dir, cursorsFile))
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if got := doc.Readers["sink"].Acked; got != 0 {
		t.Fatalf("saved ack %d before any record was durable", got)
	}
	close(gate)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, o)
	if got := j.Reader("sink").Acked(); got != 5 {
		t.Fatalf("ack %d after Close, want 5", got)
	}
}

func TestReclaim(t *testing.T) {
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			o := optsFor(t, m)
			o.SegmentBytes = 1024
			j := open(t, o)
			a, b := j.Reader("a"), j.Reader("b")
			appendN(t, j, 1, 200)
			segsBefore := j.Stats().Segments
			a.Ack(200)
			if st := j.Stats(); st.Segments != segsBefore || st.First != 1 {
				t.Fatalf("reclaimed while b holds them: %+v", st)
			}
			if m != Memory && len(segFiles(t, o.Dir)) != segsBefore {
				t.Fatalf("files deleted while b holds them")
			}
			b.Ack(100)
			st := j.Stats()
			if st.First > 101 || st.First < 50 || st.Segments >= segsBefore {
				t.Fatalf("after b acked 100: %+v", st)
			}
			if m != Memory {
				// The files of the segments every reader passed go, the others stay.
				eventually(t, "reclaimed files removed", func() bool {
					files := segFiles(t, o.Dir)
					return len(files) == st.Segments && files[0] == segmentName(st.First)
				})
			}
			// Every reader passed everything: all but the segment being
			// written goes.
			b.Ack(200)
			if st := j.Stats(); st.Segments != 1 || st.First > 200 {
				t.Fatalf("after all acked: %+v", st)
			}
			if m != Memory {
				eventually(t, "one segment file left", func() bool { return len(segFiles(t, o.Dir)) == 1 })
			}
			// A reader removed no longer holds segments.
			c := j.Reader("c")
			appendN(t, j, 201, 100)
			a.Ack(300)
			b.Ack(300)
			if j.Stats().First > 201 {
				t.Fatal("reclaimed what c has not read")
			}
			j.RemoveReader("c")
			if st := j.Stats(); st.Segments != 1 {
				t.Fatalf("after removing c: %+v", st)
			}
			if _, err := c.Next(ctxT(t)); !errors.Is(err, ErrClosed) {
				t.Fatalf("Next of a removed reader: %v", err)
			}
		})
	}
}

// TestAdmit: Admit says whether a record would be taken, as Append waits
// for it to be, without writing one.
func TestAdmit(t *testing.T) {
	o := optsFor(t, Process)
	o.MaxBytes = 4096
	o.SegmentBytes = 1024
	j := open(t, o)
	r := j.Reader("sink")
	ctx := ctxT(t)
	if err := j.Admit(ctx, true); err != nil {
		t.Fatalf("Admit on an empty journal: %v", err)
	}
	n := 0
	for !j.Full() {
		n++
		appendN(t, j, n, 1)
	}
	last := j.Stats().Last
	if err := j.Admit(ctx, true); !errors.Is(err, ErrFull) {
		t.Fatalf("Admit with try on a full journal: %v", err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := j.Admit(canceled, false); !errors.Is(err, context.Canceled) {
		t.Fatalf("Admit with a canceled ctx on a full journal: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- j.Admit(ctx, false) }()
	select {
	case err := <-done:
		t.Fatalf("Admit on a full journal returned %v", err)
	default:
	}
	readN(t, r, 1, n)
	r.Ack(uint64(n))
	if err := <-done; err != nil {
		t.Fatalf("waiting Admit: %v", err)
	}
	if st := j.Stats(); st.Last != last {
		t.Fatalf("Admit wrote: last %d, was %d", st.Last, last)
	}
}

func TestNoReaderNoReclaim(t *testing.T) {
	o := optsFor(t, Process)
	o.SegmentBytes = 1024
	j := open(t, o)
	appendN(t, j, 1, 100)
	if st := j.Stats(); st.First != 1 {
		t.Fatalf("reclaimed with no reader: %+v", st)
	}
	r := j.Reader("late")
	readN(t, r, 1, 1) // a new reader starts at the first record held
}

func TestBlock(t *testing.T) {
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			o := optsFor(t, m)
			o.MaxBytes = 4096
			o.SegmentBytes = 1024
			j := open(t, o)
			r := j.Reader("sink")
			ctx := ctxT(t)
			n := 0
			for !j.Full() {
				n++
				if _, err := j.Append(ctx, byte(n%7), payload(n), n, false); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := j.TryAppend(ctx, 0, payload(n+1), nil, false); !errors.Is(err, ErrFull) {
				t.Fatalf("TryAppend on a full journal: %v", err)
			}
			canceled, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := j.Append(canceled, 0, payload(n+1), nil, false); !errors.Is(err, context.Canceled) {
				t.Fatalf("Append with a canceled ctx on a full journal: %v", err)
			}
			// Derived records are written regardless.
			n++
			if seq, err := j.Write(byte(n%7), payload(n), n); err != nil || seq != uint64(n) {
				t.Fatalf("Write on a full journal: %d, %v", seq, err)
			}

			done := make(chan error, 1)
			go func() {
				_, err := j.Append(ctx, byte((n+1)%7), payload(n+1), n+1, true)
				done <- err
			}()
			select {
			case err := <-done:
				t.Fatalf("Append on a full journal returned %v", err)
			default:
			}
			readN(t, r, 1, n)
			r.Ack(uint64(n))
			if err := <-done; err != nil {
				t.Fatalf("blocked Append: %v", err)
			}
			readN(t, r, n+1, 1)
			if st := j.Stats(); st.Dropped != 0 || st.Readers[0].Skipped != 0 {
				t.Fatalf("Block dropped records: %+v", st)
			}
		})
	}
}

// A journal whose bytes all sit in the segment being written must still
// free them when the reader acknowledges.
func TestBlockSingleSegment(t *testing.T) {
	o := optsFor(t, Process)
	o.MaxBytes = 2000
	o.SegmentBytes = 1 << 20
	j := open(t, o)
	r := j.Reader("sink")
	ctx := ctxT(t)
	n := 0
	for !j.Full() {
		n++
		appendN(t, j, n, 1)
	}
	done := make(chan error, 1)
	go func() { _, err := j.Append(ctx, byte((n+1)%7), payload(n+1), n+1, false); done <- err }()
	readN(t, r, 1, n)
	r.Ack(uint64(n))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := j.Stats(); st.Full || st.First != uint64(n+1) {
		t.Fatalf("after ack: %+v", st)
	}
}

func TestMaxAge(t *testing.T) {
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			clk := newClock()
			o := optsFor(t, m)
			o.Now = clk.Now
			o.MaxAge = time.Minute
			j := open(t, o)
			r := j.Reader("sink")
			ctx := ctxT(t)
			appendN(t, j, 1, 3)
			clk.Advance(30 * time.Second)
			appendN(t, j, 4, 1)
			if j.Full() {
				t.Fatal("full at 30 s")
			}
			clk.Advance(31 * time.Second)
			if !j.Full() {
				t.Fatal("not full with a record 61 s old unacknowledged")
			}
			if _, err := j.TryAppend(ctx, 0, nil, nil, false); !errors.Is(err, ErrFull) {
				t.Fatalf("TryAppend: %v", err)
			}
			if age := j.Stats().Readers[0].OldestAge; age != 61*time.Second {
				t.Fatalf("oldest age %v", age)
			}
			done := make(chan error, 1)
			go func() { _, err := j.Append(ctx, byte(5%7), payload(5), 5, false); done <- err }()
			readN(t, r, 1, 3)
			r.Ack(3) // the oldest needed is now 31 s old
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			readN(t, r, 4, 2)
		})
	}
}

func TestMaxAgeDropOldest(t *testing.T) {
	clk := newClock()
	o := optsFor(t, Process)
	o.Now = clk.Now
	o.MaxAge = time.Minute
	o.Overflow = DropOldest
	j := open(t, o)
	r := j.Reader("stalled")
	appendN(t, j, 1, 10)
	clk.Advance(2 * time.Minute)
	appendN(t, j, 11, 1)
	st := j.Stats()
	if st.Dropped != 10 || st.First != 11 || st.Readers[0].Skipped != 10 {
		t.Fatalf("stats %+v", st)
	}
	readN(t, r, 11, 1)
}

func TestDropOldest(t *testing.T) {
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			o := optsFor(t, m)
			o.MaxBytes = 8192
			o.SegmentBytes = 1024
			o.Overflow = DropOldest
			o.MessageKind = 1
			j := open(t, o)
			stalled, fast := j.Reader("stalled"), j.Reader("fast")
			// A canceled ctx: had Append to wait, it would fail.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			const n = 2000
			for i := 1; i <= n; i++ {
				add := j.Append
				if i%2 == 0 {
					add = j.TryAppend // never ErrFull with DropOldest
				}
				if seq, err := add(ctx, byte(i%7), payload(i), i, false); err != nil || seq != uint64(i) {
					t.Fatalf("append %d: seq %d, %v", i, seq, err)
				}
				e, err := fast.Next(ctxT(t))
				if err != nil {
					t.Fatal(err)
				}
				checkEntry(t, e, i)
				fast.Ack(e.Seq)
			}
			st := j.Stats()
			if st.Bytes > o.MaxBytes+frameSize(n) {
				t.Fatalf("bytes %d over %d", st.Bytes, o.MaxBytes)
			}
			if st.Dropped == 0 || st.First <= 1 {
				t.Fatalf("nothing dropped: %+v", st)
			}
			rs := st.Readers[1]
			if rs.Name != "stalled" || rs.Skipped != st.First-1 || st.Dropped != st.First-1 {
				t.Fatalf("stalled reader %+v, journal %+v", rs, st)
			}
			if st.Readers[0].Skipped != 0 {
				t.Fatalf("the fast reader skipped: %+v", st.Readers[0])
			}
			if want := messagesUpTo(st.First - 1); st.DroppedMessages != want {
				t.Fatalf("dropped %d records of which %d messages, want %d messages", st.Dropped, st.DroppedMessages, want)
			}
			e, err := stalled.Next(ctxT(t))
			if err != nil || e.Seq != st.First {
				t.Fatalf("stalled reader continues at %d (%v), want %d", e.Seq, err, st.First)
			}
			if m != Memory {
				eventually(t, "dropped files removed", func() bool {
					return len(segFiles(t, o.Dir)) == j.Stats().Segments
				})
			}
		})
	}
}

// A reader reading a segment from disk keeps going when DropOldest deletes
// that segment under it.
func TestDropWhileReadingFromDisk(t *testing.T) {
	o := optsFor(t, Process)
	o.MaxBytes = 16 << 10
	o.SegmentBytes = 2048
	o.CacheBytes = -1 // every read from disk
	o.Overflow = DropOldest
	j := open(t, o)
	r := j.Reader("slow")
	ctx := ctxT(t)
	appendN(t, j, 1, 50)
	readN(t, r, 1, 5) // the reader has the first segment open
	appendN(t, j, 51, 1000)
	var last uint64 = 5
	for {
		e, err := r.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if e.Seq <= last {
			t.Fatalf("seq %d after %d", e.Seq, last)
		}
		checkEntry(t, e, int(e.Seq))
		last = e.Seq
		if last == 1050 {
			break
		}
	}
	if r.Skipped() == 0 {
		t.Fatal("nothing skipped")
	}
}

func TestRewind(t *testing.T) {
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			o := optsFor(t, m)
			o.SegmentBytes = 1024
			o.CacheBytes = 2048
			j := open(t, o)
			r := j.Reader("sink")
			appendN(t, j, 1, 300)
			readN(t, r, 1, 120)
			r.Rewind(10)
			readN(t, r, 11, 5)
			r.Rewind(290)
			readN(t, r, 291, 10)
			r.Ack(200)
			r.Rewind(0) // not before the first record held
			e, err := r.Next(ctxT(t))
			if err != nil || e.Seq != j.Stats().First || e.Seq <= 1 {
				t.Fatalf("after Rewind(0): seq %d, %v; first %d", e.Seq, err, j.Stats().First)
			}
			if r.Acked() != 200 {
				t.Fatal("Rewind moved the ack")
			}
			r.Ack(100) // acks only move forward
			if r.Acked() != 200 {
				t.Fatal("ack moved back")
			}
		})
	}
}

// A reader far behind reads from the files, across segments, and then
// continues from the cache as it catches up with the writer.
func TestReaderDiskThenCache(t *testing.T) {
	o := optsFor(t, Process)
	o.SegmentBytes = 4096
	o.CacheBytes = 8192
	j := open(t, o)
	r := j.Reader("sink")
	appendN(t, j, 1, 1000)
	if st := j.Stats(); st.Segments < 10 {
		t.Fatalf("segments %d", st.Segments)
	}
	ents := readN(t, r, 1, 1000)
	if ents[0].Value != nil || ents[999].Value != 1000 {
		t.Fatalf("first from disk (value %v), last from cache (value %v)", ents[0].Value, ents[999].Value)
	}
	// Follow the writer.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1001; i <= 3000; i++ {
			if _, err := j.Write(byte(i%7), payload(i), i); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	readN(t, r, 1001, 2000)
	<-done
}

// The cache's budget counts the values it keeps (Options.ValueSize), not
// only the records' data: records whose values are large are cached
// fewer, and the others are read from the files.
func TestCacheCountsValues(t *testing.T) {
	o := optsFor(t, Process)
	o.CacheBytes = 64 << 10
	o.ValueSize = func(v any) int { return 1 << 10 } // a decoded record of 1 KiB
	j := open(t, o)
	r := j.Reader("sink")
	appendN(t, j, 1, 1000)
	cached := 0
	for _, e := range readN(t, r, 1, 1000) {
		if e.Value != nil {
			cached++
		}
	}
	// Each record costs its data, 1 KiB of value and 64 bytes: 64 KiB
	// hold about 55.
	if cached == 0 || cached > 64 {
		t.Fatalf("%d of 1000 records were read with their values from the cache; want no more than its 64 KiB hold", cached)
	}
}

// With ValueOnly, a record appended with a value is read from the cache
// as its value alone; one without a value, or read from the files, has its
// data.
func TestCacheValueOnly(t *testing.T) {
	o := optsFor(t, Process)
	o.ValueOnly = true
	j := open(t, o)
	r := j.Reader("sink")
	ctx := ctxT(t)
	if _, err := j.Append(ctx, 1, []byte("with a value"), "value", false); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Append(ctx, 1, []byte("without"), nil, false); err != nil {
		t.Fatal(err)
	}
	e, err := r.Next(ctx)
	if err != nil || e.Value != "value" || e.Data != nil {
		t.Fatalf("first: value %v, data %q, %v; want its value alone", e.Value, e.Data, err)
	}
	e, err = r.Next(ctx)
	if err != nil || e.Value != nil || string(e.Data) != "without" {
		t.Fatalf("second: value %v, data %q, %v; want its data", e.Value, e.Data, err)
	}
	// From the files, both have their data.
	o2 := optsFor(t, Process)
	o2.Dir, o2.ValueOnly, o2.CacheBytes = o.Dir, true, -1
	j.Close()
	j2 := open(t, o2)
	r2 := j2.Reader("sink2")
	for _, want := range []string{"with a value", "without"} {
		e, err := r2.Next(ctx)
		if err != nil || string(e.Data) != want {
			t.Fatalf("from the files: data %q, %v; want %q", e.Data, err, want)
		}
	}
}

func TestNextWaitsAndClose(t *testing.T) {
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			j := open(t, optsFor(t, m))
			r := j.Reader("sink")
			ctx, cancel := context.WithCancel(ctxT(t))
			cancel()
			if _, err := r.Next(ctx); !errors.Is(err, context.Canceled) {
				t.Fatalf("Next with canceled ctx: %v", err)
			}
			type result struct {
				e   Entry
				err error
			}
			got := make(chan result, 1)
			next := func() {
				e, err := r.Next(ctxT(t))
				got <- result{e, err}
			}
			go next()
			appendN(t, j, 1, 1)
			res := <-got
			if res.err != nil {
				t.Fatal(res.err)
			}
			checkEntry(t, res.e, 1)
			go next()
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			if res := <-got; !errors.Is(res.err, ErrClosed) {
				t.Fatalf("Next after Close: %v", res.err)
			}
		})
	}
}

func TestCloseWakesBlockedAppend(t *testing.T) {
	o := optsFor(t, Process)
	o.MaxBytes = 100
	j := open(t, o)
	j.Reader("sink")
	for i := 0; i < 5; i++ {
		j.Write(0, make([]byte, 100), nil)
	}
	done := make(chan error, 1)
	go func() { _, err := j.Append(ctxT(t), 0, nil, nil, false); done <- err }()
	j.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("blocked Append after Close: %v", err)
	}
}

// countingSync counts fsyncs.
type countingSync struct{ n atomic.Int64 }

func (c *countingSync) sync(f *os.File) error { c.n.Add(1); return f.Sync() }

func TestGroupCommit(t *testing.T) {
	var fsyncs countingSync
	o := optsFor(t, Fsync)
	o.syncFile = fsyncs.sync
	o.SegmentBytes = 64 << 10
	j := open(t, o)
	base := fsyncs.n.Load()
	const writers, each = 64, 50
	ctx := ctxT(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var seqs []uint64
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				seq, err := j.Append(ctx, 1, make([]byte, 256), nil, true)
				if err != nil {
					t.Error(err)
					return
				}
				if j.Durable() < seq {
					t.Errorf("Append returned seq %d before it was durable (%d)", seq, j.Durable())
				}
				mu.Lock()
				seqs = append(seqs, seq)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(seqs)
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("seqs not gapless at %d: %d", i, s)
		}
	}
	if d := j.Durable(); d != writers*each {
		t.Fatalf("durable %d, want %d", d, writers*each)
	}
	n := fsyncs.n.Load() - base
	t.Logf("%d appends, %d fsyncs (%.1f appends per fsync)", writers*each, n, float64(writers*each)/float64(n))
	if n > writers*each/4 {
		t.Fatalf("%d fsyncs for %d appends: no group commit", n, writers*each)
	}
}

// Many appenders, several readers acking from other goroutines, and a Close
// in the middle of it all.
func TestConcurrent(t *testing.T) {
	for _, m := range modes {
		for _, ov := range []Overflow{Block, DropOldest} {
			t.Run(m.String()+"/"+ov.String(), func(t *testing.T) {
				o := optsFor(t, m)
				o.MaxBytes = 64 << 10
				o.SegmentBytes = 4096
				o.CacheBytes = 16 << 10
				o.Overflow = ov
				j := open(t, o)
				ctx := ctxT(t)
				const writers, each = 8, 400
				var readers []*Reader
				for _, name := range []string{"a", "b", "c"} {
					readers = append(readers, j.Reader(name))
				}
				var wg sync.WaitGroup
				for w := 0; w < writers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := 0; i < each; i++ {
							var err error
							if i%5 == 4 {
								_, err = j.Write(2, []byte("derived"), nil)
							} else {
								_, err = j.Append(ctx, 1, payload(i), i, i%3 == 0)
							}
							if err != nil {
								t.Error(err)
								return
							}
						}
					}()
				}
				var rwg sync.WaitGroup
				var got [3]atomic.Uint64
				for k, r := range readers {
					acks := make(chan uint64, 64)
					rwg.Add(2)
					go func() { // acks from another goroutine
						defer rwg.Done()
						for s := range acks {
							r.Ack(s)
						}
					}()
					go func() {
						defer rwg.Done()
						defer close(acks)
						var last, rewound, acked uint64
						for {
							e, err := r.Next(ctx)
							if err != nil {
								if !errors.Is(err, ErrClosed) {
									t.Error(err)
								}
								return
							}
							if e.Seq <= last || (ov == Block && e.Seq != last+1) {
								t.Errorf("reader %s: seq %d after %d", r.name, e.Seq, last)
								return
							}
							last = e.Seq
							got[k].Store(last)
							if e.Seq%16 == 0 {
								acks <- e.Seq
								acked = e.Seq
							}
							if k == 2 && e.Seq%100 == 0 && e.Seq > rewound {
								// Read again what it has not acknowledged.
								rewound = e.Seq
								r.Rewind(acked)
								last = acked
							}
						}
					}()
				}
				wg.Wait()
				total := uint64(writers * each)
				eventually(t, "readers at the end", func() bool {
					return got[0].Load() == total && got[1].Load() == total && got[2].Load() == total
				})
				for _, r := range readers {
					r.Ack(total)
				}
				st := j.Stats()
				if ov == Block && st.Dropped != 0 {
					t.Fatalf("Block dropped: %+v", st)
				}
				if err := j.Close(); err != nil {
					t.Fatal(err)
				}
				rwg.Wait()
			})
		}
	}
}

// Close at any time: appenders, readers and ackers race with it.
func TestCloseUnderLoad(t *testing.T) {
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			o := optsFor(t, m)
			o.SegmentBytes = 2048
			o.MaxBytes = 32 << 10
			j := open(t, o)
			r := j.Reader("a")
			ctx := ctxT(t)
			var wg sync.WaitGroup
			var appended atomic.Int64
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						if _, err := j.Append(ctx, 1, payload(w), nil, true); err != nil {
							if !errors.Is(err, ErrClosed) {
								t.Error(err)
							}
							return
						}
						appended.Add(1)
					}
				}()
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					e, err := r.Next(ctx)
					if err != nil {
						if !errors.Is(err, ErrClosed) {
							t.Error(err)
						}
						return
					}
					r.Ack(e.Seq)
				}
			}()
			eventually(t, "some appends", func() bool { return appended.Load() > 200 })
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			if m == Memory {
				return
			}
			j2 := open(t, o)
			if st := j2.Stats(); st.Recovered.CutBytes != 0 || st.Last < uint64(appended.Load()) {
				t.Fatalf("after reopen: %+v (appended %d)", st, appended.Load())
			}
		})
	}
}

func TestOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"no dir", Options{Mode: Process}},
		{"bad mode", Options{Mode: 7}},
		{"bad overflow", Options{Overflow: 3}},
		{"negative bound", Options{MaxBytes: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Open(tt.opts); err == nil {
				t.Fatal("Open accepted bad options")
			}
		})
	}
}

func TestTooLarge(t *testing.T) {
	j := open(t, Options{})
	if _, err := j.Write(0, make([]byte, MaxRecordBytes+1), nil); err == nil {
		t.Fatal("accepted a record over the limit")
	}
}

// MaxAge for records only on disk: their time comes from the sparse index.
func TestMaxAgeFromDisk(t *testing.T) {
	clk := newClock()
	o := optsFor(t, Process)
	o.Now = clk.Now
	o.MaxAge = time.Minute
	o.CacheBytes = -1
	j := open(t, o)
	r := j.Reader("sink")
	appendN(t, j, 1, 5)
	clk.Advance(2 * time.Minute)
	if !j.Full() {
		t.Fatal("not full")
	}
	if _, err := j.Write(6, payload(6), nil); err != nil {
		t.Fatal(err)
	}
	r.Ack(5)
	if j.Full() {
		t.Fatalf("full after the old records were acknowledged: %+v", j.Stats())
	}
	if age := j.Stats().Readers[0].OldestAge; age != 0 {
		t.Fatalf("oldest age %v", age)
	}
}

// After a failed fsync nothing more is acknowledged.
func TestFsyncFailure(t *testing.T) {
	o := optsFor(t, Fsync)
	var fail atomic.Bool
	o.syncFile = func(f *os.File) error {
		if fail.Load() {
			return errors.New("EIO")
		}
		return f.Sync()
	}
	j := open(t, o)
	ctx := ctxT(t)
	if _, err := j.Append(ctx, 1, []byte("ok"), nil, true); err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	if seq, err := j.Append(ctx, 1, []byte("lost?"), nil, true); err == nil || seq != 2 {
		t.Fatalf("Append with failing fsync: seq %d, %v", seq, err)
	}
	if _, err := j.Append(ctx, 1, []byte("after"), nil, false); err == nil || !strings.Contains(err.Error(), "EIO") {
		t.Fatalf("Append after a failed fsync: %v", err)
	}
	if d := j.Durable(); d != 1 {
		t.Fatalf("durable %d", d)
	}
}

// Records larger than the read buffer and the cache's data chunks.
func TestLargeRecords(t *testing.T) {
	for _, cacheBytes := range []int64{0, -1} {
		o := optsFor(t, Process)
		o.CacheBytes = cacheBytes
		o.SegmentBytes = 1 << 20
		j := open(t, o)
		r := j.Reader("r")
		ctx := ctxT(t)
		var want [][]byte
		for i := 0; i < 30; i++ {
			b := []byte(strings.Repeat(string(rune('a'+i%26)), 1000+i*7000))
			want = append(want, b)
			if _, err := j.Append(ctx, 0, b, nil, false); err != nil {
				t.Fatal(err)
			}
		}
		for i, w := range want {
			e, err := r.Next(ctx)
			if err != nil || string(e.Data) != string(w) {
				t.Fatalf("record %d: %d bytes, %v; want %d bytes", i+1, len(e.Data), err, len(w))
			}
		}
	}
}

// TestConcurrentRotation appends from many goroutines into small segments
// with a reader keeping up: rotations race (a flush can wait for another,
// letting go of the lock), and none may try to create a segment another
// already made.
func TestConcurrentRotation(t *testing.T) {
	for _, m := range []Mode{Process, Fsync} {
		t.Run(m.String(), func(t *testing.T) {
			var logs bytes.Buffer
			var mu sync.Mutex
			o := optsFor(t, m)
			o.SegmentBytes = 1024
			o.Logger = slog.New(slog.NewTextHandler(&lockedWriter{&mu, &logs}, nil))
			j := open(t, o)
			r := j.Reader("sink")
			ctx := ctxT(t)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for n := 0; n < 8*300; {
					e, err := r.Next(ctx)
					if err != nil {
						return
					}
					r.Ack(e.Seq)
					n++
				}
			}()
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for i := range 300 {
						if _, err := j.Append(ctx, 1, payload(g*1000+i), nil, i%3 == 0); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			<-done
			mu.Lock()
			defer mu.Unlock()
			if strings.Contains(logs.String(), "cannot start a new segment") {
				t.Fatalf("a rotation raced another:\n%s", logs.String())
			}
		})
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// messagesUpTo returns how many of records 1..seq appendN makes with kind 1
// (i%7 == 1): the messages, for tests that set MessageKind 1.
func messagesUpTo(seq uint64) uint64 {
	var n uint64
	for i := uint64(1); i <= seq; i++ {
		if i%7 == 1 {
			n++
		}
	}
	return n
}

// Records found at Open are told apart too: drop_oldest counts the
// messages among them.
func TestDroppedMessagesAfterReopen(t *testing.T) {
	dir := t.TempDir()
	o := Options{Dir: dir, Mode: Process, SegmentBytes: 1024, MessageKind: 1}
	writeJournal(t, o, 300, "stalled")
	o.MaxBytes, o.Overflow = 8192, DropOldest
	j := open(t, o)
	appendN(t, j, 301, 10)
	st := j.Stats()
	if st.Dropped != st.First-1 || st.DroppedMessages != messagesUpTo(st.First-1) || st.DroppedMessages == 0 {
		t.Fatalf("dropped %d records (first held %d), %d messages; want %d", st.Dropped, st.First, st.DroppedMessages, messagesUpTo(st.First-1))
	}
}
