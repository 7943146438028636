package ingest

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"

	"github.com/sluicehq/sluice/internal/ratelog"
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
// the nonce is a counter, so a nonce never repeats under a key however
// many values a run writes. Keys are not left in clear either: client ids,
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

	// flights counts the in-flight records stored per client id (an
	// over-estimate at worst), so that completing a flight that was never
	// stored costs no transaction: mochi reports the PUBACK of every QoS 1
	// PUBLISH a device sends as a completed flight (a read transaction per
	// message, 3% of sluice's CPU under load: sluice bench).
	flightsMu sync.Mutex
	flights   map[string]int

	// With a key, set by Init:
	names   []byte      // HMAC key for the names in bbolt keys
	runSalt []byte      // this run's salt, stored with each value it seals
	seal    cipher.AEAD // this run's AEAD
	nonce   atomic.Uint64
	mu      sync.Mutex
	opens   map[string]cipher.AEAD // by run salt: the AEADs of the runs that sealed what was loaded
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
	stateKeySize    = 32
	stateSaltSize   = 16
	stateNameSize   = 16 // bytes of HMAC standing for a client id, filter or topic
	stateSealed     = 0x01
	stateNonceSize  = 12
	stateOverhead   = 1 + stateSaltSize + stateNonceSize + 16 // + GCM tag

	infoStateNames = "sluice broker state names"
	infoStateCheck = "sluice broker state key check"
	infoStateRun   = "sluice broker state values (AES-256-GCM)"
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
	if h.key != nil && len(h.key) != stateKeySize {
		return fmt.Errorf("broker state %s: key must be %d bytes, not %d", h.path, stateKeySize, len(h.key))
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
		h.runSalt = make([]byte, stateSaltSize)
		rand.Read(h.runSalt)
		if h.seal, err = h.runAEAD(h.runSalt); err != nil {
			db.Close()
			return fmt.Errorf("broker state %s: %w", h.path, err)
		}
		h.opens = map[string]cipher.AEAD{string(h.runSalt): h.seal}
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
		check, err := hkdf.Key(sha256.New, h.key, f.Salt, infoStateCheck, 16)
		if err != nil {
			return err
		}
		if len(f.Check) != len(check) || subtle.ConstantTimeCompare(check, f.Check) != 1 {
			return fmt.Errorf("the file was written with another key: %w", errStateKey)
		}
		if h.names, err = hkdf.Key(sha256.New, h.key, f.Salt, infoStateNames, 32); err != nil {
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
	f.Salt = make([]byte, stateSaltSize)
	rand.Read(f.Salt)
	f.Check, _ = hkdf.Key(sha256.New, h.key, f.Salt, infoStateCheck, 16) // SHA-256 allows 16 bytes
	return f
}

// runAEAD returns the AEAD of the run whose salt is salt.
func (h *stateStore) runAEAD(salt []byte) (cipher.AEAD, error) {
	k, err := hkdf.Key(sha256.New, h.key, salt, infoStateRun, stateKeySize)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
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

// Keys. Without a key they are mochi's; with one, each client id, filter
// and topic is replaced by its HMAC, a client's records sharing a prefix.

func (h *stateStore) name(tag byte, s string) []byte {
	m := hmac.New(sha256.New, h.names)
	m.Write([]byte{tag})
	m.Write([]byte(s))
	return m.Sum(nil)[:stateNameSize]
}

func (h *stateStore) clientKey(id string) []byte {
	if h.key == nil {
		return []byte(storage.ClientKey + "_" + id)
	}
	return append([]byte(storage.ClientKey+"_"), h.name('c', id)...)
}

// subPrefix is the prefix of client id's subscriptions (and, without a
// key, of those of clients whose id begins with id+":").
func (h *stateStore) subPrefix(id string) []byte {
	if h.key == nil {
		return []byte(storage.SubscriptionKey + "_" + id + ":")
	}
	return append([]byte(storage.SubscriptionKey+"_"), h.name('c', id)...)
}

func (h *stateStore) subKey(id, filter string) []byte {
	if h.key == nil {
		return append(h.subPrefix(id), filter...)
	}
	return append(h.subPrefix(id), h.name('f', filter)...)
}

// inflightPrefix is like subPrefix, for messages in flight.
func (h *stateStore) inflightPrefix(id string) []byte {
	if h.key == nil {
		return []byte(storage.InflightKey + "_" + id + ":")
	}
	return append([]byte(storage.InflightKey+"_"), h.name('c', id)...)
}

func (h *stateStore) inflightKey(id string, packetID uint16) []byte {
	if h.key == nil {
		return strconv.AppendUint(h.inflightPrefix(id), uint64(packetID), 10)
	}
	return binary.BigEndian.AppendUint16(h.inflightPrefix(id), packetID)
}

func (h *stateStore) retainedKey(topic string) []byte {
	if h.key == nil {
		return []byte(storage.RetainedKey + "_" + topic)
	}
	return append([]byte(storage.RetainedKey+"_"), h.name('t', topic)...)
}

// Values.

// sealValue seals v for key k (with a key; else returns v).
func (h *stateStore) sealValue(k, v []byte) []byte {
	if h.key == nil {
		return v
	}
	out := make([]byte, 1+stateSaltSize+stateNonceSize, stateOverhead+len(v))
	out[0] = stateSealed
	copy(out[1:], h.runSalt)
	nonce := out[1+stateSaltSize:]
	binary.BigEndian.PutUint64(nonce[4:], h.nonce.Add(1))
	return h.seal.Seal(out, nonce, v, k)
}

// openValue returns the plaintext of the value v of key k.
func (h *stateStore) openValue(k, v []byte) ([]byte, error) {
	if h.key == nil {
		return v, nil
	}
	if len(v) < stateOverhead || v[0] != stateSealed {
		return nil, errors.New("record fails authentication (not sealed)")
	}
	salt, nonce, ct := v[1:1+stateSaltSize], v[1+stateSaltSize:1+stateSaltSize+stateNonceSize], v[1+stateSaltSize+stateNonceSize:]
	h.mu.Lock()
	aead, ok := h.opens[string(salt)]
	if !ok {
		var err error
		if aead, err = h.runAEAD(salt); err != nil {
			h.mu.Unlock()
			return nil, err
		}
		h.opens[string(salt)] = aead
	}
	h.mu.Unlock()
	pt, err := aead.Open(nil, nonce, ct, k)
	if err != nil {
		return nil, errors.New("record fails authentication (altered, or moved from another key)")
	}
	return pt, nil
}

// put stores v under k, in one transaction.
func (h *stateStore) put(k []byte, v storage.Serializable) {
	b, err := v.MarshalBinary()
	if err == nil {
		err = h.db.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket([]byte(stateBucket)).Put(k, h.sealValue(k, b))
		})
	}
	if err != nil {
		h.logError("write", "broker state: write failed; a restart may lose this record", err, "record", recordKind(k))
	}
}

