package ingest

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// conformHook corrects what mochi v2.7.9 does against the MQTT 3.1.1 and 5.0
// specifications, where a hook can (docs/broker.md lists each case, and
// what cannot be corrected here); window.go corrects what is seen on the
// wire (the client's Receive Maximum, no DISCONNECT to MQTT 3.1.1 clients).
// It decides nothing about who may do what: it provides no OnACLCheck,
// since mochi allows what any hook allows.
//
// What it corrects:
//
//   - CONNACK announces the broker's Maximum Packet Size and Topic Alias
//     Maximum (MQTT 5 3.2.2.3.6, 3.2.2.3.8); mochi announces neither, so
//     clients could neither respect the one nor use the other.
//   - The broker sends no topic aliases (3.3.2.3.4): mochi keeps a message
//     for a client with its alias only, and sends it so again after a
//     reconnect, where the alias means nothing.
//   - mochi's own flow control towards a client (Receive Maximum,
//     3.3.4, 4.9) is turned off: it sends the messages it held back once and
//     forgets them, and stalls. The listener keeps the client's Receive
//     Maximum instead (sendWindow).
//   - QoS 1 and 2 messages resent to a client after it reconnects go in the
//     order they were first sent (4.6, [MQTT-4.6.0-1]); mochi orders them by
//     the second they were created, at random within a second.
//   - A duplicate QoS 2 PUBLISH (DUP, before PUBREL) is answered PUBREC
//     success, not 0x91 [MQTT-4.3.3-10].
//   - User properties are forwarded on PUBLISH even to a client that asked
//     for no problem information [MQTT-3.1.2-29] [MQTT-3.3.2-17].
//   - A client's QoS 1/2 PUBLISH to a $SYS topic is answered (0x87 for
//     MQTT 5, closed for 3.1.1) rather than left unacknowledged.
//   - A PUBLISH with a topic alias the client never set is a protocol error
//     (DISCONNECT 0x82, 3.3.2.3.4), not a message with an empty topic.
//   - A will message may have an empty payload (3.1.3.4); its topic must be
//     one the client may publish to (not $SYS), or the CONNECT is refused
//     as not authorized: the broker publishes a will without asking the ACL.
//   - An MQTT 3.1.1 client with an empty client id that asks for a
//     persistent session is answered CONNACK 0x02 [MQTT-3.1.3-8].
//   - A CONNECT asking for enhanced authentication, which the broker does
//     not have, is refused with 0x8C [MQTT-4.12.0-1], not let in.
type conformHook struct {
	mqtt.HookBase
	b      *Broker
	ingest *hook // for refusing a CONNECT as the ingest hook does

	orders sync.Map // client id → *sendOrder
}

// emptyWillStandIn stands in for an empty will payload from CONNECT to the
// will's publication (mochi refuses a CONNECT whose will payload is
// empty): a will whose payload is this very slice had an empty one. (A will
// restored from the state file after a restart is a copy: it would be
// published with this byte.)
var emptyWillStandIn = []byte{0}

func isEmptyWillStandIn(p []byte) bool { return len(p) == 1 && &p[0] == &emptyWillStandIn[0] }

func (h *conformHook) ID() string { return "sluice-conformance" }

func (h *conformHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnPacketRead, mqtt.OnPacketEncode, mqtt.OnWill,
		mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped, mqtt.OnDisconnect, mqtt.OnClientExpired:
		return true
	}
	return false
}

// OnPacketRead sees each packet a client sends before mochi validates it.
func (h *conformHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Connect:
		return h.readConnect(cl, pk)
	case packets.Publish:
		return h.readPublish(cl, pk)
	}
	return pk, nil
}

func (h *conformHook) readConnect(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.ProtocolVersion < 5 && pk.Connect.ClientIdentifier == "" && !pk.Connect.Clean {
		// [MQTT-3.1.3-8]; mochi would answer 0x80, not a 3.1.1 code.
		h.ingest.refuse(cl, "protocol", packets.ErrClientIdentifierNotValid, packets.Err3ClientIdentifierNotValid)
		return pk, packets.ErrRejectPacket
	}
	if pk.Connect.WillFlag && len(pk.Connect.WillPayload) == 0 {
		pk.Connect.WillPayload = emptyWillStandIn
	}
	return pk, nil
}

