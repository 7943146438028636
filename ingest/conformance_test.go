package ingest_test

// The conformance suite: sluice's broker, with the defaults it ships, against
// the MQTT 3.1.1 and MQTT 5.0 specifications, one test per behaviour, each
// naming its section ("3.1.1 §3.9.3" is MQTT 3.1.1 section 3.9.3, "5.0 §4.9"
// MQTT 5.0 section 4.9; [MQTT-x.y.z-n] is a normative statement). It drives
// the broker with the clients people use (paho.golang for MQTT 5,
// paho.mqtt.golang for 3.1.1) and, where a test must see or withhold single
// packets, with a bare client (wire). docs/broker.md lists the defaults, the
// deviations and how to run this:
//
//	go test ./ingest -run Conformance -v

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/ingest/auth"
	"github.com/sluicehq/sluice/internal/testsvc"
)

// confUsers log in with a password, as devices do with the shipped
// defaults (no anonymous clients).
var confUsers = map[string]string{
	"device-1": "device-1-Pa55",
	"device-2": "device-2-Pa55",
	"ops":      "ops-Pa55-word",
}

// confACL is the small ACL of the ACL cases: each device in its own
// subtree, alerts readable by all, operators everywhere.
const confACL = `
rules:
  - users: ops
    allow: all
    topics: ["#", "$SYS/#"]
  - users: "*"
    allow: [publish, subscribe]
    topics: ["plant/%u/#"]
  - users: "*"
    allow: subscribe
    topics: ["alerts/#"]
`

// confBroker is sluice's broker as shipped: every limit and capability at
// its default, persistence on (a state file, as `sluice run` keeps in
// data_dir); changed only where a test must: the listener is on a free
// loopback port, and there is a password file (and, for the ACL cases, an
// ACL file).
type confBroker struct {
	*ingest.Broker
	addr string
	rec  *recorder
}

func conformanceBroker(t *testing.T, acl string) *confBroker {
	t.Helper()
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "passwd")
	for user, pw := range confUsers {
		if err := auth.SetPassword(pwFile, user, []byte(pw), 4); err != nil {
			t.Fatal(err)
		}
	}
	cfg := ingest.Config{
		Listeners: []ingest.ListenerConfig{{Name: "mqtt", Address: "127.0.0.1:0"}},
		Auth:      ingest.AuthConfig{PasswordFile: pwFile},
		StatePath: filepath.Join(dir, "broker.db"),
	}
	if acl != "" {
		cfg.Auth.ACLFile = filepath.Join(dir, "acl.yaml")
		writeFile(t, cfg.Auth.ACLFile, acl)
	}
	b, rec, _ := startBroker(t, cfg)
	return &confBroker{Broker: b, addr: b.Addr("mqtt"), rec: rec}
}

// dial connects a bare client as o.user (device-1 when not set), MQTT 5
// unless o.version says otherwise, and returns the CONNACK.
func (b *confBroker) dial(t *testing.T, o wireConnect) (*wire, packets.Packet) {
	t.Helper()
	if o.version == 0 {
		o.version = v5
	}
	if o.user == "" {
		o.user = "device-1"
	}
	if o.password == "" {
		o.password = confUsers[o.user]
	}
	return dialWire(t, b.addr, o)
}

// connect is dial for a CONNECT that must be accepted.
func (b *confBroker) connect(t *testing.T, o wireConnect) *wire {
	t.Helper()
	c, ack := b.dial(t, o)
	if ack.ReasonCode != 0 {
		t.Fatalf("%s: CONNACK %#x", o.clientID, ack.ReasonCode)
	}
	return c
}

// mark publishes an empty QoS 1 message through the broker (as sluice's
// alerts are), for a subscriber to wait for: what it received before the
// mark is all that was sent to it before (mochi hands a message to its
// subscribers' queues before it reads the next packet; when other clients
// publish, their last acknowledged message may still be on its way: the
// mark must then come from them, wire.mark).
func (b *confBroker) mark(t *testing.T, topic string) {
	t.Helper()
	if err := b.Publish(topic, nil, false, 1); err != nil {
		t.Fatal(err)
	}
}

// mark publishes an empty QoS 1 message and waits for its PUBACK: a
// subscriber that receives it has received what this client published
// before it. Messages arriving meanwhile are kept for receiveUntil.
func (c *wire) mark(topic string) {
	c.t.Helper()
	c.ids++
	c.publish(topic, 1, c.ids, nil, packets.Properties{})
	c.await(packets.Puback, c.ids)
	// mochi sends PUBACK before it hands the message to its subscribers,
	// and reads this client's next packet after.
	c.sync()
}

// nextOn reads messages (acknowledging them) until one on topic, and
// returns it and those before it.
func (c *wire) nextOn(topic string) (packets.Packet, []packets.Packet) {
	c.t.Helper()
	before := c.receiveUntil(topic)
	return c.last, before
}

// receiveUntil reads PUBLISH packets, acknowledging each as a client
// library would (PUBACK; PUBREC, then PUBCOMP for the PUBREL), until one on
// topic arrives; it returns those before it.
func (c *wire) receiveUntil(topic string) []packets.Packet {
	c.t.Helper()
	var got []packets.Packet
	for {
		pk, err := c.next(30 * time.Second)
		if err != nil {
			c.t.Fatalf("waiting for a message on %q (after %d others: %q): %v", topic, len(got), topicsOf(got), err)
		}
		switch pk.FixedHeader.Type {
		case packets.Publish:
			c.ack(pk)
			if pk.TopicName == topic {
				c.last = pk
				return got
			}
			got = append(got, pk)
		case packets.Pubrel:
			c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: pk.PacketID})
		default:
			c.t.Fatalf("waiting for a message on %q: got %s", topic, packets.PacketNames[pk.FixedHeader.Type])
		}
	}
}

func topicsOf(pks []packets.Packet) []string {
	var ts []string
	for _, pk := range pks {
		ts = append(ts, pk.TopicName)
	}
	return ts
}

func versionName(v byte) string {
	if v == v5 {
		return "MQTT5"
	}
	return "MQTT3.1.1"
}

// spec logs the sections a test checks.
func spec(t *testing.T, sections string) {
	t.Helper()
	t.Log("spec: " + sections)
}

// pahoClient is a paho.golang (MQTT 5) client collecting what it receives.
type pahoClient struct {
	*paho.Client
	mu   sync.Mutex
	msgs []*paho.Publish
	last *paho.Publish
	note chan struct{}
}

// lastOn returns the message until stopped at, if it was on topic.
func (c *pahoClient) lastOn(topic string) *paho.Publish {
	if c.last == nil || c.last.Topic != topic {
		return nil
	}
	return c.last
}

// paho connects a paho.golang client; cp's ClientID, credentials (device-1
// when cp.Username is empty) and keep-alive are filled in where unset.
func (b *confBroker) paho(t *testing.T, cp *paho.Connect) (*pahoClient, *paho.Connack) {
	t.Helper()
	if cp.Username == "" {
		cp.Username = "device-1"
	}
	if cp.Password == nil {
		cp.Password = []byte(confUsers[cp.Username])
	}
	cp.UsernameFlag, cp.PasswordFlag = true, true
	return pahoOn(t, dialWireConn(t, b.addr, v5).conn, cp)
}

// pahoOn connects a paho.golang client over conn (keep-alive 60 s unless
// cp says otherwise).
func pahoOn(t *testing.T, conn net.Conn, cp *paho.Connect) (*pahoClient, *paho.Connack) {
	t.Helper()
	if cp.KeepAlive == 0 {
		cp.KeepAlive = 60
	}
	c := &pahoClient{note: make(chan struct{}, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn:        conn,
		ClientID:    cp.ClientID,
		PingHandler: testsvc.Pinger(),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.mu.Lock()
			c.msgs = append(c.msgs, pr.Packet)
			c.mu.Unlock()
			select {
			case c.note <- struct{}{}:
			default:
			}
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if ca == nil {
		t.Fatalf("paho %s: connect: %v", cp.ClientID, err)
	}
	if ca.ReasonCode == 0 {
		t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	}
	return c, ca
}

func (c *pahoClient) subscribe(t *testing.T, subs ...paho.SubscribeOptions) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs})
	if sa == nil {
		t.Fatalf("subscribe: %v", err)
	}
	return sa.Reasons
}

func (c *pahoClient) publish(t *testing.T, p *paho.Publish) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.Publish(ctx, p)
	if resp != nil {
		return resp.ReasonCode
	}
	if err != nil {
		t.Fatalf("publish %q: %v", p.Topic, err)
	}
	return 0
}

// until waits for a message on topic and returns those received before it
// (lastOn then returns it).
func (c *pahoClient) until(t *testing.T, topic string) []*paho.Publish {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		c.mu.Lock()
		for i, p := range c.msgs {
			if p.Topic == topic {
				before := slices.Clone(c.msgs[:i])
				c.msgs = slices.Clone(c.msgs[i+1:])
				c.last = p
				c.mu.Unlock()
				return before
			}
		}
		c.mu.Unlock()
		select {
		case <-c.note:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("paho: nothing on %q within 30s", topic)
		}
	}
}

// paho3 connects a paho.mqtt.golang client (MQTT 3.1.1) whose messages
// go to the returned channel.
func (b *confBroker) paho3(t *testing.T, clientID, user string, clean bool, opts ...func(*mqtt3.ClientOptions)) (mqtt3.Client, chan mqtt3.Message) {
	t.Helper()
	msgs := make(chan mqtt3.Message, 1000)
	o := mqtt3.NewClientOptions().AddBroker("tcp://" + b.addr).SetClientID(clientID).
		SetUsername(user).SetPassword(confUsers[user]).SetProtocolVersion(4).SetCleanSession(clean).
		SetAutoReconnect(false).SetConnectRetry(false).SetKeepAlive(60 * time.Second).SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ mqtt3.Client, m mqtt3.Message) { msgs <- m })
	for _, f := range opts {
		f(o)
	}
	c := mqtt3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("paho3 %s: connect: %v", clientID, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, msgs
}

// until3 waits for a message on topic and returns those received before it.
func until3(t *testing.T, msgs chan mqtt3.Message, topic string) []mqtt3.Message {
	t.Helper()
	var got []mqtt3.Message
	deadline := time.After(30 * time.Second)
	for {
		select {
		case m := <-msgs:
			if m.Topic() == topic {
				return got
			}
			got = append(got, m)
		case <-deadline:
			t.Fatalf("paho3: nothing on %q within 30s (got %d others)", topic, len(got))
		}
	}
}

func wait3(t *testing.T, tok mqtt3.Token) {
	t.Helper()
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("paho3: %v", tok.Error())
	}
}

// bareAck checks that an acknowledgement is its packet id and at most a
// success reason code with no properties: it echoes nothing of the PUBLISH.
func bareAck(t *testing.T, ack packets.Packet, id uint16, version byte) {
	t.Helper()
	body := ack.Payload
	want := [][]byte{{byte(id >> 8), byte(id)}}
	if version == v5 {
		want = append(want, []byte{byte(id >> 8), byte(id), 0}, []byte{byte(id >> 8), byte(id), 0, 0})
	}
	for _, w := range want {
		if bytes.Equal(body, w) {
			return
		}
	}
	t.Errorf("%s for packet %d is % x: want only the packet id and success, no properties",
		packets.PacketNames[ack.FixedHeader.Type], id, body)
}

