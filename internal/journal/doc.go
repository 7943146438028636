// Package journal is sluice's write-ahead journal: an append-only log of
// records with named reader cursors. The MQTT publish hook appends a
// message before the broker acknowledges it; the rules processor and each
// sink read the journal through their own cursor and acknowledge what they
// are done with; segments every cursor has passed are deleted. A dead sink
// neither blocks the others nor loses its backlog.
//
// # Records
//
// A record is a kind byte chosen by the caller, data bytes (at most
// MaxRecordBytes), an optional in-memory value and the time it was
// appended. Records are numbered 1, 2, 3, ... without gaps; numbering
// continues across restarts. (Only corruption found by Open leaves a gap:
// readers continue after it.)
//
// # Modes: what an acknowledged record survives
//
//   - Memory: nothing is written to disk. A restart loses every record.
//     Bounds, overflow, readers, acks and Stats behave as in the other modes.
//   - Process: Append(wait=true) returns after write(2) put the record in
//     the OS page cache. It survives a crash of the process, not a power
//     loss or a kernel crash. Concurrent waiting appends share one pwrite
//     (a group write, done outside the journal's lock while others keep
//     appending). Records appended without waiting (Write, wait=false) wait
//     in a write-behind buffer and go out with the next group write, when
//     the buffer reaches 256 KiB, when someone waits for Durable, or within
//     about 200 ms; Durable counts only what was written.
//   - Fsync: Append(wait=true) returns after an fsync covered the record.
//     It survives a power loss. Concurrent appenders share fsyncs (group
//     commit): a syncer goroutine notes the last seq written, fsyncs the
//     closed segments not yet synced, the segment being written and, after
//     a file was created, the directory, then advances Durable and wakes
//     every waiter at once. Appends arriving meanwhile are covered by the
//     next round. Records appended without waiting (Write, wait=false)
//     become durable within about 200 ms. If an fsync fails, the journal
//     refuses further records (after a failed fsync the kernel may have
//     dropped the dirty pages: nothing more may be acknowledged).
//
// If ctx ends while Append waits for durability, Append returns the seq and
// ctx.Err(): the record is in the journal (readers may deliver it) but must
// not be acknowledged to the client, which sends it again.
//
// # Files
//
// A journal directory holds segment files and cursors.json. A segment is
// named by the seq of its first record, "%020d.seg", and holds a 16-byte
// header then frames, all integers little-endian:
//
//	header: "SLUICEJ1" | uint32 version (3) | sync [4]
//	frame:  sync [4] | uint32 length | uint32 CRC-32C | uint64 seq | int64 unix-nano time | kind byte | data
//
// (An encrypted segment has a longer header and sealed data: see
// Encryption.)
//
// sync is the segment's sync word, 4 random bytes drawn when it was
// created, in its header and before each of its frames: a reader that
// meets damage searches for it to find the next frame (see Recovery).
// Being random, it cannot be planted in a record's data by whoever
// chose that data. length counts the bytes after the CRC field (17 +
// len(data)); the CRC (Castagnoli) covers those same bytes. A frame takes
// 29 bytes plus its data. Records in a segment have rising seqs starting
// with the file's name, consecutive unless damage cost some (see
// Recovery). A segment is closed, and the next begun, once it reaches
// SegmentBytes (default 8 MiB, or MaxBytes/8 if that is smaller, but not
// below 4 KiB). Nothing is ever rewritten: frames are written at the end with
// pwrite (a failed write is written again, the same bytes at the same
// place: see "Write failures").
//
// In memory each segment has a sparse index (seq, offset, time) with an
// entry at least every 8 KiB and every second, built while writing and
// while recovering, so that a reader can seek to the record it wants and
// MaxAge knows how old records on disk are.
//
// # Cursors
//
// A reader is a named cursor: the last seq it acknowledged. cursors.json,
//
//	{"version":1,"readers":{"influx":{"acked":41,"skipped":0}}}
//
// is written atomically (a temporary file renamed over it; in Fsync mode
// the file and the directory are fsync'd) by a background goroutine at
// most every 200 ms when a cursor changed, and by Close. A saved cursor is
// never ahead of Durable: records after Durable may be lost in a crash and
// their seqs reused by new records, which the reader must not skip. Open
// pulls a cursor that is ahead of the last record recovered back to it
// (logged). A missing cursors file means no readers; a corrupt one is
// logged and treated as missing, so readers start again at the first
// record held: records are delivered again, never lost.
//
// # Reading
//
// Next returns records in seq order. A reader at the tail gets them from
// the cache of recent records (CacheBytes, default 32 MiB; Memory mode
// keeps every record there), with the value given to Append and no file
// I/O or decoding. A reader further behind reads the segment files with
// its own file handle and buffered positional reads, checking each CRC
// (and, if encrypted, authenticating and decrypting the record); such
// records have no Value. Once it catches up it continues from the
// cache. Entry.Data is valid until the reader's next Next call and must not
// be modified. A record lost to damage is skipped: Next returns the next
// one held (Entry.Seq says which). Damage a reader finds that Open did not
// (the disk rotted since) is resynchronised past as Open does, counted
// once (Stats().Damaged, however many readers meet it) and logged
// (rate-limited).
//
// A reader acknowledges with Ack (from any goroutine); acks only move
// forward. Rewind makes Next read again from a seq (after a failed batch).
// A new reader starts at the first record held.
//
// # Encryption
//
// With Options.Key (32 bytes, AES-256; see internal/keyfile) the segments
// are encrypted at rest. The scheme (HKDF-SHA256 key derivation, AES-256-GCM,
// nonces that never repeat under a key) is internal/seal's, which the
// broker's stored state uses too; what follows is the journal's use of
// it. Each segment has its own key, derived with HKDF-SHA256 from
// Options.Key and a random 16-byte salt in its header, which is format
// version 4:
//
//	header: "SLUICEJ1" | uint32 version (4) | uint32 cipher (1: AES-256-GCM) | salt [16] | key check [16] | sync [4]
//	frame:  sync [4] | uint32 length | uint32 CRC-32C | uint64 seq | int64 unix-nano time | kind byte | nonce [12] | sealed data | tag [16]
//
// The key check (HKDF of the key and salt, under another label) lets Open
// tell a wrong key from damage before reading a record. A record's data is
// sealed with AES-256-GCM, its seq, time and kind (the 17 bytes before the
// nonce, as stored) being the additional data: a frame cannot be relabelled,
// and one moved to another segment fails authentication there. The CRC
// still covers the whole frame, so that a torn or damaged frame is told
// from an altered one. Sealing adds 28 bytes to a frame.
//
// The nonce is 4 bytes drawn at random when the segment was created, then
// the record's seq. GCM breaks if a nonce repeats under one key, and seqs
// do repeat in a journal: a record cut by recovery, or lost with the page
// cache in Process mode, has its seq given to the next record, and
// journals sharing a key count from 1 alike. So no key seals more than one
// segment, and no segment is written by more than one run: an encrypted
// journal never appends to a segment found at Open but starts a new one
// (an empty last segment is removed and created again, with a new salt).
// Within one run and one segment a seq is sealed once (a failed write is
// written again as it was sealed, not sealed again), so a nonce never
// repeats for a key, by construction
// rather than by chance, and at no cost per record. (12 random bytes per
// record would cost a getrandom call each and, all under one key, bound
// the key's life to about 2^32 records, a day of a busy broker; 4 random
// bytes and the seq under one key would collide across journals.)
//
// Recovery treats a frame whose CRC fails as in a plain segment (torn or
// damaged: a record lost, counted, and the reader resynchronises past it).
// A frame whose CRC checks out but which fails authentication, or an
// authentic frame out of its place (not the next seq), was altered on
// purpose: Open fails with ErrTampered, naming the segment and the record,
// and changes nothing. It neither skips it (which would let a forger
// delete records at will, unseen) nor delivers it. (A forger can still
// make a frame fail its CRC: that record is then lost as to damage, and
// counted and reported as such.) To go on without that segment, an operator moves
// it out of the folder: Open then leaves a gap (or, for the last segment,
// continues after the one before). A reader that meets such a record on
// disk after Open gets ErrTampered from Next, every time, until rewound past
// it. A segment written with another key, an encrypted segment without a
// key and a plain one with a key make Open fail with ErrWrongKey: an
// encrypted journal neither reads nor continues a plain one (drain it and
// remove its segments, or open it without a key).
//
// This is encryption at rest, not in memory: the cache holds records in
// clear, and Entry.Data is plaintext. It does not hide record sizes, seqs,
// times or kinds, nor detect a segment deleted or cut at a frame boundary,
// nor a folder rolled back to an older copy. cursors.json stays plain (it
// holds reader names and seqs). Memory mode writes nothing and ignores the
// key.
//
// # Reclaiming
//
// Whole segments whose last record every reader has acknowledged are
// deleted; never the segment being written. Reclaiming is decided on Ack
// (under the journal's lock, without I/O) and the files are removed by the
// background goroutine. With no reader at all nothing is reclaimed: the
// records are kept for the readers to come. Readers must therefore be
// created before the first Append after Open if they must not miss
// records.
//
// # Bounds and overflow
//
// The journal is full when the bytes held reach MaxBytes, or when the
// oldest record some reader has not acknowledged is older than MaxAge (with
// no readers, the oldest record held). The time of a record no longer in
// the cache comes from the sparse index, so MaxAge may take it for up to a
// second older than it is. Then Append either
//
//   - waits (Block) until readers acknowledge and space is reclaimed, or
//     until its ctx ends; TryAppend returns ErrFull instead of waiting. When
//     the bytes held sit in the segment being written, that segment is
//     closed as soon as every reader has acknowledged part of it, so that
//     it can be reclaimed; or
//   - deletes the oldest segments until the journal is within its bounds
//     (DropOldest), closing the segment being written first if it is the
//     only one. Readers that had not acknowledged the deleted records jump
//     past them; each counts them in Skipped, the journal in Dropped
//     (records deleted before every reader had them) and, of those, the
//     records of Options.MessageKind in DroppedMessages (a bit per record
//     in memory tells them apart), and the drop is logged. A reader
//     reading a deleted segment keeps its open file and continues with
//     the first record held.
//
// Write ignores the bounds: it is for records derived from records already
// in the journal, which must not wait for the space they help free. The
// journal thus holds at most MaxBytes plus one record (and a segment
// header) plus what Write added.
//
// # Recovery
//
// Open scans every segment and checks every frame: its sync word, length,
// CRC and seq. A damaged frame costs that record only: the reader
// resynchronises at the next good frame, the next place the sync word
// appears where a frame checks out and whose seq follows the last good one
// by no more records than the damaged bytes could hold (g bytes hold at
// most g/m frames, m being the smallest frame: 29 bytes, 57 encrypted). One flipped byte thus loses one record, wherever it
// falls (sync word, length, checksum, seq, time, kind or data), and the
// records after it are kept. Every record lost to damage is counted
// (Stats().Damaged, Stats().Recovered.CorruptRecords, the segment in
// Recovered.CorruptSegments), described (Stats().Damage) and logged
// (rate-limited); so are records missing between two segments (the damaged
// tail of the first, or a segment found empty or moved away). Bytes after
// the last good frame of a segment are cut: in the last segment, a torn
// write (a crash during a write: never acknowledged), logged; in an earlier
// one, damage, whose records are counted as missing before the next
// segment.
//
// A file named as a segment that holds none (zero length, its header torn,
// or not a journal segment: bad magic) is set aside as *.corrupt and
// reported, and its name moves nothing: seqs continue after the last good
// record. (A stray 00000000000099999999.seg must not make the journal count
// from there.) Only when it is the last file and names the seq after the
// last record (or, with no records, one a saved reader acknowledged up to)
// is it what a crash while creating that segment leaves: an empty or torn
// one is then removed, and the next segment takes its name. An empty
// segment with a good header is kept as the last, and seqs continue after
// the seq it is named for; before the last it is removed. A segment of an
// unknown format version, or segments whose seqs overlap, make Open fail
// rather than guess. In an encrypted journal a frame that fails
// authentication fails Open (see Encryption).
//
// Segments of format 1 and 2 (plain and encrypted, as written before frames
// began with a sync word) are read as they are, never converted: their
// frames are resynchronised past damage byte by byte, a place being taken
// for a frame only if its seq fits before its CRC is checked. The journal
// never appends to one: Open starts a new segment, of format 3 or 4, after
// it. (Downgrading to a sluice that reads only 1 and 2 needs the journal
// drained first.)
//
// # Write failures
//
// When a write fails (ENOSPC on a full disk, EIO), the journal refuses new
// records (Append and TryAppend return ErrWriteFailing, wrapping the cause,
// at once; WaitDurable returns it for a record not written yet) and
// Stats().WriteError says why. Nothing is renumbered: the records whose
// write failed were handed seqs, and readers may have had them from the
// cache, so they stay in the write-behind, with what Write adds meanwhile
// (records derived from records already in the journal are still taken;
// they wait in memory). Whatever part of the failed write reached the file
// is truncated. The background goroutine writes the write-behind again
// every flushEvery (200 ms), and at once after removing reclaimed segments
// (a journal that filled the disk frees it as its readers acknowledge);
// once that succeeds the journal takes records again, logs it, and readers
// waiting for a record on file go on. A record refused this way may still
// be delivered later (it was in the journal): the client sends it again,
// and at-least-once covers the duplicate. An fsync that fails is another
// matter (see Modes): it stays refused until Open.
//
// # Concurrency
//
// One mutex guards the journal's state. Append holds it while it encodes
// the frame, writes it with pwrite, adds it to the cache and the index, and
// wakes readers; file creation at rotation also happens under it, fsyncs
// and file removal never do. A Block appender waits on a channel closed
// when acks move or space is reclaimed; readers at the tail wait on one
// closed by the next write; Fsync waiters on one closed by the syncer.
// Each reader has its own mutex for its file position, so readers read
// files in parallel with the writer and each other. Close wakes everyone
// with ErrClosed, stops the goroutines, fsyncs (Fsync mode), saves the
// cursors and closes the files; it is idempotent.
//
// # Figures
//
// On the 2-core development VM (ext4 on virtio), 256-byte records, go test
// -bench (compare as ratios; the machine is shared and noisy):
//
//	Append, Memory                     ~0.12 µs/op, 0 allocs (the data copy: 256 B/op)
//	Append, Process                    ~0.6 µs/op, 0 allocs (pwrite ~0.55 µs of it)
//	Append, Fsync, 1 appender          ~210 µs/op (one fsync each)
//	Append, Fsync, 64 appenders        ~10 µs/op, ~31 appends per fsync
//	Next from the cache                ~0.035 µs/record
//	Next following a writer (Memory)   ~0.19 µs/record, writer and reader together
//	Next from files (page cache)       ~0.13 µs/record, CRC checked
//	Append, Process, with a Key        ~0.73 µs/op against ~0.63 without, in one run (AES-GCM ~0.1 µs)
//	Append, Fsync, 64 appenders, Key   unchanged (fsync dominates)
//	Next from files, with a Key        ~0.19 µs/record against ~0.10 without, in one run
//
// Memory use: the cache (CacheBytes: records' data, the values Options.ValueSize
// sizes, and 64 bytes a record), the sparse index (24 bytes per 8 KiB of segment or per
// second of records, whichever comes first), a 64 KiB
// read buffer per reader reading files, and, with Options.MessageKind, a
// bit per record held.
package journal
