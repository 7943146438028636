package auth

import (
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// BenchmarkVerify compares a login whose password the verifier has seen
// (a reconnect) with one it must check with bcrypt (the first login, or a
// wrong password), at the default cost.
func BenchmarkVerify(b *testing.B) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), DefaultCost)
	if err != nil {
		b.Fatal(err)
	}
	p := &Passwords{hashes: map[string][]byte{"device": hash}}
	b.Run("known-good", func(b *testing.B) {
		v := NewVerifier(p)
		v.Verify("device", []byte("s3cret"))
		for b.Loop() {
			if !v.Verify("device", []byte("s3cret")) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("bcrypt", func(b *testing.B) {
		v := NewVerifier(p)
		for b.Loop() {
			if v.Verify("device", []byte("wrong")) {
				b.Fatal("accepted")
			}
		}
	})
}