func TestConformanceAcksCarryNoPublishProperties(t *testing.T) {
	spec(t, "5.0 §3.4.2.2, §3.5.2.2, §3.7.2.2 (acknowledgement properties are the receiver's own), §3.4.2.1 (PUBACK reason codes); 3.1.1 §3.4, §3.5, §3.7")
	b := conformanceBroker(t, "")
	props := packets.Properties{
		User:          []packets.UserProperty{{Key: "unit", Val: "C"}, {Key: "site", Val: "north"}},
		ContentType:   "application/json",
		ResponseTopic: "plant/device-1/reply",
	}
	for _, version := range []byte{v3, v5} {
		t.Run(versionName(version), func(t *testing.T) {
			c := b.connect(t, wireConnect{version: version, clientID: "acks-" + versionName(version)})
			c.publish("plant/device-1/acks", 1, 10, []byte(`{"t":1}`), props)
			bareAck(t, c.expect(packets.Puback), 10, version)
			c.publish("plant/device-1/acks", 2, 11, []byte(`{"t":2}`), props)
			bareAck(t, c.expect(packets.Pubrec), 11, version)
			c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: 11,
				Properties: packets.Properties{User: []packets.UserProperty{{Key: "k", Val: "v"}}}})
			bareAck(t, c.expect(packets.Pubcomp), 11, version)
		})
	}
}

func TestConformanceReceiveMaximumExceeded(t *testing.T) {
	spec(t, "5.0 §3.2.2.3.3 (Receive Maximum), §3.3.4 and §4.9 (a client over it is disconnected with 0x93)")
	b := conformanceBroker(t, "")
	c, ack := b.dial(t, wireConnect{clientID: "greedy", clean: true})
	rm := int(ack.Properties.ReceiveMaximum)
	if rm != 1024 {
		t.Fatalf("CONNACK Receive Maximum %d, want the default max_inflight 1024", rm)
	}
	// QoS 2 publishes stay unacknowledged until PUBREL, which never comes.
	for i := 1; i <= rm; i++ {
		c.publish("plant/device-1/burst", 2, uint16(i), []byte("x"), packets.Properties{})
	}
	for i := 1; i <= rm; i++ {
		if rec := c.expect(packets.Pubrec); rec.ReasonCode != 0 {
			t.Fatalf("PUBREC %d: %#x", rec.PacketID, rec.ReasonCode)
		}
	}
	c.publish("plant/device-1/burst", 2, uint16(rm+1), []byte("one too many"), packets.Properties{})
	got := c.closed()
	if len(got) != 1 || got[0].FixedHeader.Type != packets.Disconnect || got[0].ReasonCode != packets.ErrReceiveMaximum.Code {
		t.Fatalf("after Receive Maximum + 1 publishes the broker sent %v, want DISCONNECT 0x93", got)
	}
}

func TestConformanceClientReceiveMaximum(t *testing.T) {
	spec(t, "5.0 §3.1.2.11.3 and §4.9 [MQTT-3.3.4-9] (no more QoS 1/2 PUBLISH unacknowledged than the client's Receive Maximum), §4.6 (in order)")
	b := conformanceBroker(t, "")
	sub := b.connect(t, wireConnect{clientID: "slow", clean: true, props: packets.Properties{ReceiveMaximum: 2}})
	if codes := sub.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "rm/#", Qos: 1}); codes[0] != 1 {
		t.Fatalf("SUBACK %v", codes)
	}
	pub := b.connect(t, wireConnect{version: v5, user: "device-2", clientID: "fast", clean: true})
	for i := 1; i <= 10; i++ {
		pub.publish("rm/"+strconv.Itoa(i), 1, uint16(i), nil, packets.Properties{})
		pub.expect(packets.Puback)
	}
	// QoS 0 is not counted: the mark overtakes what waits for quota.
	pub.publish("rm/mark", 0, 0, nil, packets.Properties{})

	var first []string
	var held []packets.Packet
	for {
		pk := sub.expect(packets.Publish)
		if pk.TopicName == "rm/mark" {
			break
		}
		first = append(first, pk.TopicName)
		held = append(held, pk)
	}
	if want := []string{"rm/1", "rm/2"}; !slices.Equal(first, want) {
		t.Fatalf("before acknowledging anything the client got %q, want %q", first, want)
	}
	got := slices.Clone(first)
	for len(got) < 10 {
		sub.ack(held[0])
		held = held[1:]
		pk := sub.expect(packets.Publish)
		got = append(got, pk.TopicName)
		held = append(held, pk)
	}
	var want []string
	for i := 1; i <= 10; i++ {
		want = append(want, "rm/"+strconv.Itoa(i))
	}
	if !slices.Equal(got, want) {
		t.Errorf("received %q, want %q", got, want)
	}
}

func TestConformanceServerKeepAlive(t *testing.T) {
	spec(t, "5.0 §3.1.2.10, §3.2.2.3.14 (Server Keep Alive) [MQTT-3.1.2-21] [MQTT-3.1.2-22]; 3.1.1 §3.1.2.10")
	b := conformanceBroker(t, "")
	cases := []struct {
		keepAlive uint16
		want      uint16 // Server Keep Alive in CONNACK, 0 for none
	}{
		{0, 65535}, // none asked: held to max_keep_alive
		{2, 5},     // below min_keep_alive
		{60, 0},    // within the bounds: as asked
		{65535, 0}, // the largest there is: max_keep_alive is 65535 s
	}
	for _, c := range cases {
		o := wireConnect{clientID: "ka", clean: true}
		cp := wireConnectPacket(o)
		cp.Connect.Keepalive = c.keepAlive
		w := dialWireConn(t, b.addr, v5)
		cp.Connect.UsernameFlag, cp.Connect.Username = true, []byte("device-1")
		cp.Connect.PasswordFlag, cp.Connect.Password = true, []byte(confUsers["device-1"])
		w.send(cp)
		ack := w.expect(packets.Connack)
		got := uint16(0)
		if ack.Properties.ServerKeepAliveFlag {
			got = ack.Properties.ServerKeepAlive
		}
		if ack.ReasonCode != 0 || got != c.want {
			t.Errorf("MQTT 5, keep-alive %d: CONNACK %#x, Server Keep Alive %d, want %d", c.keepAlive, ack.ReasonCode, got, c.want)
		}
		w.disconnect()
	}
	// MQTT 3.1.1 cannot be told: every keep-alive is accepted by default.
	for _, ka := range []uint16{0, 2, 65535} {
		w := dialWireConn(t, b.addr, v3)
		cp := wireConnectPacket(wireConnect{version: v3, clientID: "ka3", clean: true, user: "device-1", password: confUsers["device-1"]})
		cp.Connect.Keepalive = ka
		w.send(cp)
		if ack := w.expect(packets.Connack); ack.ReasonCode != 0 {
			t.Errorf("MQTT 3.1.1, keep-alive %d: CONNACK %#x", ka, ack.ReasonCode)
		}
		w.disconnect()
	}

	// The broker holds the client to the keep-alive it announced: silent
	// for 1.5 times 5 s, the connection is closed (not after 1.5 s).
	w := dialWireConn(t, b.addr, v5)
	cp := wireConnectPacket(wireConnect{version: v5, clientID: "silent", clean: true, user: "device-1", password: confUsers["device-1"]})
	cp.Connect.Keepalive = 1
	start := time.Now()
	w.send(cp)
	if ack := w.expect(packets.Connack); ack.Properties.ServerKeepAlive != 5 {
		t.Fatalf("Server Keep Alive %d, want 5", ack.Properties.ServerKeepAlive)
	}
	w.closed()
	if elapsed := time.Since(start); elapsed < 5*time.Second {
		t.Errorf("closed after %v: before the announced keep-alive", elapsed)
	}
}

func TestConformanceClientIdentifier(t *testing.T) {
	spec(t, "3.1.1 §3.1.3.1 [MQTT-3.1.3-6] [MQTT-3.1.3-8], §3.1.4 [MQTT-3.1.4-2] (take-over); 5.0 §3.1.3.1, §3.2.2.3.7 (Assigned Client Identifier), §3.1.4 [MQTT-3.1.4-3]")
	b := conformanceBroker(t, "")

	_, ack := b.dial(t, wireConnect{version: v3, clientID: "", clean: true})
	if ack.ReasonCode != 0 {
		t.Errorf("MQTT 3.1.1, empty client id, clean session: CONNACK %#x, want accepted", ack.ReasonCode)
	}
	c, ack := b.dial(t, wireConnect{version: v3, clientID: "", clean: false})
	if ack.ReasonCode != 0x02 {
		t.Errorf("MQTT 3.1.1, empty client id, persistent session: CONNACK %#x, want 0x02 (identifier rejected)", ack.ReasonCode)
	} else {
		c.closed()
	}

	_, ack = b.dial(t, wireConnect{version: v5, clientID: "", clean: true})
	if ack.ReasonCode != 0 || ack.Properties.AssignedClientID == "" {
		t.Errorf("MQTT 5, empty client id: CONNACK %#x, assigned id %q", ack.ReasonCode, ack.Properties.AssignedClientID)
	}

	// A second connection with a client id takes over the first.
	first := b.connect(t, wireConnect{version: v5, clientID: "twin", clean: true})
	b.connect(t, wireConnect{version: v5, clientID: "twin", clean: true})
	if got := first.closed(); len(got) != 1 || got[0].ReasonCode != packets.ErrSessionTakenOver.Code {
		t.Errorf("MQTT 5, taken over: got %v, want DISCONNECT 0x8E", got)
	}
	first3 := b.connect(t, wireConnect{version: v3, clientID: "twin3", clean: true})
	b.connect(t, wireConnect{version: v3, clientID: "twin3", clean: true})
	noDisconnect(t, first3.closed())
}

func TestConformanceNotAuthorized(t *testing.T) {
	spec(t, "3.1.1 §3.2.2.3 (return codes 4, 5) [MQTT-3.2.2-5]; 5.0 §3.2.2.2 (0x86, 0x87, 0x8C) [MQTT-3.2.2-7], §4.12 [MQTT-4.12.0-1] (no enhanced authentication: refused)")
	b := conformanceBroker(t, "")
	cases := []struct {
		name, user, password string
		v3, v5               byte
	}{
		{"wrong password", "device-1", "device-2-Pa55", 0x04, 0x86},
		{"unknown user", "mallory", "whatever", 0x04, 0x86},
		{"no credentials (no anonymous clients by default)", "", "", 0x05, 0x87},
	}
	for _, c := range cases {
		for _, version := range []byte{v3, v5} {
			t.Run(c.name+"/"+versionName(version), func(t *testing.T) {
				w := dialWireConn(t, b.addr, version)
				w.send(wireConnectPacket(wireConnect{version: version, clientID: "intruder", clean: true, user: c.user, password: c.password}))
				ack := w.expect(packets.Connack)
				want := c.v3
				if version == v5 {
					want = c.v5
				}
				if ack.ReasonCode != want || ack.SessionPresent {
					t.Errorf("CONNACK %#x (session present %v), want %#x", ack.ReasonCode, ack.SessionPresent, want)
				}
				w.closed() // and the connection is closed
			})
		}
	}
	// Enhanced authentication (MQTT 5 AUTH) is not offered: a CONNECT that
	// names a method is refused, even with a good password.
	w := dialWireConn(t, b.addr, v5)
	w.send(wireConnectPacket(wireConnect{version: v5, clientID: "scram", clean: true, user: "device-1", password: confUsers["device-1"],
		props: packets.Properties{AuthenticationMethod: "SCRAM-SHA-256", AuthenticationData: []byte("n,,n=device-1,r=abc")}}))
	if ack := w.expect(packets.Connack); ack.ReasonCode != packets.ErrBadAuthenticationMethod.Code {
		t.Errorf("MQTT 5 CONNECT with an authentication method: CONNACK %#x, want 0x8C", ack.ReasonCode)
	}
	w.closed()

	// The libraries see the same.
	if _, ca := b.paho(t, &paho.Connect{ClientID: "paho-intruder", Username: "device-1", Password: []byte("wrong"), CleanStart: true}); ca.ReasonCode != 0x86 {
		t.Errorf("paho.golang with a wrong password: CONNACK %#x, want 0x86", ca.ReasonCode)
	}
	c := mqtt3.NewClient(mqtt3.NewClientOptions().AddBroker("tcp://" + b.addr).SetClientID("paho3-intruder").
		SetUsername("device-1").SetPassword("wrong").SetProtocolVersion(4).SetAutoReconnect(false))
	tok := c.Connect()
	tok.WaitTimeout(30 * time.Second)
	if tok.Error() == nil || !strings.Contains(tok.Error().Error(), "bad user name or password") {
		t.Errorf("paho.mqtt.golang with a wrong password: %v", tok.Error())
	}
}

