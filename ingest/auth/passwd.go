package auth

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
)

// DefaultCost is the bcrypt cost `sluice passwd` hashes with: about 50 ms
// per check on one core of a small server, which the verifier pays once per
// user and password (see Verifier), not on every reconnect.
const DefaultCost = bcrypt.DefaultCost

// Passwords is a loaded password file: one "user:hash" line per user, the
// hash a bcrypt hash, as `sluice passwd` writes it. Blank lines and lines
// starting with # are ignored.
type Passwords struct {
	File   string
	hashes map[string][]byte
	cost   int // the highest bcrypt cost of the hashes
}

// LoadPasswords reads a password file.
func LoadPasswords(path string) (*Passwords, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParsePasswords(path, data)
}

// ParsePasswords parses password file content; name is used in errors,
// which give the line and never a hash.
func ParsePasswords(name string, data []byte) (*Passwords, error) {
	p := &Passwords{File: name, hashes: map[string][]byte{}}
	var errs []error
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s:%d: want user:hash", name, n+1))
			continue
		case CheckUsername(user) != nil:
			errs = append(errs, fmt.Errorf("%s:%d: %v", name, n+1, CheckUsername(user)))
			continue
		case p.hashes[user] != nil:
			errs = append(errs, fmt.Errorf("%s:%d: user %q is listed twice", name, n+1, user))
			continue
		}
		cost, err := bcrypt.Cost([]byte(hash))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: user %q: not a bcrypt hash; set the password again with `sluice passwd %s %s`", name, n+1, user, name, user))
			continue
		}
		p.hashes[user] = []byte(hash)
		p.cost = max(p.cost, cost)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// Len is the number of users.
func (p *Passwords) Len() int { return len(p.hashes) }

// Has reports whether user is in the file.
func (p *Passwords) Has(user string) bool { return p.hashes[user] != nil }

// CheckUsername reports why name cannot be a user in a password file: one
// the file's lines cannot hold (a colon ends the name, a line break the
// line, a line starting with # is a comment, white space around a name is
// not kept apart from it), or one no MQTT client can send (not UTF-8, a NUL
// character, over 65535 bytes): a user who could never log in.
func CheckUsername(name string) error {
	switch {
	case name == "":
		return errors.New("empty user name")
	case len(name) > 65535:
		return errors.New("user name longer than MQTT allows (65535 bytes)")
	case strings.ContainsAny(name, ":\n\r"):
		return fmt.Errorf("user name %q holds a colon or a line break, which the password file cannot hold", name)
	case strings.HasPrefix(name, "#"):
		return fmt.Errorf("user name %q starts with #: the password file would read its line as a comment", name)
	case strings.TrimSpace(name) != name:
		return fmt.Errorf("user name %q starts or ends with white space", name)
	case !utf8.ValidString(name):
		return fmt.Errorf("user name %q is not UTF-8: no MQTT client can send it", name)
	case strings.ContainsRune(name, 0):
		return fmt.Errorf("user name %q holds a NUL character: no MQTT client can send it", name)
	}
	return nil
}

// Verifier checks passwords against the current password file.
//
// bcrypt is slow on purpose, so a fleet reconnecting at once after a
// restart would keep the CPUs busy for minutes. The verifier remembers,
// per user, a keyed hash (HMAC-SHA-256 under a key made at start and never
// stored) of the last password that checked out against the user's current
// bcrypt hash; the same password then checks out without bcrypt. At most
// one bcrypt check per CPU runs at once, so a flood of bad passwords slows
// logins, not the pipelines.
type Verifier struct {
	file atomic.Pointer[Passwords]
	key  [32]byte
	sem  chan struct{}

	mu      sync.Mutex
	known   map[string]knownGood
	dummies map[int][]byte // by bcrypt cost
}

type knownGood struct {
	hash []byte   // the bcrypt hash it was checked against
	mac  [32]byte // HMAC of the password
}

