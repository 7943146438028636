package journal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/internal/ratelog"
)

// Mode is how durable a record is when Append returns.
type Mode int

const (
	Memory  Mode = iota // records live in memory only: a restart loses them (no files at all)
	Process             // written to the OS (write(2)) before Append returns: survives a crash of the process, not a power loss
	Fsync               // fsync'd before Append returns; concurrent appends share one fsync (group commit)
)

func (m Mode) String() string {
	switch m {
	case Memory:
		return "memory"
	case Process:
		return "process"
	case Fsync:
		return "fsync"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Overflow is what Append does when the journal is over its bounds.
type Overflow int

const (
	Block      Overflow = iota // Append waits until readers free space, or its ctx ends
	DropOldest                 // the oldest segments are deleted to make room; readers behind them skip ahead, and the records they skipped are counted
)

func (o Overflow) String() string {
	switch o {
	case Block:
		return "block"
	case DropOldest:
		return "drop_oldest"
	}
	return fmt.Sprintf("Overflow(%d)", int(o))
}

// Options configure a journal. The zero value of every field but Dir is a
// usable default.
type Options struct {
	Dir          string           // required unless Mode is Memory; created if missing
	Mode         Mode             // default Memory
	SegmentBytes int64            // target segment size; default 8 MiB, or MaxBytes/8 if smaller (a segment is closed once it exceeds it)
	MaxBytes     int64            // bound on the bytes held (all segments); 0: none
	MaxAge       time.Duration    // bound on the age of the oldest record some reader still needs; 0: none
	Retain       time.Duration    // keep segments every reader has passed until their newest record is this old (a look back: a replay), within MaxBytes: they go first when room is needed; 0: none
	Overflow     Overflow         // default Block
	CacheBytes   int64            // recent records kept in memory, with their values, for readers at the tail; default 32 MiB, counting their data, their values (ValueSize) and 64 bytes each; negative: none. (Memory mode keeps everything in memory regardless.)
	Logger       *slog.Logger     // may be nil
	Now          func() time.Time // clock for record times and MaxAge; default time.Now (tests inject a fake)
	// Key, when set, encrypts the segments at rest: a KeySize-byte (AES-256)
	// key, such as internal/keyfile loads. Each record's data is sealed with
	// AES-256-GCM; see "Encryption" in the package documentation. Open fails
	// with ErrWrongKey if the segments on disk were written with another
	// key, or without one (and when the key is missing for encrypted ones).
	// Memory mode, which writes nothing, ignores it.
	Key []byte
	// MessageKind is the kind of the records that are messages (as opposed
	// to records derived from them): DropOldest counts those it deletes
	// apart (Stats.DroppedMessages) as well as all records. 0: none.
	MessageKind byte
	// ValueSize, when set, says how many bytes a value given to Append
	// (or Write) holds beyond the record's data: the cache counts them
	// against CacheBytes. Nil: values count nothing (they must be small,
	// or shared with what is held anyway).
	ValueSize func(value any) int
	// ValueOnly caches a record appended with a value without its data:
	// a reader that gets it from the cache has the value, and a nil
	// Entry.Data. For callers whose readers use the value when there is
	// one (and encode it again should they need the bytes): the cache
	// then holds more records in the same bytes, and copies less.
	ValueOnly bool

	syncFile func(*os.File) error // fsync; tests count the calls
}

const (
	defaultSegmentBytes = 8 << 20
	minSegmentBytes     = 4 << 10
	defaultCacheBytes   = 32 << 20
	flushEvery          = 200 * time.Millisecond
)

var (
	ErrClosed = errors.New("journal closed")
	ErrFull   = errors.New("journal full") // returned by TryAppend
	// ErrWriteFailing is returned, wrapping the cause (ENOSPC, EIO), by
	// Append and TryAppend while the journal's writes fail, and by
	// WaitDurable for a record not written yet: the record is refused (it
	// must not be acknowledged). The journal tries the write again in the
	// background and takes records again once it succeeds.
	ErrWriteFailing = errors.New("journal cannot write")
)

// Entry is a record as a reader sees it.
type Entry struct {
	Seq   uint64    // 1, 2, 3, ... gapless per journal, continuing across restarts
	Kind  byte      // chosen by the caller
	Data  []byte    // the bytes appended, decrypted if the journal is encrypted (valid until the reader's next Next call); nil from the cache for a record with a value, with Options.ValueOnly
	Value any       // the value given to Append while the record is in the cache; nil when read back from disk
	Time  time.Time // when it was appended
}

// Journal is an append-only log of records with named reader cursors. All
// methods are safe for concurrent use.
type Journal struct {
	opts     Options
	log      *slog.Logger
	now      func() time.Time
	syncFile func(*os.File) error
	files    bool   // Process or Fsync
	key      []byte // Options.Key, copied; nil in Memory mode

	durable atomic.Uint64

	mu     sync.Mutex
	closed bool
	err    error // sticky: a failed fsync
	// werr is the last write's failure while writes fail (a full disk):
	// Append refuses records; the write-behind keeps what was not written,
	// and the background goroutine writes it again until it succeeds.
	werr      error
	werrSince time.Time
	wlast     uint64 // last seq written to a file
	segs      []*segment
	active    *segment // segs[len(segs)-1]: the one being written
	first     uint64   // first seq held (segs[0].first); first > last when empty
	last      uint64   // last seq written
	bytes     int64
	cache     cache
	readers   map[string]*Reader
	minAck    uint64 // lowest acked seq of all readers (when there are readers)
	dropped   uint64
	// droppedMessages is the part of dropped that are records of
	// Options.MessageKind.
	droppedMessages uint64
	recovered       RecoveryStats
	damaged         uint64 // records lost to damage, found by Open or readers
	damage          string // the latest damage found, for Stats
	rlog            *ratelog.Logger
	// pend holds frames of the active segment not yet written to its file:
	// records appended without waiting go out with the next write someone
	// waits for (or when it grows large, or Durable is waited for, or a
	// reader needs them from the file), so the rules' records and QoS 0
	// messages ride along with the next acknowledged message in one pwrite.
	pend     []byte
	pendLast uint64 // last seq in pend
	spare    []byte // the other write-behind buffer, swapped with pend by a group write
	// flushing is set while a group write runs outside mu; flushDone
	// (on mu) is signalled when it ends.
	flushing  bool
	flushDone sync.Cond
	rotateErr error // last rotation failure, logged once

	// Channels closed (and forgotten) to wake waiters; made only when
	// someone waits.
	appendCh chan struct{} // a record was written, a reader was removed, or the journal closed
	spaceCh  chan struct{} // acks moved or space was reclaimed
	// Readers waiting for records are woken at most once per
	// readerWakeEvery: a wake within it of the last one is left to
	// wakeTimer. (Waking every waiting reader for every record, a dozen
	// goroutines for each message at 20,000 msg/s, kept both cores'
	// run queues full: sluice bench -trace, go tool trace -pprof=sched.)
	lastWake  int64 // UnixNano of the last wake of appendCh
	wakeArmed bool  // wakeTimer will wake appendCh
	wakeTimer *time.Timer
	durableCh chan struct{} // Durable moved

	// Fsync mode: the syncer goroutine's work.
	syncCond   sync.Cond
	syncWanted bool
	unsynced   []*os.File // closed segments not fsync'd yet
	dirDirty   bool       // a segment file was created since the last directory fsync

	trash        []string // paths of reclaimed segments, removed by the background goroutine
	cursorsDirty bool

	kick      chan struct{}
	stop      chan struct{}
	wg        sync.WaitGroup
	saveMu    sync.Mutex // one cursors save at a time
	saveErr   bool       // the last cursors save failed (logged once)
	closeOnce sync.Once
	closeErr  error
}

// Open opens or creates a journal and recovers it: every segment is scanned; a torn or corrupt tail
// (short frame, bad length, CRC mismatch) is cut off at the last good record and the loss is logged;
// a corrupt record in the middle of a segment cuts the rest of THAT segment (logged, counted in
// Stats().Recovered) and reading continues with the next segment. Seq numbering continues after the
// last good record. Saved cursors are loaded. With Options.Key, a record that fails authentication, or
// segments written with another key (or without one), make Open fail (ErrTampered, ErrWrongKey).
func Open(opts Options) (*Journal, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	opts.setDefaults()
	j := &Journal{
		opts:     opts,
		log:      opts.Logger,
		now:      opts.Now,
		syncFile: opts.syncFile,
		files:    opts.Mode != Memory,
		readers:  map[string]*Reader{},
		rlog:     ratelog.New(opts.Logger, 10*time.Second, nil),
	}
	if j.files && len(opts.Key) > 0 {
		j.key = bytes.Clone(opts.Key)
		j.opts.Key = j.key
	}
	j.syncCond.L = &j.mu
	j.flushDone.L = &j.mu
	if !j.files {
		j.active = &segment{first: 1, last: 0, size: headerSize, hdr: headerSize}
		j.segs = []*segment{j.active}
		j.first = 1
		j.bytes = headerSize
		return j, nil
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("journal: create dir: %w", err)
	}
	doc, err := j.readCursors()
	if err != nil {
		return nil, err
	}
	err = j.recover(doc.maxAcked())
	for _, s := range j.segs {
		s.written = s.size
	}
	if err != nil {
		for _, s := range j.segs {
			if s.f != nil {
				s.f.Close()
			}
		}
		return nil, err
	}
	j.loadCursors(doc)
	j.kick = make(chan struct{}, 1)
	j.stop = make(chan struct{})
	j.reclaim() // what the saved readers have all passed
	j.durable.Store(j.last)
	j.wlast = j.last
	j.wg.Add(1)
	go j.background()
	if opts.Mode == Fsync {
		j.wg.Add(1)
		go j.syncLoop()
	}
	return j, nil
}

func (o *Options) validate() error {
	switch o.Mode {
	case Memory, Process, Fsync:
	default:
		return fmt.Errorf("journal: unknown mode %d", int(o.Mode))
	}
	switch o.Overflow {
	case Block, DropOldest:
	default:
		return fmt.Errorf("journal: unknown overflow policy %d", int(o.Overflow))
	}
	if o.Mode != Memory && o.Dir == "" {
		return errors.New("journal: Dir is required unless Mode is Memory")
	}
	if o.SegmentBytes < 0 || o.MaxBytes < 0 || o.MaxAge < 0 || o.Retain < 0 {
		return errors.New("journal: SegmentBytes, MaxBytes, MaxAge and Retain must not be negative")
	}
	if len(o.Key) != 0 && len(o.Key) != KeySize {
		return fmt.Errorf("journal: Key must be %d bytes (AES-256), not %d", KeySize, len(o.Key))
	}
	return nil
}

func (o *Options) setDefaults() {
	if o.SegmentBytes == 0 {
		o.SegmentBytes = defaultSegmentBytes
		if o.MaxBytes > 0 {
			// Space is reclaimed whole segments at a time: keep several
			// segments within the bound.
			o.SegmentBytes = min(o.SegmentBytes, max(o.MaxBytes/8, minSegmentBytes))
		}
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = defaultCacheBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.syncFile == nil {
		o.syncFile = (*os.File).Sync
	}
}

// recover scans the segment files and opens the last one for appending
// (or starts a new one). maxAcked is the highest seq a saved reader
// acknowledged.
func (j *Journal) recover(maxAcked uint64) error {
	firsts, err := segmentFiles(j.opts.Dir)
	if err != nil {
		return err
	}
	for i, first := range firsts {
		last := i == len(firsts)-1
		sc, err := j.recoverSegment(first, last)
		if err != nil {
			return err
		}
		name := segmentName(first)
		if sc.notSegment != "" {
			if err := j.notASegment(first, last, sc, maxAcked); err != nil {
				return err
			}
			continue
		}
		if n := len(j.segs); n > 0 && first <= j.segs[n-1].last {
			return fmt.Errorf("journal: segment %s overlaps %s (seqs up to %d)",
				name, segmentName(j.segs[n-1].first), j.segs[n-1].last)
		}
		if j.last > 0 && first > j.last+1 {
			// The rest of the segment before (its tail damaged), or whole
			// segments (damaged, empty, moved away).
			j.reportDamage(name, seqRange{j.last + 1, first - 1}, -1, errors.New("missing before this segment"), "open")
		}
		j.recovered.Records += sc.records
		j.recovered.CutBytes += sc.cut
		if len(sc.damage) > 0 || (sc.cut > 0 && !last) {
			j.recovered.CorruptSegments++
		}
		for _, d := range sc.damage {
			j.reportDamage(name, d.lost, d.off, d.reason, "open")
		}
		if sc.cut > 0 {
			if last {
				j.log.Warn("journal: cut torn or corrupt tail of the last segment",
					"dir", j.opts.Dir, "segment", name, "reason", sc.reason.Error(),
					"bytes", sc.cut, "records_kept", sc.records)
			} else {
				j.log.Error("journal: cut a damaged tail of a segment (the records it held are counted when the next segment shows how many)",
					"dir", j.opts.Dir, "segment", name, "reason", sc.reason.Error(), "bytes", sc.cut)
			}
		}
		if sc.seg == nil {
			continue // empty, removed
		}
		j.segs = append(j.segs, sc.seg)
		j.bytes += sc.seg.size
		j.last = max(j.last, sc.seg.last)
	}

	if n := len(j.segs); n > 0 {
		j.active = j.segs[n-1]
		j.last = max(j.last, j.active.last)
	}
	if a := j.active; a != nil && (a.f == nil || j.key != nil || a.fm.sync == nil) {
		// Not appended to: a segment that was not the last file (what
		// followed it was not a segment), an encrypted one (a record cut
		// from its tail, torn or lost with the page cache, may have sealed
		// another plaintext with the nonce its seq would be sealed with
		// again; a new segment has a new key), or one of format 1 or 2
		// (frames without a sync word: it is read, not written).
		j.active = nil
		if a.f != nil {
			a.f.Close()
			a.f = nil
			if a.empty() {
				// Its successor takes its name.
				if err := os.Remove(a.path); err != nil {
					return fmt.Errorf("journal: remove empty segment: %w", err)
				}
				j.segs = j.segs[:len(j.segs)-1]
				j.bytes -= a.size
			}
		}
	}
	if j.active == nil || j.active.size >= j.opts.SegmentBytes {
		s, err := createSegment(j.opts.Dir, j.last+1, j.key)
		if err != nil {
			return err
		}
		if j.active != nil {
			j.active.f.Close()
			j.active.f = nil
		}
		j.segs = append(j.segs, s)
		j.active = s
		j.bytes += s.size
	}
	j.first = j.segs[0].first
	if j.opts.Mode == Fsync {
		if err := j.syncDir(); err != nil {
			return err
		}
	}
	j.log.Info("journal: opened", "dir", j.opts.Dir, "mode", j.opts.Mode.String(), "encrypted", j.key != nil,
		"segments", len(j.segs), "first", j.first, "last", j.last, "bytes", j.bytes)
	return nil
}

// notASegment deals with a file named as a segment that holds none (empty,
// its header torn, or not a journal segment at all). Its name is taken for
// the next segment's only when it is the last file and names the seq after
// the last record (or, with no records, one a saved reader acknowledged
// up to): what a crash while creating that segment leaves. Such a file, if
// empty or torn, is removed (nothing was in it). Any other is set aside as
// *.corrupt and reported, and its name moves nothing: a stray file named
// 00000000000099999999.seg must not make the journal count from there.
// (Records missing because of it are counted when the next segment shows
// how many.)
func (j *Journal) notASegment(first uint64, last bool, sc scan, maxAcked uint64) error {
	name := segmentName(first)
	path := filepath.Join(j.opts.Dir, name)
	fits := last && (first == j.last+1 || (len(j.segs) == 0 && first-1 <= max(maxAcked, j.last)))
	if fits && sc.torn {
		j.log.Warn("journal: the last segment file holds no record (torn while being created): nothing lost; starting it again",
			"dir", j.opts.Dir, "segment", name, "file", sc.notSegment)
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("journal: remove torn segment: %w", err)
		}
		j.last = max(j.last, first-1)
		return nil
	}
	if err := os.Rename(path, path+".corrupt"); err != nil {
		return fmt.Errorf("journal: set aside %s: %w", name, err)
	}
	j.recovered.CorruptSegments++
	if fits {
		j.last = max(j.last, first-1)
	}
	note := fmt.Sprintf("segment file %s is %s: set aside as %s.corrupt", name, sc.notSegment, name)
	if !fits {
		note += fmt.Sprintf("; its name does not move the journal's numbering (it goes on after %d)", j.last)
	}
	j.damage = note
	j.log.Error("journal: "+note, "dir", j.opts.Dir)
	return nil
}

// reportDamage counts records lost to damage, found by Open or a reader
// (by), and says so: in the log (rate-limited) and in Stats. off is where
// the damaged bytes begin in the segment file (-1: between segments).
// Called with mu held, or by Open.
func (j *Journal) reportDamage(segment string, lost seqRange, off int64, reason error, by string) {
	j.damaged += lost.len()
	records := fmt.Sprintf("record %d", lost.from)
	if lost.len() > 1 {
		records = fmt.Sprintf("%d records (%d to %d)", lost.len(), lost.from, lost.to)
	}
	if off >= 0 {
		j.damage = fmt.Sprintf("segment %s: %s damaged at offset %d (%v): skipped", segment, records, off, reason)
	} else {
		j.damage = fmt.Sprintf("segment %s: %s before it missing (a damaged or removed segment): skipped", segment, records)
	}
	if by == "open" {
		j.recovered.CorruptRecords += lost.len()
	}
	j.rlog.Log(slog.LevelError, "damage", "journal: damaged records skipped", "dir", j.opts.Dir, "segment", segment,
		"from", lost.from, "to", lost.to, "records", lost.len(), "offset", off, "reason", fmt.Sprint(reason), "found_by", by,
		"damaged_total", j.damaged)
}

// Append adds a record. While the journal is over its bounds it either waits (Block; returns ctx.Err()
// if ctx ends first) or drops the oldest segments (DropOldest). Then it writes the record and, when
// wait is true, returns once the record is durable per Mode (Fsync: group commit). It returns the seq.
// The journal copies data: the caller may reuse it once Append returns (Write and TryAppend too).
func (j *Journal) Append(ctx context.Context, kind byte, data []byte, value any, wait bool) (uint64, error) {
	return j.append(ctx, kind, data, value, wait, false)
}

// TryAppend is Append that returns ErrFull at once instead of waiting for room (for MQTT 5 clients, which
// can be told "quota exceeded"). With DropOldest it never returns ErrFull.
func (j *Journal) TryAppend(ctx context.Context, kind byte, data []byte, value any, wait bool) (uint64, error) {
	return j.append(ctx, kind, data, value, wait, true)
}

// Write adds a record without regard to bounds and without waiting for durability: for records derived
// from records already in the journal (which must never deadlock on the bound they help free).
func (j *Journal) Write(kind byte, data []byte, value any) (uint64, error) {
	if len(data) > MaxRecordBytes {
		return 0, errTooLarge(len(data))
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.usable(); err != nil {
		return 0, err
	}
	return j.write(kind, data, value, false)
}

func errTooLarge(n int) error {
	return fmt.Errorf("journal: record of %d bytes is larger than %d", n, MaxRecordBytes)
}

func (j *Journal) append(ctx context.Context, kind byte, data []byte, value any, wait, try bool) (uint64, error) {
	if len(data) > MaxRecordBytes {
		return 0, errTooLarge(len(data))
	}
	j.mu.Lock()
	if err := j.room(ctx, try); err != nil {
		j.mu.Unlock()
		return 0, err
	}
	// A waiting append leaves its frame in the write-behind and joins a
	// group write: concurrent appenders share one pwrite.
	seq, err := j.write(kind, data, value, false)
	j.mu.Unlock()
	if err != nil || !wait {
		return seq, err
	}
	return seq, j.WaitDurable(ctx, seq)
}

// Admit returns once the journal would take a record, as Append waits to
// before it writes one (with try, ErrFull at once rather than waiting). It
// writes nothing and holds no room: it is for a record that must go into
// several journals or none, admitted by each before it is written to any
// with Write (so a journal may go past its bound by the records admitted
// at the same time).
func (j *Journal) Admit(ctx context.Context, try bool) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.room(ctx, try)
}

// room waits until the journal takes a new record: it accepts records,
// and it is within its bounds, or has made room (reclaiming segments every
// reader has passed, or dropping the oldest, as its overflow says). With
// try it returns ErrFull rather than wait. Called with mu held; it returns
// with mu held.
func (j *Journal) room(ctx context.Context, try bool) error {
	for {
		if err := j.accepting(); err != nil {
			return err
		}
		if !j.full() {
			return nil
		}
		if j.opts.Overflow == DropOldest {
			j.dropOldest()
			return nil
		}
		if j.makeRoom() {
			continue
		}
		if try {
			return ErrFull
		}
		if j.spaceCh == nil {
			j.spaceCh = make(chan struct{})
		}
		ch := j.spaceCh
		j.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			j.mu.Lock()
			return ctx.Err()
		}
		j.mu.Lock()
	}
}

// usable returns why nothing can be written, if anything. Called with mu held.
func (j *Journal) usable() error {
	if j.closed {
		return ErrClosed
	}
	return j.err
}

// accepting returns why a new record is refused, if it is: the journal is
// not usable, or its writes fail. (Write takes records while writes fail:
// they derive from records already in the journal.) Called with mu held.
func (j *Journal) accepting() error {
	if err := j.usable(); err != nil {
		return err
	}
	return j.writeFailing()
}

// writeFailing returns ErrWriteFailing, wrapping the cause, while writes
// fail. Called with mu held.
func (j *Journal) writeFailing() error {
	if j.werr == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrWriteFailing, j.werr)
}

