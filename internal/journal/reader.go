package journal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Reader is a named cursor over the journal. Next is meant for one
// goroutine (concurrent calls are serialized); Ack, Acked, Skipped and
// Rewind may be called from any goroutine.
type Reader struct {
	j    *Journal
	name string

	mu   sync.Mutex // held by Next; guards the fields below
	fr   frameReader
	rseg *segment // segment fr reads
	rseq uint64   // seq of the frame at fr.off

	// guarded by j.mu
	next    uint64 // seq Next returns next
	acked   uint64
	skipped uint64
	removed bool
}

// Reader returns the reader with this name (a cursor), creating it. A named reader persists its
// cursor across restarts: it resumes after the last seq it acknowledged (or at the first record still
// held, if that is later; a new reader starts at the first record held). Readers must be created
// before the first Append after Open if they must not miss records (segments are reclaimed only
// for known readers; with no reader at all, nothing is reclaimed).
func (j *Journal) Reader(name string) *Reader {
	j.mu.Lock()
	defer j.mu.Unlock()
	if r, ok := j.readers[name]; ok {
		return r
	}
	r := &Reader{j: j, name: name, acked: j.first - 1, next: j.first}
	j.readers[name] = r
	j.updateMinAck()
	j.cursorsDirty = true
	return r
}

// RemoveReader forgets a reader (its cursor no longer holds segments). Its
// Next returns ErrClosed.
func (j *Journal) RemoveReader(name string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	r, ok := j.readers[name]
	if !ok {
		return
	}
	delete(j.readers, name)
	r.removed = true
	j.cursorsDirty = true
	j.updateMinAck()
	j.reclaim()
	wake(&j.spaceCh)
	wake(&j.appendCh) // its Next, if waiting, returns
}

// Name returns the reader's name.
func (r *Reader) Name() string { return r.name }

// Next returns the next record, waiting for one to be appended if the reader is at the tail. It returns
// ctx.Err() if ctx ends and ErrClosed once the journal is closed. Records the reader skipped because
// DropOldest deleted them are counted (Skipped) and Next continues with the first record held.
// An I/O error reading a segment file is returned (the next call tries the same record again); a
// segment damaged since Open is logged and the rest of it skipped. A record of an encrypted segment
// that fails authentication (ErrTampered) is returned like an I/O error, every time Next reaches it:
// it is neither delivered nor skipped.
func (r *Reader) Next(ctx context.Context) (Entry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	j := r.j
	for {
		j.mu.Lock()
		if j.closed || r.removed {
			j.mu.Unlock()
			r.closeFile()
			return Entry{}, ErrClosed
		}
		seq := max(r.next, j.first)
		if seq > j.last {
			if j.appendCh == nil {
				j.appendCh = make(chan struct{})
			}
			ch := j.appendCh
			j.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return Entry{}, ctx.Err()
			}
		}
		if e, ok := j.cache.get(seq); ok {
			r.next = seq + 1
			ent := Entry{Seq: seq, Kind: e.kind, Data: e.data, Value: e.value, Time: time.Unix(0, e.time)}
			stale := r.rseg != nil && (r.rseg.removed || r.rseg.last < seq)
			j.mu.Unlock()
			if stale {
				r.closeFile()
			}
			return ent, nil
		}
		if !j.files {
			// Memory mode holds every record in the cache; a seq that is
			// not there was dropped.
			r.next = max(seq+1, j.cache.first)
			j.mu.Unlock()
			continue
		}
		s := r.rseg
		if s == nil || s.removed || seq < s.first || seq > s.last {
			var next uint64
			if s, next = j.segmentFor(seq); s == nil {
				r.next = next // a gap left by a corrupt segment
				j.mu.Unlock()
				continue
			}
		}
		// Position the file reader unless it is already at seq.
		var at indexEntry
		seek := s != r.rseg || r.rseq != seq
		if seek {
			at, _ = s.locate(seq)
		}
		if s == j.active && seq > j.wlast {
			// The record still waits in the write-behind: write it out.
			if err := j.flush(); err != nil {
				if j.err != nil {
					j.mu.Unlock()
					return Entry{}, err
				}
				// Writes fail: wait until the record is written.
				if j.durableCh == nil {
					j.durableCh = make(chan struct{})
				}
				ch := j.durableCh
				j.mu.Unlock()
				select {
				case <-ch:
					continue
				case <-ctx.Done():
					return Entry{}, ctx.Err()
				}
			}
		}
		limit := s.written
		// Advance now; a Rewind or a drop while the file is read wins.
		r.next = seq + 1
		j.mu.Unlock()

		ent, err := r.readDisk(s, seek, at, limit, seq)
		if err == nil {
			return ent, nil
		}
		r.closeFile()
		j.mu.Lock()
		if r.next != seq+1 {
			// Rewound or dropped while reading: start over from there.
			j.mu.Unlock()
			continue
		}
		switch {
		case s.removed:
			r.next = seq // reclaimed or dropped meanwhile: start over
		case isCorrupt(err):
			// The file lost or damaged records recovery had checked.
			// Nothing can bring them back: skip the rest of the segment.
			j.log.Error("journal: segment damaged since Open; skipping the rest of it",
				"reader", r.name, "segment", s.path, "seq", seq, "records_lost", s.last-seq+1, "error", err)
			r.next = s.last + 1
		default:
			// An I/O error (too many open files, EIO), or a record that
			// fails authentication: the next Next tries again.
			r.next = seq
			j.mu.Unlock()
			return Entry{}, fmt.Errorf("journal: reader %q: read %s: %w", r.name, s.path, err)
		}
		j.mu.Unlock()
	}
}

