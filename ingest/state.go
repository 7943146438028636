package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"go.etcd.io/bbolt"

	"github.com/sluicehq/sluice/internal/ratelog"
	"github.com/sluicehq/sluice/internal/seal"
)

// stateStore is the broker's persistent state: a mochi storage hook that
// keeps sessions (clients), their subscriptions, retained messages and the
// QoS 1/2 messages in flight in one bbolt file, and gives them back when
// the broker starts. It replaces mochi's bolt hook, whose file it reads
// and, without a key, writes alike (bucket "mochi", keys "CL_<client>",
// "SUB_<client>:<filter>", "RET_<topic>", "IFM_<client>:<packet id>",
// values mochi's JSON), so that a state file written by an earlier sluice
// carries over. Register it before Serve:
//
//	err := server.AddHook(newStateStore(path, key, log), nil)
//
// AddHook opens the file (Init) and fails if it cannot, or if key does not
// match the file; server.Close closes it (Stop).
//
// Its jobs, a file each: the file itself (state.go: opening, its format,
// the key check), what a record's key and value are, sealed or not
// (state_records.go), recording the broker's events (state_hooks.go), and
// giving them back at start (state_load.go).
//
// # What it keeps, and what differs from mochi's bolt hook
//
//   - A message in flight keeps its packet id (mochi v2.7.9's bolt hook
//     drops it, and the broker then cannot send the message again after a
//     restart). A file from that hook is repaired on reading: the id is
//     also the end of the record's key.
//   - Only the subscriptions the broker granted are kept: mochi's hook also
//     stores those it refused (ACL, invalid filter), with the refusal code
//     as their QoS, and the broker restores them at the next start as if
//     granted (a refused "#" then gets every topic the ACL lets through).
//   - A session's expiry interval is kept with its flag, so that a restored
//     session expires as its client asked (without the flag mochi keeps it
//     for the broker's maximum, which is forever by default). Likewise the
//     request-problem-info and payload-format flags.
//   - When a session ends (clean disconnect, or expiry) its subscriptions
//     and messages in flight are removed with it: mochi removes neither for
//     an expired session, and a file collected them forever.
//   - Nothing is written for what a restart would discard anyway: the
//     PUBACK mochi records, and removes at once, for every QoS 1 message a
//     client publishes, and the messages in flight to a client whose session
//     ends with its connection (clean session, or MQTT 5 expiry 0). Removing
//     what is not stored costs a read, not a write. (The ingest path of a
//     QoS 1 device thus writes nothing here.)
//   - The $SYS counters are neither stored nor restored: they describe one
//     run.
//
// Writes use bbolt with NoSync unless fsync is set: the state then survives
// a crash of the process, like the journal's Process mode, not a power loss
// (bbolt without fsync may even be left corrupt by one). With fsync (when a
// pipeline runs with durability fsync) each transaction is on disk before
// it returns. Each hook call is one bbolt transaction; errors are logged
// (rate-limited), as a hook cannot return them.
//
// # Encryption
//
// With a key (32 bytes, AES-256; internal/keyfile loads it) every value is
// sealed with AES-256-GCM, its bbolt key being the additional data, so
// that a value cannot be moved to another key (another client's session,
// another topic). Each run of the broker seals with its own key, derived
// with HKDF-SHA256 from the key and a random salt stored with each value;
// the nonce is 4 random bytes and a counter, so a nonce never repeats under
// a key however many values a run writes. (The scheme is internal/seal's,
// which the journal uses too.) Keys are not left in clear either: client ids,
// filters and topics are replaced by HMAC-SHA256 (under another derived
// key, truncated to 16 bytes), which keeps the per-client prefixes
// removals need. What the file still shows is the number and kinds of
// records, their sizes and packet ids. A value is
//
//	0x01 | run salt [16] | nonce [12] | sealed JSON | tag [16]
//
// The bucket "sluice" holds the file's format, {"version":1} or
// {"version":1,"cipher":"AES-256-GCM","salt":...,"check":...}: the check
// (derived from the key and the salt) makes Init fail with a clear error
// for a wrong key, and a file's encryption must match the key given: no
// key for an encrypted file, or a key for a plain one, is an error too (a
// plain file cannot be encrypted in place: bbolt keeps old values in its
// free pages; remove the file, losing the sessions, to start encrypted). A
// value that fails authentication makes loading fail: it is neither
// dropped nor restored.
type stateStore struct {
	mqtt.HookBase
	path  string
	key   []byte // nil: values in clear
	fsync bool   // fsync every transaction
	log   *slog.Logger
	rlog  *ratelog.Logger

	db *bbolt.DB

	// current returns the client that holds a client id now (the broker's
	// client list), so that the end of a connection does not remove the
	// session a newer connection of the same id stored; nil: not known.
	current func(id string) (*mqtt.Client, bool)

	// flights counts the in-flight records stored per client id (an
	// over-estimate at worst), so that completing a flight that was never
	// stored costs no transaction: mochi reports the PUBACK of every QoS 1
	// PUBLISH a device sends as a completed flight (a read transaction per
	// message, 3% of sluice's CPU under load: sluice bench).
	flightsMu sync.Mutex
	flights   map[string]int

	// With a key, set by Init:
	names   []byte       // HMAC key for the names in bbolt keys
	runSalt []byte       // this run's salt, stored with each value it seals
	sealer  *seal.Sealer // this run's
	nonce   atomic.Uint64
	mu      sync.Mutex
	opens   map[string]*seal.Sealer // by run salt: the sealers of the runs that sealed what was loaded
}

