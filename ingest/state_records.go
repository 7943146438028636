package ingest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"

	"github.com/mochi-mqtt/server/v2/hooks/storage"

	"github.com/sluicehq/sluice/internal/seal"
)

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

// recordKind names the kind of the record k for a log line (its key may
// hold a client id or topic, or their HMAC).
func recordKind(k []byte) string {
	kind, _, _ := strings.Cut(string(k), "_")
	return kind
}

// Values.

// sealValue seals v for key k (with a key; else returns v).
func (h *stateStore) sealValue(k, v []byte) []byte {
	if h.key == nil {
		return v
	}
	out := make([]byte, 1+seal.SaltSize, stateOverhead+len(v))
	out[0] = stateSealed
	copy(out[1:], h.runSalt)
	return h.sealer.Seal(out, h.nonce.Add(1), v, k)
}

// openValue returns the plaintext of the value v of key k.
func (h *stateStore) openValue(k, v []byte) ([]byte, error) {
	if h.key == nil {
		return v, nil
	}
	if len(v) < stateOverhead || v[0] != stateSealed {
		return nil, errors.New("record fails authentication (not sealed)")
	}
	salt, sealed := v[1:1+seal.SaltSize], v[1+seal.SaltSize:]
	h.mu.Lock()
	s, ok := h.opens[string(salt)]
	if !ok {
		var err error
		if s, err = seal.New(h.key, salt, purposeStateRun); err != nil {
			h.mu.Unlock()
			return nil, err
		}
		h.opens[string(salt)] = s
	}
	h.mu.Unlock()
	pt, err := s.Open(nil, sealed, k)
	if err != nil {
		return nil, errors.New("record fails authentication (altered, or moved from another key)")
	}
	return pt, nil
}