// isCorrupt reports whether err is a frame that does not check out (as
// opposed to an I/O error).
func isCorrupt(err error) bool {
	return errors.Is(err, errShort) || errors.Is(err, errLength) ||
		errors.Is(err, errChecksum) || errors.Is(err, errSeq)
}

// readDisk reads record seq from segment s. Called with r.mu held.
func (r *Reader) readDisk(s *segment, seek bool, at indexEntry, limit int64, seq uint64) (Entry, error) {
	if s != r.rseg {
		r.closeFile()
		f, err := os.Open(s.path)
		if err != nil {
			return Entry{}, err
		}
		r.fr.f, r.rseg = f, s
	}
	if seek {
		r.fr.reset(r.fr.f, at.off, limit)
		r.rseq = at.seq
	}
	r.fr.limit = limit
	for {
		fr, err := r.fr.next()
		if err == nil && fr.seq != r.rseq {
			err = errSeq
		}
		if err != nil {
			return Entry{}, err
		}
		r.rseq++
		if fr.seq == seq {
			if s.sealer != nil {
				if err := openFrame(s.sealer, &fr); err != nil {
					return Entry{}, fmt.Errorf("record %d at offset %d: %w", seq, fr.off, err)
				}
			}
			return Entry{Seq: seq, Kind: fr.kind, Data: fr.data, Time: time.Unix(0, fr.time)}, nil
		}
		if fr.seq > seq {
			return Entry{}, errSeq
		}
	}
}

// closeFile closes the segment file the reader reads. Called with r.mu held.
func (r *Reader) closeFile() {
	if r.fr.f != nil {
		r.fr.f.Close()
		r.fr.f = nil
	}
	r.rseg = nil
}

// Ack records that everything up to and including seq is done for this reader. Acks only move
// forward. Space before the slowest reader's ack is reclaimed (whole segments only).
func (r *Reader) Ack(seq uint64) {
	j := r.j
	j.mu.Lock()
	defer j.mu.Unlock()
	seq = min(seq, j.last)
	if r.removed || seq <= r.acked {
		return
	}
	wasMin := r.acked == j.minAck
	r.acked = seq
	j.cursorsDirty = true
	if !wasMin {
		return
	}
	old := j.minAck
	j.updateMinAck()
	if j.minAck != old {
		j.reclaim()
		// A blocked Append looks again: the oldest record needed is younger
		// now, or the segment being written can be closed and reclaimed.
		wake(&j.spaceCh)
	}
}

// Acked returns the reader's acknowledged seq.
func (r *Reader) Acked() uint64 {
	r.j.mu.Lock()
	defer r.j.mu.Unlock()
	return r.acked
}

// Skipped returns how many records DropOldest deleted before this reader had acknowledged them.
func (r *Reader) Skipped() uint64 {
	r.j.mu.Lock()
	defer r.j.mu.Unlock()
	return r.skipped
}

// Rewind makes the next Next return the record after seq (used after a failed batch to re-read it);
// it never goes before the first record held.
func (r *Reader) Rewind(seq uint64) {
	j := r.j
	j.mu.Lock()
	defer j.mu.Unlock()
	if seq >= j.last {
		r.next = j.last + 1
		return
	}
	r.next = max(seq+1, j.first)
}