// dummyHash is checked against when the user is unknown, so that the
// answer takes as long as for a known user with a wrong password: a hash
// of the file's (highest) cost, made once per cost.
func (v *Verifier) dummyHash(cost int) []byte {
	if cost == 0 {
		cost = DefaultCost
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if h := v.dummies[cost]; h != nil {
		return h
	}
	h, _ := bcrypt.GenerateFromPassword([]byte("sluice-no-such-user"), cost)
	v.dummies[cost] = h
	return h
}

// NewVerifier returns a verifier for p.
func NewVerifier(p *Passwords) *Verifier {
	v := &Verifier{sem: make(chan struct{}, runtime.GOMAXPROCS(0)), known: map[string]knownGood{}, dummies: map[int][]byte{}}
	if _, err := rand.Read(v.key[:]); err != nil {
		panic(fmt.Sprintf("auth: no randomness: %v", err))
	}
	v.file.Store(p)
	return v
}

// Swap replaces the password file (a reload). Connected clients stay
// connected; the new file applies to the next CONNECT.
func (v *Verifier) Swap(p *Passwords) { v.file.Store(p) }

// Passwords returns the current password file.
func (v *Verifier) Passwords() *Passwords { return v.file.Load() }

// Verify reports whether password is user's password.
func (v *Verifier) Verify(user string, password []byte) bool {
	file := v.file.Load()
	hash := file.hashes[user]
	if hash == nil {
		dummy := v.dummyHash(file.cost)
		v.sem <- struct{}{}
		_ = bcrypt.CompareHashAndPassword(dummy, password)
		<-v.sem
		return false
	}
	m := hmac.New(sha256.New, v.key[:])
	m.Write(password)
	var mac [32]byte
	m.Sum(mac[:0])

	v.mu.Lock()
	k, ok := v.known[user]
	v.mu.Unlock()
	if ok && bytes.Equal(k.hash, hash) && hmac.Equal(k.mac[:], mac[:]) {
		return true
	}

	v.sem <- struct{}{}
	err := bcrypt.CompareHashAndPassword(hash, password)
	<-v.sem
	if err != nil {
		return false
	}
	v.mu.Lock()
	v.known[user] = knownGood{hash: hash, mac: mac}
	v.mu.Unlock()
	return true
}

// SetPassword sets user's password in the password file at path, creating
// the file (mode 0600) if it does not exist. Other lines, comments
// included, are kept as they are. The file is replaced atomically.
func SetPassword(path, user string, password []byte, cost int) error {
	if err := CheckUsername(user); err != nil {
		return err
	}
	if len(password) == 0 {
		return errors.New("empty password")
	}
	hash, err := bcrypt.GenerateFromPassword(password, cost)
	if errors.Is(err, bcrypt.ErrPasswordTooLong) {
		return errors.New("password longer than 72 bytes (bcrypt's limit)")
	}
	if err != nil {
		return err
	}
	return editFile(path, user, user+":"+string(hash), true)
}

// DeletePassword removes user from the password file at path.
func DeletePassword(path, user string) error {
	return editFile(path, user, "", false)
}

// editFile replaces user's line with line ("" deletes it), or appends line
// when the user is not there and create is set.
func editFile(path, user, line string, create bool) error {
	data, err := os.ReadFile(path)
	mode := os.FileMode(0o600)
	switch {
	case errors.Is(err, os.ErrNotExist) && create:
	case err != nil:
		return err
	default:
		if _, err := ParsePasswords(path, data); err != nil {
			return fmt.Errorf("not changing a password file with problems:\n%w", err)
		}
		if st, err := os.Stat(path); err == nil {
			mode = st.Mode().Perm()
		}
	}

	var out bytes.Buffer
	found := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if u, _, ok := strings.Cut(l, ":"); ok && u == user && !strings.HasPrefix(strings.TrimSpace(l), "#") {
			found = true
			if line != "" {
				out.WriteString(line + "\n")
			}
			continue
		}
		out.WriteString(l + "\n")
	}
	switch {
	case !found && line == "":
		return fmt.Errorf("%s: no user %q", path, user)
	case !found:
		out.WriteString(line + "\n")
	}

	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(out.Bytes()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
