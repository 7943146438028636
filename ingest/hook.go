package ingest

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/sluicehq/sluice"
)

// hook is sluice's mochi hook: it embeds the no-op base and overrides what
// ingest needs.
type hook struct {
	mqtt.HookBase
	b *Broker

	limiters    sync.Map // *mqtt.Client → *rate.Limiter
	subscribing sync.Map // *mqtt.Client → *subscribeState, while a SUBSCRIBE is processed

	// in holds each listener's counters of what is published to it
	// (*inCounters), looked up once rather than by label values for every
	// message.
	in sync.Map

	// retained is the set of topics with a retained message, but for the
	// broker's own $SYS topics: what max_retained_messages bounds.
	retainedMu sync.Mutex
	retained   map[string]struct{}
}

func (h *hook) ID() string { return "sluice-ingest" }

// Provides is asked for every hook call of every packet: a switch, not a
// search of a list (bytes.Contains here and in conformHook was 1.9% of the
// CPU at full load).
func (h *hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish,
		mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnDisconnect, mqtt.OnRetainMessage, mqtt.OnRetainedExpired,
		mqtt.OnSessionEstablished, mqtt.OnPublishDropped:
		return true
	}
	return false
}

// OnSessionEstablished counts a connection accepted: its CONNACK is sent.
func (h *hook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	h.b.metrics.Accepted.WithLabelValues(cl.Net.Listener).Inc()
	markEstablished(cl)
}

// OnConnect authenticates the client and bounds its keep-alive. A client
// refused here gets a CONNACK saying why, in its protocol's terms.
//
// Who the client is, in order: the identity in its verified certificate
// (on a listener with client certificates); else the user whose password
// it sent (a client that sends a username must have the right password);
// else, where the listener allows it, nobody: an anonymous client, with no
// username for ACLs whatever it sent. A client id whose session belongs to
// another identity is refused (checkOwner).
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	b := h.b
	if b.isClosing() {
		return h.refuse(cl, "shutting_down", packets.ErrServerUnavailable, packets.Err3ServerUnavailable)
	}
	lc := b.listenerConfig(cl.Net.Listener)
	if lc == nil {
		return h.refuse(cl, "auth", packets.ErrNotAuthorized, packets.Err3NotAuthorized)
	}
	if err := h.boundKeepAlive(cl); err != nil {
		return err
	}
	if err := h.authenticate(cl, pk, lc); err != nil {
		return err
	}
	return h.checkOwner(cl)
}

// authenticate decides who the client is (see OnConnect) and sets its
// username to that identity, nil when anonymous.
func (h *hook) authenticate(cl *mqtt.Client, pk packets.Packet, lc *ListenerConfig) error {
	b := h.b
	if lc.TLS != nil && lc.TLS.ClientCAFile != "" {
		id, err := certIdentity(connTLS(cl), lc.TLS.Identity)
		if err != nil {
			return h.refuse(cl, "auth", packets.ErrNotAuthorized, packets.Err3NotAuthorized, "error", err)
		}
		if id != "" {
			cl.Properties.Username = []byte(id)
			return nil
		}
	}
	user := string(pk.Connect.Username)
	if pw := b.auth().passwords; pw != nil && user != "" {
		if pw.Verify(user, pk.Connect.Password) {
			return nil
		}
		h.delayRefusal(cl, user, pw.Passwords().Has(user))
		return h.refuse(cl, "auth", packets.ErrBadUsernameOrPassword, packets.ErrMalformedUsernameOrPassword, "user", user)
	}
	if lc.AllowAnonymous {
		cl.Properties.Username = nil
		return nil
	}
	why := "anonymous access is off on this listener"
	if user != "" {
		why = "no password file is configured"
	}
	return h.refuse(cl, "auth", packets.ErrNotAuthorized, packets.Err3NotAuthorized, "user", user, "why", why)
}

// refuse answers a CONNECT with a refusal and logs it (rate-limited).
func (h *hook) refuse(cl *mqtt.Client, reason string, v5, v3 packets.Code, args ...any) error {
	code := v5
	if cl.Properties.ProtocolVersion < 5 {
		code = v3
	}
	h.b.metrics.Refused.WithLabelValues(cl.Net.Listener, reason).Inc()
	if reason != "shutting_down" {
		args = append([]any{"listener", cl.Net.Listener, "client", cl.ID, "remote", cl.Net.Remote, "reason", v5.Reason}, args...)
		h.b.rlog.Log(slog.LevelWarn, reason+":"+cl.Net.Listener, "connection refused", args...)
	}
	_ = h.b.server.SendConnack(cl, code, false, nil)
	return v5
}

