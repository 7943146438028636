package journal

import (
	"testing"
	"time"
)

// TestRetain: segments every reader has passed stay for Retain (a replay
// reads them), then go; Stats tells them from the bytes readers need.
func TestRetain(t *testing.T) {
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			clk := newClock()
			o := optsFor(t, m)
			o.SegmentBytes = 1024
			o.Retain = time.Hour
			o.Now = clk.Now
			j := open(t, o)
			r := j.Reader("sink")
			appendN(t, j, 1, 200)
			readN(t, r, 1, 200)
			r.Ack(200)
			st := j.Stats()
			if st.First != 1 || st.Segments < 3 {
				t.Fatalf("reclaimed within the retention: %+v", st)
			}
			if st.Retained == 0 || st.Retained >= st.Bytes {
				t.Fatalf("retained %d of %d bytes: want the segments every reader passed", st.Retained, st.Bytes)
			}
			// A look back sees every record.
			p := j.Peek()
			defer p.Close()
			readN(t, p, 1, 200)

			clk.Advance(time.Hour + time.Second)
			appendN(t, j, 201, 1)
			r.Ack(201)
			eventually(t, "the aged segments reclaimed", func() bool {
				st := j.Stats()
				return st.Segments == 1 && st.Retained == 0
			})
		})
	}
}

// TestRetainWithinMaxBytes: retention never makes a publisher wait, nor the
// journal hold more than MaxBytes: retained segments give way.
func TestRetainWithinMaxBytes(t *testing.T) {
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			o := optsFor(t, m)
			o.MaxBytes = 8192
			o.SegmentBytes = 1024
			o.Retain = 24 * time.Hour
			j := open(t, o)
			r := j.Reader("sink")
			ctx := ctxT(t)
			for i := 1; i <= 2000; i++ {
				if _, err := j.TryAppend(ctx, byte(i%7), payload(i), i, false); err != nil {
					t.Fatalf("append %d: %v (%+v)", i, err, j.Stats())
				}
				if i%10 == 0 {
					r.Ack(uint64(i))
				}
				if st := j.Stats(); st.Bytes > o.MaxBytes+1024 {
					t.Fatalf("append %d: %d bytes held, bound %d", i, st.Bytes, o.MaxBytes)
				}
			}
			st := j.Stats()
			if st.Retained == 0 || st.Full || st.First == 1 {
				t.Fatalf("want old segments dropped and younger ones retained: %+v", st)
			}
		})
	}
}

// TestPeekHoldsNothing: a Peek reader is no cursor: segments go under it
// (it skips what went), it is not saved, and its Ack does nothing.
func TestPeekHoldsNothing(t *testing.T) {
	o := optsFor(t, Process)
	o.SegmentBytes = 1024
	j := open(t, o)
	r := j.Reader("sink")
	appendN(t, j, 1, 200)
	p := j.Peek()
	defer p.Close()
	readN(t, p, 1, 10)
	p.Ack(200)
	if st := j.Stats(); st.First != 1 || len(st.Readers) != 1 {
		t.Fatalf("a Peek reader counts as a cursor: %+v", st)
	}
	r.Ack(200)
	e, err := p.Next(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if first := j.Stats().First; e.Seq < first {
		t.Fatalf("Peek read %d after the records before %d were reclaimed", e.Seq, first)
	}
	checkEntry(t, e, int(e.Seq))
	j.Close()
	j2 := open(t, Options{Mode: Process, Dir: o.Dir, SegmentBytes: 1024})
	if st := j2.Stats(); len(st.Readers) != 1 || st.Readers[0].Name != "sink" {
		t.Fatalf("saved cursors: %+v", st.Readers)
	}
}