func TestConformanceACLSubscribeRefused(t *testing.T) {
	spec(t, "3.1.1 §3.9.3 (SUBACK 0x80 Failure) [MQTT-3.9.3-2]; 5.0 §3.9.3 (0x87 Not authorized)")
	b := conformanceBroker(t, confACL)
	filters := []packets.Subscription{
		{Filter: "plant/device-1/#", Qos: 1}, // its own subtree
		{Filter: "plant/device-2/#", Qos: 1}, // another's
		{Filter: "alerts/#", Qos: 2},         // readable by all
		{Filter: "$SYS/#", Qos: 0},           // operators only
	}
	for _, version := range []byte{v3, v5} {
		t.Run(versionName(version), func(t *testing.T) {
			c := b.connect(t, wireConnect{version: version, clientID: "acl-sub", clean: true})
			refused := byte(0x80)
			if version == v5 {
				refused = 0x87
			}
			got := c.subscribe(1, packets.Properties{}, filters...)
			if want := []byte{1, refused, 2, refused}; !bytes.Equal(got, want) {
				t.Errorf("SUBACK % x, want % x", got, want)
			}
		})
	}
	t.Run("paho.mqtt.golang", func(t *testing.T) {
		c, _ := b.paho3(t, "acl-paho3", "device-1", true)
		tok := c.SubscribeMultiple(map[string]byte{"plant/device-1/#": 1, "plant/device-2/#": 1}, nil)
		wait3(t, tok)
		res := tok.(*mqtt3.SubscribeToken).Result()
		if res["plant/device-1/#"] != 1 || res["plant/device-2/#"] != 0x80 {
			t.Errorf("SUBACK %v, want plant/device-2/# refused with 0x80", res)
		}
	})
	t.Run("paho.golang", func(t *testing.T) {
		c, _ := b.paho(t, &paho.Connect{ClientID: "acl-paho", CleanStart: true})
		if got := c.subscribe(t, paho.SubscribeOptions{Topic: "plant/device-2/#", QoS: 1}); !bytes.Equal(got, []byte{0x87}) {
			t.Errorf("SUBACK % x, want 87", got)
		}
	})
}

func TestConformanceACLPublishRefused(t *testing.T) {
	spec(t, "5.0 §3.4.2.1, §3.5.2.1 (PUBACK/PUBREC 0x87 Not authorized); 3.1.1 §3.3.5 [MQTT-3.3.5-2] (no negative acknowledgement: the connection is closed)")
	b := conformanceBroker(t, confACL)
	c := b.connect(t, wireConnect{version: v5, clientID: "acl-pub", clean: true})
	c.publish("plant/device-2/spoof", 1, 1, []byte("x"), packets.Properties{})
	if ack := c.expect(packets.Puback); ack.ReasonCode != 0x87 {
		t.Errorf("MQTT 5 QoS 1 to another device's topic: PUBACK %#x, want 0x87", ack.ReasonCode)
	}
	c.publish("plant/device-2/spoof", 2, 2, []byte("x"), packets.Properties{})
	if ack := c.expect(packets.Pubrec); ack.ReasonCode != 0x87 {
		t.Errorf("MQTT 5 QoS 2: PUBREC %#x, want 0x87", ack.ReasonCode)
	}
	c.publish("plant/device-2/spoof", 0, 0, []byte("x"), packets.Properties{})
	c.publish("plant/device-1/own", 1, 3, []byte("x"), packets.Properties{})
	if ack := c.expect(packets.Puback); ack.ReasonCode != 0 {
		t.Errorf("MQTT 5 QoS 1 to its own topic: PUBACK %#x", ack.ReasonCode)
	}

	c3 := b.connect(t, wireConnect{version: v3, clientID: "acl-pub3", clean: true})
	c3.publish("plant/device-2/spoof", 1, 1, []byte("x"), packets.Properties{})
	noDisconnect(t, c3.closed())

	if got := b.rec.topics(); !slices.Equal(got, []string{"plant/device-1/own"}) {
		t.Errorf("the pipelines got %q: refused publishes must not reach them", got)
	}
}

func TestConformanceACLDeliveryFiltered(t *testing.T) {
	spec(t, "5.0 §4.7.1 / 3.1.1 §4.7.1 (wildcards), sluice's ACL: each message delivered is checked by its topic")
	b := conformanceBroker(t, confACL)
	c := b.connect(t, wireConnect{version: v5, clientID: "nosy", clean: true})
	if got := c.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "#", Qos: 1}); got[0] != 1 {
		t.Fatalf("SUBACK %x", got)
	}
	ops := b.connect(t, wireConnect{version: v5, user: "ops", clientID: "ops", clean: true})
	for i, topic := range []string{"plant/device-2/temp", "plant/device-1/temp", "alerts/line-1", "other/x"} {
		ops.publish(topic, 1, uint16(i+1), []byte("x"), packets.Properties{})
		ops.expect(packets.Puback)
	}
	ops.mark("plant/device-1/end")
	if got, want := topicsOf(c.receiveUntil("plant/device-1/end")), []string{"plant/device-1/temp", "alerts/line-1"}; !slices.Equal(got, want) {
		t.Errorf("a device subscribed to # received %q, want only %q", got, want)
	}
}

func TestConformanceACLWillRefused(t *testing.T) {
	spec(t, "5.0 §3.1.2.5, §3.2.2.2 (0x87); 3.1.1 §3.1.2.5, §3.2.2.3 (5): a will is published as its client, so its topic must be one the client may publish to")
	b := conformanceBroker(t, confACL)
	for _, version := range []byte{v3, v5} {
		for _, topic := range []string{"plant/device-2/status", "$SYS/broker/version"} {
			_, ack := b.dial(t, wireConnect{version: version, clientID: "will-spoof", clean: true,
				will: &packets.Packet{TopicName: topic, Payload: []byte("offline")}})
			want := byte(0x05)
			if version == v5 {
				want = 0x87
			}
			if ack.ReasonCode != want {
				t.Errorf("%s, will on %q: CONNACK %#x, want %#x", versionName(version), topic, ack.ReasonCode, want)
			}
		}
		b.connect(t, wireConnect{version: version, clientID: "will-own", clean: true,
			will: &packets.Packet{TopicName: "plant/device-1/status", Payload: []byte("offline")}})
	}
}

// noDisconnect checks what a broker sent an MQTT 3.1.1 client before
// closing its connection: 3.1.1 has no DISCONNECT from the server (3.1.1
// §3.14: it is the client's last packet).
func noDisconnect(t *testing.T, got []packets.Packet) {
	t.Helper()
	for _, pk := range got {
		if pk.FixedHeader.Type == packets.Disconnect {
			t.Errorf("the broker sent an MQTT 3.1.1 client a DISCONNECT (reason %#x)", pk.ReasonCode)
		}
	}
}

// observer connects an operator subscribed to filter at QoS 2.
func (b *confBroker) observer(t *testing.T, id, filter string) *wire {
	t.Helper()
	c := b.connect(t, wireConnect{version: v5, user: "ops", clientID: id, clean: true})
	if got := c.subscribe(1, packets.Properties{}, packets.Subscription{Filter: filter, Qos: 2}); got[0] != 2 {
		t.Fatalf("observer SUBACK % x", got)
	}
	return c
}

// drop ends a connection without DISCONNECT, as a device losing power.
func (c *wire) drop() { c.conn.Close() }

// leave sends DISCONNECT and waits until the broker has closed the
// connection.
func (c *wire) leave() {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	c.closed()
}

func TestConformanceWill(t *testing.T) {
	spec(t, "3.1.1 §3.1.2.5 [MQTT-3.1.2-8] [MQTT-3.1.2-10], §3.1.2.7 (Will Retain); 5.0 §3.1.2.5, §3.1.3.2.8 (user properties), §3.1.3.4 (a will payload may be empty), §3.14.2.1 (0x04 Disconnect with Will Message)")
	b := conformanceBroker(t, "")
	obs := b.observer(t, "will-observer", "plant/+/status")
	for _, version := range []byte{v3, v5} {
		name := versionName(version)
		will := func(payload string, retain bool) *packets.Packet {
			return &packets.Packet{TopicName: "plant/device-1/status", Payload: []byte(payload),
				FixedHeader: packets.FixedHeader{Qos: 1, Retain: retain},
				Properties:  packets.Properties{User: []packets.UserProperty{{Key: "reason", Val: "power"}}}}
		}
		// A clean DISCONNECT discards the will; a lost connection
		// publishes it.
		c := b.connect(t, wireConnect{version: version, clientID: "will-clean-" + name, clean: true, will: will("clean "+name, false)})
		c.leave()
		c = b.connect(t, wireConnect{version: version, clientID: "will-lost-" + name, clean: true, will: will("lost "+name, true)})
		c.drop()
		pk, before := obs.nextOn("plant/device-1/status")
		if len(before) != 0 || string(pk.Payload) != "lost "+name || pk.FixedHeader.Qos != 1 {
			t.Fatalf("%s: the observer got %q then %q, want the will of the lost connection only", name, topicsOf(before), pk.Payload)
		}
		if version == v5 && !slices.Equal(pk.Properties.User, []packets.UserProperty{{Key: "reason", Val: "power"}}) {
			t.Errorf("will user properties %v", pk.Properties.User)
		}
		// The will was retained: a new subscriber gets it.
		late := b.observer(t, "will-late-"+name, "plant/device-1/status")
		if pk := late.expect(packets.Publish); string(pk.Payload) != "lost "+name || !pk.FixedHeader.Retain {
			t.Errorf("%s: retained will %q (retain %v)", name, pk.Payload, pk.FixedHeader.Retain)
		}
		// A will with an empty payload is valid; retained, it clears the
		// topic's retained message.
		c = b.connect(t, wireConnect{version: version, clientID: "will-empty-" + name, clean: true, will: will("", true)})
		c.drop()
		if pk, _ := obs.nextOn("plant/device-1/status"); len(pk.Payload) != 0 {
			t.Fatalf("%s: an empty will arrived as %q", name, pk.Payload)
		}
		late = b.observer(t, "will-later-"+name, "plant/device-1/#")
		b.mark(t, "plant/device-1/end")
		if got := late.receiveUntil("plant/device-1/end"); len(got) != 0 {
			t.Errorf("%s: after an empty retained will a new subscriber got %q", name, topicsOf(got))
		}
	}
	// MQTT 5: DISCONNECT with reason 0x04 asks for the will.
	c := b.connect(t, wireConnect{version: v5, clientID: "will-0x04", clean: true,
		will: &packets.Packet{TopicName: "plant/device-1/status", Payload: []byte("asked")}})
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ReasonCode: packets.CodeDisconnectWillMessage.Code})
	if pk, _ := obs.nextOn("plant/device-1/status"); string(pk.Payload) != "asked" {
		t.Errorf("DISCONNECT 0x04: the will arrived as %q", pk.Payload)
	}
}