func (h *conformHook) readPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	v5 := cl.Properties.ProtocolVersion == 5
	if isSysPrefix(pk.TopicName) {
		if pk.FixedHeader.Qos == 0 {
			return pk, nil // mochi drops it
		}
		h.b.metrics.Denied.WithLabelValues("publish", "acl").Inc()
		h.b.rlog.Log(slog.LevelWarn, "acl:sys", "publish to a $SYS topic refused", "client", cl.ID, "topic", pk.TopicName)
		if !v5 {
			return pk, packets.ErrRejectPacket // 3.1.1 cannot say no: close
		}
		ack := packets.Puback
		if pk.FixedHeader.Qos == 2 {
			ack = packets.Pubrec
		}
		_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: ack}, PacketID: pk.PacketID,
			ReasonCode: packets.ErrNotAuthorized.Code})
		// As a QoS 0 publish to $SYS, mochi drops it without an answer.
		pk.FixedHeader.Qos, pk.PacketID = 0, 0
		return pk, nil
	}
	if v5 && pk.TopicName == "" && pk.Properties.TopicAlias > 0 &&
		pk.Properties.TopicAlias <= h.b.server.Options.Capabilities.TopicAliasMaximum {
		// Set with an empty topic returns the alias's topic, or "" for
		// an alias never set (the connection ends: what it stores is lost).
		if cl.State.TopicAliases.Inbound.Set(pk.Properties.TopicAlias, "") == "" {
			_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect},
				ReasonCode: packets.ErrProtocolViolationInvalidTopic.Code})
			h.b.protocolError(cl.Net.Listener, cl.ID, cl.Net.Remote, "topic_alias_invalid",
				errors.New("a PUBLISH with a topic alias the client never set"))
			return pk, packets.ErrRejectPacket
		}
	}
	return pk, nil
}

// isSysPrefix reports whether topic is under $SYS, as mochi decides it.
func isSysPrefix(topic string) bool {
	return len(topic) >= len(mqtt.SysPrefix) && strings.EqualFold(topic[:len(mqtt.SysPrefix)], mqtt.SysPrefix)
}

// OnConnect refuses a will the client could not publish itself, and turns
// off mochi's topic aliases and flow control towards the client.
func (h *conformHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if m := pk.Properties.AuthenticationMethod; m != "" && cl.Properties.ProtocolVersion == 5 {
		// No enhanced authentication: refused, not ignored [MQTT-4.12.0-1].
		return h.ingest.refuse(cl, "auth", packets.ErrBadAuthenticationMethod, packets.Err3NotAuthorized,
			"why", "enhanced authentication is not supported", "method", m)
	}
	if pk.Connect.WillFlag {
		topic := pk.Connect.WillTopic
		acl := h.b.auth().acl
		if isSysPrefix(topic) || (acl != nil && !acl.CanPublish(string(cl.Properties.Username), cl.ID, topic)) {
			h.b.metrics.Denied.WithLabelValues("publish", "acl").Inc()
			return h.ingest.refuse(cl, "acl", packets.ErrNotAuthorized, packets.Err3NotAuthorized,
				"user", string(cl.Properties.Username), "why", "the will topic is not one the client may publish to", "topic", topic)
		}
	}
	h.towardsClient(cl)
	return nil
}

// towardsClient turns off what mochi does wrong when sending to cl: topic
// aliases, and its Receive Maximum accounting (the listener keeps it).
func (h *conformHook) towardsClient(cl *mqtt.Client) {
	cl.State.TopicAliases.Outbound = mqtt.NewOutboundTopicAliases(0)
	cl.State.Inflight.ResetSendQuota(0)
}

// OnWill gives back the empty payload of a will that had one.
func (h *conformHook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if isEmptyWillStandIn(will.Payload) {
		will.Payload = []byte{}
	}
	return will, nil
}

// OnPacketEncode adjusts a packet the broker is about to send.
func (h *conformHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	switch pk.FixedHeader.Type {
	case packets.Connack:
		if pk.ReasonCode != packets.CodeSuccess.Code || cl.Net.Inline {
			return pk
		}
		if cl.Properties.ProtocolVersion == 5 {
			caps := h.b.server.Options.Capabilities
			pk.Properties.MaximumPacketSize = caps.MaximumPacketSize
			pk.Properties.TopicAliasMaximum = caps.TopicAliasMaximum
		}
		// The session (its messages in flight) is in place, to be sent
		// again right after this CONNACK; mochi reset its flow control.
		h.towardsClient(cl)
		if pk.SessionPresent {
			h.orderForResend(cl)
		}
	case packets.Pubrec:
		if pk.ReasonCode == packets.ErrPacketIdentifierInUse.Code {
			// mochi's answer to a duplicate of a QoS 2 PUBLISH it has
			// (awaiting PUBREL): the message was received, once.
			pk.ReasonCode = packets.CodeSuccess.Code
			pk.Properties.ReasonString = ""
		}
	case packets.Publish:
		// Request Problem Information 0 bars reason strings and user
		// properties from other packets than PUBLISH, CONNACK and
		// DISCONNECT; mochi bars them from all.
		pk.Mods.DisallowProblemInfo = false
	}
	return pk
}

