package mqttclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// dial opens the network connection to u: TCP, TLS, or a WebSocket (over
// TLS for wss) carrying MQTT in binary frames.
func dial(ctx context.Context, u *url.URL, tlsCfg *tls.Config) (net.Conn, error) {
	switch u.Scheme {
	case "mqtt":
		var d net.Dialer
		return d.DialContext(ctx, "tcp", u.Host)
	case "mqtts":
		d := tls.Dialer{Config: tlsCfg}
		return d.DialContext(ctx, "tcp", u.Host)
	case "ws", "wss":
		d := websocket.Dialer{
			Proxy:            websocket.DefaultDialer.Proxy,
			HandshakeTimeout: 0, // ctx bounds it
			TLSClientConfig:  tlsCfg,
			Subprotocols:     []string{"mqtt"},
		}
		ws, resp, err := d.DialContext(ctx, u.String(), nil)
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		if err != nil {
			if resp != nil {
				return nil, fmt.Errorf("websocket handshake: HTTP %s: %w", resp.Status, err)
			}
			return nil, fmt.Errorf("websocket: %w", err)
		}
		return &wsConn{ws: ws}, nil
	}
	return nil, fmt.Errorf("unsupported scheme %q", u.Scheme)
}

// wsConn is a WebSocket as a net.Conn: MQTT packets go in binary messages,
// and a packet may span messages.
type wsConn struct {
	ws *websocket.Conn

	rmu sync.Mutex
	r   io.Reader // the message being read

	wmu sync.Mutex
}

func (c *wsConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				continue
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

func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error                       { return c.ws.Close() }
func (c *wsConn) LocalAddr() net.Addr                { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr               { return c.ws.RemoteAddr() }
func (c *wsConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }
func (c *wsConn) SetDeadline(t time.Time) error {
	return errors.Join(c.ws.SetReadDeadline(t), c.ws.SetWriteDeadline(t))
}

// sniffConn remembers the first bytes the remote sends, so that a refusal
// in MQTT 3.1.1's CONNACK format (which an MQTT 5 client cannot parse) can
// be recognised.
type sniffConn struct {
	net.Conn
	mu    sync.Mutex
	first []byte
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	if len(c.first) < 4 {
		c.first = append(c.first, p[:min(n, 4-len(c.first))]...)
	}
	c.mu.Unlock()
	return n, err
}

// v3Refusal returns the return code of an MQTT 3.1.1 CONNACK refusing the
// connection (fixed header 0x20, remaining length 2, flags, code), if that
// is what the remote sent first.
func (c *sniffConn) v3Refusal() (byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.first) == 4 && c.first[0] == 0x20 && c.first[1] == 0x02 && c.first[3] != 0 {
		return c.first[3], true
	}
	return 0, false
}
