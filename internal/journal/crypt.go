package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"

	"github.com/sluicehq/sluice/internal/seal"
)

// Encryption at rest (Options.Key); see the package documentation. The
// scheme (HKDF-SHA256 key derivation, AES-256-GCM, nonces) is
// internal/seal's, shared with the broker's stored state; this file is the
// journal's use of it: a key per segment, the segment header, sealed
// frames.
const (
	// KeySize is the size of Options.Key: an AES-256 key.
	KeySize = seal.KeySize

	sealedHeaderSize1 = 48 // magic, uint32 version (2), uint32 cipher, salt, key check
	sealedHeaderSize  = 52 // the same, version 4, then the sync word
	cipherAES256GCM   = 1
	saltSize          = seal.SaltSize
	nonceSize         = seal.NonceSize
	sealOverhead      = seal.Overhead // bytes sealing adds to a record's data

	// The purposes of the keys derived from Options.Key and a segment's salt.
	purposeSegmentKey = "sluice journal segment key (AES-256-GCM)"
	purposeKeyCheck   = "sluice journal key check"
)

var (
	// ErrWrongKey is returned by Open when Options.Key does not match the
	// segments on disk: another key, no key for an encrypted journal, or a
	// key for a plain one.
	ErrWrongKey = errors.New("journal key does not match")
	// ErrTampered is returned by Open and Reader.Next for a record of an
	// encrypted segment whose CRC checks out but which fails
	// authentication, or an authentic record out of its place: the file
	// was altered on purpose, not torn or damaged at random.
	ErrTampered = errors.New("record fails authentication (the segment was altered)")
)

// sealedHeader returns the header of a new encrypted segment with sync
// word sync and a fresh salt, and the sealer for its records.
func sealedHeader(key, sync []byte) ([]byte, *seal.Sealer, error) {
	h := make([]byte, sealedHeaderSize)
	copy(h, magic)
	binary.LittleEndian.PutUint32(h[8:], versionSealed)
	copy(h[sealedHeaderSize1:], sync)
	binary.LittleEndian.PutUint32(h[12:], cipherAES256GCM)
	salt := seal.NewSalt()
	copy(h[16:], salt)
	check, err := seal.Check(key, salt, purposeKeyCheck)
	if err != nil {
		return nil, nil, err
	}
	copy(h[16+saltSize:], check)
	sl, err := seal.New(key, salt, purposeSegmentKey)
	if err != nil {
		return nil, nil, err
	}
	return h, sl, nil
}

// openSealedHeader checks the header of an encrypted segment (its first
// sealedHeaderSize1 bytes suffice) against key and returns the sealer that
// opens its records.
func openSealedHeader(key, h []byte) (*seal.Sealer, error) {
	if c := binary.LittleEndian.Uint32(h[12:]); c != cipherAES256GCM {
		return nil, fmt.Errorf("unknown cipher %d", c)
	}
	salt := h[16 : 16+saltSize]
	if !seal.Verify(key, salt, purposeKeyCheck, h[16+saltSize:sealedHeaderSize1]) {
		return nil, ErrWrongKey
	}
	return seal.New(key, salt, purposeSegmentKey)
}

// appendSealedFrame appends one frame of an encrypted segment to dst, sync
// word first: the data area holds the data sealed with the segment's key
// (nonce, ciphertext, tag; the seq is the nonce's counter), with the
// frame's seq, time and kind as additional data.
func appendSealedFrame(dst, sync []byte, seq uint64, t int64, kind byte, data []byte, sl *seal.Sealer) []byte {
	dst = append(dst, sync...)
	n := len(dst)
	dst = slices.Grow(dst, frameOverhead+sealOverhead+len(data))[:n+frameOverhead]
	f := dst[n:]
	binary.LittleEndian.PutUint32(f[0:], uint32(recordHead+sealOverhead+len(data)))
	binary.LittleEndian.PutUint64(f[8:], seq)
	binary.LittleEndian.PutUint64(f[16:], uint64(t))
	f[24] = kind
	// The additional data lies before len(dst): Seal writes after it.
	dst = sl.Seal(dst, seq, data, f[frameHead:frameOverhead])
	f = dst[n:]
	binary.LittleEndian.PutUint32(f[4:], crc32.Checksum(f[frameHead:], castagnoli))
	return dst
}

// openFrame authenticates and decrypts fr's data in place (in the buffer
// it points into) and points fr.data at the plaintext.
func openFrame(sl *seal.Sealer, fr *frame) error {
	pt, err := sl.OpenInPlace(fr.data, fr.ad)
	if err != nil {
		return ErrTampered
	}
	fr.data = pt
	return nil
}