// write appends one record to the active segment and the cache. Called with
// mu held.
func (j *Journal) write(kind byte, data []byte, value any, now bool) (uint64, error) {
	seq := j.last + 1
	t := j.now().UnixNano()
	s := j.active
	size := s.frameSize(len(data))
	if j.files {
		s.note(seq, s.size, t)
		if s.fm.sealer != nil {
			j.pend = appendSealedFrame(j.pend, s.fm.sync, seq, t, kind, data, s.fm.sealer)
		} else {
			j.pend = appendFrame(j.pend, s.fm.sync, seq, t, kind, data)
		}
		j.pendLast = seq
	}
	if kind == j.opts.MessageKind && kind != 0 {
		s.mark(seq)
	}
	s.size += size
	s.last = seq
	j.bytes += size
	j.last = seq
	if !j.files || j.opts.CacheBytes > 0 {
		e := centry{value: value, time: t, kind: kind}
		if value == nil || !j.opts.ValueOnly {
			e.data = j.cache.copyData(data)
		}
		if value != nil && j.opts.ValueSize != nil {
			e.vsize = int32(min(j.opts.ValueSize(value), math.MaxInt32))
		}
		j.cache.push(seq, e)
		if j.files {
			j.cache.trim(j.opts.CacheBytes)
		}
	}
	if !j.files {
		j.durable.Store(seq)
		wake(&j.durableCh)
	} else if now || len(j.pend) >= pendMax {
		// A failure is the journal's state now, not this record's: the
		// record is in the journal (readers may have it from the cache), and
		// whoever waits for it to be durable learns of the failure.
		j.flush()
	}
	j.wakeReaders()
	if s.size >= j.opts.SegmentBytes {
		j.rotate()
	}
	if j.opts.Retain > 0 && j.opts.MaxBytes > 0 && j.bytes >= j.opts.MaxBytes {
		j.reclaim() // retained segments make room
	}
	return seq, nil
}

