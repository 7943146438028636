package ingest_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/testsvc"
)

// v3Client is a bare MQTT 3.1.1 client over TCP (paho.golang speaks only
// MQTT 5), encoding and decoding with mochi's packet code.
type v3Client struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialV3(t *testing.T, addr, clientID string, keepAlive uint16) (*v3Client, byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &v3Client{conn: conn, r: bufio.NewReader(conn)}
	c.send(t, packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), ClientIdentifier: clientID, Keepalive: keepAlive, Clean: true,
		},
	})
	ack, err := c.read()
	if err != nil {
		t.Fatalf("no CONNACK: %v", err)
	}
	return c, ack.ReasonCode
}

func (c *v3Client) send(t *testing.T, pk packets.Packet) {
	t.Helper()
	pk.ProtocolVersion = 4
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.conn.Write(buf.Bytes()); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func (c *v3Client) publish(t *testing.T, topic string, qos byte, id uint16, payload []byte) {
	t.Helper()
	c.send(t, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic, PacketID: id, Payload: payload,
	})
}

// read reads one packet (CONNACK or PUBACK), within a generous deadline.
func (c *v3Client) read() (packets.Packet, error) {
	c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var pk packets.Packet
	b, err := c.r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(b); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		return pk, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return pk, err
	}
	pk.ProtocolVersion = 4
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	}
	return pk, err
}

// closedByServer waits until the server closes conn.
func closedByServer(t *testing.T, conn net.Conn) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 256)
	for {
		_, err := conn.Read(buf)
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			t.Fatal("the server did not close the connection")
		case err != nil:
			return
		}
	}
}

func anonListener(extra ...func(*ingest.ListenerConfig)) []ingest.ListenerConfig {
	l := ingest.ListenerConfig{Name: "tcp", Address: "127.0.0.1:0", AllowAnonymous: true}
	for _, f := range extra {
		f(&l)
	}
	return []ingest.ListenerConfig{l}
}

func TestConnectionLimits(t *testing.T) {
	b, _, _ := startBroker(t, ingest.Config{
		Listeners: append(anonListener(func(l *ingest.ListenerConfig) { l.MaxConnections = 2 }),
			ingest.ListenerConfig{Name: "other", Address: "127.0.0.1:0", AllowAnonymous: true}),
		Limits: ingest.Limits{MaxConnections: 3},
	})
	first := testsvc.MQTT(t, b.Addr("tcp"), "c1")
	testsvc.MQTT(t, b.Addr("tcp"), "c2")

	// The listener is full: a third connection is closed at once.
	conn, err := net.Dial("tcp", b.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	closedByServer(t, conn)

	// The other listener has room until the broker-wide limit.
	testsvc.MQTT(t, b.Addr("other"), "c3")
	conn, err = net.Dial("tcp", b.Addr("other"))
	if err != nil {
		t.Fatal(err)
	}
	closedByServer(t, conn)

	// A client leaving makes room.
	first.Disconnect(&paho.Disconnect{})
	waitFor(t, "a place to free up", func() bool {
		c, ca, err := testsvc.Connect(testsvc.MQTTOptions{Addr: b.Addr("tcp"), ClientID: "c4"})
		if err != nil || ca.ReasonCode != 0 {
			return false
		}
		c.Disconnect(&paho.Disconnect{})
		return true
	})
}

func TestConnectTimeoutAndBadFirstPackets(t *testing.T) {
	b, _, _ := startBroker(t, ingest.Config{
		Listeners: anonListener(),
		Limits:    ingest.Limits{ConnectTimeout: 500 * time.Millisecond, MaxPacketSize: 4 << 10},
	})
	cases := []struct {
		name string
		send []byte
	}{
		{"silent", nil},
		{"half a CONNECT", []byte{0x10, 0x20, 0, 4, 'M'}},
		{"a CONNECT claiming 200 MB", []byte{0x10, 0x80, 0x80, 0x80, 0x60}},
		{"a CONNECT over max_packet_size", append([]byte{0x10, 0x80, 0x40}, make([]byte, 64)...)},
		{"a PUBLISH first", []byte{0x30, 3, 0, 1, 'a'}},
		{"garbage", []byte("GET / HTTP/1.1\r\n\r\n")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", b.Addr("tcp"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write(c.send)
			closedByServer(t, conn)
		})
	}
	// The broker still serves.
	testsvc.MQTT(t, b.Addr("tcp"), "after")
}