// logError logs a failed write, rate-limited. After Stop it is expected
// (mochi ends its clients' goroutines after stopping its hooks): debug.
func (h *stateStore) logError(key, msg string, err error, args ...any) {
	level := slog.LevelError
	if errors.Is(err, bbolt.ErrDatabaseNotOpen) {
		level = slog.LevelDebug
	}
	h.rlog.Log(level, key, msg, append(args, "file", h.path, "error", err)...)
}

// del removes k, if stored (a read when it is not), and reports whether it
// did.
func (h *stateStore) del(k []byte) bool {
	found, err := h.has(k)
	if err == nil && found {
		err = h.db.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket([]byte(stateBucket)).Delete(k)
		})
	}
	if err != nil {
		h.logError("delete", "broker state: delete failed; a restart may bring this record back", err, "record", recordKind(k))
	}
	return found && err == nil
}

// addFlight counts a stored in-flight record of client id.
func (h *stateStore) addFlight(id string) {
	h.flightsMu.Lock()
	defer h.flightsMu.Unlock()
	if h.flights == nil {
		h.flights = map[string]int{}
	}
	h.flights[id]++
}

// hasFlights reports whether client id may have in-flight records stored.
func (h *stateStore) hasFlights(id string) bool {
	h.flightsMu.Lock()
	defer h.flightsMu.Unlock()
	return h.flights[id] > 0
}

