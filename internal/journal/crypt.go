package journal

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
	"hash/crc32"
	"slices"
)

// Encryption at rest (Options.Key); see the package documentation.
const (
	// KeySize is the size of Options.Key: an AES-256 key.
	KeySize = 32

	encryptedVersion    = 2  // format version of an encrypted segment
	encryptedHeaderSize = 48 // magic, uint32 version (2), uint32 cipher, salt, key check
	cipherAES256GCM     = 1
	saltSize            = 16
	keyCheckSize        = 16
	nonceSize           = 12
	tagSize             = 16
	sealOverhead        = nonceSize + tagSize // bytes sealing adds to a record's data

	infoSegmentKey = "sluice journal segment key (AES-256-GCM)"
	infoKeyCheck   = "sluice journal key check"
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

// sealer seals and opens the records of one encrypted segment, with the
// segment's own key: HKDF-SHA256 of Options.Key and the random salt in the
// segment's header.
type sealer struct {
	aead   cipher.AEAD
	prefix [4]byte // the first 4 bytes of the nonces of the records it seals: random, drawn when the segment was created
}

// segmentKeys derives a segment's AEAD and its key check from the journal
// key and the segment's salt.
func segmentKeys(key, salt []byte) (cipher.AEAD, []byte, error) {
	sk, err := hkdf.Key(sha256.New, key, salt, infoSegmentKey, KeySize)
	if err != nil {
		return nil, nil, err
	}
	check, err := hkdf.Key(sha256.New, key, salt, infoKeyCheck, keyCheckSize)
	if err != nil {
		return nil, nil, err
	}
	block, err := aes.NewCipher(sk)
	if err != nil {
		return nil, nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, nil, err
	}
	return aead, check, nil
}

// sealedHeader returns the header of a new encrypted segment, with a fresh
// salt, and the sealer for its records.
func sealedHeader(key []byte) ([]byte, *sealer, error) {
	h := make([]byte, encryptedHeaderSize)
	copy(h, magic)
	binary.LittleEndian.PutUint32(h[8:], encryptedVersion)
	binary.LittleEndian.PutUint32(h[12:], cipherAES256GCM)
	salt := h[16 : 16+saltSize]
	rand.Read(salt)
	aead, check, err := segmentKeys(key, salt)
	if err != nil {
		return nil, nil, err
	}
	copy(h[16+saltSize:], check)
	sl := &sealer{aead: aead}
	rand.Read(sl.prefix[:])
	return h, sl, nil
}

// openSealedHeader checks the header of an encrypted segment against key
// and returns the sealer that opens its records.
func openSealedHeader(key, h []byte) (*sealer, error) {
	if c := binary.LittleEndian.Uint32(h[12:]); c != cipherAES256GCM {
		return nil, fmt.Errorf("unknown cipher %d", c)
	}
	aead, check, err := segmentKeys(key, h[16:16+saltSize])
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(check, h[16+saltSize:encryptedHeaderSize]) != 1 {
		return nil, ErrWrongKey
	}
	return &sealer{aead: aead}, nil
}

// appendSealedFrame appends one frame of an encrypted segment to dst: the
// data area holds the nonce (prefix, then the seq) and the data sealed
// with AES-256-GCM, with the frame's seq, time and kind as additional data.
func appendSealedFrame(dst []byte, seq uint64, t int64, kind byte, data []byte, sl *sealer) []byte {
	n := len(dst)
	dst = slices.Grow(dst, frameOverhead+sealOverhead+len(data))[:n+frameOverhead+nonceSize]
	f := dst[n:]
	binary.LittleEndian.PutUint32(f[0:], uint32(recordHead+sealOverhead+len(data)))
	binary.LittleEndian.PutUint64(f[8:], seq)
	binary.LittleEndian.PutUint64(f[16:], uint64(t))
	f[24] = kind
	nonce := f[frameOverhead:]
	copy(nonce, sl.prefix[:])
	binary.LittleEndian.PutUint64(nonce[4:], seq)
	// The nonce and the additional data lie before len(dst): Seal writes
	// after them, never over them.
	dst = sl.aead.Seal(dst, nonce, data, f[frameHead:frameOverhead])
	f = dst[n:]
	binary.LittleEndian.PutUint32(f[4:], crc32.Checksum(f[frameHead:], castagnoli))
	return dst
}

// open authenticates and decrypts fr's data in place (in the buffer it
// points into) and points fr.data at the plaintext.
func (sl *sealer) open(fr *frame) error {
	if len(fr.data) < sealOverhead {
		return ErrTampered
	}
	nonce, ct := fr.data[:nonceSize], fr.data[nonceSize:]
	pt, err := sl.aead.Open(ct[:0], nonce, ct, fr.ad)
	if err != nil {
		return ErrTampered
	}
	fr.data = pt
	return nil
}
