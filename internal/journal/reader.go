package journal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	rseq uint64   // seq of the last frame fr read (the one before fr.off)

	// guarded by j.mu
	next    uint64 // seq Next returns next
	acked   uint64
	skipped uint64
	removed bool
	peek    bool // made by Peek: no cursor
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

// Peek returns a reader that is no cursor: it starts at the first record
// held, holds nothing back from being reclaimed, is not saved, and its Ack
// does nothing. It is for a look at what the journal holds (a replay) while
// the cursors go on; records reclaimed before it reaches them are skipped.
// Close it when done.
func (j *Journal) Peek() *Reader {
	j.mu.Lock()
	defer j.mu.Unlock()
	return &Reader{j: j, acked: j.first - 1, next: j.first, peek: true}
}

// Close closes the file a reader made by Peek reads (a cursor's file is
// closed with the journal).
func (r *Reader) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closeFile()
}

// Name returns the reader's name.
func (r *Reader) Name() string { return r.name }

// Next returns the next record, waiting for one to be appended if the reader is at the tail. It returns
// ctx.Err() if ctx ends and ErrClosed once the journal is closed. Records the reader skipped because
// DropOldest deleted them are counted (Skipped) and Next continues with the first record held.
// An I/O error reading a segment file is returned (the next call tries the same record again). A
// record lost to damage (found by Open, or since) is skipped: Next returns the next one held, and
// damage found since Open is counted (Stats.Damaged) and logged once. A record of an encrypted segment
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
		// Position the file reader unless it is just past the record
		// before seq.
		var at indexEntry
		seek := s != r.rseg || r.rseq+1 != seq
		if seek {
			at = s.locate(seq)
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
		limit, limitLast := s.written, s.last
		if s == j.active {
			limitLast = min(s.last, j.wlast)
		}
		// Advance now; a Rewind or a drop while the file is read wins.
		r.next = seq + 1
		j.mu.Unlock()

		ent, lost, err := r.readDisk(s, seek, at, limit, limitLast, seq)
		if err == nil && len(lost) == 0 && ent.Seq == seq {
			return ent, nil
		}
		if err != nil {
			r.closeFile()
		}
		j.mu.Lock()
		for _, d := range lost {
			j.damageFound(s, d, "reader "+r.name)
		}
		if err == nil {
			// The records before it were lost to damage.
			if r.next == seq+1 {
				r.next = ent.Seq + 1
			}
			j.mu.Unlock()
			return ent, nil
		}
		if r.next != seq+1 {
			// Rewound or dropped while reading: start over from there.
			j.mu.Unlock()
			continue
		}
		switch {
		case s.removed:
			r.next = seq // reclaimed or dropped meanwhile: start over
		case errors.Is(err, errShort):
			// No good frame up to the end of what is written: the rest of
			// the segment was damaged since Open (counted above).
			r.next = limitLast + 1
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
	return errors.Is(err, errShort) || errors.Is(err, errSync) || errors.Is(err, errLength) ||
		errors.Is(err, errChecksum) || errors.Is(err, errSeq)
}

// readDisk reads record seq from segment s, or the first record after it
// if seq was lost to damage, reading no further than limit, where the
// record limitLast ends. It returns the records it found lost on its way.
// errShort means no good frame up to limit: the records from the last one
// read to limitLast were lost. Called with r.mu held.
func (r *Reader) readDisk(s *segment, seek bool, at indexEntry, limit int64, limitLast, seq uint64) (Entry, []damage, error) {
	if s != r.rseg {
		r.closeFile()
		f, err := os.Open(s.path)
		if err != nil {
			return Entry{}, nil, err
		}
		r.fr.f, r.rseg = f, s
	}
	if seek {
		r.fr.reset(r.fr.f, s.fm, at.off, limit)
		r.rseq = at.seq - 1
	}
	r.fr.limit = limit
	var lost []damage
	var fr frame
	for {
		off := r.fr.off
		err := r.fr.nextAfter(&fr, r.rseq, seq)
		if errors.Is(err, errShort) {
			if r.rseq < limitLast {
				lost = append(lost, damage{lost: seqRange{r.rseq + 1, limitLast}, off: off, reason: r.fr.damage})
			}
			return Entry{}, lost, errShort
		}
		if err != nil {
			return Entry{}, lost, err
		}
		if fr.seq > r.rseq+1 {
			lost = append(lost, damage{lost: seqRange{r.rseq + 1, fr.seq - 1}, off: off, reason: r.fr.damage})
		}
		r.rseq = fr.seq
		if fr.seq >= seq {
			return Entry{Seq: fr.seq, Kind: fr.kind, Data: fr.data, Time: time.Unix(0, fr.time)}, lost, nil
		}
	}
}

// damageFound reports records of s a reader found lost to damage, those
// not known yet (found at Open, or by another reader). Called with j.mu
// held.
func (j *Journal) damageFound(s *segment, d damage, by string) {
	fresh := []seqRange{d.lost}
	for _, known := range s.lost {
		var rest []seqRange
		for _, f := range fresh {
			if known.to < f.from || known.from > f.to {
				rest = append(rest, f)
				continue
			}
			if f.from < known.from {
				rest = append(rest, seqRange{f.from, known.from - 1})
			}
			if f.to > known.to {
				rest = append(rest, seqRange{known.to + 1, f.to})
			}
		}
		fresh = rest
	}
	for _, f := range fresh {
		s.lost = append(s.lost, f)
		j.reportDamage(filepath.Base(s.path), f, d.off, d.reason, by)
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
	if r.removed || r.peek || seq <= r.acked {
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