// endFlight uncounts a deleted in-flight record of client id; all of them
// when all is true.
func (h *stateStore) endFlight(id string, all bool) {
	h.flightsMu.Lock()
	defer h.flightsMu.Unlock()
	if n := h.flights[id]; all || n <= 1 {
		delete(h.flights, id)
	} else {
		h.flights[id] = n - 1
	}
}

// delFlight removes client id's in-flight record of packetID, if stored.
func (h *stateStore) delFlight(id string, packetID uint16) {
	if h.hasFlights(id) && h.del(h.inflightKey(id, packetID)) {
		h.endFlight(id, false)
	}
}

// recordKind names the kind of the record k for a log line (its key may
// hold a client id or topic, or their HMAC).
func recordKind(k []byte) string {
	kind, _, _ := strings.Cut(string(k), "_")
	return kind
}

// forget removes client id and its subscriptions and messages in flight,
// in one transaction.
func (h *stateStore) forget(id string) {
	err := h.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(stateBucket))
		if err := b.Delete(h.clientKey(id)); err != nil {
			return err
		}
		for _, prefix := range [][]byte{h.subPrefix(id), h.inflightPrefix(id)} {
			var keys [][]byte
			c := b.Cursor()
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				// Without a key the prefix also matches ids that begin with
				// id+":"; the value says whose it is.
				pt, err := h.openValue(k, v)
				if err != nil {
					return err
				}
				var rec struct {
					Client string `json:"client"`
				}
				if json.Unmarshal(pt, &rec) == nil && rec.Client == id {
					keys = append(keys, bytes.Clone(k))
				}
			}
			for _, k := range keys {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		h.logError("forget", "broker state: removing an ended session failed", err)
		return
	}
	h.endFlight(id, true)
}

// ephemeral reports whether cl's session ends with its connection, as
// mochi decides it: nothing of it would survive a restart.
func ephemeral(cl *mqtt.Client) bool {
	return (cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval == 0) ||
		(cl.Properties.ProtocolVersion < 5 && cl.Properties.Clean)
}

// Hooks.

// OnSessionEstablished stores a session that outlives its connection. An
// ephemeral one is not stored (nor its subscriptions: nothing of it would
// be restored), and what an earlier session of the same client id left
// is removed: the client asked for a session that ends with this
// connection. (Storing every connection cost a write transaction per
// connect and 4 KB of resident memory per connected device: sluice bench
// -scale.)
func (h *stateStore) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if ephemeral(cl) {
		if h.stored(h.clientKey(cl.ID)) {
			h.forget(cl.ID)
		}
		return
	}
	h.putClient(cl)
}

func (h *stateStore) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	if !ephemeral(cl) {
		h.putClient(cl)
	}
}

// stored reports whether k is stored; when in doubt, that it is (what
// follows, forgetting, costs a transaction, not a record).
func (h *stateStore) stored(k []byte) bool {
	found, err := h.has(k)
	return found || err != nil
}

// has looks k up, in a read transaction.
func (h *stateStore) has(k []byte) (bool, error) {
	var found bool
	err := h.db.View(func(tx *bbolt.Tx) error {
		found = tx.Bucket([]byte(stateBucket)).Get(k) != nil
		return nil
	})
	return found, err
}