// groupWrite writes the write-behind outside mu, so appenders keep adding
// frames meanwhile; one group write runs at a time. It returns with mu held.
// Called with mu held, not flushing.
func (j *Journal) groupWrite() error {
	if j.err != nil {
		return j.err
	}
	if j.werr != nil {
		return j.writeFailing() // the background goroutine tries again
	}
	if len(j.pend) == 0 {
		return nil
	}
	s, buf, last, off := j.active, j.pend, j.pendLast, j.active.written
	j.pend, j.spare = j.spare[:0], nil
	j.flushing = true
	j.mu.Unlock()
	_, err := s.f.WriteAt(buf, off)
	j.mu.Lock()
	j.flushing = false
	j.flushDone.Broadcast()
	if err != nil {
		// What was appended meanwhile follows what failed.
		j.spare = j.pend[:0]
		j.pend = append(buf, j.pend...)
		j.writeFailed(s, err)
		return j.writeFailing()
	}
	s.written += int64(len(buf))
	j.wlast = last
	if cap(buf) <= 4*pendMax {
		j.spare = buf[:0]
	}
	if j.opts.Mode == Process {
		j.durable.Store(last)
		wake(&j.durableCh)
	}
	return nil
}

// writeFailed notes that writing the frames at the end of s failed: the
// journal refuses records (Append) until a write succeeds again. The
// frames stay in the write-behind and are written again, at the same
// offset, by probe; whatever part of them reached the file is cut off
// (best effort: what the next write puts there is the same bytes). Called
// with mu held; pend holds the frames that failed.
func (j *Journal) writeFailed(s *segment, err error) {
	s.f.Truncate(s.written)
	if j.werr == nil {
		j.werrSince = j.now()
		j.log.Error("journal: write failed; refusing records until a write succeeds again (tried every 200ms)",
			"segment", s.path, "error", err)
	}
	j.werr = fmt.Errorf("write segment %s: %w", s.path, err)
	wake(&j.durableCh)
}