func TestPacketSizeLimit(t *testing.T) {
	b, rec, _ := startBroker(t, ingest.Config{Listeners: anonListener(), Limits: ingest.Limits{MaxPacketSize: 1 << 10}})
	c, code := dialV3(t, b.Addr("tcp"), "big", 30)
	if code != 0 {
		t.Fatalf("CONNACK %#x", code)
	}
	c.publish(t, "big", 1, 1, make([]byte, 2<<10))
	closedByServer(t, c.conn)

	small := testsvc.MQTT(t, b.Addr("tcp"), "small")
	if code := small.Publish(t, "small", 1, make([]byte, 512)); code != 0 {
		t.Fatalf("a packet under the limit: %#x", code)
	}
	if got := rec.topics(); !slices.Equal(got, []string{"small"}) {
		t.Errorf("the pipelines got %q, want only the small one", got)
	}
}

func TestPublishRate(t *testing.T) {
	b, rec, _ := startBroker(t, ingest.Config{Listeners: anonListener(), Limits: ingest.Limits{PublishRate: 1, PublishBurst: 3}})

	// MQTT 5, QoS 1: past the burst, "quota exceeded" (0x97).
	c := testsvc.MQTT(t, b.Addr("tcp"), "v5")
	var codes []byte
	for range 10 {
		codes = append(codes, c.Publish(t, "rate/v5", 1, nil))
	}
	ok := 0
	for _, code := range codes {
		switch code {
		case 0:
			ok++
		case 0x97:
		default:
			t.Fatalf("reason %#x", code)
		}
	}
	if ok < 3 || ok == 10 {
		t.Errorf("codes %v: want the burst of 3 accepted and the rest (but for tokens refilled meanwhile) refused with 0x97", codes)
	}
	if got := len(rec.topics()); got != ok {
		t.Errorf("the pipelines got %d messages, want the %d accepted", got, ok)
	}
}

func TestPublishRateSlowsMQTT3Clients(t *testing.T) {
	b, rec, _ := startBroker(t, ingest.Config{Listeners: anonListener(), Limits: ingest.Limits{PublishRate: 4, PublishBurst: 1}})
	c, code := dialV3(t, b.Addr("tcp"), "v3", 30)
	if code != 0 {
		t.Fatalf("CONNACK %#x", code)
	}
	start := time.Now()
	for i := range 5 {
		c.publish(t, "rate/v3", 1, uint16(i+1), nil)
	}
	for i := range 5 {
		ack, err := c.read()
		if err != nil || ack.FixedHeader.Type != packets.Puback {
			t.Fatalf("ack %d: %v %v", i, ack.FixedHeader.Type, err)
		}
	}
	// Every message is taken, none refused; four of them waited a
	// quarter of a second for a token each.
	if elapsed := time.Since(start); elapsed < 900*time.Millisecond {
		t.Errorf("5 publishes at 4/s took %v: the client was not slowed", elapsed)
	}
	if got := len(rec.topics()); got != 5 {
		t.Errorf("the pipelines got %d, want 5", got)
	}
}

func TestSubscriptionLimit(t *testing.T) {
	b, _, _ := startBroker(t, ingest.Config{Listeners: anonListener(), Limits: ingest.Limits{MaxSubscriptions: 2}})
	c := testsvc.MQTT(t, b.Addr("tcp"), "subs")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := c.Client.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "a", QoS: 1}, {Topic: "b/#", QoS: 1}, {Topic: "c", QoS: 1},
	}})
	if sa == nil {
		t.Fatal(err)
	}
	if want := []byte{granted, granted, notAuthorized}; !bytes.Equal(sa.Reasons, want) {
		t.Errorf("SUBACK %v, want %v", sa.Reasons, want)
	}
	if code := subscribeCode(t, c, "a"); code != granted {
		t.Errorf("renewing a subscription: %#x", code)
	}
	if code := subscribeCode(t, c, "d"); code != notAuthorized {
		t.Errorf("a third subscription: %#x", code)
	}
}