func TestConformanceWillDelay(t *testing.T) {
	spec(t, "5.0 §3.1.3.2.2 (Will Delay Interval) [MQTT-3.1.3-9], §3.1.2.5 (the will is sent when the delay or the session ends, whichever is first)")
	b := conformanceBroker(t, "")
	obs := b.observer(t, "delay-observer", "will/#")
	dropWithWill := func(id, topic string, delay, expiry uint32) time.Time {
		c := b.connect(t, wireConnect{version: v5, clientID: id, clean: true,
			props: packets.Properties{SessionExpiryInterval: expiry, SessionExpiryIntervalFlag: true},
			will:  &packets.Packet{TopicName: topic, Payload: []byte(id), Properties: packets.Properties{WillDelayInterval: delay}}})
		c.drop()
		return time.Now()
	}

	// Sent after the delay, not at once.
	lost := dropWithWill("delayed", "will/delayed", 2, 600)
	if got := obs.receiveUntil("will/delayed"); len(got) != 0 {
		t.Fatalf("got %q", topicsOf(got))
	}
	if elapsed := time.Since(lost); elapsed < time.Second {
		t.Errorf("a will delayed 2s was sent after %v", elapsed)
	}

	// Reconnecting within the delay cancels it. A second will, delayed
	// two seconds longer, is the mark: once it is here, the first would be.
	// The delay leaves a loaded machine ample time to reconnect (with 3s, a
	// reconnect slowed past it sent the will: a test of the machine).
	dropWithWill("back", "will/back", 10, 600)
	b.connect(t, wireConnect{version: v5, clientID: "back", clean: false,
		props: packets.Properties{SessionExpiryInterval: 600, SessionExpiryIntervalFlag: true}})
	dropWithWill("mark", "will/mark", 12, 600)
	if got := obs.receiveUntil("will/mark"); len(got) != 0 {
		t.Errorf("a client that reconnected within the will delay had its will sent: %q", topicsOf(got))
	}

	// A session that ends before the delay sends the will then.
	dropWithWill("short-session", "will/short", 3600, 1)
	if got := obs.receiveUntil("will/short"); len(got) != 0 {
		t.Errorf("got %q", topicsOf(got))
	}
}

// sysValue waits for the next value of a $SYS topic the observer is
// subscribed to (published every second), and returns it.
func sysValue(t *testing.T, obs *wire, topic string) int {
	t.Helper()
	for {
		pk := obs.expect(packets.Publish)
		if pk.TopicName == topic {
			n, err := strconv.Atoi(string(pk.Payload))
			if err != nil {
				t.Fatalf("%s: %q", topic, pk.Payload)
			}
			return n
		}
	}
}

// waitSys waits until a $SYS counter satisfies ok.
func waitSys(t *testing.T, obs *wire, topic, what string, ok func(int) bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	n := 0
	for time.Now().Before(deadline) {
		if n = sysValue(t, obs, topic); ok(n) {
			return
		}
	}
	t.Fatalf("%s: not within 60s (%s is %d)", what, topic, n)
}

// sessionGone waits until a reconnect finds no session for o's client:
// the broker ends a session once it has seen its connection close, which
// it may not have yet when the client connects again.
func (b *confBroker) sessionGone(t *testing.T, o wireConnect) {
	t.Helper()
	o.clean = false
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, ack := b.dial(t, o)
		if !ack.SessionPresent {
			c.leave()
			return
		}
		c.leave()
		if time.Now().After(deadline) {
			t.Fatalf("%s: the session is still there after 30s", o.clientID)
		}
	}
}

func TestConformanceSessionExpiry(t *testing.T) {
	spec(t, "5.0 §3.1.2.11.2, §3.2.2.3.2 (Session Expiry Interval), §4.1 [MQTT-4.1.0-2], §3.2.2.1.1 (Session Present); 3.1.1 §3.1.2.4 (Clean Session), §3.2.2.2 (Session Present)")
	b := conformanceBroker(t, "")
	persist := func(s uint32) packets.Properties {
		return packets.Properties{SessionExpiryInterval: s, SessionExpiryIntervalFlag: true}
	}
	// Expiry 0 (the MQTT 5 default): the session ends with the connection.
	b.connect(t, wireConnect{version: v5, clientID: "se-0", clean: true}).leave()
	b.sessionGone(t, wireConnect{version: v5, clientID: "se-0"})

	// Asking for more than the broker keeps: told the maximum (24h).
	c, ack := b.dial(t, wireConnect{version: v5, clientID: "se-long", clean: true, props: persist(0xFFFFFFFF)})
	if !ack.Properties.SessionExpiryIntervalFlag || ack.Properties.SessionExpiryInterval != 86400 {
		t.Errorf("CONNACK Session Expiry Interval %d (sent %v), want 86400", ack.Properties.SessionExpiryInterval, ack.Properties.SessionExpiryIntervalFlag)
	}
	c.leave()

	// Within its expiry the session is there, subscriptions included.
	c = b.connect(t, wireConnect{version: v5, clientID: "se-60", clean: true, props: persist(60)})
	c.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "plant/se/#", Qos: 1})
	c.leave()
	c, ack = b.dial(t, wireConnect{version: v5, clientID: "se-60", clean: false, props: persist(60)})
	if !ack.SessionPresent {
		t.Fatal("expiry 60: the session was not kept")
	}
	b.mark(t, "plant/se/kept")
	c.receiveUntil("plant/se/kept")
	c.leave()
	// Clean start discards it.
	if c, ack := b.dial(t, wireConnect{version: v5, clientID: "se-60", clean: true, props: persist(60)}); ack.SessionPresent {
		t.Error("clean start: a session was present")
	} else {
		c.leave()
	}

	// A session with expiry 1 is gone a second after its client left:
	// $SYS/broker/clients/total counts sessions, connected or not.
	obs := b.observer(t, "se-observer", "$SYS/broker/clients/total")
	sysValue(t, obs, "$SYS/broker/clients/total") // the retained value may be old
	before := sysValue(t, obs, "$SYS/broker/clients/total")
	c = b.connect(t, wireConnect{version: v5, clientID: "se-1", clean: true, props: persist(1)})
	waitSys(t, obs, "$SYS/broker/clients/total", "the session counted", func(n int) bool { return n == before+1 })
	c.leave()
	waitSys(t, obs, "$SYS/broker/clients/total", "the session expired", func(n int) bool { return n == before })
	if _, ack := b.dial(t, wireConnect{version: v5, clientID: "se-1", clean: false, props: persist(1)}); ack.SessionPresent {
		t.Error("expiry 1: the session outlived its expiry")
	}

	// MQTT 3.1.1: clean session 0 keeps the session, 1 discards it.
	b.connect(t, wireConnect{version: v3, clientID: "se-3", clean: false}).leave()
	c, ack = b.dial(t, wireConnect{version: v3, clientID: "se-3", clean: false})
	if !ack.SessionPresent {
		t.Error("MQTT 3.1.1 clean session 0: the session was not kept")
	}
	c.leave()
	c, ack = b.dial(t, wireConnect{version: v3, clientID: "se-3", clean: true})
	if ack.SessionPresent {
		t.Error("MQTT 3.1.1 clean session 1: session present")
	}
	c.leave()
	b.sessionGone(t, wireConnect{version: v3, clientID: "se-3"})
}

func TestConformanceRetained(t *testing.T) {
	spec(t, "3.1.1 §3.3.1.3 [MQTT-3.3.1-5] [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11]; 5.0 §3.3.1.3 [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-7] [MQTT-3.3.1-9] [MQTT-3.3.1-12]")
	b := conformanceBroker(t, "")
	pub := b.connect(t, wireConnect{version: v5, clientID: "retainer", clean: true})
	retain := func(topic, payload string, id uint16) {
		pub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true},
			TopicName: topic, PacketID: id, Payload: []byte(payload)})
		pub.expect(packets.Puback)
		pub.sync()
	}
	live := b.connect(t, wireConnect{version: v5, user: "ops", clientID: "live", clean: true})
	live.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "plant/device-1/#", Qos: 1})
	retain("plant/device-1/a", "first", 1)
	retain("plant/device-1/a", "second", 2) // replaces
	retain("plant/device-1/b", "b", 3)
	pub.mark("plant/device-1/end")
	for _, pk := range live.receiveUntil("plant/device-1/end") {
		if pk.FixedHeader.Retain {
			t.Errorf("a live message on %s was delivered with RETAIN set [MQTT-3.3.1-12]", pk.TopicName)
		}
	}

	check := func(version byte, want map[string]string) {
		t.Helper()
		c := b.connect(t, wireConnect{version: version, user: "ops", clientID: "new-" + versionName(version), clean: true})
		c.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "plant/device-1/#", Qos: 1})
		b.mark(t, "plant/device-1/end")
		got := map[string]string{}
		for _, pk := range c.receiveUntil("plant/device-1/end") {
			if !pk.FixedHeader.Retain {
				t.Errorf("%s: retained %s delivered without RETAIN", versionName(version), pk.TopicName)
			}
			got[pk.TopicName] = string(pk.Payload)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: a new subscriber got %v, want %v", versionName(version), got, want)
		}
		c.leave()
	}
	for _, v := range []byte{v3, v5} {
		check(v, map[string]string{"plant/device-1/a": "second", "plant/device-1/b": "b"})
	}
	// An empty retained message clears the topic: it is delivered to those
	// subscribed, as any message, and not kept.
	live.receiveUntil("plant/device-1/end") // the checks' marks
	live.receiveUntil("plant/device-1/end")
	retain("plant/device-1/a", "", 4)
	pub.mark("plant/device-1/end")
	if got := live.receiveUntil("plant/device-1/end"); len(got) != 1 || len(got[0].Payload) != 0 {
		t.Errorf("the empty retained message reached the subscriber as %v", topicsOf(got))
	}
	for _, v := range []byte{v3, v5} {
		check(v, map[string]string{"plant/device-1/b": "b"})
	}
	// The libraries see the flag.
	c, msgs := b.paho3(t, "retained-paho3", "ops", true)
	wait3(t, c.Subscribe("plant/device-1/b", 1, nil))
	select {
	case m := <-msgs:
		if !m.Retained() || string(m.Payload()) != "b" {
			t.Errorf("paho.mqtt.golang: %q retained=%v", m.Payload(), m.Retained())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("paho.mqtt.golang: no retained message")
	}
}