// putClient stores cl's session.
func (h *stateStore) putClient(cl *mqtt.Client) {
	props := cl.Properties.Props.Copy(false)
	h.put(h.clientKey(cl.ID), &storage.Client{
		ID:              cl.ID,
		T:               storage.ClientKey,
		Remote:          cl.Net.Remote,
		Listener:        cl.Net.Listener,
		Username:        cl.Properties.Username,
		Clean:           cl.Properties.Clean,
		ProtocolVersion: cl.Properties.ProtocolVersion,
		Properties: storage.ClientProperties{
			SessionExpiryInterval:     props.SessionExpiryInterval,
			SessionExpiryIntervalFlag: props.SessionExpiryIntervalFlag,
			AuthenticationMethod:      props.AuthenticationMethod,
			AuthenticationData:        props.AuthenticationData,
			RequestProblemInfo:        props.RequestProblemInfo,
			RequestProblemInfoFlag:    props.RequestProblemInfoFlag,
			RequestResponseInfo:       props.RequestResponseInfo,
			ReceiveMaximum:            props.ReceiveMaximum,
			TopicAliasMaximum:         props.TopicAliasMaximum,
			User:                      props.User,
			MaximumPacketSize:         props.MaximumPacketSize,
		},
		Will: storage.ClientWill(cl.Properties.Will),
	})
}

// OnDisconnect removes a session that ends with its connection, with its
// subscriptions and messages in flight; not when another connection took
// the session over.
func (h *stateStore) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if !expire || cl.StopCause() == packets.ErrSessionTakenOver {
		return
	}
	h.forget(cl.ID)
}

func (h *stateStore) OnClientExpired(cl *mqtt.Client) { h.forget(cl.ID) }

// OnSubscribed stores the subscriptions granted (reason code a QoS).
func (h *stateStore) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	if ephemeral(cl) {
		return // ends with the connection
	}
	for i, f := range pk.Filters {
		if i >= len(reasonCodes) || reasonCodes[i] > 2 {
			continue // refused: not subscribed
		}
		h.put(h.subKey(cl.ID, f.Filter), &storage.Subscription{
			ID:                storage.SubscriptionKey + "_" + cl.ID + ":" + f.Filter,
			T:                 storage.SubscriptionKey,
			Client:            cl.ID,
			Qos:               reasonCodes[i],
			Filter:            f.Filter,
			Identifier:        f.Identifier,
			NoLocal:           f.NoLocal,
			RetainHandling:    f.RetainHandling,
			RetainAsPublished: f.RetainAsPublished,
		})
	}
}

func (h *stateStore) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if ephemeral(cl) {
		return // never stored
	}
	for _, f := range pk.Filters {
		h.del(h.subKey(cl.ID, f.Filter))
	}
}

// OnRetainMessage stores a retained message, or removes it (r -1: an
// empty payload cleared it; 0: there was none).
func (h *stateStore) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	if r != 1 {
		h.del(h.retainedKey(pk.TopicName))
		return
	}
	h.put(h.retainedKey(pk.TopicName), message(storage.RetainedKey, cl, pk, 0))
}

func (h *stateStore) OnRetainedExpired(topic string) { h.del(h.retainedKey(topic)) }

// OnQosPublish stores a message in flight (a PUBLISH to the client, or the
// PUBREC of a QoS 2 one from it), with its packet id.
func (h *stateStore) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if pk.FixedHeader.Type == packets.Puback || ephemeral(cl) {
		return // removed as soon as sent, or ends with the connection
	}
	// Counted first: a completion racing with the write must look for it.
	h.addFlight(cl.ID)
	h.put(h.inflightKey(cl.ID, pk.PacketID), message(storage.InflightKey, cl, pk, sent))
}

// OnQosComplete removes a completed flight. mochi also calls it for the
// PUBACK of each QoS 1 message the client publishes, whose packet id may be
// that of a message still in flight to the client [MQTT-2.2.1]: that one
// stays (the broker's completion removes it from the client's flight first).
func (h *stateStore) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if _, inFlight := cl.State.Inflight.Get(pk.PacketID); inFlight {
		return
	}
	h.delFlight(cl.ID, pk.PacketID)
}

