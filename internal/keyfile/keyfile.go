// Package keyfile reads and writes the key file that encrypts sluice's data
// at rest (the journal's segments and the broker's stored state): 32 bytes,
// an AES-256 key.
//
// A key file holds the key as 32 raw bytes, as 64 hexadecimal digits, or as
// base64 (standard or URL alphabet, padded or not) of 32 bytes; whitespace
// around the text forms is ignored. Generate writes hex. The file must not
// be accessible to group or others (chmod 600): Load refuses it otherwise,
// as ssh does a private key. Errors name the file, never its content.
package keyfile

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
)

// Size is the size of a key: AES-256.
const Size = 32

// maxFile bounds what Load reads: the longest form, padded base64 with
// whitespace, is far shorter.
const maxFile = 4 << 10

// Load reads the key in the file at path.
func Load(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("key file %s is not a regular file", path)
	}
	// Windows has no such mode bits; its ACLs are the operator's.
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("key file %s is readable by others (mode %#o): chmod 600 it", path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	defer clear(b)
	if err != nil {
		return nil, fmt.Errorf("key file %s: read: %w", path, err)
	}
	key, err := parse(b)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return key, nil
}

// parse decodes a key file's content. Its errors tell the form expected and
// lengths, never content.
func parse(b []byte) ([]byte, error) {
	if len(b) == Size {
		if printable(b) {
			// Random bytes are all printable with a chance of 2^-45: this
			// is a passphrase or half a hex key, not a key.
			return nil, fmt.Errorf("holds %d characters of text, not a key: want 64 hex digits or base64 of %d bytes (or %d raw bytes)", Size, Size, Size)
		}
		return bytes.Clone(b), nil
	}
	t := bytes.TrimSpace(b)
	if len(t) == 2*Size {
		key := make([]byte, Size)
		if _, err := hex.Decode(key, t); err != nil {
			return nil, fmt.Errorf("holds %d characters that are not hex digits", len(t))
		}
		return key, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if enc.DecodedLen(len(t)) < Size || enc.DecodedLen(len(t)) > Size+2 {
			continue
		}
		key := make([]byte, enc.DecodedLen(len(t)))
		if n, err := enc.Decode(key, t); err == nil && n == Size {
			return key[:Size], nil
		}
		clear(key)
	}
	if len(b) > maxFile {
		return nil, fmt.Errorf("holds more than %d bytes: want %d raw bytes, 64 hex digits or base64 of %d bytes", maxFile, Size, Size)
	}
	return nil, fmt.Errorf("holds %d bytes (%d without surrounding whitespace): want %d raw bytes, 64 hex digits or base64 of %d bytes",
		len(b), len(t), Size, Size)
}

// printable reports whether b is all printable ASCII or whitespace.
func printable(b []byte) bool {
	for _, c := range b {
		if (c < 0x20 || c > 0x7e) && c != '\n' && c != '\r' && c != '\t' {
			return false
		}
	}
	return true
}

// Generate writes a new random key to a new file at path, as 64 hex digits
// and a newline, readable by its owner only (mode 0600). It refuses to
// overwrite an existing file: the data it encrypted would be lost with it.
func Generate(path string) error {
	key := make([]byte, Size)
	rand.Read(key)
	text := make([]byte, 2*Size, 2*Size+1)
	hex.Encode(text, key)
	text = append(text, '\n')
	defer clear(key)
	defer clear(text)

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("key file %s exists; not overwriting it (the data encrypted with it would be lost)", path)
	}
	if err != nil {
		return fmt.Errorf("key file: %w", err)
	}
	_, err = f.Write(text)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("key file %s: write: %w", path, err)
	}
	// Make the file's name durable too, best effort: a key lost in a power
	// cut loses the data.
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