func TestConformanceTopicAliasClientToServer(t *testing.T) {
	spec(t, "5.0 §3.2.2.3.8 (Topic Alias Maximum), §3.3.2.3.4 (Topic Alias) [MQTT-3.3.2-9] [MQTT-3.3.2-10], §4.13 (0x82, 0x94)")
	b := conformanceBroker(t, "")
	obs := b.observer(t, "alias-observer", "plant/#")
	c, ack := b.dial(t, wireConnect{clientID: "aliaser", clean: true})
	if ack.Properties.TopicAliasMaximum != 10 {
		t.Fatalf("CONNACK Topic Alias Maximum %d, want the default 10", ack.Properties.TopicAliasMaximum)
	}
	alias := func(n uint16) packets.Properties { return packets.Properties{TopicAlias: n, TopicAliasFlag: true} }
	c.publish("plant/device-1/temp", 1, 1, []byte("1"), alias(1)) // sets alias 1
	c.expect(packets.Puback)
	c.publish("", 1, 2, []byte("2"), alias(1)) // uses it
	c.expect(packets.Puback)
	c.publish("plant/device-1/rpm", 1, 3, []byte("3"), alias(1)) // moves it
	c.expect(packets.Puback)
	c.publish("", 1, 4, []byte("4"), alias(1))
	c.expect(packets.Puback)
	c.publish("plant/device-1/amps", 1, 5, []byte("5"), alias(10)) // the highest
	c.expect(packets.Puback)
	c.mark("plant/end")
	got := obs.receiveUntil("plant/end")
	var seen []string
	for _, pk := range got {
		seen = append(seen, pk.TopicName+"="+string(pk.Payload))
	}
	want := []string{"plant/device-1/temp=1", "plant/device-1/temp=2", "plant/device-1/rpm=3", "plant/device-1/rpm=4", "plant/device-1/amps=5"}
	if !slices.Equal(seen, want) {
		t.Errorf("the observer got %q, want %q", seen, want)
	}
	if got := b.rec.topics(); !slices.Equal(got[:5], []string{"plant/device-1/temp", "plant/device-1/temp", "plant/device-1/rpm", "plant/device-1/rpm", "plant/device-1/amps"}) {
		t.Errorf("the pipelines got %q", got)
	}

	// Above the maximum: 0x94; an alias never set: a protocol error.
	c.publish("plant/device-1/x", 1, 6, nil, alias(11))
	if got := c.closed(); len(got) != 1 || got[0].ReasonCode != packets.ErrTopicAliasInvalid.Code {
		t.Errorf("alias 11: got %v, want DISCONNECT 0x94", got)
	}
	c = b.connect(t, wireConnect{clientID: "aliaser-2", clean: true})
	c.publish("", 1, 1, nil, alias(3))
	if got := c.closed(); len(got) != 1 || got[0].ReasonCode != 0x82 {
		t.Errorf("an alias never set: got %v, want DISCONNECT 0x82", got)
	}
}

func TestConformanceTopicAliasServerToClient(t *testing.T) {
	spec(t, "5.0 §3.1.2.11.5 (the client's Topic Alias Maximum), §3.3.2.3.4: the server MAY use aliases; sluice's broker does not (docs/broker.md), so every PUBLISH names its topic, resent ones too")
	b := conformanceBroker(t, "")
	o := wireConnect{clientID: "alias-taker", clean: true, props: packets.Properties{TopicAliasMaximum: 100, SessionExpiryInterval: 600, SessionExpiryIntervalFlag: true}}
	sub := b.connect(t, o)
	sub.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "plant/device-2/#", Qos: 1})
	pub := b.connect(t, wireConnect{user: "device-2", clientID: "alias-giver", clean: true})
	for i := range 3 {
		pub.publish("plant/device-2/same", 1, uint16(i+1), nil, packets.Properties{})
		pub.expect(packets.Puback)
	}
	pub.mark("plant/device-2/end")
	check := func(pks []packets.Packet) {
		t.Helper()
		for _, pk := range pks {
			if pk.TopicName != "plant/device-2/same" || pk.Properties.TopicAliasFlag {
				t.Errorf("PUBLISH with topic %q, alias %d", pk.TopicName, pk.Properties.TopicAlias)
			}
		}
	}
	// Receive without acknowledging, then reconnect: the resent messages
	// name their topic too.
	var first []packets.Packet
	for len(first) < 3 {
		first = append(first, sub.expect(packets.Publish))
	}
	check(first)
	sub.drop()
	o.clean = false
	sub = b.connect(t, o)
	check(sub.receiveUntil("plant/device-2/end"))
}

func TestConformanceSubscriptionIdentifiers(t *testing.T) {
	spec(t, "5.0 §3.8.2.1.2 (Subscription Identifier), §3.3.2.3.8 [MQTT-3.3.4-3] [MQTT-3.3.4-4] [MQTT-3.3.4-5], §3.2.2.3.12 (available: the property is absent), §3.3.4 [MQTT-3.3.4-6] (not from clients)")
	b := conformanceBroker(t, "")
	_, ack := b.dial(t, wireConnect{clientID: "subid-check", clean: true})
	if ack.Properties.SubIDAvailableFlag && ack.Properties.SubIDAvailable == 0 {
		t.Fatal("CONNACK says subscription identifiers are not available")
	}
	sub := b.connect(t, wireConnect{user: "ops", clientID: "subid", clean: true})
	sub.subscribe(1, packets.Properties{SubscriptionIdentifier: []int{7}}, packets.Subscription{Filter: "plant/+/temp", Qos: 1})
	sub.subscribe(2, packets.Properties{SubscriptionIdentifier: []int{268435455}}, packets.Subscription{Filter: "plant/device-1/#", Qos: 1})
	sub.subscribe(3, packets.Properties{}, packets.Subscription{Filter: "plant/device-2/#", Qos: 1})
	pub := b.connect(t, wireConnect{user: "ops", clientID: "subid-pub", clean: true})
	for i, topic := range []string{"plant/device-1/temp", "plant/device-1/rpm", "plant/device-3/temp", "plant/device-2/rpm"} {
		pub.publish(topic, 1, uint16(i+1), nil, packets.Properties{})
		pub.expect(packets.Puback)
	}
	pub.mark("plant/device-1/end")
	got := map[string][]int{}
	for _, pk := range sub.receiveUntil("plant/device-1/end") {
		ids := slices.Clone(pk.Properties.SubscriptionIdentifier)
		slices.Sort(ids)
		got[pk.TopicName] = ids
	}
	want := map[string][]int{
		"plant/device-1/temp": {7, 268435455}, // both subscriptions match: both identifiers
		"plant/device-1/rpm":  {268435455},
		"plant/device-3/temp": {7},
		"plant/device-2/rpm":  nil, // a subscription without one
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("subscription identifiers %v, want %v", got, want)
	}
	// A client may not send one on a PUBLISH.
	pub.publish("plant/x", 1, 9, nil, packets.Properties{SubscriptionIdentifier: []int{3}})
	if got := pub.closed(); len(got) != 1 || got[0].ReasonCode != 0x82 {
		t.Errorf("PUBLISH with a subscription identifier: got %v, want DISCONNECT 0x82", got)
	}
}

func TestConformanceNoLocal(t *testing.T) {
	spec(t, "5.0 §3.8.3.1 (No Local) [MQTT-3.8.3-3] [MQTT-3.8.3-4]")
	b := conformanceBroker(t, "")
	c := b.connect(t, wireConnect{user: "ops", clientID: "no-local", clean: true})
	c.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "plant/nl/#", Qos: 1, NoLocal: true})
	other := b.connect(t, wireConnect{user: "ops", clientID: "other", clean: true})
	c.publish("plant/nl/own", 1, 2, nil, packets.Properties{})
	c.expect(packets.Puback)
	other.publish("plant/nl/theirs", 1, 1, nil, packets.Properties{})
	other.expect(packets.Puback)
	c.mark("plant/nl/own-end") // its own: not delivered either
	other.mark("plant/nl/end")
	if got := topicsOf(c.receiveUntil("plant/nl/end")); !slices.Equal(got, []string{"plant/nl/theirs"}) {
		t.Errorf("a No Local subscriber got %q, want only the other client's message", got)
	}
	// No Local on a shared subscription is a protocol error: not granted.
	if got := c.subscribe(3, packets.Properties{}, packets.Subscription{Filter: "$share/g/plant/nl/#", Qos: 1, NoLocal: true}); got[0] < 0x80 {
		t.Errorf("No Local on a shared subscription was granted (%#x)", got[0])
	}
}

func TestConformanceRetainAsPublished(t *testing.T) {
	spec(t, "5.0 §3.8.3.1 (Retain As Published) [MQTT-3.3.1-12] [MQTT-3.3.1-13]")
	b := conformanceBroker(t, "")
	rap := b.connect(t, wireConnect{user: "ops", clientID: "rap", clean: true})
	rap.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "plant/rap/#", Qos: 1, RetainAsPublished: true})
	plain := b.connect(t, wireConnect{user: "ops", clientID: "plain", clean: true})
	plain.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "plant/rap/#", Qos: 1})
	pub := b.connect(t, wireConnect{user: "ops", clientID: "rap-pub", clean: true})
	pub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true}, TopicName: "plant/rap/r", PacketID: 1, Payload: []byte("r")})
	pub.expect(packets.Puback)
	pub.publish("plant/rap/n", 1, 2, []byte("n"), packets.Properties{})
	pub.expect(packets.Puback)
	pub.mark("plant/rap/end")
	flags := func(c *wire) map[string]bool {
		got := map[string]bool{}
		for _, pk := range c.receiveUntil("plant/rap/end") {
			got[pk.TopicName] = pk.FixedHeader.Retain
		}
		return got
	}
	if got := flags(rap); !got["plant/rap/r"] || got["plant/rap/n"] {
		t.Errorf("Retain As Published: RETAIN flags %v, want set on the retained message only", got)
	}
	if got := flags(plain); got["plant/rap/r"] || got["plant/rap/n"] {
		t.Errorf("without Retain As Published: RETAIN flags %v, want none set", got)
	}
}

func TestConformanceRetainHandling(t *testing.T) {
	spec(t, "5.0 §3.8.3.1 (Retain Handling) [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11], §3.8.4")
	b := conformanceBroker(t, "")
	pub := b.connect(t, wireConnect{user: "ops", clientID: "rh-pub", clean: true})
	pub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true}, TopicName: "plant/rh/state", PacketID: 1, Payload: []byte("on")})
	pub.expect(packets.Puback)
	pub.sync() // delivered to the subscribers there are (none), before any subscribes
	for _, c := range []struct {
		handling     byte
		first, again int // retained messages on subscribing, and on subscribing again
	}{
		{0, 1, 1}, // at every subscribe
		{1, 1, 0}, // only when the subscription is new
		{2, 0, 0}, // never
	} {
		s := b.connect(t, wireConnect{user: "ops", clientID: fmt.Sprintf("rh-%d", c.handling), clean: true})
		count := func(id uint16) int {
			s.subscribe(id, packets.Properties{}, packets.Subscription{Filter: "plant/rh/#", Qos: 1, RetainHandling: c.handling})
			b.mark(t, fmt.Sprintf("plant/rh/end-%d", id))
			return len(s.receiveUntil(fmt.Sprintf("plant/rh/end-%d", id)))
		}
		if n := count(1); n != c.first {
			t.Errorf("Retain Handling %d, new subscription: %d retained messages, want %d", c.handling, n, c.first)
		}
		if n := count(2); n != c.again {
			t.Errorf("Retain Handling %d, existing subscription: %d retained messages, want %d", c.handling, n, c.again)
		}
	}
}