// sendOrder remembers in which order the QoS 1/2 messages in flight to a
// client were first sent: mochi's inflight map does not.
type sendOrder struct {
	mu   sync.Mutex
	next uint64
	seq  map[uint16]uint64 // packet id → when it was sent
}

func (h *conformHook) order(clientID string) *sendOrder {
	if v, ok := h.orders.Load(clientID); ok {
		return v.(*sendOrder)
	}
	v, _ := h.orders.LoadOrStore(clientID, &sendOrder{seq: map[uint16]uint64{}})
	return v.(*sendOrder)
}

// OnQosPublish notes a QoS 1/2 message entering a client's flight (mochi
// also calls it for its resends, DUP set, and for acknowledgements).
func (h *conformHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Dup || cl.Net.Inline {
		return
	}
	o := h.order(cl.ID)
	o.mu.Lock()
	o.next++
	o.seq[pk.PacketID] = o.next
	o.mu.Unlock()
}

func (h *conformHook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) { h.forget(cl, pk.PacketID) }
func (h *conformHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet)  { h.forget(cl, pk.PacketID) }

// forget drops a packet id that is no longer in flight (mochi keeps both
// directions' ids in one map: an inbound flow completing does not end an
// outbound one with the same id).
func (h *conformHook) forget(cl *mqtt.Client, id uint16) {
	if cl.IsTakenOver() {
		// mochi drops the messages of a connection whose session a new
		// one took over, after copying them to it: they are still in flight.
		return
	}
	v, ok := h.orders.Load(cl.ID)
	if !ok {
		return
	}
	if _, inFlight := cl.State.Inflight.Get(id); inFlight {
		return
	}
	o := v.(*sendOrder)
	o.mu.Lock()
	delete(o.seq, id)
	o.mu.Unlock()
}

// OnDisconnect forgets a session that ends with its connection.
func (h *conformHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if expire && !cl.IsTakenOver() {
		h.orders.Delete(cl.ID)
	}
}

// OnClientExpired forgets an expired session.
func (h *conformHook) OnClientExpired(cl *mqtt.Client) { h.orders.Delete(cl.ID) }

// orderForResend renumbers the messages in flight to cl so that mochi,
// which sends them again in the order of uint16(Created), sends them in
// the order they were first sent; and marks those mochi held back for its
// flow control as ordinary (they are sent now with the others, and would
// otherwise be sent a second time). Messages restored from the state file,
// sent before this run, go first, by time and packet id.
func (h *conformHook) orderForResend(cl *mqtt.Client) {
	all := cl.State.Inflight.GetAll(false)
	if len(all) == 0 {
		return
	}
	o := h.order(cl.ID)
	o.mu.Lock()
	seq := make(map[uint16]uint64, len(o.seq))
	live := make(map[uint16]uint64, len(all))
	for _, pk := range all {
		if s, ok := o.seq[pk.PacketID]; ok {
			seq[pk.PacketID] = s
			live[pk.PacketID] = s
		}
	}
	o.seq = live // drop ids no longer in flight
	o.mu.Unlock()

	slices.SortStableFunc(all, func(a, b packets.Packet) int {
		sa, aok := seq[a.PacketID]
		sb, bok := seq[b.PacketID]
		switch {
		case aok && bok:
			return cmpInt(sa, sb)
		case aok != bok:
			if aok {
				return 1
			}
			return -1
		case a.Created != b.Created:
			return cmpInt(a.Created, b.Created)
		}
		return cmpInt(a.PacketID, b.PacketID)
	})
	// Created values whose low 16 bits rise with the order; at most 65535
	// messages can be in flight (one per packet id). They stay in the past.
	base := time.Now().Unix()&^0xffff - 0x10000
	for i, pk := range all {
		pk.Created = base + int64(i)
		if pk.Expiry < 0 {
			pk.Expiry = 0
		}
		cl.State.Inflight.Set(pk)
	}
}

func cmpInt[T int64 | uint64 | uint16](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
