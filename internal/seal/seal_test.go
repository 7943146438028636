package seal

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"
)

var (
	testKey  = bytes.Repeat([]byte{0x5a}, KeySize)
	testSalt = []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
)

// The derivations the journal and the broker state have stored keys and
// checks with: a change here would make every encrypted file unreadable.
// Expected values computed independently (Python's hmac, RFC 5869).
func TestDeriveKnownAnswers(t *testing.T) {
	for _, tt := range []struct {
		purpose string
		n       int
		want    string
	}{
		{"sluice journal key check", CheckSize, "fa541a93a2097b33ee453f1f48275e20"},
		{"sluice journal segment key (AES-256-GCM)", KeySize, "055817a11355bad9d7eb790c48096b89ad4ed7e7f075a08882e4eaeee6791296"},
		{"sluice broker state key check", CheckSize, "d78105dd7cd1ebb36885e0a5cca33de5"},
		{"sluice broker state names", 32, "39e8ff9eabff0c362324a30032a3f9d95e088907f100bed15791bc90cd294262"},
		{"sluice broker state values (AES-256-GCM)", KeySize, "ee8357f8bcc3a07c0ef0ad652bd2b86f3e18f7014bdc58d9a76ae72d4996edf5"},
	} {
		got, err := Derive(testKey, testSalt, tt.purpose, tt.n)
		if err != nil || hex.EncodeToString(got) != tt.want {
			t.Errorf("Derive(%q) = %x, %v; want %s", tt.purpose, got, err, tt.want)
		}
	}
}

func TestDeriveRefusesAKeyOfTheWrongSize(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33} {
		if _, err := Derive(make([]byte, n), testSalt, "p", 16); err == nil {
			t.Errorf("a %d-byte key was accepted", n)
		}
		if _, err := New(make([]byte, n), testSalt, "p"); err == nil {
			t.Errorf("New: a %d-byte key was accepted", n)
		}
	}
}

func TestCheck(t *testing.T) {
	check, err := Check(testKey, testSalt, "check")
	if err != nil || len(check) != CheckSize {
		t.Fatalf("Check: %x, %v", check, err)
	}
	if !Verify(testKey, testSalt, "check", check) {
		t.Fatal("the key's own check does not verify")
	}
	other := bytes.Repeat([]byte{0x5b}, KeySize)
	for name, ok := range map[string]bool{
		"another key":     Verify(other, testSalt, "check", check),
		"another salt":    Verify(testKey, NewSalt(), "check", check),
		"another purpose": Verify(testKey, testSalt, "other", check),
		"a short check":   Verify(testKey, testSalt, "check", check[:8]),
		"no check":        Verify(testKey, testSalt, "check", nil),
		"a wrong key":     Verify(testKey[:16], testSalt, "check", check),
	} {
		if ok {
			t.Errorf("%s verifies", name)
		}
	}
}

func TestSealOpen(t *testing.T) {
	s, err := New(testKey, testSalt, "values")
	if err != nil {
		t.Fatal(err)
	}
	ad := []byte("where it lives")
	for _, pt := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("payload "), 1000)} {
		prefix := []byte("head")
		sealed := s.Seal(bytes.Clone(prefix), 42, pt, ad)
		if !bytes.HasPrefix(sealed, prefix) || len(sealed) != len(prefix)+Overhead+len(pt) {
			t.Fatalf("sealed %d bytes of %d onto %q: %d bytes", len(pt), len(pt), prefix, len(sealed))
		}
		sealed = sealed[len(prefix):]
		if n := binary.LittleEndian.Uint64(sealed[4:NonceSize]); n != 42 {
			t.Fatalf("nonce counter %d, want 42", n)
		}
		if len(pt) > 16 && bytes.Contains(sealed, pt[:16]) {
			t.Fatal("plaintext in the sealed data")
		}
		got, err := s.Open(nil, sealed, ad)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("Open: %q, %v", got, err)
		}
		// Another Sealer of the same key, salt and purpose opens it.
		s2, _ := New(testKey, testSalt, "values")
		got, err = s2.OpenInPlace(bytes.Clone(sealed), ad)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("OpenInPlace: %q, %v", got, err)
		}
	}
}

// Whatever was changed, moved or rekeyed fails authentication.
func TestOpenRefuses(t *testing.T) {
	s, _ := New(testKey, testSalt, "values")
	ad := []byte("ad")
	sealed := s.Seal(nil, 1, []byte("the data"), ad)
	flip := func(i int) []byte {
		b := bytes.Clone(sealed)
		b[i] ^= 0x10
		return b
	}
	other := func(key, salt []byte, purpose string) *Sealer {
		o, err := New(key, salt, purpose)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	for _, tt := range []struct {
		name   string
		s      *Sealer
		sealed []byte
		ad     []byte
	}{
		{"nonce altered", s, flip(0), ad},
		{"ciphertext altered", s, flip(NonceSize), ad},
		{"tag altered", s, flip(len(sealed) - 1), ad},
		{"truncated", s, sealed[:len(sealed)-1], ad},
		{"shorter than a nonce and a tag", s, sealed[:Overhead-1], ad},
		{"other additional data", s, sealed, []byte("elsewhere")},
		{"another key", other(bytes.Repeat([]byte{1}, KeySize), testSalt, "values"), sealed, ad},
		{"another salt", other(testKey, NewSalt(), "values"), sealed, ad},
		{"another purpose", other(testKey, testSalt, "names"), sealed, ad},
	} {
		if _, err := tt.s.Open(nil, tt.sealed, tt.ad); !errors.Is(err, ErrAuth) {
			t.Errorf("%s: Open returned %v, want ErrAuth", tt.name, err)
		}
		if _, err := tt.s.OpenInPlace(bytes.Clone(tt.sealed), tt.ad); !errors.Is(err, ErrAuth) {
			t.Errorf("%s: OpenInPlace returned %v, want ErrAuth", tt.name, err)
		}
	}
}

// Two Sealers of one key (two journals sharing a key, each counting from 1)
// never make the same nonce: each draws its own prefix.
func TestNoncePrefixesDiffer(t *testing.T) {
	seen := map[string]bool{}
	for range 64 {
		s, _ := New(testKey, testSalt, "values")
		nonce := string(s.Seal(nil, 1, nil, nil)[:NonceSize])
		if seen[nonce] {
			t.Fatal("two Sealers made the same nonce for counter 1")
		}
		seen[nonce] = true
	}
	if a, b := NewSalt(), NewSalt(); len(a) != SaltSize || bytes.Equal(a, b) {
		t.Fatalf("salts %x and %x", a, b)
	}
}
