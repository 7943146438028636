package mqttclient

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"sync"

	"github.com/gorilla/websocket"

	"github.com/sluicehq/sluice/internal/wsstream"
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
		return wsstream.New(ws), nil
	}
	return nil, fmt.Errorf("unsupported scheme %q", u.Scheme)
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