func TestConformanceSharedSubscriptions(t *testing.T) {
	spec(t, "5.0 §4.8.2 (Shared Subscriptions) [MQTT-4.8.2-1] [MQTT-4.8.2-2], §3.2.2.3.13 (available: the property is absent); retained messages are not sent to a shared subscription")
	b := conformanceBroker(t, "")
	retainer := b.connect(t, wireConnect{user: "ops", clientID: "sh-retain", clean: true})
	retainer.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, TopicName: "plant/sh/retained", Payload: []byte("r")})
	retainer.sync()
	m5 := b.connect(t, wireConnect{version: v5, user: "ops", clientID: "member-5", clean: true})
	m3 := b.connect(t, wireConnect{version: v3, user: "ops", clientID: "member-3", clean: true})
	all := b.connect(t, wireConnect{user: "ops", clientID: "everything", clean: true})
	for _, m := range []*wire{m5, m3} {
		if got := m.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "$share/workers/plant/sh/#", Qos: 1}); got[0] != 1 {
			t.Fatalf("shared SUBACK %x", got)
		}
	}
	all.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "plant/sh/+", Qos: 1})
	pub := b.connect(t, wireConnect{user: "ops", clientID: "sh-pub", clean: true})
	const n = 20
	for i := range n {
		pub.publish(fmt.Sprintf("plant/sh/%d", i), 1, uint16(i+1), nil, packets.Properties{})
		pub.expect(packets.Puback)
	}
	// Every message to the group goes to one member; read until all n
	// are in, then check none came twice and the plain subscriber has all.
	seen := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	done := make(chan struct{})
	for _, m := range []*wire{m5, m3} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				pk, err := m.read(500 * time.Millisecond)
				if err != nil {
					select {
					case <-done:
						return
					default:
						continue
					}
				}
				if pk.FixedHeader.Type != packets.Publish {
					continue
				}
				m.trySend(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
				mu.Lock()
				seen[pk.TopicName]++
				mu.Unlock()
			}
		}()
	}
	pub.mark("plant/sh/end")
	if got := all.receiveUntil("plant/sh/end"); len(got) != n+1 { // and the retained one
		t.Errorf("the plain subscriber got %d messages, want %d", len(got), n+1)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		total := 0
		for _, c := range seen {
			total += c
		}
		mu.Unlock()
		if total >= n+1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(done)
	wg.Wait()
	for i := range n {
		if c := seen[fmt.Sprintf("plant/sh/%d", i)]; c != 1 {
			t.Errorf("plant/sh/%d reached the group %d times, want once", i, c)
		}
	}
	if seen["plant/sh/retained"] != 0 {
		t.Error("a retained message was sent to a shared subscription")
	}
	if seen["plant/sh/end"] != 1 {
		t.Errorf("the mark reached the group %d times", seen["plant/sh/end"])
	}
}

func TestConformanceRequestResponse(t *testing.T) {
	spec(t, "5.0 §4.10 (Request / Response), §3.3.2.3.5 (Response Topic) [MQTT-3.3.2-15], §3.3.2.3.6 (Correlation Data) [MQTT-3.3.2-16]")
	b := conformanceBroker(t, "")
	requester, _ := b.paho(t, &paho.Connect{ClientID: "requester", Username: "ops", CleanStart: true})
	responder, _ := b.paho(t, &paho.Connect{ClientID: "responder", Username: "ops", CleanStart: true})
	requester.subscribe(t, paho.SubscribeOptions{Topic: "plant/replies/requester", QoS: 1})
	responder.subscribe(t, paho.SubscribeOptions{Topic: "plant/device-1/cmd/#", QoS: 1})
	correlation := []byte{0x00, 0xff, 'r', 'q', 0x01}
	requester.publish(t, &paho.Publish{Topic: "plant/device-1/cmd/reboot", QoS: 1, Payload: []byte("now"),
		Properties: &paho.PublishProperties{ResponseTopic: "plant/replies/requester", CorrelationData: correlation}})
	responder.until(t, "plant/device-1/cmd/reboot")
	req := responder.lastOn("plant/device-1/cmd/reboot")
	if req == nil || req.Properties == nil || req.Properties.ResponseTopic != "plant/replies/requester" || !bytes.Equal(req.Properties.CorrelationData, correlation) {
		t.Fatalf("the request arrived as %+v", req)
	}
	responder.publish(t, &paho.Publish{Topic: req.Properties.ResponseTopic, QoS: 1, Payload: []byte("done"),
		Properties: &paho.PublishProperties{CorrelationData: req.Properties.CorrelationData}})
	requester.until(t, "plant/replies/requester")
	resp := requester.lastOn("plant/replies/requester")
	if resp == nil || string(resp.Payload) != "done" || resp.Properties == nil || !bytes.Equal(resp.Properties.CorrelationData, correlation) {
		t.Fatalf("the response arrived as %+v", resp)
	}
}

func TestConformanceMessageExpiry(t *testing.T) {
	spec(t, "5.0 §3.3.2.3.3 (Message Expiry Interval) [MQTT-3.3.2-5] [MQTT-3.3.2-6]: a message without one does not expire and is forwarded without one")
	b := conformanceBroker(t, "")
	persist := packets.Properties{SessionExpiryInterval: 600, SessionExpiryIntervalFlag: true}
	sub := b.connect(t, wireConnect{user: "ops", clientID: "expiring", clean: true, props: persist})
	sub.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "plant/exp/#", Qos: 1})
	pub := b.connect(t, wireConnect{user: "ops", clientID: "exp-pub", clean: true})
	pub.publish("plant/exp/forever", 1, 1, []byte("f"), packets.Properties{})
	pub.expect(packets.Puback)
	pub.mark("plant/exp/live-end")
	got := sub.receiveUntil("plant/exp/live-end")
	if len(got) != 1 || got[0].Properties.MessageExpiryInterval != 0 {
		t.Fatalf("a message without expiry was forwarded as %+v", got)
	}

	// Queued for an offline subscriber: the one with 1 s expires, the one
	// with 600 s arrives with what is left of its interval.
	sub.leave()
	obs := b.observer(t, "exp-observer", "$SYS/broker/messages/inflight")
	sysValue(t, obs, "$SYS/broker/messages/inflight")
	before := sysValue(t, obs, "$SYS/broker/messages/inflight")
	pub.publish("plant/exp/short", 1, 2, []byte("s"), packets.Properties{MessageExpiryInterval: 1})
	pub.expect(packets.Puback)
	pub.publish("plant/exp/long", 1, 3, []byte("l"), packets.Properties{MessageExpiryInterval: 600})
	pub.expect(packets.Puback)
	pub.publish("plant/exp/never", 1, 4, []byte("n"), packets.Properties{})
	pub.expect(packets.Puback)
	waitSys(t, obs, "$SYS/broker/messages/inflight", "both queued", func(n int) bool { return n == before+3 })
	waitSys(t, obs, "$SYS/broker/messages/inflight", "the short one expired", func(n int) bool { return n == before+2 })
	pub.mark("plant/exp/end")
	sub = b.connect(t, wireConnect{user: "ops", clientID: "expiring", clean: false, props: persist})
	got = sub.receiveUntil("plant/exp/end")
	if topics := topicsOf(got); !slices.Equal(topics, []string{"plant/exp/long", "plant/exp/never"}) {
		t.Fatalf("after the reconnect: %q, want the unexpired messages only", topics)
	}
	if e := got[0].Properties.MessageExpiryInterval; e == 0 || e > 600 {
		t.Errorf("Message Expiry Interval %d, want what is left of 600", e)
	}
	if e := got[1].Properties.MessageExpiryInterval; e != 0 {
		t.Errorf("a message without expiry got Message Expiry Interval %d", e)
	}

	// A retained message expires too.
	pub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true},
		TopicName: "plant/exp/retained", PacketID: 5, Payload: []byte("r"), Properties: packets.Properties{MessageExpiryInterval: 1}})
	pub.expect(packets.Puback)
	pub.sync()
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		// A new client id each time: see "Known deviations" in
		// docs/broker.md on reconnecting during a session's cleanup.
		c := b.connect(t, wireConnect{user: "ops", clientID: fmt.Sprintf("exp-late-%d", i), clean: true})
		c.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "plant/exp/retained", Qos: 1},
			packets.Subscription{Filter: "plant/exp/retained-end", Qos: 1})
		b.mark(t, "plant/exp/retained-end")
		n := len(c.receiveUntil("plant/exp/retained-end"))
		c.leave()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a retained message with a 1 s expiry is still sent after 30 s")
		}
		time.Sleep(100 * time.Millisecond) // the broker checks expiry every second
	}
}

func TestConformanceMaximumPacketSize(t *testing.T) {
	spec(t, "5.0 §3.2.2.3.6 (the server's Maximum Packet Size, in CONNACK), §3.1.2.11.4 [MQTT-3.1.2-24] [MQTT-3.1.2-25] (the client's), §4.13 (DISCONNECT 0x95); 3.1.1 §4.8 (the connection is closed)")
	b := conformanceBroker(t, "")
	c, ack := b.dial(t, wireConnect{clientID: "big", clean: true})
	if ack.Properties.MaximumPacketSize != 1<<20 {
		t.Fatalf("CONNACK Maximum Packet Size %d, want the default max_packet_size 1048576", ack.Properties.MaximumPacketSize)
	}
	big := make([]byte, 1<<20)
	go c.trySend(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "plant/device-1/big", PacketID: 1, Payload: big})
	if got := c.closed(); len(got) != 1 || got[0].ReasonCode != packets.ErrPacketTooLarge.Code {
		t.Errorf("MQTT 5, a packet over the maximum: got %v, want DISCONNECT 0x95", got)
	}
	c3 := b.connect(t, wireConnect{version: v3, clientID: "big3", clean: true})
	go c3.trySend(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "plant/device-1/big", PacketID: 1, Payload: big})
	noDisconnect(t, c3.closed())

	// A client's own maximum: what is larger is not sent to it.
	small := b.connect(t, wireConnect{user: "ops", clientID: "small", clean: true, props: packets.Properties{MaximumPacketSize: 256}})
	small.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "plant/mps/#", Qos: 1})
	pub := b.connect(t, wireConnect{user: "ops", clientID: "mps-pub", clean: true})
	pub.publish("plant/mps/large", 1, 1, make([]byte, 1024), packets.Properties{})
	pub.expect(packets.Puback)
	pub.publish("plant/mps/fits", 1, 2, make([]byte, 100), packets.Properties{})
	pub.expect(packets.Puback)
	pub.mark("plant/mps/end")
	if got := topicsOf(small.receiveUntil("plant/mps/end")); !slices.Equal(got, []string{"plant/mps/fits"}) {
		t.Errorf("a client with Maximum Packet Size 256 got %q, want only the message that fits", got)
	}
	if got := b.rec.topics(); !slices.Contains(got, "plant/mps/large") || slices.Contains(got, "plant/device-1/big") {
		t.Errorf("the pipelines got %q", got)
	}
}