// newStateStore returns the state store for the bbolt file at path,
// sealing values with key (32 bytes) unless it is nil, and logging to log
// (nil: the logger mochi gives its hooks). It does no I/O:
// mqtt.Server.AddHook calls Init, which opens the file.
func newStateStore(path string, key []byte, log *slog.Logger) *stateStore {
	h := &stateStore{path: path, log: log}
	if len(key) > 0 {
		h.key = bytes.Clone(key)
	}
	return h
}

const (
	stateBucket     = "mochi"  // mochi's bolt hook's bucket
	stateMetaBucket = "sluice" // the file's format
	stateFormatKey  = "format"
	stateVersion    = 1
	stateCipher     = "AES-256-GCM"
	stateNameSize   = 16 // bytes of HMAC standing for a client id, filter or topic
	stateSealed     = 0x01
	stateOverhead   = 1 + seal.SaltSize + seal.Overhead

	// The purposes of the keys derived from the key and a salt (the file's
	// for the first two, a run's for the third).
	purposeStateNames = "sluice broker state names"
	purposeStateCheck = "sluice broker state key check"
	purposeStateRun   = "sluice broker state values (AES-256-GCM)"
)

// errStateKey is the cause of Init's error when the key does not match the
// file: another key, no key for an encrypted file, a key for a plain one.
var errStateKey = errors.New("key does not match the broker state file")

// stateFormat is the file's format record.
type stateFormat struct {
	Version int    `json:"version"`
	Cipher  string `json:"cipher,omitempty"`
	Salt    []byte `json:"salt,omitempty"`
	Check   []byte `json:"check,omitempty"`
}

func (h *stateStore) ID() string { return "sluice-state" }

func (h *stateStore) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnSubscribed, mqtt.OnUnsubscribed,
		mqtt.OnRetainMessage, mqtt.OnRetainedExpired, mqtt.OnWillSent,
		mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped, mqtt.OnClientExpired,
		mqtt.StoredClients, mqtt.StoredSubscriptions, mqtt.StoredRetainedMessages, mqtt.StoredInflightMessages:
		return true
	}
	return false
}

