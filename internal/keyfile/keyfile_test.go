package keyfile_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/keyfile"
)

// key is a fixed key whose every form is easy to spot in an error message.
var key = func() []byte {
	k := make([]byte, keyfile.Size)
	for i := range k {
		k[i] = byte(0xa0 + i) // not printable: a plausible raw key
	}
	return k
}()

func write(t *testing.T, content []byte, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sluice.key")
	if err := os.WriteFile(path, content, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return path
}

func TestLoad(t *testing.T) {
	h := hex.EncodeToString(key)
	tests := []struct {
		name    string
		content string
	}{
		{"raw", string(key)},
		{"hex", h},
		{"hex, newline", h + "\n"},
		{"hex, upper case, spaces", "  " + strings.ToUpper(h) + " \r\n"},
		{"base64", base64.StdEncoding.EncodeToString(key) + "\n"},
		{"base64 unpadded", base64.RawStdEncoding.EncodeToString(key)},
		{"base64 url", base64.URLEncoding.EncodeToString(key) + "\n"},
		{"base64 url unpadded", base64.RawURLEncoding.EncodeToString(key)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := keyfile.Load(write(t, []byte(tt.content), 0o600))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, key) {
				t.Fatalf("key %x, want %x", got, key)
			}
		})
	}
	// Read-only for its owner is fine too.
	if _, err := keyfile.Load(write(t, []byte(h), 0o400)); err != nil {
		t.Fatal(err)
	}
}

func TestLoadRefuses(t *testing.T) {
	h := hex.EncodeToString(key)
	tests := []struct {
		name    string
		content []byte
		mode    os.FileMode
		says    string
	}{
		{"readable by others", []byte(h), 0o644, "is readable by others (mode 0644): chmod 600 it"},
		{"readable by group", []byte(h), 0o640, "(mode 0640): chmod 600 it"},
		{"writable by group", []byte(h), 0o620, "(mode 0620)"},
		{"empty", nil, 0o600, "holds 0 bytes"},
		{"31 raw bytes", key[:31], 0o600, "holds 31 bytes"},
		{"33 raw bytes", append(bytes.Clone(key), 0xff), 0o600, "holds 33 bytes"},
		{"63 hex digits", []byte(h[:63]), 0o600, "holds 63 bytes"},
		{"64 characters, not hex", []byte(strings.Repeat("g", 64)), 0o600, "not hex digits"},
		{"hex of 16 bytes", []byte(h[:32] + "\n"), 0o600, "holds 33 bytes (32 without"},
		{"hex of 16 bytes, no newline", []byte(h[:32]), 0o600, "characters of text, not a key"},
		{"passphrase", []byte("correct horse battery staple 123"), 0o600, "characters of text, not a key"},
		{"base64 of 24 bytes", []byte(base64.StdEncoding.EncodeToString(key[:24])), 0o600, "holds 32 characters of text"},
		{"base64 of 31 bytes", []byte(base64.StdEncoding.EncodeToString(key[:31])), 0o600, "holds 44 bytes"},
		{"large", bytes.Repeat(key, 1000), 0o600, "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := write(t, tt.content, tt.mode)
			got, err := keyfile.Load(path)
			if err == nil {
				t.Fatalf("accepted: %x", got)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.says) || !strings.Contains(msg, path) {
				t.Fatalf("error %q does not say %q and name the file", msg, tt.says)
			}
			noKeyIn(t, msg, tt.content)
		})
	}
	t.Run("missing", func(t *testing.T) {
		if _, err := keyfile.Load(filepath.Join(t.TempDir(), "none")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		dir := t.TempDir()
		os.Chmod(dir, 0o700)
		if _, err := keyfile.Load(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("error %v", err)
		}
	})
}

// noKeyIn fails if msg shows any 8 consecutive bytes of content, in any
// form a key file may hold them.
func noKeyIn(t *testing.T, msg string, content []byte) {
	t.Helper()
	forms := []string{string(content), hex.EncodeToString(content), fmt.Sprintf("%X", content), fmt.Sprintf("%q", content)}
	for _, f := range forms {
		for i := 0; i+8 <= len(f); i++ {
			if strings.Contains(msg, f[i:i+8]) && strings.Trim(f[i:i+8], "0123456789 ") != "" {
				t.Fatalf("error %q shows key material %q", msg, f[i:i+8])
			}
		}
	}
}

func TestGenerate(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.key"), filepath.Join(dir, "b.key")
	for _, p := range []string{a, b} {
		if err := keyfile.Generate(p); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %#o", fi.Mode().Perm())
	}
	content, _ := os.ReadFile(a)
	if len(content) != 65 || content[64] != '\n' {
		t.Fatalf("content of %d bytes, want 64 hex digits and a newline", len(content))
	}
	ka, err := keyfile.Load(a)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := keyfile.Load(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(ka) != keyfile.Size || bytes.Equal(ka, kb) {
		t.Fatal("two generated keys are equal")
	}

	// It never overwrites.
	err = keyfile.Generate(a)
	if err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("Generate over an existing file: %v", err)
	}
	noKeyIn(t, err.Error(), content)
	if again, _ := os.ReadFile(a); !bytes.Equal(again, content) {
		t.Fatal("Generate changed an existing key file")
	}
	if err := keyfile.Generate(filepath.Join(dir, "missing", "c.key")); err == nil {
		t.Fatal("Generate into a missing folder")
	}
}