// boundKeepAlive keeps the client's keep-alive within the limits. mochi
// closes a connection silent for 1.5 keep-alives.
func (h *hook) boundKeepAlive(cl *mqtt.Client) error {
	lim := h.b.cfg.Limits
	lo, hi := uint16(lim.MinKeepAlive/time.Second), uint16(lim.MaxKeepAlive/time.Second)
	ka := cl.State.Keepalive
	v5 := cl.Properties.ProtocolVersion == 5
	switch {
	case ka == 0 || ka > hi:
		if !v5 && ka != 0 {
			// An MQTT 3 client cannot be told another keep-alive.
			return h.refuse(cl, "keep_alive", packets.ErrClientIdentifierNotValid, packets.Err3ClientIdentifierNotValid,
				"keep_alive", ka, "max_keep_alive", hi)
		}
		// No keep-alive at all: bound it all the same, so a connection
		// whose peer vanished is closed eventually.
		cl.State.Keepalive = hi
		cl.State.ServerKeepalive = v5
	case ka < lo:
		cl.State.Keepalive = lo
		cl.State.ServerKeepalive = v5
	}
	return nil
}

// OnConnectAuthenticate admits the clients OnConnect admitted, while the
// broker is open.
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	return !h.b.isClosing()
}

// OnDisconnect forgets the client's publish rate.
func (h *hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.limiters.Delete(cl)
	h.subscribing.Delete(cl)
}

// subscribeState is what OnACLCheck needs to know about the SUBSCRIBE
// being processed: which filters it holds, and which are over the
// client's subscription limit.
type subscribeState struct {
	filters map[string]bool // filter → over the limit
}

// OnSubscribe notes the filters of a SUBSCRIBE for OnACLCheck, which mochi
// calls for each of them (and for each message delivered): the ones beyond
// max_subscriptions are refused.
func (h *hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if cl.Net.Inline {
		return pk
	}
	st := &subscribeState{filters: make(map[string]bool, len(pk.Filters))}
	n := cl.State.Subscriptions.Len()
	for _, f := range pk.Filters {
		if _, ok := cl.State.Subscriptions.Get(f.Filter); ok {
			st.filters[f.Filter] = false // a renewal: no new subscription
			continue
		}
		over := n >= h.b.cfg.Limits.MaxSubscriptions
		if !over {
			n++
		}
		st.filters[f.Filter] = over
	}
	h.subscribing.Store(cl, st)
	return pk
}

// OnSubscribed ends the SUBSCRIBE OnSubscribe noted.
func (h *hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	h.subscribing.Delete(cl)
}

// OnACLCheck decides publishes (write), subscriptions and deliveries
// (mochi asks again for each message it delivers, with its topic).
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	b := h.b
	user := string(cl.Properties.Username)
	acl := b.auth().acl
	if write {
		if acl != nil && !acl.CanPublish(user, cl.ID, topic) {
			b.metrics.Denied.WithLabelValues("publish", "acl").Inc()
			b.rlog.Log(slog.LevelWarn, "acl:publish", "publish denied by the ACL", "client", cl.ID, "user", user, "topic", topic)
			return false
		}
		return true
	}
	action := "deliver"
	if v, ok := h.subscribing.Load(cl); ok {
		if over, ok := v.(*subscribeState).filters[topic]; ok {
			action = "subscribe"
			if over {
				b.metrics.Denied.WithLabelValues(action, "max_subscriptions").Inc()
				b.rlog.Log(slog.LevelWarn, "max_subscriptions", "subscription refused: the client has max_subscriptions",
					"client", cl.ID, "filter", topic, "max_subscriptions", b.cfg.Limits.MaxSubscriptions)
				return false
			}
		}
	}
	if acl != nil && !acl.CanSubscribe(user, cl.ID, topic) {
		b.metrics.Denied.WithLabelValues(action, "acl").Inc()
		if action == "subscribe" {
			b.rlog.Log(slog.LevelWarn, "acl:subscribe", "subscription denied by the ACL", "client", cl.ID, "user", user, "filter", topic)
		}
		return false
	}
	return true
}