// probe writes the write-behind again while writes fail, and takes records
// again once that succeeds. Called by the background goroutine with mu
// held.
func (j *Journal) probe() {
	for j.flushing {
		j.flushDone.Wait()
	}
	if j.werr == nil || j.err != nil || j.closed {
		return
	}
	if j.writePend() != nil {
		return
	}
	j.log.Info("journal: writing again; taking records again", "dir", j.opts.Dir,
		"failed_for", j.now().Sub(j.werrSince).Round(time.Millisecond).String())
	j.werr = nil
	wake(&j.durableCh) // readers waiting for a record to be written
	if j.opts.Mode == Fsync {
		j.syncWanted = true
		j.syncCond.Signal()
	}
}

// pendMax is how much write-behind a journal holds before writing it.
const pendMax = 256 << 10

// flush writes the pending frames to the active segment's file (one
// pwrite) and, in Process mode, moves Durable past them. While writes fail
// it returns ErrWriteFailing without trying: the frames stay in the
// write-behind (seqs were handed out and readers may have seen the
// records: they are written, not renumbered), and the background
// goroutine tries again (probe). Called with mu held.
func (j *Journal) flush() error {
	for j.flushing {
		j.flushDone.Wait()
	}
	if j.err != nil {
		return j.err
	}
	if j.werr != nil {
		return j.writeFailing() // the background goroutine tries again
	}
	return j.writePend()
}

