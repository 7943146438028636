// Package wsstream turns a WebSocket connection into the byte stream MQTT
// runs on (MQTT over WebSockets, MQTT 3.1.1 section 6, MQTT 5 section 6):
// packets travel in binary messages, a packet may span messages and a
// message may hold several packets. Both the broker's ws/wss listeners and
// the MQTT client (bridges, sources) use it.
package wsstream

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Conn is a WebSocket connection as a net.Conn.
type Conn struct {
	ws *websocket.Conn

	rmu sync.Mutex
	r   io.Reader // the message being read

	wmu sync.Mutex // a WebSocket takes one writer at a time
	// writeDeadline (Unix ns, 0 for none) is applied by Write, under wmu:
	// gorilla keeps it in a field its writes read, so setting it there
	// directly would race with a write in progress.
	writeDeadline atomic.Int64
}

// New wraps ws.
func New(ws *websocket.Conn) *Conn { return &Conn{ws: ws} }

// ErrTextMessage is a text message: MQTT may travel in binary messages
// only, and the connection must then be closed [MQTT-6.0.0-1].
var ErrTextMessage = errors.New("WebSocket text message: MQTT travels in binary messages")

// Read reads the stream, across message boundaries.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, ErrTextMessage
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

// Write sends p as one binary message.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var deadline time.Time
	if d := c.writeDeadline.Load(); d != 0 {
		deadline = time.Unix(0, d)
	}
	c.ws.SetWriteDeadline(deadline)
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *Conn) Close() error                      { return c.ws.Close() }
func (c *Conn) LocalAddr() net.Addr               { return c.ws.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr              { return c.ws.RemoteAddr() }
func (c *Conn) SetReadDeadline(t time.Time) error { return c.ws.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error {
	var d int64
	if !t.IsZero() {
		d = t.UnixNano()
	}
	c.writeDeadline.Store(d)
	return nil
}
func (c *Conn) SetDeadline(t time.Time) error {
	c.SetWriteDeadline(t)
	return c.ws.SetReadDeadline(t)
}