func TestConformancePayloadFormatAndContentType(t *testing.T) {
	spec(t, "5.0 §3.3.2.3.2 (Payload Format Indicator) [MQTT-3.3.2-4], §3.3.2.3.9 (Content Type) [MQTT-3.3.2-20], §3.3.2.3.7 (User Property) [MQTT-3.3.2-17] [MQTT-3.3.2-18], §3.1.2.11.7 [MQTT-3.1.2-29]")
	b := conformanceBroker(t, "")
	// One subscriber as usual, one that asked for no problem information
	// (which does not concern the properties of a PUBLISH).
	subs := []*wire{
		b.connect(t, wireConnect{user: "ops", clientID: "pf", clean: true}),
		b.connect(t, wireConnect{user: "ops", clientID: "pf-quiet", clean: true, props: packets.Properties{RequestProblemInfo: 0, RequestProblemInfoFlag: true}}),
	}
	for _, s := range subs {
		s.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "plant/device-1/#", Qos: 1})
	}
	user := []packets.UserProperty{{Key: "unit", Val: "C"}, {Key: "unit", Val: "F"}, {Key: "site", Val: "north"}}
	pub := b.connect(t, wireConnect{clientID: "pf-pub", clean: true})
	pub.publish("plant/device-1/json", 1, 1, []byte(`{"t":21.5}`), packets.Properties{
		PayloadFormat: 1, PayloadFormatFlag: true, ContentType: "application/json", User: user})
	pub.expect(packets.Puback)
	pub.publish("plant/device-1/bin", 1, 2, []byte{0xff, 0x00}, packets.Properties{
		PayloadFormat: 0, PayloadFormatFlag: true, ContentType: "application/octet-stream"})
	pub.expect(packets.Puback)
	pub.mark("plant/device-1/end")
	for _, s := range subs {
		got := s.receiveUntil("plant/device-1/end")
		if len(got) != 2 {
			t.Fatalf("got %q", topicsOf(got))
		}
		j, bin := got[0].Properties, got[1].Properties
		if !j.PayloadFormatFlag || j.PayloadFormat != 1 || j.ContentType != "application/json" || !slices.Equal(j.User, user) {
			t.Errorf("the JSON message arrived with payload format %v/%d, content type %q, user properties %v", j.PayloadFormatFlag, j.PayloadFormat, j.ContentType, j.User)
		}
		if !bin.PayloadFormatFlag || bin.PayloadFormat != 0 || bin.ContentType != "application/octet-stream" {
			t.Errorf("the binary message arrived with payload format %v/%d, content type %q", bin.PayloadFormatFlag, bin.PayloadFormat, bin.ContentType)
		}
	}
	// The pipelines get the content type and the user properties too.
	m := b.rec.msgs[0]
	if m.ContentType != "application/json" || len(m.UserProperties) != 3 || m.UserProperties[1].Value != "F" {
		t.Errorf("the pipelines got content type %q, user properties %v", m.ContentType, m.UserProperties)
	}
}

func TestConformanceSysTopics(t *testing.T) {
	spec(t, "3.1.1 and 5.0 §4.7.2 (Topics beginning with $) [MQTT-4.7.2-1]; $SYS for monitoring tools (MQTT Explorer subscribes to # and $SYS/#); a client cannot publish to $SYS")
	b := conformanceBroker(t, "")
	for _, version := range []byte{v3, v5} {
		c := b.connect(t, wireConnect{version: version, user: "ops", clientID: "explorer-" + versionName(version), clean: true})
		got := c.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "#", Qos: 0}, packets.Subscription{Filter: "$SYS/#", Qos: 0})
		if !bytes.Equal(got, []byte{0, 0}) {
			t.Fatalf("SUBACK % x", got)
		}
		seen := map[string]bool{}
		for !seen["$SYS/broker/version"] || !seen["$SYS/broker/clients/connected"] {
			pk := c.expect(packets.Publish)
			seen[pk.TopicName] = true
		}
		c.leave()
		// # and + alone never match $ topics.
		w := b.connect(t, wireConnect{version: version, user: "ops", clientID: "wild-" + versionName(version), clean: true})
		w.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "#", Qos: 0}, packets.Subscription{Filter: "+/broker/#", Qos: 0})
		sysValue := func() { // wait for a $SYS tick to have passed
			o := b.observer(t, "tick-"+versionName(version), "$SYS/broker/uptime")
			o.expect(packets.Publish)
			o.expect(packets.Publish)
			o.leave()
		}
		sysValue()
		b.mark(t, "plant/end")
		if got := w.receiveUntil("plant/end"); len(got) != 0 {
			t.Errorf("%s: # and +/broker/# matched %q", versionName(version), topicsOf(got))
		}
		w.leave()
	}
	// Publishing to $SYS is refused: MQTT 5 is told (0x87), MQTT 3.1.1
	// closed; QoS 0 is dropped.
	c := b.connect(t, wireConnect{version: v5, user: "ops", clientID: "sys-writer", clean: true})
	c.publish("$SYS/broker/version", 1, 1, []byte("forged"), packets.Properties{})
	if ack := c.expect(packets.Puback); ack.ReasonCode != 0x87 {
		t.Errorf("MQTT 5 QoS 1 to $SYS: PUBACK %#x", ack.ReasonCode)
	}
	c.publish("$SYS/broker/version", 2, 2, []byte("forged"), packets.Properties{})
	if ack := c.expect(packets.Pubrec); ack.ReasonCode != 0x87 {
		t.Errorf("MQTT 5 QoS 2 to $SYS: PUBREC %#x", ack.ReasonCode)
	}
	c.publish("$SYS/broker/version", 0, 0, []byte("forged"), packets.Properties{})
	c.publish("plant/ok", 1, 3, nil, packets.Properties{})
	if ack := c.expect(packets.Puback); ack.ReasonCode != 0 {
		t.Errorf("after $SYS publishes the client could not publish: %#x", ack.ReasonCode)
	}
	c3 := b.connect(t, wireConnect{version: v3, user: "ops", clientID: "sys-writer-3", clean: true})
	c3.publish("$SYS/broker/version", 1, 1, []byte("forged"), packets.Properties{})
	noDisconnect(t, c3.closed())
	o := b.observer(t, "sys-check", "$SYS/broker/version")
	if pk := o.expect(packets.Publish); string(pk.Payload) == "forged" {
		t.Error("a client rewrote $SYS/broker/version")
	}
}

func TestConformanceQoS(t *testing.T) {
	spec(t, "3.1.1 and 5.0 §4.3 (QoS 0, 1, 2 flows), 3.1.1 §3.8.4 / 5.0 §3.8.4 (delivered at the lower of the publish and subscription QoS), §4.6 (order)")
	b := conformanceBroker(t, "")
	// MQTT 5 with paho.golang, 3.1.1 with paho.mqtt.golang, both ways.
	sub5, _ := b.paho(t, &paho.Connect{ClientID: "qos-sub5", Username: "ops", CleanStart: true})
	sub5.subscribe(t, paho.SubscribeOptions{Topic: "plant/device-1/q/#", QoS: 2}, paho.SubscribeOptions{Topic: "plant/device-2/q/#", QoS: 1})
	sub3, msgs3 := b.paho3(t, "qos-sub3", "ops", true)
	wait3(t, sub3.SubscribeMultiple(map[string]byte{"plant/device-1/q/#": 2, "plant/device-2/q/#": 1}, nil))

	pub5, _ := b.paho(t, &paho.Connect{ClientID: "qos-pub5", Username: "device-1", CleanStart: true})
	for q := range byte(3) {
		if rc := pub5.publish(t, &paho.Publish{Topic: fmt.Sprintf("plant/device-1/q/%d", q), QoS: q, Payload: []byte{q}}); rc != 0 {
			t.Fatalf("QoS %d: reason %#x", q, rc)
		}
	}
	pub5.publish(t, &paho.Publish{Topic: "plant/device-1/q/end", QoS: 1})
	pub3, _ := b.paho3(t, "qos-pub3", "device-2", true)
	for q := range byte(3) {
		wait3(t, pub3.Publish(fmt.Sprintf("plant/device-2/q/%d", q), q, false, []byte{q}))
	}
	wait3(t, pub3.Publish("plant/device-2/q/end", 1, false, []byte{}))

	want := func(prefix string, max byte) []string {
		var w []string
		for q := range byte(3) {
			w = append(w, fmt.Sprintf("%s/%d@%d", prefix, q, min(q, max)))
		}
		return w
	}
	var got5 []string
	for _, p := range sub5.until(t, "plant/device-1/q/end") {
		got5 = append(got5, fmt.Sprintf("%s@%d", p.Topic, p.QoS))
	}
	var got3 []string
	for _, m := range until3(t, msgs3, "plant/device-1/q/end") {
		got3 = append(got3, fmt.Sprintf("%s@%d", m.Topic(), m.Qos()))
	}
	if w := want("plant/device-1/q", 2); !slices.Equal(got5, w) || !slices.Equal(got3, w) {
		t.Errorf("from the MQTT 5 publisher: MQTT 5 subscriber got %q, 3.1.1 subscriber %q, want %q", got5, got3, w)
	}
	got5, got3 = nil, nil
	for _, p := range sub5.until(t, "plant/device-2/q/end") {
		got5 = append(got5, fmt.Sprintf("%s@%d", p.Topic, p.QoS))
	}
	for _, m := range until3(t, msgs3, "plant/device-2/q/end") {
		got3 = append(got3, fmt.Sprintf("%s@%d", m.Topic(), m.Qos()))
	}
	if w := want("plant/device-2/q", 1); !slices.Equal(got5, w) || !slices.Equal(got3, w) {
		t.Errorf("from the 3.1.1 publisher, subscribed at QoS 1: MQTT 5 subscriber got %q, 3.1.1 subscriber %q, want %q", got5, got3, w)
	}
	// The pipelines got every message at the QoS it was published with.
	var qos []string
	for _, m := range b.rec.msgs {
		qos = append(qos, fmt.Sprintf("%s@%d", m.Topic, m.QoS))
	}
	for _, w := range append(want("plant/device-1/q", 2), want("plant/device-2/q", 2)...) {
		if !slices.Contains(qos, w) {
			t.Errorf("the pipelines lack %s: %q", w, qos)
		}
	}
}

// persistentSession says how a bare client keeps its session: MQTT 5 by
// its expiry, 3.1.1 by clean session 0.
func persistentSession(version byte, id, user string) wireConnect {
	o := wireConnect{version: version, clientID: id, user: user}
	if version == v5 {
		o.props = packets.Properties{SessionExpiryInterval: 3600, SessionExpiryIntervalFlag: true}
	}
	return o
}

