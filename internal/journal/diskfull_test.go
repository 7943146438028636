package journal

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/sluicehq/sluice/internal/testsvc"
)

// On a full disk the journal refuses records, at once, saying why; it
// takes them again by itself once a write succeeds; and every record it
// acknowledged is there, then and after a restart. (It used to refuse for
// good once a write had failed.)
func TestDiskFullAndBack(t *testing.T) {
	for _, tt := range []struct {
		name string
		mode Mode
		key  []byte
	}{
		{"process", Process, nil},
		{"fsync", Fsync, nil},
		{"process encrypted", Process, testKey(7)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := testsvc.Tmpfs(t, 512<<10)
			o := Options{Dir: dir, Mode: tt.mode, SegmentBytes: 64 << 10, Key: tt.key}
			j := open(t, o)
			r := j.Reader("r")
			ctx := ctxT(t)
			acked := map[uint64]bool{}
			appendAcked := func(i int) error {
				seq, err := j.Append(ctx, byte(i%7), payload(i), i, true)
				if err == nil {
					acked[seq] = true
				}
				return err
			}
			for i := 1; i <= 10; i++ {
				if err := appendAcked(i); err != nil {
					t.Fatalf("Append %d: %v", i, err)
				}
			}

			free := testsvc.Fill(t, dir)
			i := 11
			var err error
			for ; i < 100000; i++ {
				if err = appendAcked(i); err != nil {
					break
				}
			}
			if !errors.Is(err, ErrWriteFailing) || !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Append on a full disk: %v; want ErrWriteFailing, ENOSPC", err)
			}
			st := j.Stats()
			if !strings.Contains(st.WriteError, "no space left") || st.WriteErrorSince.IsZero() {
				t.Fatalf("Stats on a full disk: WriteError %q since %v", st.WriteError, st.WriteErrorSince)
			}
			// Refused at once, not after a wait, whichever way one asks.
			if _, err := j.TryAppend(ctx, 1, []byte("try"), nil, true); !errors.Is(err, ErrWriteFailing) {
				t.Fatalf("TryAppend on a full disk: %v", err)
			}
			if _, err := j.Append(ctx, 1, []byte("qos0"), nil, false); !errors.Is(err, ErrWriteFailing) {
				t.Fatalf("Append without waiting on a full disk: %v", err)
			}
			// What the rules derive from records already in the journal is
			// still taken: it waits in memory for the disk.
			derived, err := j.Write(9, []byte("derived"), nil)
			if err != nil {
				t.Fatalf("Write on a full disk: %v", err)
			}

			free()
			eventually(t, "writing again", func() bool { return j.Stats().WriteError == "" })
			for k := 0; k < 10; k++ {
				i++
				if err := appendAcked(i); err != nil {
					t.Fatalf("Append once space is back: %v", err)
				}
			}
			if err := j.WaitDurable(ctx, derived); err != nil {
				t.Fatalf("the derived record: %v", err)
			}

			// Every acknowledged record is read back, and the derived one.
			want := map[uint64]bool{derived: true}
			for seq := range acked {
				want[seq] = true
			}
			last := j.Stats().Last
			for seq := uint64(1); seq <= last; seq++ {
				e, err := r.Next(ctx)
				if err != nil {
					t.Fatalf("Next: %v", err)
				}
				delete(want, e.Seq)
			}
			if len(want) > 0 {
				t.Fatalf("%d acknowledged records not read back", len(want))
			}
			if err := j.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			j = open(t, o)
			r = j.Reader("again")
			for seq := uint64(1); seq <= last; seq++ {
				e, err := r.Next(ctx)
				if err != nil || e.Seq != seq {
					t.Fatalf("after reopening: Next: seq %d, %v; want %d", e.Seq, err, seq)
				}
			}
		})
	}
}

// A journal that filled the disk itself writes again once its readers let
// it reclaim segments: nothing else has to change.
func TestDiskFilledByTheJournal(t *testing.T) {
	dir := testsvc.Tmpfs(t, 256<<10)
	j := open(t, Options{Dir: dir, Mode: Process, SegmentBytes: 16 << 10})
	r := j.Reader("r")
	ctx := ctxT(t)
	var last uint64
	for i := 1; ; i++ {
		seq, err := j.Append(ctx, 1, make([]byte, 1000), nil, true)
		if errors.Is(err, ErrWriteFailing) {
			break
		}
		if err != nil || i > 10000 {
			t.Fatalf("Append %d: %v", i, err)
		}
		last = seq
	}
	for seq := uint64(1); seq <= last; seq++ {
		if _, err := r.Next(ctx); err != nil {
			t.Fatal(err)
		}
	}
	r.Ack(last)
	eventually(t, "writing again", func() bool { return j.Stats().WriteError == "" })
	if _, err := j.Append(ctx, 1, []byte("again"), nil, true); err != nil {
		t.Fatalf("Append after reclaiming: %v", err)
	}
}