// OnPublish applies the client's publish rate and the retained-message
// limits, then hands the message to the pipelines, which return once it is
// in their journals (durable as configured), so the broker's PUBACK/PUBREC
// only ever acknowledges a message that cannot be lost. While a journal is
// full, this client's next packets wait too: that is the backpressure a
// long sink outage puts on a fast device.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	b := h.b
	if cl.Net.Inline || isSysTopic(pk.TopicName) {
		return pk, nil // sluice's own publishes (alerts), not telemetry
	}
	if !b.enter() {
		b.metrics.Rejected.WithLabelValues("shutting_down").Inc()
		return pk, packets.ErrRejectPacket
	}
	defer b.inflight.Done()

	qos := pk.FixedHeader.Qos
	// An MQTT 5 publisher of a QoS 1 message can be told to try again
	// later (quota exceeded); others wait. (mochi answers a refused QoS 2
	// publish with a PUBACK, which a client does not expect, so QoS 2 waits
	// too.)
	refuse := qos == 1 && cl.Properties.ProtocolVersion == 5

	if lim := h.limiter(cl); lim != nil && !lim.Allow() {
		if refuse {
			b.metrics.Denied.WithLabelValues("publish", "rate").Inc()
			return pk, packets.ErrQuotaExceeded
		}
		if err := lim.Wait(b.ctx); err != nil {
			b.metrics.Rejected.WithLabelValues("shutting_down").Inc()
			return pk, packets.ErrRejectPacket
		}
	}

	in := h.counted(cl.Net.Listener)
	in.messages[min(qos, 2)].Inc()
	in.bytes.Add(float64(len(pk.Payload)))

	msg := &sluice.Message{
		Topic:       pk.TopicName,
		Payload:     pk.Payload,
		QoS:         qos,
		Retain:      pk.FixedHeader.Retain,
		ClientID:    cl.ID,
		Username:    string(cl.Properties.Username),
		ContentType: pk.Properties.ContentType,
		Received:    time.Now(),
	}
	if e := pk.Properties.MessageExpiryInterval; e > 0 {
		msg.Expires = msg.Received.Add(time.Duration(e) * time.Second)
	}
	if n := len(pk.Properties.User); n > 0 {
		msg.UserProperties = make([]sluice.Property, n)
		for i, p := range pk.Properties.User {
			msg.UserProperties[i] = sluice.Property{Key: p.Key, Value: p.Val}
		}
	}

	err := b.handler.Handle(b.ctx, msg, refuse)
	switch {
	case err == nil:
		h.limitRetained(cl, &pk)
		return pk, nil
	case errors.Is(err, sluice.ErrBusy):
		b.metrics.Rejected.WithLabelValues("journal_full").Inc()
		b.rlog.Log(slog.LevelWarn, "journal_full", "publish refused with quota exceeded (0x97): a pipeline's journal is full; the client may send it again",
			"client", cl.ID, "topic", msg.Topic)
		return pk, packets.ErrQuotaExceeded
	case errors.Is(err, sluice.ErrStorage):
		b.metrics.Rejected.WithLabelValues("journal_write_error").Inc()
		b.rlog.Log(slog.LevelError, "journal_write_error", "publish refused: a pipeline's journal cannot write; the client may send it again",
			"client", cl.ID, "topic", msg.Topic, "error", err)
		return pk, h.refuseUnstored(cl, qos)
	case b.ctx.Err() != nil:
		// Shutting down: not acknowledged, so the client keeps the message
		// and sends it again after reconnecting.
		b.metrics.Rejected.WithLabelValues("shutting_down").Inc()
		return pk, packets.ErrRejectPacket
	default:
		b.rlog.Log(slog.LevelError, "publish_error", "publish not accepted", "client", cl.ID, "topic", msg.Topic, "error", err)
		b.metrics.Rejected.WithLabelValues("error").Inc()
		return pk, packets.ErrRejectPacket
	}
}

// inCounters count what is published to one listener.
type inCounters struct {
	messages [3]prometheus.Counter // by QoS
	bytes    prometheus.Counter
}

// counted returns the counters of listener.
func (h *hook) counted(listener string) *inCounters {
	if c, ok := h.in.Load(listener); ok {
		return c.(*inCounters)
	}
	m := h.b.metrics
	c := &inCounters{bytes: m.BytesIn.WithLabelValues(listener)}
	for q, label := range qosLabel {
		c.messages[q] = m.MessagesIn.WithLabelValues(listener, label)
	}
	v, _ := h.in.LoadOrStore(listener, c)
	return v.(*inCounters)
}