func TestConformancePersistentSessionQueued(t *testing.T) {
	spec(t, "3.1.1 §3.1.2.4, §4.4, §4.6; 5.0 §4.1, §4.4 [MQTT-4.4.0-1], §4.6 [MQTT-4.6.0-6]: QoS 1 and 2 messages queued while the client is offline are delivered on reconnect, in order, QoS 2 exactly once, QoS 1 at least once")
	b := conformanceBroker(t, "")
	const n = 40
	publish := func(t *testing.T, topic string) {
		pub := b.connect(t, wireConnect{user: "ops", clientID: "ps-pub-" + topic, clean: true})
		for i := range n {
			qos := byte(1 + i%2)
			pub.publish(topic, qos, uint16(i+1), []byte(strconv.Itoa(i)), packets.Properties{})
			if qos == 1 {
				pub.expect(packets.Puback)
				continue
			}
			pub.expect(packets.Pubrec)
			pub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: uint16(i + 1)})
			pub.expect(packets.Pubcomp)
		}
		pub.mark(topic + "/end")
	}
	// check: every message, in order, each at its QoS; a QoS 2 one once.
	check := func(t *testing.T, got []string) {
		t.Helper()
		var want []string
		for i := range n {
			want = append(want, fmt.Sprintf("%d@%d", i, 1+i%2))
		}
		if !slices.Equal(got, want) {
			t.Errorf("after the reconnect the client got\n%q\nwant\n%q", got, want)
		}
	}

	for _, version := range []byte{v3, v5} {
		t.Run("wire/"+versionName(version), func(t *testing.T) {
			topic := "plant/ps/wire-" + versionName(version)
			o := persistentSession(version, "ps-wire-"+versionName(version), "ops")
			o.clean = version == v5 // 3.1.1 keeps a session only with clean session 0
			sub := b.connect(t, o)
			sub.subscribe(1, packets.Properties{}, packets.Subscription{Filter: topic + "/#", Qos: 2},
				packets.Subscription{Filter: topic, Qos: 2})
			sub.leave()
			publish(t, topic)
			o.clean = false
			sub, ack := b.dial(t, o)
			if !ack.SessionPresent {
				t.Fatal("no session on reconnect")
			}
			var got []string
			for _, pk := range sub.receiveUntil(topic + "/end") {
				got = append(got, fmt.Sprintf("%s@%d", pk.Payload, pk.FixedHeader.Qos))
			}
			check(t, got)
		})
	}
	t.Run("paho.golang", func(t *testing.T) {
		topic := "plant/ps/paho"
		expiry := uint32(3600)
		cp := func(clean bool) *paho.Connect {
			return &paho.Connect{ClientID: "ps-paho", Username: "ops", CleanStart: clean,
				Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
		}
		sub, _ := b.paho(t, cp(true))
		sub.subscribe(t, paho.SubscribeOptions{Topic: topic + "/#", QoS: 2}, paho.SubscribeOptions{Topic: topic, QoS: 2})
		sub.Disconnect(&paho.Disconnect{})
		<-sub.Done()
		publish(t, topic)
		sub, ack := b.paho(t, cp(false))
		if !ack.SessionPresent {
			t.Fatal("no session on reconnect")
		}
		var got []string
		for _, p := range sub.until(t, topic+"/end") {
			got = append(got, fmt.Sprintf("%s@%d", p.Payload, p.QoS))
		}
		check(t, got)
	})
	t.Run("paho.mqtt.golang", func(t *testing.T) {
		topic := "plant/ps/paho3"
		sub, _ := b.paho3(t, "ps-paho3", "ops", false)
		wait3(t, sub.SubscribeMultiple(map[string]byte{topic + "/#": 2, topic: 2}, nil))
		sub.Disconnect(1000)
		publish(t, topic)
		_, msgs := b.paho3(t, "ps-paho3", "ops", false)
		var got []string
		for _, m := range until3(t, msgs, topic+"/end") {
			got = append(got, fmt.Sprintf("%s@%d", m.Payload(), m.Qos()))
		}
		check(t, got)
	})
}

func TestConformancePersistentSessionInterrupted(t *testing.T) {
	spec(t, "3.1.1 §4.4 [MQTT-4.4.0-1], §4.3.3, §4.6 [MQTT-4.6.0-1]; 5.0 §4.4 [MQTT-4.4.0-1], §4.3.3, §4.6 [MQTT-4.6.0-1]: unacknowledged PUBLISH and PUBREL packets are sent again on reconnect, with their packet ids, in their first order; a QoS 2 message whose PUBREC was sent is not sent again")
	for _, c := range []struct {
		version  byte
		takeover bool // reconnect while the broker still holds the old connection
	}{{v3, false}, {v5, false}, {v3, true}, {v5, true}} {
		version := c.version
		name := versionName(version) + "/connection lost"
		if c.takeover {
			name = versionName(version) + "/session taken over"
		}
		t.Run(name, func(t *testing.T) {
			b := conformanceBroker(t, "")
			o := persistentSession(version, "interrupted", "ops")
			o.clean = version == v5 // 3.1.1 keeps a session only with clean session 0
			sub := b.connect(t, o)
			sub.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "plant/pi/#", Qos: 2})
			pub := b.connect(t, wireConnect{user: "ops", clientID: "pi-pub", clean: true})
			qos := []byte{1, 2, 1, 2, 2, 1}
			for i, q := range qos {
				pub.publish(fmt.Sprintf("plant/pi/%d", i), q, uint16(i+1), nil, packets.Properties{})
				if q == 1 {
					pub.expect(packets.Puback)
					continue
				}
				pub.expect(packets.Pubrec)
				pub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: uint16(i + 1)})
				pub.expect(packets.Pubcomp)
			}
			// The client acknowledges m0 (PUBACK), m1 and m3 (PUBREC, and
			// gets their PUBREL but does not complete them), and nothing else.
			ids := map[int]uint16{}
			var rels []uint16
			for next := 0; next < len(qos) || len(rels) < 2; {
				pk, err := sub.read(30 * time.Second)
				if err != nil {
					t.Fatal(err)
				}
				switch pk.FixedHeader.Type {
				case packets.Pubrel:
					rels = append(rels, pk.PacketID)
					continue
				case packets.Publish:
				default:
					t.Fatalf("got %s", packets.PacketNames[pk.FixedHeader.Type])
				}
				if pk.TopicName != fmt.Sprintf("plant/pi/%d", next) || pk.FixedHeader.Qos != qos[next] {
					t.Fatalf("message %d: %s at QoS %d", next, pk.TopicName, pk.FixedHeader.Qos)
				}
				ids[next] = pk.PacketID
				if next == 0 || next == 1 || next == 3 {
					sub.ack(pk)
				}
				next++
			}
			if !slices.Equal(rels, []uint16{ids[1], ids[3]}) {
				t.Fatalf("PUBREL for %v, want %v", rels, []uint16{ids[1], ids[3]})
			}
			if !c.takeover {
				sub.drop()
			}

			o.clean = false
			sub, ack := b.dial(t, o)
			if !ack.SessionPresent {
				t.Fatal("no session on reconnect")
			}
			// In the first order: PUBREL for m1, m2 again, PUBREL for m3,
			// m4 and m5 again; m0 is done.
			want := []string{
				fmt.Sprintf("PUBREL %d", ids[1]),
				fmt.Sprintf("PUBLISH %d plant/pi/2 dup", ids[2]),
				fmt.Sprintf("PUBREL %d", ids[3]),
				fmt.Sprintf("PUBLISH %d plant/pi/4 dup", ids[4]),
				fmt.Sprintf("PUBLISH %d plant/pi/5 dup", ids[5]),
			}
			var got []string
			var resent []packets.Packet
			for range want {
				pk, err := sub.read(30 * time.Second)
				if err != nil {
					t.Fatalf("after %q: %v", got, err)
				}
				resent = append(resent, pk)
				switch pk.FixedHeader.Type {
				case packets.Pubrel:
					got = append(got, fmt.Sprintf("PUBREL %d", pk.PacketID))
				case packets.Publish:
					dup := ""
					if pk.FixedHeader.Dup {
						dup = " dup"
					}
					got = append(got, fmt.Sprintf("PUBLISH %d %s%s", pk.PacketID, pk.TopicName, dup))
				default:
					got = append(got, packets.PacketNames[pk.FixedHeader.Type])
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("on reconnect the broker sent\n%q\nwant\n%q", got, want)
			}
			// Complete everything; nothing more comes before the mark.
			for _, pk := range resent {
				if pk.FixedHeader.Type == packets.Pubrel {
					sub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: pk.PacketID})
				} else {
					sub.ack(pk)
				}
			}
			pub.mark("plant/pi/end")
			if extra := sub.receiveUntil("plant/pi/end"); len(extra) != 0 {
				t.Errorf("then the broker sent %q again", topicsOf(extra))
			}
		})
	}
}

func TestConformanceQoS2PublisherResend(t *testing.T) {
	spec(t, "3.1.1 §4.3.3, §4.4; 5.0 §4.3.3 [MQTT-4.3.3-10] (a duplicate PUBLISH before PUBREL is acknowledged with PUBREC and not delivered again), §4.4 [MQTT-4.4.0-1]")
	for _, version := range []byte{v3, v5} {
		t.Run(versionName(version), func(t *testing.T) {
			b := conformanceBroker(t, "")
			obs := b.observer(t, "q2-observer", "plant/device-1/#")
			o := persistentSession(version, "q2-pub", "device-1")
			o.clean = version == v5 // 3.1.1 keeps a session only with clean session 0
			pub := b.connect(t, o)
			pub.publish("plant/device-1/once", 2, 7, []byte("once"), packets.Properties{})
			pub.expect(packets.Pubrec)
			// The same PUBLISH again on this connection (DUP), then lose
			// the connection before PUBREL.
			pub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2, Dup: true},
				TopicName: "plant/device-1/once", PacketID: 7, Payload: []byte("once")})
			if rec := pub.expect(packets.Pubrec); rec.ReasonCode != 0 || rec.PacketID != 7 {
				t.Errorf("PUBREC for the duplicate: id %d, reason %#x, want 7, 0x00", rec.PacketID, rec.ReasonCode)
			}
			pub.drop()
			o.clean = false
			pub, ack := b.dial(t, o)
			if !ack.SessionPresent {
				t.Fatal("no session on reconnect")
			}
			// The client resends the PUBLISH (it may not know it got
			// through), then PUBREL.
			pub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2, Dup: true},
				TopicName: "plant/device-1/once", PacketID: 7, Payload: []byte("once")})
			for {
				pk, err := pub.read(30 * time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if pk.FixedHeader.Type == packets.Pubrec && pk.PacketID == 7 {
					if pk.ReasonCode != 0 {
						t.Errorf("PUBREC after the reconnect: reason %#x", pk.ReasonCode)
					}
					break
				}
			}
			pub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: 7})
			for {
				pk, err := pub.read(30 * time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if pk.FixedHeader.Type == packets.Pubcomp && pk.PacketID == 7 {
					break
				}
			}
			pub.mark("plant/device-1/end")
			if got := obs.receiveUntil("plant/device-1/end"); len(got) != 1 {
				t.Errorf("subscribers got the QoS 2 message %d times, want once", len(got))
			}
			if got := b.rec.topics(); len(got) != 2 || got[0] != "plant/device-1/once" {
				t.Errorf("the pipelines got %q, want the message once (and the mark)", got)
			}
		})
	}
}

func TestConformancePacketIDsPerDirection(t *testing.T) {
	spec(t, "3.1.1 §2.3.1; 5.0 §2.2.1: the client and the server assign packet identifiers independently, so a QoS 1 PUBLISH from the client with the id of a message the server has in flight to it does not end that message's flight: it is sent again on reconnect")
	for _, version := range []byte{v3, v5} {
		t.Run(versionName(version), func(t *testing.T) {
			b := conformanceBroker(t, "")
			o := persistentSession(version, "both-ways", "ops")
			o.clean = version == v5
			sub := b.connect(t, o)
			sub.subscribe(1, packets.Properties{}, packets.Subscription{Filter: "plant/ids/#", Qos: 1})
			pub := b.connect(t, wireConnect{user: "ops", clientID: "ids-pub", clean: true})
			pub.publish("plant/ids/out", 1, 1, nil, packets.Properties{})
			pub.expect(packets.Puback)

			out := sub.expect(packets.Publish) // not acknowledged
			// The client publishes with the same id, and it is acknowledged.
			sub.publish("plant/elsewhere", 1, out.PacketID, nil, packets.Properties{})
			if ack := sub.await(packets.Puback, out.PacketID); ack.ReasonCode >= 0x80 {
				t.Fatalf("PUBACK %#x", ack.ReasonCode)
			}
			sub.drop()

			o.clean = false
			again, ack := b.dial(t, o)
			if !ack.SessionPresent {
				t.Fatal("no session on reconnect")
			}
			pk, err := again.read(30 * time.Second)
			if err != nil {
				t.Fatalf("the message in flight was not sent again: %v", err)
			}
			if pk.FixedHeader.Type != packets.Publish || pk.TopicName != "plant/ids/out" || pk.PacketID != out.PacketID || !pk.FixedHeader.Dup {
				t.Fatalf("on reconnect got %s %d %q dup %v, want PUBLISH %d plant/ids/out again", packets.PacketNames[pk.FixedHeader.Type],
					pk.PacketID, pk.TopicName, pk.FixedHeader.Dup, out.PacketID)
			}
		})
	}
}
