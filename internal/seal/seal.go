// Package seal is sluice's one way of encrypting data at rest, shared by
// the journal (internal/journal) and the broker's stored state (ingest):
//
//   - Keys are derived, never used directly: HKDF-SHA256 of the master key
//     (KeySize bytes, AES-256; internal/keyfile loads it), a random salt
//     and a purpose. Each user names its purposes, so that no derived key
//     serves two uses, and draws a fresh salt for each key it seals with
//     (the journal one per segment, the broker state one per run).
//   - A key check (a derived value stored beside the salt) tells a wrong
//     master key from damage before anything is opened.
//   - Data is sealed with AES-256-GCM, the caller's additional data
//     binding it to its place (a record's seq, a bbolt key): sealed data
//     moved elsewhere fails authentication.
//   - A nonce never repeats under a key, by construction: 4 random bytes
//     drawn with the Sealer, then a counter the caller never repeats for
//     that Sealer (the journal uses the record's seq, unique within a
//     segment; the broker state a counter). 12 random bytes per message
//     would cost a getrandom call each and, under one key, bound it to
//     about 2^32 messages.
//
// Sealed data is laid out as nonce | ciphertext | tag, Overhead bytes more
// than the plaintext. The nonce is stored, so a reader never needs to know
// how it was made.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	KeySize   = 32                  // a master key, and a derived AES-256 key
	SaltSize  = 16                  // a salt
	CheckSize = 16                  // a key check
	NonceSize = 12                  // a GCM nonce
	TagSize   = 16                  // a GCM tag
	Overhead  = NonceSize + TagSize // bytes sealing adds
	prefixLen = NonceSize - 8       // random bytes at the start of each nonce
)

// ErrAuth is returned by Open for sealed data that fails authentication:
// altered, truncated, or moved from its place (other additional data) or
// from another key.
var ErrAuth = errors.New("fails authentication")

// NewSalt returns a fresh random salt.
func NewSalt() []byte {
	s := make([]byte, SaltSize)
	rand.Read(s) // never fails (crypto/rand)
	return s
}

// Derive returns n bytes derived from key for salt and purpose
// (HKDF-SHA256; n at most 8160).
func Derive(key, salt []byte, purpose string, n int) ([]byte, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("seal: key must be %d bytes, not %d", KeySize, len(key))
	}
	return hkdf.Key(sha256.New, key, salt, purpose, n)
}

// Check returns the key check of key for salt and purpose: stored beside
// the salt, it lets Verify tell a wrong key at once.
func Check(key, salt []byte, purpose string) ([]byte, error) {
	return Derive(key, salt, purpose, CheckSize)
}

// Verify reports whether check is key's check for salt and purpose (in
// constant time).
func Verify(key, salt []byte, purpose string, check []byte) bool {
	want, err := Check(key, salt, purpose)
	return err == nil && len(check) == len(want) && subtle.ConstantTimeCompare(want, check) == 1
}

// Sealer seals and opens with one derived key. Open is safe for concurrent
// use; Seal is too, as long as the callers never pass the same counter.
type Sealer struct {
	aead   cipher.AEAD
	prefix [prefixLen]byte // the first bytes of the nonces it makes: random
}

// New returns the Sealer of the AES-256-GCM key derived from key for salt
// and purpose, with a random nonce prefix of its own.
func New(key, salt []byte, purpose string) (*Sealer, error) {
	k, err := Derive(key, salt, purpose, KeySize)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	s := &Sealer{aead: aead}
	rand.Read(s.prefix[:])
	return s, nil
}

// Seal appends nonce | ciphertext | tag of plaintext to dst and returns
// the result. The nonce is the Sealer's prefix then counter, which must
// never be passed twice to one Sealer. ad is authenticated, not stored.
// plaintext and ad may lie in dst's spare capacity only if they do not
// overlap what Seal writes.
func (s *Sealer) Seal(dst []byte, counter uint64, plaintext, ad []byte) []byte {
	n := len(dst)
	dst = append(dst, s.prefix[:]...)
	dst = binary.LittleEndian.AppendUint64(dst, counter)
	return s.aead.Seal(dst, dst[n:n+NonceSize], plaintext, ad)
}

// Open authenticates sealed (nonce | ciphertext | tag) with ad and appends
// the plaintext to dst. It returns ErrAuth if sealed was altered, or
// sealed with another key or other additional data.
func (s *Sealer) Open(dst, sealed, ad []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, ErrAuth
	}
	pt, err := s.aead.Open(dst, sealed[:NonceSize], sealed[NonceSize:], ad)
	if err != nil {
		return nil, ErrAuth
	}
	return pt, nil
}

// OpenInPlace is Open that decrypts into sealed's own storage: the
// plaintext overwrites the ciphertext (and sealed is garbage if it fails).
func (s *Sealer) OpenInPlace(sealed, ad []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, ErrAuth
	}
	return s.Open(sealed[NonceSize:NonceSize], sealed, ad)
}