// refuseUnstored answers a publish a journal could not store, without
// acknowledging it. An MQTT 5 QoS 1 publisher is told: quota exceeded
// (0x97), as for a full journal. A publisher that cannot be told in its
// acknowledgement (MQTT 3.1.1; QoS 2, which mochi would answer with a
// PUBACK) loses its connection (MQTT 5: a DISCONNECT 0x97 first) and sends
// the message again once it reconnects. A QoS 0 message is dropped: it is
// never acknowledged anyway.
func (h *hook) refuseUnstored(cl *mqtt.Client, qos byte) error {
	v5 := cl.Properties.ProtocolVersion == 5
	switch {
	case qos == 0:
	case qos == 1 && v5:
		return packets.ErrQuotaExceeded
	case v5:
		_ = h.b.server.DisconnectClient(cl, packets.ErrQuotaExceeded)
	default:
		cl.Stop(packets.ErrQuotaExceeded)
	}
	return packets.ErrRejectPacket
}

// limiter returns the client's publish rate limiter, nil when unlimited.
func (h *hook) limiter(cl *mqtt.Client) *rate.Limiter {
	lim := h.b.cfg.Limits
	if lim.PublishRate <= 0 {
		return nil
	}
	if v, ok := h.limiters.Load(cl); ok {
		return v.(*rate.Limiter)
	}
	v, _ := h.limiters.LoadOrStore(cl, rate.NewLimiter(rate.Limit(lim.PublishRate), lim.PublishBurst))
	return v.(*rate.Limiter)
}

// limitRetained keeps a retained message from being stored when it is
// over max_retained_size, or would be a new retained topic beyond
// max_retained_messages. The message is still delivered. (An empty
// retained message deletes the topic's and is always let through.)
func (h *hook) limitRetained(cl *mqtt.Client, pk *packets.Packet) {
	if !pk.FixedHeader.Retain || len(pk.Payload) == 0 {
		return
	}
	b := h.b
	reason := ""
	if len(pk.Payload) > int(b.cfg.Limits.MaxRetainedSize) {
		reason = "size"
	} else {
		h.retainedMu.Lock()
		_, ok := h.retained[pk.TopicName]
		if !ok && len(h.retained) >= b.cfg.Limits.MaxRetainedMessages {
			reason = "count"
		}
		h.retainedMu.Unlock()
	}
	if reason == "" {
		return
	}
	pk.FixedHeader.Retain = false
	b.metrics.NotRetained.WithLabelValues(reason).Inc()
	b.rlog.Log(slog.LevelWarn, "retained:"+reason, "retained message delivered but not kept", "reason", reason,
		"client", cl.ID, "topic", pk.TopicName, "bytes", len(pk.Payload),
		"max_retained_size", b.cfg.Limits.MaxRetainedSize, "max_retained_messages", b.cfg.Limits.MaxRetainedMessages)
}

// OnRetainMessage keeps the set of retained topics up to date.
func (h *hook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	h.noteRetained(pk.TopicName, len(pk.Payload) > 0)
}

// OnRetainedExpired forgets a retained message that expired.
func (h *hook) OnRetainedExpired(topic string) { h.noteRetained(topic, false) }

func (h *hook) noteRetained(topic string, kept bool) {
	if isSysTopic(topic) {
		return
	}
	h.retainedMu.Lock()
	defer h.retainedMu.Unlock()
	if h.retained == nil {
		h.retained = map[string]struct{}{}
	}
	if kept {
		h.retained[topic] = struct{}{}
	} else {
		delete(h.retained, topic)
	}
}

// countRetained adds the retained messages restored from the broker's
// stored state (which mochi loads without calling the hook).
func (h *hook) countRetained(server *mqtt.Server) {
	for topic := range server.Topics.Retained.GetAll() {
		h.noteRetained(topic, true)
	}
}

// connTLS returns the TLS state of a client's connection, nil without TLS.
func connTLS(cl *mqtt.Client) *tls.ConnectionState {
	if c, ok := cl.Net.Conn.(*clientConn); ok {
		return c.TLS()
	}
	return nil
}

var qosLabel = [3]string{"0", "1", "2"}