func (h *stateStore) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	h.delFlight(cl.ID, pk.PacketID)
}

// message is the storage form of pk.
func message(kind string, cl *mqtt.Client, pk packets.Packet, sent int64) *storage.Message {
	props := pk.Properties.Copy(false)
	m := &storage.Message{
		T:           kind,
		Client:      cl.ID,
		Origin:      pk.Origin,
		FixedHeader: pk.FixedHeader,
		TopicName:   pk.TopicName,
		Payload:     pk.Payload,
		Created:     pk.Created,
		Sent:        sent,
		Properties: storage.MessageProperties{
			PayloadFormat:          props.PayloadFormat,
			PayloadFormatFlag:      props.PayloadFormatFlag,
			MessageExpiryInterval:  props.MessageExpiryInterval,
			ContentType:            props.ContentType,
			ResponseTopic:          props.ResponseTopic,
			CorrelationData:        props.CorrelationData,
			SubscriptionIdentifier: props.SubscriptionIdentifier,
			TopicAlias:             props.TopicAlias,
			User:                   props.User,
		},
	}
	if kind == storage.RetainedKey {
		m.ID = storage.RetainedKey + "_" + pk.TopicName
	} else {
		m.ID = storage.InflightKey + "_" + cl.ID + ":" + pk.FormatID()
		m.PacketID = pk.PacketID
	}
	return m
}

// Loading, when the broker starts.

// load calls fn with each record of a kind, in plaintext. A record that
// cannot be read fails the load, and the broker's start: restoring part of
// the state, or forged state, is worse.
func (h *stateStore) load(kind string, fn func(k, v []byte) error) error {
	prefix := []byte(kind + "_")
	err := h.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket([]byte(stateBucket)).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			pt, err := h.openValue(k, v)
			if err == nil {
				err = fn(k, pt)
			}
			if err != nil {
				return fmt.Errorf("%s record: %w", kind, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("broker state %s: %w", h.path, err)
	}
	return nil
}

func (h *stateStore) StoredClients() ([]storage.Client, error) {
	var out []storage.Client
	err := h.load(storage.ClientKey, func(_, v []byte) error {
		var c storage.Client
		if err := c.UnmarshalBinary(v); err != nil {
			return err
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

func (h *stateStore) StoredSubscriptions() ([]storage.Subscription, error) {
	var out []storage.Subscription
	err := h.load(storage.SubscriptionKey, func(_, v []byte) error {
		var s storage.Subscription
		if err := s.UnmarshalBinary(v); err != nil {
			return err
		}
		if s.Qos > 2 {
			return nil // refused, stored by mochi's bolt hook: never granted
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

func (h *stateStore) StoredRetainedMessages() ([]storage.Message, error) {
	return h.loadMessages(storage.RetainedKey)
}

func (h *stateStore) StoredInflightMessages() ([]storage.Message, error) {
	return h.loadMessages(storage.InflightKey)
}

func (h *stateStore) loadMessages(kind string) ([]storage.Message, error) {
	var out []storage.Message
	err := h.load(kind, func(k, v []byte) error {
		var m storage.Message
		if err := m.UnmarshalBinary(v); err != nil {
			return err
		}
		if kind == storage.InflightKey && m.PacketID == 0 && h.key == nil {
			// Written by mochi's bolt hook, which drops the packet id;
			// it ends the key.
			if i := bytes.LastIndexByte(k, ':'); i >= 0 {
				if id, err := strconv.ParseUint(string(k[i+1:]), 10, 16); err == nil {
					m.PacketID = uint16(id)
				}
			}
		}
		if kind == storage.InflightKey {
			h.addFlight(m.Client)
		}
		out = append(out, m)
		return nil
	})
	return out, err
}