// Init opens the file, creating it if missing, and checks the key against
// it. config must be nil: everything comes from newStateStore.
func (h *stateStore) Init(config any) error {
	if config != nil {
		return mqtt.ErrInvalidConfigType
	}
	if h.log == nil {
		h.log = h.Log // set by AddHook
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.rlog = ratelog.New(h.log, 10*time.Second, nil)
	if h.key != nil && len(h.key) != seal.KeySize {
		return fmt.Errorf("broker state %s: key must be %d bytes, not %d", h.path, seal.KeySize, len(h.key))
	}
	db, err := bbolt.Open(h.path, 0o600, &bbolt.Options{Timeout: 5 * time.Second, NoSync: !h.fsync})
	if errors.Is(err, bbolt.ErrTimeout) {
		return fmt.Errorf("broker state %s: locked by another process (another sluice?)", h.path)
	}
	if err != nil {
		return fmt.Errorf("broker state %s: %w", h.path, err)
	}
	if err := db.Update(h.checkFormat); err != nil {
		db.Close()
		return fmt.Errorf("broker state %s: %w", h.path, err)
	}
	h.db = db
	if h.key != nil {
		h.runSalt = seal.NewSalt()
		if h.sealer, err = seal.New(h.key, h.runSalt, purposeStateRun); err != nil {
			db.Close()
			return fmt.Errorf("broker state %s: %w", h.path, err)
		}
		h.opens = map[string]*seal.Sealer{string(h.runSalt): h.sealer}
	}
	return nil
}

// checkFormat creates the buckets and the format record of a new file, or
// checks an existing file's against the key.
func (h *stateStore) checkFormat(tx *bbolt.Tx) error {
	existed := tx.Bucket([]byte(stateBucket)) != nil
	if _, err := tx.CreateBucketIfNotExists([]byte(stateBucket)); err != nil {
		return err
	}
	meta, err := tx.CreateBucketIfNotExists([]byte(stateMetaBucket))
	if err != nil {
		return err
	}
	var f stateFormat
	if b := meta.Get([]byte(stateFormatKey)); b != nil {
		if err := json.Unmarshal(b, &f); err != nil || f.Version != stateVersion {
			return fmt.Errorf("unknown format %.40q", b)
		}
	} else {
		if existed {
			// Written by mochi's bolt hook: plain. (Even if empty now:
			// bbolt's free pages may hold what it held.)
			f.Version = stateVersion
		} else {
			f = h.newFormat()
		}
		b, err := json.Marshal(f)
		if err != nil {
			return err
		}
		if err := meta.Put([]byte(stateFormatKey), b); err != nil {
			return err
		}
	}
	switch {
	case f.Cipher == "" && h.key != nil:
		return fmt.Errorf("the file is not encrypted, but a key is set (a plain file cannot be encrypted in place: "+
			"remove it, losing the broker's sessions and retained messages, or run without the key): %w", errStateKey)
	case f.Cipher != "" && h.key == nil:
		return fmt.Errorf("the file is encrypted (%s), and no key is set: %w", f.Cipher, errStateKey)
	case f.Cipher != "" && f.Cipher != stateCipher:
		return fmt.Errorf("unknown cipher %q", f.Cipher)
	case f.Cipher != "":
		if !seal.Verify(h.key, f.Salt, purposeStateCheck, f.Check) {
			return fmt.Errorf("the file was written with another key: %w", errStateKey)
		}
		var err error
		if h.names, err = seal.Derive(h.key, f.Salt, purposeStateNames, 32); err != nil {
			return err
		}
	}
	return nil
}

// newFormat returns the format record of a new file.
func (h *stateStore) newFormat() stateFormat {
	f := stateFormat{Version: stateVersion}
	if h.key == nil {
		return f
	}
	f.Cipher = stateCipher
	f.Salt = seal.NewSalt()
	f.Check, _ = seal.Check(h.key, f.Salt, purposeStateCheck) // the key's size was checked
	return f
}

// Stop closes the file.
func (h *stateStore) Stop() error {
	if h.db == nil {
		return nil
	}
	if err := h.db.Close(); err != nil {
		return fmt.Errorf("broker state %s: close: %w", h.path, err)
	}
	return nil
}