func TestKeepAliveSessionAndInflightBounds(t *testing.T) {
	b, _, _ := startBroker(t, ingest.Config{Listeners: anonListener(), Limits: ingest.Limits{
		MinKeepAlive: 10 * time.Second, MaxKeepAlive: time.Minute, SessionExpiry: time.Hour, MaxInflight: 50,
	}})
	addr := b.Addr("tcp")
	cases := []struct {
		keepAlive int
		want      uint16 // the server keep-alive in CONNACK; 0 for none
	}{
		{-1, 60}, // none asked: bounded all the same
		{2, 10},
		{30, 0},
		{600, 60},
	}
	for _, c := range cases {
		cl, ca, err := testsvc.Connect(testsvc.MQTTOptions{Addr: addr, ClientID: "ka", KeepAlive: c.keepAlive, SessionExpiry: 0xFFFFFFFF})
		if err != nil {
			t.Fatalf("keep-alive %d: %v", c.keepAlive, err)
		}
		var got uint16
		if ca.Properties.ServerKeepAlive != nil {
			got = *ca.Properties.ServerKeepAlive
		}
		if got != c.want {
			t.Errorf("keep-alive %d: server keep-alive %d, want %d", c.keepAlive, got, c.want)
		}
		if se := ca.Properties.SessionExpiryInterval; se == nil || *se != 3600 {
			t.Errorf("session expiry %v, want 3600", se)
		}
		if rm := ca.Properties.ReceiveMaximum; rm == nil || *rm != 50 {
			t.Errorf("receive maximum %v, want 50", rm)
		}
		cl.Disconnect(&paho.Disconnect{})
	}

	// MQTT 3 clients cannot be told: one asking for more than the maximum
	// is refused (identifier rejected, as mosquitto does).
	if _, code := dialV3(t, addr, "v3-long", 600); code != 0x02 {
		t.Errorf("MQTT 3 keep-alive 600s: CONNACK %#x, want 0x02", code)
	}
	if _, code := dialV3(t, addr, "v3-ok", 30); code != 0 {
		t.Errorf("MQTT 3 keep-alive 30s: CONNACK %#x", code)
	}
}

func TestRetainedLimits(t *testing.T) {
	b, rec, logs := startBroker(t, ingest.Config{Listeners: anonListener(), Limits: ingest.Limits{
		MaxRetainedSize: conf.Bytes(16), MaxRetainedMessages: 2,
	}})
	pub := testsvc.MQTT(t, b.Addr("tcp"), "pub")
	retain := func(topic string, payload []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := pub.Client.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: payload}); err != nil {
			t.Fatalf("publish %s: %v", topic, err)
		}
	}
	retain("r/big", make([]byte, 17))       // over the size
	retain("r/one", []byte("1"))            // kept
	retain("r/two", []byte("2"))            // kept: the count is reached
	retain("r/three", []byte("3"))          // a new topic over the count
	retain("r/one", []byte("one, updated")) // replacing one is fine
	if got := len(rec.topics()); got != 5 {
		t.Errorf("the pipelines got %d messages, want all 5 (retained or not)", got)
	}

	sub := testsvc.MQTT(t, b.Addr("tcp"), "sub")
	// QoS 0: mochi keeps a client's packet ids in one set for both
	// directions, so a SUBSCRIBE whose id equals that of a QoS 1 message
	// in flight to the client is refused (0x91).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sub.Client.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "r/#", QoS: 0}}}); err != nil {
		t.Fatal(err)
	}
	// The broker queues the retained messages after the SUBACK; a second
	// SUBSCRIBE is processed after they are queued, so a message published
	// once it is acknowledged arrives after them.
	sub.Subscribe(t, "barrier")
	pub.Publish(t, "r/end", 1, nil)
	got := map[string]string{}
	for _, p := range sub.WaitFor(t, "r/end", 10*time.Second) {
		got[p.Topic] = string(p.Payload)
	}
	want := map[string]string{"r/one": "one, updated", "r/two": "2"}
	if len(got) != len(want) || got["r/one"] != want["r/one"] || got["r/two"] != want["r/two"] {
		t.Errorf("retained messages %v, want %v\n%s", got, want, logs)
	}
}
