package ingest_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// wire is a bare MQTT client, 3.1.1 or 5, that sends and reads single
// packets (encoded and decoded with mochi's packet code), so that a test can
// check the exact packets the broker sends, acknowledge or not, and break
// the connection at any point. The client libraries hide all of that.
type wire struct {
	t       *testing.T
	conn    net.Conn
	r       *bufio.Reader
	version byte
	wmu     sync.Mutex
	ids     uint16           // packet ids used by mark (from 60000 up)
	last    packets.Packet   // the message receiveUntil stopped at
	pending []packets.Packet // read by mark, for receiveUntil
}

// v3 and v5 are the protocol levels in CONNECT.
const (
	v3 byte = 4 // MQTT 3.1.1
	v5 byte = 5
)

// wireConnect says how dialWire connects.
type wireConnect struct {
	version        byte
	clientID       string
	user, password string
	keepAlive      uint16
	clean          bool // clean session (3.1.1) or clean start (5)
	props          packets.Properties
	will           *packets.Packet // TopicName, Payload, FixedHeader.Qos/Retain, Properties as will properties
}

// dialWire connects and returns the client and the broker's CONNACK. The
// connection is closed when the test ends.
func dialWire(t *testing.T, addr string, o wireConnect) (*wire, packets.Packet) {
	t.Helper()
	c := dialWireConn(t, addr, o.version)
	c.send(wireConnectPacket(o))
	ack := c.expect(packets.Connack)
	return c, ack
}

func dialWireConn(t *testing.T, addr string, version byte) *wire {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return newWire(t, conn, version)
}

// newWire is a bare client on conn.
func newWire(t *testing.T, conn net.Conn, version byte) *wire {
	return &wire{t: t, conn: conn, r: bufio.NewReader(conn), version: version, ids: 60000}
}

func wireConnectPacket(o wireConnect) packets.Packet {
	if o.keepAlive == 0 {
		o.keepAlive = 60
	}
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: o.version,
		Properties:      o.props,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			ClientIdentifier: o.clientID,
			Keepalive:        o.keepAlive,
			Clean:            o.clean,
		},
	}
	if o.user != "" {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(o.user)
		pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte(o.password)
	}
	if w := o.will; w != nil {
		pk.Connect.WillFlag = true
		pk.Connect.WillTopic = w.TopicName
		pk.Connect.WillPayload = w.Payload
		pk.Connect.WillQos = w.FixedHeader.Qos
		pk.Connect.WillRetain = w.FixedHeader.Retain
		pk.Connect.WillProperties = w.Properties
	}
	return pk
}

// send writes one packet.
func (c *wire) send(pk packets.Packet) {
	c.t.Helper()
	if err := c.trySend(pk); err != nil {
		c.t.Fatalf("send %s: %v", packets.PacketNames[pk.FixedHeader.Type], err)
	}
}

func (c *wire) trySend(pk packets.Packet) error {
	pk.ProtocolVersion = c.version
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(&buf)
	case packets.Pubrel:
		pk.FixedHeader.Qos = 1 // fixed header flags 0010 [MQTT-3.6.1-1]
		err = pk.PubrelEncode(&buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(&buf)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1 // fixed header flags 0010 [MQTT-3.8.1-1]
		err = pk.SubscribeEncode(&buf)
	case packets.Unsubscribe:
		pk.FixedHeader.Qos = 1
		err = pk.UnsubscribeEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		err = fmt.Errorf("cannot send packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err = c.conn.Write(buf.Bytes())
	return err
}

// read reads the next packet within the deadline.
func (c *wire) read(deadline time.Duration) (packets.Packet, error) {
	c.conn.SetReadDeadline(time.Now().Add(deadline))
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
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return pk, err
	}
	pk.ProtocolVersion = c.version
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubrel:
		err = pk.PubrelDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Unsuback:
		err = pk.UnsubackDecode(body)
	case packets.Pingresp:
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	default:
		err = fmt.Errorf("unexpected packet type %d from the broker", pk.FixedHeader.Type)
	}
	if err != nil {
		return pk, fmt.Errorf("decode %s (% x): %w", packets.PacketNames[pk.FixedHeader.Type], body, err)
	}
	// Keep the raw body of acknowledgements: what they must not carry is
	// checked on the bytes.
	if t := pk.FixedHeader.Type; t >= packets.Puback && t <= packets.Pubcomp {
		pk.Payload = body
	}
	return pk, nil
}

// next returns the next packet: one kept aside by subscribe or mark, or
// the next one read.
func (c *wire) next(deadline time.Duration) (packets.Packet, error) {
	if len(c.pending) > 0 {
		pk := c.pending[0]
		c.pending = c.pending[1:]
		return pk, nil
	}
	return c.read(deadline)
}

// expect returns the next packet, which must be of type want.
func (c *wire) expect(want byte) packets.Packet {
	c.t.Helper()
	pk, err := c.next(30 * time.Second)
	if err != nil {
		c.t.Fatalf("waiting for %s: %v", packets.PacketNames[want], err)
	}
	if pk.FixedHeader.Type != want {
		c.t.Fatalf("waiting for %s, got %s (reason %#x)", packets.PacketNames[want], packets.PacketNames[pk.FixedHeader.Type], pk.ReasonCode)
	}
	return pk
}

// await reads until a packet of type typ with packet id id arrives,
// keeping the others for next, and returns it.
func (c *wire) await(typ byte, id uint16) packets.Packet {
	c.t.Helper()
	for {
		pk, err := c.read(30 * time.Second)
		if err != nil {
			c.t.Fatalf("waiting for %s %d: %v", packets.PacketNames[typ], id, err)
		}
		if pk.FixedHeader.Type == typ && pk.PacketID == id {
			return pk
		}
		c.pending = append(c.pending, pk)
	}
}

// sync makes a round trip (PINGREQ, PINGRESP): the broker handles a
// client's packets in order, so what this client sent before has been
// dealt with, and what the broker queued for it meanwhile is kept for next.
func (c *wire) sync() {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	c.await(packets.Pingresp, 0)
}

// closed waits until the broker closes the connection, and returns the
// packets it sent before that (a DISCONNECT, for MQTT 5).
func (c *wire) closed() []packets.Packet {
	c.t.Helper()
	var got []packets.Packet
	for {
		pk, err := c.read(30 * time.Second)
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			c.t.Fatal("the broker did not close the connection")
		case err != nil:
			return got
		}
		got = append(got, pk)
	}
}

// publish sends a PUBLISH.
func (c *wire) publish(topic string, qos byte, id uint16, payload []byte, props packets.Properties) {
	c.t.Helper()
	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic, PacketID: id, Payload: payload, Properties: props,
	})
}

// subscribe sends a SUBSCRIBE and returns the SUBACK's reason codes.
func (c *wire) subscribe(id uint16, props packets.Properties, subs ...packets.Subscription) []byte {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: id, Filters: subs, Properties: props})
	ack := c.await(packets.Suback, id)
	// The broker queues the retained messages after the SUBACK.
	c.sync()
	return ack.ReasonCodes
}

// ack acknowledges a PUBLISH received at QoS 1 (PUBACK) or 2 (PUBREC; the
// broker answers PUBREL, which completeQoS2 answers).
func (c *wire) ack(pk packets.Packet) {
	c.t.Helper()
	switch pk.FixedHeader.Qos {
	case 1:
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	case 2:
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pk.PacketID})
	}
}

// disconnect sends a DISCONNECT (reason 0, normal) and closes.
func (c *wire) disconnect() {
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	c.conn.Close()
}