// writePend writes the write-behind to the active segment's file. Called
// with mu held, not flushing.
func (j *Journal) writePend() error {
	if len(j.pend) == 0 {
		return nil
	}
	s := j.active
	if _, err := s.f.WriteAt(j.pend, s.written); err != nil {
		j.writeFailed(s, err)
		return j.writeFailing()
	}
	s.written += int64(len(j.pend))
	j.wlast = j.pendLast
	j.pend = j.pend[:0]
	if cap(j.pend) > 4*pendMax {
		j.pend = nil // do not keep a buffer the size of a rare huge record
	}
	if j.opts.Mode == Process {
		j.durable.Store(j.pendLast)
		wake(&j.durableCh)
	}
	return nil
}

// wake closes *ch, if anyone waits on it, waking them.
// readerWakeEvery bounds how often readers waiting for records are woken:
// a record written within it of the last wake waits for the rest of it.
const readerWakeEvery = 500 * time.Microsecond

// wakeReaders wakes the readers waiting for records, now or, if they were
// woken less than readerWakeEvery ago, when it has passed: records written
// meanwhile are read together. Called with mu held.
func (j *Journal) wakeReaders() {
	if j.appendCh == nil || j.wakeArmed {
		return
	}
	now := time.Now().UnixNano()
	if since := now - j.lastWake; since >= int64(readerWakeEvery) || since < 0 {
		j.lastWake = now
		wake(&j.appendCh)
		return
	}
	j.wakeArmed = true
	d := time.Duration(int64(readerWakeEvery) - (now - j.lastWake))
	if j.wakeTimer == nil {
		j.wakeTimer = time.AfterFunc(d, func() {
			j.mu.Lock()
			defer j.mu.Unlock()
			j.wakeArmed = false
			j.lastWake = time.Now().UnixNano()
			wake(&j.appendCh)
		})
		return
	}
	j.wakeTimer.Reset(d)
}

