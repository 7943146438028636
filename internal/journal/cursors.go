package journal

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

const (
	cursorsFile    = "cursors.json"
	cursorsVersion = 1
)

// cursorsDoc is the cursors file: {"version":1,"readers":{"influx":{"acked":41,"skipped":0}}}.
type cursorsDoc struct {
	Version int                     `json:"version"`
	Readers map[string]cursorRecord `json:"readers"`
}

type cursorRecord struct {
	Acked   uint64 `json:"acked"`
	Skipped uint64 `json:"skipped,omitempty"`
}

// readCursors reads the cursors file. A missing file means no readers (nil);
// a corrupt one is logged and treated as missing (every reader then starts
// at the first record held: records are delivered again, never lost).
func (j *Journal) readCursors() (*cursorsDoc, error) {
	path := filepath.Join(j.opts.Dir, cursorsFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("journal: read cursors: %w", err)
	}
	var doc cursorsDoc
	if err := json.Unmarshal(b, &doc); err != nil || doc.Version != cursorsVersion {
		if err == nil {
			err = fmt.Errorf("version %d, want %d", doc.Version, cursorsVersion)
		}
		j.log.Error("journal: cursors file is corrupt; every reader starts again at the first record held",
			"file", path, "error", err)
		return nil, nil
	}
	return &doc, nil
}

// maxAcked returns the highest seq a saved reader acknowledged.
func (doc *cursorsDoc) maxAcked() uint64 {
	var n uint64
	if doc != nil {
		for _, c := range doc.Readers {
			n = max(n, c.Acked)
		}
	}
	return n
}

// loadCursors creates the readers saved in doc (from readCursors). Called
// by Open, after recovery, before anyone else sees j.
func (j *Journal) loadCursors(doc *cursorsDoc) {
	if doc == nil {
		return
	}
	for name, c := range doc.Readers {
		r := &Reader{j: j, name: name, acked: c.Acked, skipped: c.Skipped}
		if r.acked > j.last {
			// The records it acknowledged were lost (power loss in Process
			// mode): the records that take their seqs are new to it.
			j.log.Warn("journal: reader acknowledged records that are not in the journal",
				"reader", name, "acked", r.acked, "last", j.last)
			r.acked = j.last
			j.cursorsDirty = true
		}
		if r.acked+1 < j.first {
			// Dropped (or cut as corrupt) before it acknowledged them.
			r.skipped += j.first - 1 - r.acked
			r.acked = j.first - 1
			j.cursorsDirty = true
		}
		r.next = r.acked + 1
		j.readers[name] = r
	}
	j.updateMinAck()
}

// saveCursors writes the cursors file atomically: a temporary file renamed
// over the old one (both fsync'd, and the directory, in Fsync mode). A
// cursor never claims more than Durable: if the process dies, the records
// after Durable may be lost and their seqs reused by new records, which the
// reader must not skip.
func (j *Journal) saveCursors() error {
	j.saveMu.Lock()
	defer j.saveMu.Unlock()

	j.mu.Lock()
	doc := cursorsDoc{Version: cursorsVersion, Readers: make(map[string]cursorRecord, len(j.readers))}
	durable := j.durable.Load()
	held := false
	for name, r := range j.readers {
		c := cursorRecord{Acked: r.acked, Skipped: r.skipped}
		if c.Acked > durable {
			c.Acked, held = durable, true
		}
		doc.Readers[name] = c
	}
	j.cursorsDirty = held // save again once Durable has caught up
	j.mu.Unlock()

	err := j.writeCursors(doc)
	if err != nil {
		j.mu.Lock()
		j.cursorsDirty = true
		j.mu.Unlock()
		if !j.saveErr {
			j.log.Error("journal: save cursors", "dir", j.opts.Dir, "error", err)
		}
	} else if j.saveErr {
		j.log.Info("journal: saved cursors again", "dir", j.opts.Dir)
	}
	j.saveErr = err != nil
	return err
}

func (j *Journal) writeCursors(doc cursorsDoc) error {
	b, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("journal: encode cursors: %w", err)
	}
	path := filepath.Join(j.opts.Dir, cursorsFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("journal: write cursors: %w", err)
	}
	_, err = f.Write(b)
	if err == nil && j.opts.Mode == Fsync {
		err = j.syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("journal: write cursors: %w", err)
	}
	if j.opts.Mode == Fsync {
		return j.syncDir()
	}
	return nil
}
