package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// The lean MQTT client: just what a publishing device needs (CONNECT,
// PUBLISH at QoS 0, 1 and 2 with the acknowledgements, PINGREQ,
// DISCONNECT), MQTT 3.1.1 or 5, written straight into a buffered
// connection with no allocation per message. A device keeps up to a window
// of QoS 1/2 messages unacknowledged and flushes its buffer only when it is
// about to wait, so a fast publisher writes many PUBLISH packets per system
// call. docs/performance.md says why it exists (paho.golang is the
// bottleneck at high rates).

// MQTT packet types (the high nibble of the fixed header).
const (
	pktConnect    = 1
	pktConnack    = 2
	pktPublish    = 3
	pktPuback     = 4
	pktPubrec     = 5
	pktPubrel     = 6
	pktPubcomp    = 7
	pktPingreq    = 12
	pktPingresp   = 13
	pktDisconnect = 14
)

// Protocol levels.
const (
	mqtt311 = 4
	mqtt5   = 5
)

// ErrRefused is a PUBACK or PUBREC with a failure reason code (MQTT 5): the
// broker did not take the message.
var ErrRefused = errors.New("publish refused by the broker")

func appendVarint(b []byte, n int) []byte {
	for {
		c := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// appendConnect encodes a CONNECT with a clean session and no credentials.
func appendConnect(b []byte, version byte, clientID string, keepAlive uint16) []byte {
	var body []byte
	body = appendString(body, "MQTT")
	body = append(body, version, 0x02) // clean session / clean start
	body = binary.BigEndian.AppendUint16(body, keepAlive)
	if version == mqtt5 {
		body = append(body, 0) // no properties
	}
	body = appendString(body, clientID)
	b = append(b, pktConnect<<4)
	b = appendVarint(b, len(body))
	return append(b, body...)
}

// appendPublish encodes a PUBLISH; id is ignored at QoS 0.
func appendPublish(b []byte, version, qos byte, id uint16, topic string, payload []byte) []byte {
	n := 2 + len(topic) + len(payload)
	if qos > 0 {
		n += 2
	}
	if version == mqtt5 {
		n++ // property length 0
	}
	b = append(b, pktPublish<<4|qos<<1)
	b = appendVarint(b, n)
	b = appendString(b, topic)
	if qos > 0 {
		b = binary.BigEndian.AppendUint16(b, id)
	}
	if version == mqtt5 {
		b = append(b, 0)
	}
	return append(b, payload...)
}

// packet is one packet read from the broker.
type packet struct {
	kind  byte
	flags byte
	body  []byte // valid until the next read
}

// id returns the packet identifier of an acknowledgement.
func (p *packet) id() uint16 {
	if len(p.body) < 2 {
		return 0
	}
	return binary.BigEndian.Uint16(p.body)
}

// reason returns the reason code of an MQTT 5 acknowledgement (0: success;
// absent means success).
func (p *packet) reason() byte {
	if len(p.body) < 3 {
		return 0
	}
	return p.body[2]
}

// reader reads packets, reusing one buffer.
type reader struct {
	r   *bufio.Reader
	buf []byte
}

func (r *reader) next() (packet, error) {
	h, err := r.r.ReadByte()
	if err != nil {
		return packet{}, err
	}
	n, shift := 0, 0
	for {
		c, err := r.r.ReadByte()
		if err != nil {
			return packet{}, err
		}
		n |= int(c&0x7f) << shift
		if c&0x80 == 0 {
			break
		}
		if shift += 7; shift > 21 {
			return packet{}, errors.New("mqtt: malformed remaining length")
		}
	}
	if cap(r.buf) < n {
		r.buf = make([]byte, n)
	}
	body := r.buf[:n]
	if _, err := io.ReadFull(r.r, body); err != nil {
		return packet{}, err
	}
	return packet{kind: h >> 4, flags: h & 0x0f, body: body}, nil
}

// dialMQTT connects and sends CONNECT, and waits for the CONNACK.
func dialMQTT(ctx context.Context, d *net.Dialer, addr string, version byte, clientID string, keepAlive uint16) (net.Conn, *reader, error) {
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	if _, err := conn.Write(appendConnect(nil, version, clientID, keepAlive)); err != nil {
		conn.Close()
		return nil, nil, err
	}
	r := &reader{r: bufio.NewReaderSize(conn, 1024)}
	p, err := r.next()
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("mqtt: waiting for CONNACK: %w", err)
	}
	if p.kind != pktConnack || len(p.body) < 2 {
		conn.Close()
		return nil, nil, fmt.Errorf("mqtt: expected CONNACK, got packet type %d", p.kind)
	}
	if code := p.body[1]; code != 0 {
		conn.Close()
		return nil, nil, fmt.Errorf("mqtt: connection refused: reason %#x", code)
	}
	conn.SetDeadline(time.Time{})
	return conn, r, nil
}