func wake(ch *chan struct{}) {
	if *ch != nil {
		close(*ch)
		*ch = nil
	}
}

// rotate closes the active segment and starts the next. Called with mu held.
func (j *Journal) rotate() bool {
	old := j.active
	if old.empty() {
		return false
	}
	if j.files && j.flush() != nil {
		return false
	}
	if j.active != old {
		// flush waited for another flush, letting go of mu, and another
		// caller rotated meanwhile: the new segment is started.
		return true
	}
	var s *segment
	if j.files {
		var err error
		s, err = createSegment(j.opts.Dir, old.last+1, j.key)
		if err != nil {
			if j.rotateErr == nil {
				j.log.Error("journal: cannot start a new segment; writing on in the current one", "error", err)
			}
			j.rotateErr = err
			return false
		}
		if j.rotateErr != nil {
			j.log.Info("journal: started a new segment again", "segment", s.path)
			j.rotateErr = nil
		}
		if j.opts.Mode == Fsync {
			// The syncer fsyncs and closes it; Durable does not pass its
			// records before that.
			j.unsynced = append(j.unsynced, old.f)
			j.dirDirty = true
			j.syncCond.Signal()
		} else {
			old.f.Close()
		}
		old.f = nil
	} else {
		s = &segment{first: old.last + 1, last: old.last, size: headerSize, hdr: headerSize, written: headerSize}
	}
	j.segs = append(j.segs, s)
	j.active = s
	j.bytes += s.size
	return true
}

// floor returns the highest seq every reader has acknowledged; with no
// readers, the seq before the first held (every held record is kept for
// readers to come). Called with mu held.
func (j *Journal) floor() uint64 {
	if len(j.readers) == 0 {
		return j.first - 1
	}
	return j.minAck
}

func (j *Journal) updateMinAck() {
	first := true
	for _, r := range j.readers {
		if first || r.acked < j.minAck {
			j.minAck = r.acked
			first = false
		}
	}
}

// full reports whether the journal is over its bounds. Called with mu held.
func (j *Journal) full() bool {
	if j.opts.MaxBytes > 0 && j.bytes >= j.opts.MaxBytes {
		return true
	}
	return j.opts.MaxAge > 0 && j.oldestAge() > j.opts.MaxAge
}

// oldestAge returns the age of the oldest record some reader still needs.
func (j *Journal) oldestAge() time.Duration {
	seq := j.floor() + 1
	if seq > j.last {
		return 0
	}
	return j.now().Sub(time.Unix(0, j.timeOf(seq)))
}

// timeOf returns the time of record seq, or of the first record after it if
// seq is not held. Exact for cached records; for the others, the time of
// the indexed record at or before it (at most indexTime earlier).
func (j *Journal) timeOf(seq uint64) int64 {
	if e, ok := j.cache.get(seq); ok {
		return e.time
	}
	s, next := j.segmentFor(seq)
	if s == nil {
		if e, ok := j.cache.get(next); ok {
			return e.time
		}
		if s, _ = j.segmentFor(next); s == nil {
			return j.now().UnixNano()
		}
		seq = next
	}
	return s.locate(seq).time
}

// segmentFor returns the segment holding seq. When no segment holds it
// (before the first, or in a gap left by a corrupt segment), it returns nil
// and the first seq held after it.
func (j *Journal) segmentFor(seq uint64) (*segment, uint64) {
	segs := j.segs
	i := sort.Search(len(segs), func(i int) bool { return segs[i].first > seq }) - 1
	if i < 0 {
		return nil, segs[0].first
	}
	s := segs[i]
	if seq > s.last {
		if i+1 < len(segs) {
			return nil, segs[i+1].first
		}
		return nil, s.last + 1
	}
	return s, 0
}

// makeRoom is Block's way out of a journal whose bytes sit in the segment
// being written: when every reader has acknowledged some of its records, it
// closes it so that it can be reclaimed. It reports whether space was freed.
func (j *Journal) makeRoom() bool {
	freed := j.reclaim()
	if a := j.active; len(j.readers) > 0 && !a.empty() && j.minAck >= a.first && j.rotate() {
		freed += j.reclaim()
	}
	return freed > 0
}

