package journal

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// syncLoop is Fsync mode's group commit: it waits until someone waits for
// durability (or a segment was closed), notes the last seq written, fsyncs
// the closed segments, the active one and, after a file was created, the
// directory; then it advances Durable to the noted seq and wakes every
// waiter at once. Appends that arrive during an fsync are covered by the
// next one, so any number of appenders share one fsync per round.
func (j *Journal) syncLoop() {
	defer j.wg.Done()
	var files []*os.File
	j.mu.Lock()
	defer j.mu.Unlock()
	for {
		for !j.closed && j.err == nil && len(j.unsynced) == 0 &&
			!(j.syncWanted && j.durable.Load() < j.syncTarget()) {
			j.syncCond.Wait()
		}
		if j.closed || j.err != nil {
			return
		}
		// While writes fail, what was written is still made durable.
		j.flush()
		target := j.wlast
		files = append(files[:0], j.unsynced...)
		clear(j.unsynced)
		j.unsynced = j.unsynced[:0]
		active := j.active.f
		dir := j.dirDirty
		j.dirDirty = false
		j.syncWanted = false
		j.mu.Unlock()

		err := j.syncFiles(files, active, dir)
		for _, f := range files {
			f.Close()
		}

		j.mu.Lock()
		if err != nil {
			// After a failed fsync the kernel may have dropped the dirty
			// pages: nothing written since the last good fsync can be
			// trusted, and nothing more may be acknowledged.
			j.err = err
			j.log.Error("journal: fsync failed; the journal refuses further records", "dir", j.opts.Dir, "error", err)
		} else if target > j.durable.Load() {
			j.durable.Store(target)
		}
		wake(&j.durableCh)
	}
}

// syncTarget is the last seq the syncer can make durable: the last
// written, or, while writes fail, the last that reached a file. Called
// with mu held.
func (j *Journal) syncTarget() uint64 {
	if j.werr != nil {
		return j.wlast
	}
	return j.last
}

// syncFiles fsyncs closed segments, then the active one, then (if dir) the
// directory.
func (j *Journal) syncFiles(closed []*os.File, active *os.File, dir bool) error {
	for _, f := range closed {
		if err := j.syncFile(f); err != nil {
			return fmt.Errorf("journal: fsync %s: %w", f.Name(), err)
		}
	}
	if err := j.syncFile(active); err != nil {
		return fmt.Errorf("journal: fsync %s: %w", active.Name(), err)
	}
	if dir {
		return j.syncDir()
	}
	return nil
}

// background removes reclaimed segment files, saves changed cursors at
// most every flushEvery, and in Fsync mode makes records appended without
// waiting durable within about flushEvery.
func (j *Journal) background() {
	defer j.wg.Done()
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-j.stop:
			return
		case <-j.kick:
			if j.removeTrash() {
				j.mu.Lock()
				j.probe() // space may have been freed
				j.mu.Unlock()
			}
			continue
		case <-t.C:
		}
		j.removeTrash()
		j.mu.Lock()
		if j.opts.Retain > 0 {
			j.reclaim() // retained segments that have aged out
		}
		dirty := j.cursorsDirty
		j.probe() // while writes fail: try again
		if j.opts.Mode == Process && j.err == nil && j.werr == nil {
			j.flush() // write-behind is never older than flushEvery
		}
		if j.opts.Mode == Fsync && j.durable.Load() < j.last {
			j.syncWanted = true
			j.syncCond.Signal()
		}
		j.mu.Unlock()
		if dirty {
			j.saveCursors()
		}
	}
}

// removeTrash removes the files of reclaimed segments and reports whether
// there were any.
func (j *Journal) removeTrash() bool {
	j.mu.Lock()
	paths := j.trash
	j.trash = nil
	j.mu.Unlock()
	if len(paths) == 0 {
		return false
	}
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			// The file stays; the next Open finds it and reclaims it again.
			j.log.Warn("journal: remove reclaimed segment", "segment", p, "error", err)
		}
	}
	if j.opts.Mode == Fsync {
		if err := j.syncDir(); err != nil {
			j.log.Warn("journal: fsync dir after removing segments", "error", err)
		}
	}
	return true
}
