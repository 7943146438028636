// Package file is the file sink: it appends events to a file as JSON lines,
// one event per line, rotating the file by size. Its usual job is the dead
// letters, so that nothing sluice could not process is lost.
package file

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/conf"
)

// Config configures a file sink.
type Config struct {
	// Path of the file written; its folder is created.
	Path string `yaml:"path"`
	// MaxBytes rotates the file once it is this large: path becomes path.1,
	// path.1 becomes path.2, ... (default 100 MiB).
	MaxBytes int64 `yaml:"max_bytes"`
	// Keep is how many rotated files are kept (default 5).
	Keep int `yaml:"keep"`
	// Fsync syncs the file after each batch, so a power loss cannot take
	// written events with it.
	Fsync bool `yaml:"fsync"`
}

// SetDefaults fills in what the operator left out.
func (c *Config) SetDefaults() {
	if c.MaxBytes == 0 {
		c.MaxBytes = 100 << 20
	}
	if c.Keep == 0 {
		c.Keep = 5
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var p conf.Problems
	if c.Path == "" {
		p.Missing("path")
	}
	if c.MaxBytes < 0 {
		p.Addf("max_bytes", "must not be negative")
	}
	if c.Keep < 0 {
		p.Addf("keep", "must not be negative")
	}
	return p.Err()
}

// Sink appends JSON lines to a file. Only the sink's writer goroutine calls
// it, so it needs no lock.
type Sink struct {
	cfg  Config
	f    *os.File
	size int64
	buf  []byte
}

// New returns a sink for cfg (validated). It does no I/O.
func New(cfg Config) *Sink {
	cfg.SetDefaults()
	return &Sink{cfg: cfg}
}

// Connect opens (or creates) the file for appending.
func (s *Sink) Connect(ctx context.Context) error {
	if s.f != nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(s.cfg.Path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(s.cfg.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	s.f, s.size = f, st.Size()
	return nil
}

// Write appends the batch with one write. A disk error is retryable: the
// events wait for space rather than being dropped. An event that cannot be
// encoded is named in a *sluice.BatchError, and the others are written.
func (s *Sink) Write(ctx context.Context, batch []sluice.Event) error {
	if err := s.Connect(ctx); err != nil {
		return sluice.Retryable(fmt.Errorf("open %s: %w", s.cfg.Path, err), 0)
	}
	s.buf = s.buf[:0]
	var bad map[int]error
	for i := range batch {
		line, err := batch[i].Encode()
		if err != nil {
			if bad == nil {
				bad = map[int]error{}
			}
			bad[i] = sluice.Permanent(err)
			continue
		}
		s.buf = append(append(s.buf, line...), '\n')
	}
	if err := s.append(); err != nil {
		return err
	}
	if bad != nil {
		return &sluice.BatchError{Errs: bad}
	}
	return nil
}

// append writes s.buf to the file (and syncs it, with fsync), and rotates
// the file once it is large enough.
func (s *Sink) append() error {
	n, err := s.f.Write(s.buf)
	s.size += int64(n)
	if err != nil {
		// A partial line may have been written; close the file so the next
		// attempt starts cleanly on a new line after reopening.
		s.f.Close()
		s.f = nil
		return sluice.Retryable(fmt.Errorf("write %s: %w", s.cfg.Path, err), 0)
	}
	if s.cfg.Fsync {
		if err := s.f.Sync(); err != nil {
			return sluice.Retryable(fmt.Errorf("sync %s: %w", s.cfg.Path, err), 0)
		}
	}
	if s.size >= s.cfg.MaxBytes {
		if err := s.rotate(); err != nil {
			return sluice.Retryable(err, 0)
		}
	}
	return nil
}

// rotate moves path to path.1 (and older files up by one), keeping Keep.
func (s *Sink) rotate() error {
	if err := s.f.Close(); err != nil {
		return err
	}
	s.f = nil
	for i := s.cfg.Keep; i >= 1; i-- {
		from := s.cfg.Path
		if i > 1 {
			from = fmt.Sprintf("%s.%d", s.cfg.Path, i-1)
		}
		to := fmt.Sprintf("%s.%d", s.cfg.Path, i)
		if err := os.Rename(from, to); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("rotate %s: %w", from, err)
		}
	}
	if s.cfg.Keep == 0 {
		os.Remove(s.cfg.Path)
	}
	return nil
}

// Close closes the file.
func (s *Sink) Close(ctx context.Context) error {
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