// reclaim removes the segments every reader has passed (never the active
// one), but those Retain keeps, and returns how many. Called with mu held.
func (j *Journal) reclaim() int {
	if len(j.readers) == 0 {
		return 0
	}
	n := 0
	for len(j.segs) > 1 && j.segs[0].last <= j.minAck && !j.retained(j.segs[0]) {
		j.removeFirst()
		n++
	}
	return n
}

// retained reports whether Retain keeps s, a segment every reader has
// passed: its newest record is younger than Retain, and the journal is
// within MaxBytes. Called with mu held.
func (j *Journal) retained(s *segment) bool {
	if j.opts.Retain <= 0 || s.empty() || (j.opts.MaxBytes > 0 && j.bytes >= j.opts.MaxBytes) {
		return false
	}
	return j.now().Sub(time.Unix(0, j.timeOf(s.last))) < j.opts.Retain
}

// retainedBytes returns the bytes of the segments kept only for Retain.
// Called with mu held.
func (j *Journal) retainedBytes() int64 {
	var n int64
	if j.opts.Retain <= 0 || len(j.readers) == 0 {
		return 0
	}
	for _, s := range j.segs[:len(j.segs)-1] {
		if s.last > j.minAck {
			break
		}
		n += s.size
	}
	return n
}

// removeFirst forgets the oldest segment; its file goes to the trash, for
// the background goroutine to remove. Called with mu held.
func (j *Journal) removeFirst() {
	s := j.segs[0]
	s.removed = true
	copy(j.segs, j.segs[1:])
	j.segs[len(j.segs)-1] = nil
	j.segs = j.segs[:len(j.segs)-1]
	j.bytes -= s.size
	j.first = j.segs[0].first
	if !j.files {
		// The cache is where Memory mode keeps records. (Otherwise the
		// records before first stay in the cache until its budget pushes
		// them out: nothing asks for them, and dropping them each time a
		// segment goes would make the ring shrink and grow again.)
		j.cache.dropBefore(j.first)
	}
	if j.files {
		j.trash = append(j.trash, s.path)
		select {
		case j.kick <- struct{}{}:
		default:
		}
	}
	wake(&j.spaceCh)
}

// dropOldest removes the oldest segments until the journal is within its
// bounds, moving the readers that had not acknowledged them past them.
// Called with mu held.
func (j *Journal) dropOldest() {
	j.reclaim()
	var segs int
	var records, messages, skippedBy uint64
	var bytes int64
	for j.full() {
		if len(j.segs) == 1 && !j.rotate() {
			break // nothing left to drop but an empty segment
		}
		s := j.segs[0]
		floor := j.floor()
		if s.last > floor {
			from := max(floor+1, s.first)
			records += s.last + 1 - from - s.lostIn(from, s.last)
			messages += s.marked(from, s.last)
		}
		for _, r := range j.readers {
			if r.acked < s.last {
				skippedBy++
				from := max(r.acked+1, s.first)
				r.skipped += s.last + 1 - from - s.lostIn(from, s.last)
				r.acked = s.last
				j.cursorsDirty = true
			}
			if r.next <= s.last {
				r.next = s.last + 1
			}
		}
		bytes += s.size
		j.removeFirst()
		j.updateMinAck()
		segs++
	}
	if segs > 0 {
		j.dropped += records
		j.droppedMessages += messages
		args := []any{"dir", j.opts.Dir, "segments", segs, "records", records}
		if j.opts.MessageKind != 0 {
			args = append(args, "messages", messages)
		}
		j.log.Warn("journal: over its bounds; dropped the oldest segments",
			append(args, "bytes", bytes, "readers_behind", skippedBy, "dropped_total", j.dropped)...)
	}
}

// Durable returns the highest seq that is durable per Mode (all records <= it). In Memory and Process
// modes it is the last written seq.
func (j *Journal) Durable() uint64 { return j.durable.Load() }

