package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
)

// The hooks: each broker event the stored state follows, one bbolt
// transaction each (or none, when a restart would not use what it wrote).

// ephemeral reports whether cl's session ends with its connection, as
// mochi decides it: nothing of it would survive a restart.
func ephemeral(cl *mqtt.Client) bool {
	return (cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval == 0) ||
		(cl.Properties.ProtocolVersion < 5 && cl.Properties.Clean)
}

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
// the session over, nor when a newer connection of the client id already
// holds it (a client that ended a clean session and at once connected
// with a persistent one: its hooks may run before this one, and the
// session it stored must stay).
func (h *stateStore) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if !expire || cl.StopCause() == packets.ErrSessionTakenOver {
		return
	}
	if h.current != nil {
		if now, ok := h.current(cl.ID); ok && now != cl {
			return
		}
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

// The transactions the hooks make.

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
