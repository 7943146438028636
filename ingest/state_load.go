package ingest

import (
	"bytes"
	"fmt"
	"strconv"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"go.etcd.io/bbolt"
)

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