// WaitDurable waits until seq is durable (Fsync mode: triggers/joins a group fsync).
func (j *Journal) WaitDurable(ctx context.Context, seq uint64) error {
	for {
		if j.durable.Load() >= seq {
			return nil
		}
		j.mu.Lock()
		if j.durable.Load() >= seq {
			j.mu.Unlock()
			return nil
		}
		if err := j.usable(); err != nil {
			j.mu.Unlock()
			return err
		}
		if err := j.writeFailing(); err != nil && seq > j.wlast {
			j.mu.Unlock()
			return err
		}
		if j.opts.Mode == Process && seq <= j.last && !j.flushing {
			// Nobody is writing: write the write-behind, this record's
			// and whatever others appended meanwhile.
			err := j.groupWrite()
			j.mu.Unlock()
			if err != nil {
				return err
			}
			continue
		}
		if j.opts.Mode == Fsync && seq <= j.last {
			j.syncWanted = true
			j.syncCond.Signal()
		}
		if j.durableCh == nil {
			j.durableCh = make(chan struct{})
		}
		ch := j.durableCh
		j.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Full reports whether the journal is over its bounds.
func (j *Journal) Full() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.full()
}

// ReaderStats describe one reader.
type ReaderStats struct {
	Name      string
	Acked     uint64
	Lag       uint64        // records appended after Acked
	LagBytes  int64         // approximate bytes of those records
	OldestAge time.Duration // age of the oldest record not yet acknowledged (0 if none)
	Skipped   uint64
}

// Stats describe the journal.
type Stats struct {
	Bytes    int64  // bytes held in segments
	Retained int64  // of those, bytes held only for Options.Retain (every reader has passed them)
	Segments int    // segments held, the one being written included
	First    uint64 // first seq held (0 if empty)
	Last     uint64 // last seq written
	Durable  uint64 // see Journal.Durable
	Full     bool   // see Journal.Full
	Dropped  uint64 // records deleted by DropOldest before every reader had them
	// DroppedMessages is how many of the records counted in Dropped are
	// messages (of Options.MessageKind).
	DroppedMessages uint64
	Recovered       RecoveryStats // what Open found
	// Damaged is how many records were lost to damage (a checksum that
	// fails, a frame that does not parse, a segment missing or not a
	// segment), found by Open or by readers since; Damage describes the
	// latest finding.
	Damaged uint64
	Damage  string
	Readers []ReaderStats // by name
	// WriteError is why the journal refuses records, while it does: its
	// writes fail (a full disk, an I/O error; it tries again every 200 ms
	// and takes records again once a write succeeds), or an fsync failed
	// (for good: the journal must be opened again). Empty while it writes.
	WriteError      string
	WriteErrorSince time.Time // when writes began to fail (zero for a failed fsync)
}

// RecoveryStats is what Open found: the records it kept, the bytes it cut
// (torn tails, and damaged tails of earlier segments), the segments with
// damage (or that were not segments at all) and the records lost to
// damage.
type RecoveryStats struct {
	Records         uint64
	CutBytes        int64
	CorruptSegments int
	CorruptRecords  uint64
}

// Stats returns the journal's figures.
func (j *Journal) Stats() Stats {
	j.mu.Lock()
	defer j.mu.Unlock()
	st := Stats{
		Bytes:           j.bytes,
		Retained:        j.retainedBytes(),
		Segments:        len(j.segs),
		Last:            j.last,
		Durable:         j.durable.Load(),
		Full:            j.full(),
		Dropped:         j.dropped,
		DroppedMessages: j.droppedMessages,
		Recovered:       j.recovered,
		Damaged:         j.damaged,
		Damage:          j.damage,
	}
	if j.first <= j.last {
		st.First = j.first
	}
	switch {
	case j.err != nil:
		st.WriteError = j.err.Error() + " (the journal refuses records until it is opened again)"
	case j.werr != nil:
		st.WriteError, st.WriteErrorSince = j.werr.Error(), j.werrSince
	}
	now := j.now()
	for _, r := range j.readers {
		rs := ReaderStats{Name: r.name, Acked: r.acked, Skipped: r.skipped}
		if r.acked < j.last {
			rs.Lag = j.last - r.acked
			rs.LagBytes = j.bytesAfter(r.acked)
			rs.OldestAge = now.Sub(time.Unix(0, j.timeOf(r.acked+1)))
		}
		st.Readers = append(st.Readers, rs)
	}
	sort.Slice(st.Readers, func(a, b int) bool { return st.Readers[a].Name < st.Readers[b].Name })
	return st
}

// bytesAfter estimates the bytes of the records after seq, assuming the
// records of a segment are of equal size.
func (j *Journal) bytesAfter(seq uint64) int64 {
	var n int64
	for i := len(j.segs) - 1; i >= 0; i-- {
		s := j.segs[i]
		if s.empty() || s.last <= seq {
			break
		}
		data := s.size - s.hdr
		if s.first > seq {
			n += data
			continue
		}
		n += int64(float64(data) * float64(s.last-seq) / float64(s.records()))
		break
	}
	return n
}

// Close flushes the cursors (fsync'd in Fsync mode), stops background work, wakes blocked Next/Append
// calls with ErrClosed, and closes files. Safe to call more than once.
func (j *Journal) Close() error {
	j.closeOnce.Do(func() { j.closeErr = j.close() })
	return j.closeErr
}

func (j *Journal) close() error {
	j.mu.Lock()
	j.closed = true
	if j.wakeTimer != nil {
		j.wakeTimer.Stop()
	}
	wake(&j.appendCh)
	wake(&j.spaceCh)
	wake(&j.durableCh)
	j.syncCond.Broadcast()
	readers := make([]*Reader, 0, len(j.readers))
	for _, r := range j.readers {
		readers = append(readers, r)
	}
	j.mu.Unlock()

	if j.stop != nil {
		close(j.stop)
	}
	j.wg.Wait()

	var errs []error
	if j.files {
		// The goroutines are gone and nothing writes any more: the files
		// are Close's alone.
		j.mu.Lock()
		if j.err == nil {
			j.probe() // writes fail: one last try
			if err := j.flush(); err != nil {
				errs = append(errs, fmt.Errorf("journal: records %d to %d not written: %w", j.wlast+1, j.last, err))
			}
		}
		unsynced, active, last, failed := j.unsynced, j.active.f, j.wlast, j.err != nil
		j.unsynced = nil
		j.mu.Unlock()
		if j.opts.Mode == Fsync && !failed {
			if err := j.syncFiles(unsynced, active, true); err != nil {
				errs = append(errs, err)
			} else {
				j.durable.Store(last)
			}
		}
		for _, f := range unsynced {
			f.Close()
		}
		if err := active.Close(); err != nil {
			errs = append(errs, fmt.Errorf("journal: close segment: %w", err))
		}
		j.removeTrash()
		errs = append(errs, j.saveCursors())
	}
	for _, r := range readers {
		r.mu.Lock()
		r.closeFile()
		r.mu.Unlock()
	}
	return errors.Join(errs...)
}
