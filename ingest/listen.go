package ingest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/sluicehq/sluice/internal/wsstream"
)

// listener is one configured listener: tcp, tls, ws or wss. It implements
// mochi's listeners.Listener, in place of mochi's own TCP and WebSocket
// listeners, to do what a broker on an open network must before a
// connection reaches mochi:
//
//   - count connections against the listener's and the broker's limits, and
//     close those over them at once;
//   - bound the time a connection has to finish its TLS handshake and send
//     its CONNECT, so that idle or slow half-open connections cannot pile up;
//   - read the whole CONNECT first, buffering only the bytes that arrive,
//     and close a connection whose first packet is not a CONNECT or is over
//     the size limit, so a claimed length costs nothing until it is sent;
//   - keep the TLS state, whose client certificate names the client.
//
// It binds in Init, so a listener that cannot bind fails the start, and a
// listener on port 0 reports the port it got.
type listener struct {
	cfg ListenerConfig
	b   *Broker
	tls *tlsFiles // nil without TLS

	ln   net.Listener
	http *http.Server // ws and wss; guarded by mu

	open      atomic.Int64
	end       atomic.Bool
	lingering sync.WaitGroup // connections closing gracefully (clientConn.linger)

	mu      sync.Mutex
	pending map[*clientConn]struct{} // connections not yet handed to mochi
	closed  bool                     // Close is waiting for the lingering
}

func newListener(b *Broker, cfg ListenerConfig) (*listener, error) {
	l := &listener{cfg: cfg, b: b, pending: map[*clientConn]struct{}{}}
	if cfg.TLS != nil {
		f, err := newTLSFiles(cfg.Name, *cfg.TLS, b.log, func(leaf *x509.Certificate) {
			b.metrics.CertExpiry.WithLabelValues(cfg.Name).Set(float64(leaf.NotAfter.Unix()))
		})
		if err != nil {
			return nil, err
		}
		l.tls = f
	}
	return l, nil
}

func (l *listener) ID() string       { return l.cfg.Name }
func (l *listener) Protocol() string { return l.cfg.Type }

func (l *listener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.cfg.Address
}

// Init binds the address.
func (l *listener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", l.cfg.Address)
	if err != nil {
		return err
	}
	l.ln = ln
	return nil
}

// Serve accepts connections until Close.
func (l *listener) Serve(establish listeners.EstablishFn) {
	if l.cfg.Type == typeWS || l.cfg.Type == typeWSS {
		l.serveWebSocket(establish)
		return
	}
	l.acceptLoop(func(c *clientConn) {
		go l.serveConn(c, establish)
	})
}

// acceptLoop accepts connections and passes on those within the limits.
// Accept errors that pass (out of file descriptors) are waited out, as
// net/http does, rather than ending the listener.
func (l *listener) acceptLoop(handle func(*clientConn)) {
	var backoff time.Duration
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if l.end.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.b.rlog.Log(slog.LevelWarn, "accept:"+l.cfg.Name, "cannot accept connections", "listener", l.cfg.Name, "error", err)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !l.admit() {
			conn.Close()
			continue
		}
		handle(&clientConn{Conn: conn, l: l})
	}
}

// admit counts a new connection, or refuses it when a limit is reached.
func (l *listener) admit() bool {
	refuse := func() bool {
		l.b.metrics.Refused.WithLabelValues(l.cfg.Name, "limit").Inc()
		l.b.rlog.Log(slog.LevelWarn, "limit:"+l.cfg.Name, "connection refused: too many connections", "listener", l.cfg.Name,
			"listener_max", l.cfg.MaxConnections, "broker_max", l.b.cfg.Limits.MaxConnections)
		return false
	}
	if n := l.open.Add(1); l.cfg.MaxConnections > 0 && n > int64(l.cfg.MaxConnections) {
		l.open.Add(-1)
		return refuse()
	}
	if n := l.b.open.Add(1); n > int64(l.b.cfg.Limits.MaxConnections) {
		l.b.open.Add(-1)
		l.open.Add(-1)
		return refuse()
	}
	l.b.metrics.Connections.WithLabelValues(l.cfg.Name).Inc()
	return true
}

func (l *listener) release() {
	l.open.Add(-1)
	l.b.open.Add(-1)
	l.b.metrics.Connections.WithLabelValues(l.cfg.Name).Dec()
}

// serveConn completes the TLS handshake and reads the CONNECT of a tcp or
// tls connection, within the connect timeout, then hands it to mochi.
func (l *listener) serveConn(c *clientConn, establish listeners.EstablishFn) {
	if !l.track(c) {
		c.Close()
		return
	}
	deadline := time.Now().Add(l.b.cfg.Limits.ConnectTimeout)
	c.SetDeadline(deadline)
	if l.tls != nil {
		tc := tls.Server(c.Conn, l.tls.serverConfig())
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			l.untrack(c)
			l.refused(c, "tls", err)
			c.Close()
			return
		}
		st := tc.ConnectionState()
		c.Conn, c.tlsState = tc, &st
	}
	l.handOver(c, establish)
}

// handOver reads the CONNECT and gives the connection to mochi, which
// serves it until it ends.
func (l *listener) handOver(c *clientConn, establish listeners.EstablishFn) {
	err := c.readConnect(int(l.b.cfg.Limits.MaxPacketSize))
	l.untrack(c)
	if err != nil {
		reason := "protocol"
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			reason = "timeout"
		}
		l.refused(c, reason, err)
		c.Close()
		return
	}
	c.served.Store(true)
	l.ended(c, establish(l.cfg.Name, c))
}

// ended counts and logs how a connection mochi served ended, when the
// client broke the protocol (see protocol.go).
func (l *listener) ended(c *clientConn, err error) {
	if err == nil || isClosedErr(err) {
		return
	}
	remote := c.RemoteAddr().String()
	reason := protocolReason(err)
	switch id := c.clientID.Load(); {
	case reason == "":
		l.b.log.Debug("client connection ended", "listener", l.cfg.Name, "remote", remote, "error", err)
	case id != nil:
		l.b.protocolError(l.cfg.Name, *id, remote, reason, err)
	default: // the CONNECT, which mochi refused
		l.refused(c, "protocol", err)
	}
}

func (l *listener) refused(c net.Conn, reason string, err error) {
	l.b.metrics.Refused.WithLabelValues(l.cfg.Name, reason).Inc()
	if errors.Is(err, io.EOF) || l.end.Load() {
		return // a client that went away, or shutting down
	}
	l.b.rlog.Log(slog.LevelWarn, reason+":"+l.cfg.Name, "connection refused", "listener", l.cfg.Name,
		"reason", reason, "remote", c.RemoteAddr().String(), "error", err)
}

// track records a connection that is not mochi's yet, so Close can close it.
func (l *listener) track(c *clientConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.end.Load() {
		return false
	}
	l.pending[c] = struct{}{}
	return true
}

func (l *listener) untrack(c *clientConn) {
	l.mu.Lock()
	delete(l.pending, c)
	l.mu.Unlock()
}

// Close stops accepting, closes connections not yet handed over, then has
// mochi close its clients on this listener.
func (l *listener) Close(closeClients listeners.CloseFn) {
	if l.end.CompareAndSwap(false, true) {
		l.mu.Lock()
		srv := l.http
		l.mu.Unlock()
		if srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			srv.Shutdown(ctx)
			cancel()
		}
		if l.ln != nil {
			l.ln.Close()
		}
		l.mu.Lock()
		for c := range l.pending {
			c.Close()
		}
		l.mu.Unlock()
	}
	closeClients(l.cfg.Name)
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.lingering.Wait()
}

// startLinger counts a connection closing gracefully, for Close to wait
// for; not once Close waits (a straggler's linger ends by itself).
func (l *listener) startLinger() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.lingering.Add(1)
	return true
}

// serveWebSocket serves MQTT over WebSocket (RFC 6455, subprotocol "mqtt")
// at the listener's path, over TLS for wss.
func (l *listener) serveWebSocket(establish listeners.EstablishFn) {
	limits := l.b.cfg.Limits
	up := &websocket.Upgrader{
		Subprotocols:     []string{"mqtt"},
		HandshakeTimeout: limits.ConnectTimeout,
		CheckOrigin:      l.checkOrigin,
	}
	mux := http.NewServeMux()
	mux.HandleFunc(l.cfg.Path, func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			l.b.metrics.Refused.WithLabelValues(l.cfg.Name, "protocol").Inc()
			return // the upgrader has answered
		}
		// A WebSocket message carries MQTT packets (or parts of one):
		// bound it like a packet.
		ws.SetReadLimit(int64(limits.MaxPacketSize) + 1024)
		c := &clientConn{Conn: wsstream.New(ws), tlsState: r.TLS}
		if !l.track(c) {
			c.Close()
			return
		}
		c.SetDeadline(time.Now().Add(limits.ConnectTimeout))
		l.handOver(c, establish)
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: limits.ConnectTimeout,
		MaxHeaderBytes:    16 << 10,
		// net/http logs each failed TLS handshake; the metrics count them.
		ErrorLog: slog.NewLogLogger(l.b.log.Handler(), slog.LevelDebug),
	}
	// Close reads l.http under l.mu after it sets l.end: either it sees the
	// server and shuts it down, or this sees the end and does not serve.
	l.mu.Lock()
	l.http = srv
	ended := l.end.Load()
	l.mu.Unlock()
	if ended {
		return
	}
	var ln net.Listener = &admitListener{l: l}
	if l.tls != nil {
		ln = tls.NewListener(ln, l.tls.serverConfig())
	}
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !l.end.Load() {
		l.b.log.Error("WebSocket listener stopped", "listener", l.cfg.Name, "error", err)
	}
}

// checkOrigin allows requests without an Origin (devices) and, when
// allowed_origins is set, browsers on those origins only.
func (l *listener) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || len(l.cfg.AllowedOrigins) == 0 {
		return true
	}
	return slices.Contains(l.cfg.AllowedOrigins, origin)
}

// admitListener is the listener's socket as http.Server sees it: only
// connections within the limits come out of Accept, counted.
type admitListener struct{ l *listener }

func (a *admitListener) Accept() (net.Conn, error) {
	for {
		conn, err := a.l.ln.Accept()
		if err != nil {
			return nil, err // http.Server waits out temporary errors itself
		}
		if a.l.admit() {
			return &countedConn{Conn: conn, l: a.l}, nil
		}
		conn.Close()
	}
}

func (a *admitListener) Close() error   { return a.l.ln.Close() }
func (a *admitListener) Addr() net.Addr { return a.l.ln.Addr() }

// countedConn releases its place in the connection count when closed.
type countedConn struct {
	net.Conn
	l    *listener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(c.l.release)
	return c.Conn.Close()
}

// clientConn is a client connection as mochi gets it: it hands mochi
// whole packets only (see packetReader); it knows its TLS state; closing
// it releases its place in the connection count (for tcp and tls; a
// WebSocket's place is its countedConn's).
type clientConn struct {
	net.Conn
	l        *listener // set when this conn holds a place in the count
	tlsState *tls.ConnectionState
	packets  *packetReader
	window   *sendWindow // the client's Receive Maximum (see sendWindow)
	once     sync.Once

	served   atomic.Bool            // handed to mochi: closed gracefully (see Close)
	clientID atomic.Pointer[string] // once its session is established (markEstablished)
	readMu   sync.Mutex             // held by Read; the linger reads after it
	closing  atomic.Bool            // Close was called
}

// Closing a connection the broker ends (a client over a limit, one whose
// session another connection took, the broker stopping) while the client
// is still sending: closing the socket at once with unread bytes in it
// makes the kernel answer with a reset, and a client that reads a reset may
// never see the DISCONNECT it was sent, with the reason. So Close shuts the
// write side down after what was written (the DISCONNECT, then the end of
// the stream) and reads and discards what the client still sends, until
// it closes its side too, for at most lingerTime and lingerBytes; then it
// closes. The listener's Close waits for its connections' lingers.
const (
	lingerTime  = 2 * time.Second
	lingerBytes = 4 << 20
)

func (c *clientConn) Read(p []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if c.closing.Load() {
		return 0, net.ErrClosed
	}
	n, err := c.read(p)
	if err != nil && c.closing.Load() {
		err = net.ErrClosed // Close ended the read, not the client
	}
	return n, err
}

func (c *clientConn) read(p []byte) (int, error) {
	if c.packets == nil {
		return 0, errors.New("read before the CONNECT was checked")
	}
	if c.packets.buf.Len() == 0 && c.window != nil {
		// The next packet: acknowledgements wait while another one is at
		// hand (see sendWindow), so that a burst of publishes is answered
		// with one write. Reading it cannot wait for the client: what is
		// pending was sent when the last buffered packet was handed over.
		if err := c.packets.next(); err != nil {
			_ = c.window.setHold(c.Conn, false)
			if errors.Is(err, errPacketTooLarge) && !c.window.v3 {
				// MQTT 5 says why [MQTT 5 3.1.2.11.4, 4.13]; the connection closes.
				_ = c.window.writeNow(c.Conn, disconnectTooLarge)
			}
			return 0, err
		}
		if err := c.window.setHold(c.Conn, c.packets.complete()); err != nil {
			return 0, err
		}
	}
	return c.packets.Read(p)
}

func (c *clientConn) Write(p []byte) (int, error) {
	if c.window != nil {
		return c.window.write(c.Conn, p)
	}
	return c.Conn.Write(p)
}

// Close closes the connection: gracefully (see lingerTime) when it is
// mochi's and TCP or TLS, at once otherwise. It is safe to call more than
// once.
func (c *clientConn) Close() error {
	if !c.closing.CompareAndSwap(false, true) {
		return nil
	}
	tcp := c.tcp()
	if !c.served.Load() || tcp == nil || c.l == nil {
		err := c.Conn.Close() // first: it ends a write blocked on a slow client
		c.stop()
		return err
	}
	_ = c.Conn.SetWriteDeadline(time.Now()) // ends a write blocked on a slow client
	c.stop()
	_ = tcp.CloseWrite()                // the end of the stream, after what was written
	_ = tcp.SetReadDeadline(time.Now()) // ends mochi's read
	tracked := c.l.startLinger()
	go c.linger(tcp, tracked)
	return nil
}

// linger reads and discards what the client still sends, once mochi's
// reader is gone, until the client closes, lingerTime passes or
// lingerBytes came; then it closes the connection.
func (c *clientConn) linger(tcp *net.TCPConn, tracked bool) {
	if tracked {
		defer c.l.lingering.Done()
	}
	c.readMu.Lock()
	defer c.readMu.Unlock()
	_ = tcp.SetReadDeadline(time.Now().Add(lingerTime))
	_, _ = io.CopyN(io.Discard, tcp, lingerBytes)
	_ = tcp.Close()
}

// stop releases the connection's place in the count and its timer.
func (c *clientConn) stop() {
	if c.l != nil {
		c.once.Do(c.l.release)
	}
	if c.window != nil {
		c.window.stop()
	}
}

// tcp is the TCP connection under c (under TLS for tls), nil for a
// WebSocket.
func (c *clientConn) tcp() *net.TCPConn {
	conn := c.Conn
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	tcp, _ := conn.(*net.TCPConn)
	return tcp
}

// SetDeadline and SetReadDeadline are mochi's (its keep-alive): once the
// connection is closing, its deadlines are Close's.
func (c *clientConn) SetDeadline(t time.Time) error {
	if c.closing.Load() {
		return nil
	}
	return c.Conn.SetDeadline(t)
}

func (c *clientConn) SetReadDeadline(t time.Time) error {
	if c.closing.Load() {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// TLS returns the connection's TLS state, nil without TLS.
func (c *clientConn) TLS() *tls.ConnectionState { return c.tlsState }

// errNotConnect is a first packet that is not a CONNECT.
var errNotConnect = errors.New("the first packet is not a CONNECT")

// readConnect reads the first packet, which must be a CONNECT of at most
// maxSize bytes, for mochi to read next. Only the bytes that arrive are
// buffered.
func (c *clientConn) readConnect(maxSize int) error {
	c.packets = &packetReader{src: newConnReader(c.Conn), max: maxSize}
	if err := c.packets.next(); err != nil {
		return err
	}
	if c.packets.buf.Bytes()[0] != 0x10 { // CONNECT, flags 0 [MQTT-3.1.0-1]
		return errNotConnect
	}
	// A CONNECT that does not decode is mochi's to refuse.
	if info, err := parseConnect(c.packets.buf.Bytes()); err == nil {
		w := newSendWindow(info)
		c.window = w
		c.packets.seen = func(pkt []byte) {
			if releasesQuota(pkt) {
				_ = w.acked(c.Conn)
			}
		}
	}
	return nil
}

// connectLen is the size of the CONNECT readConnect read.
func (c *clientConn) connectLen() int {
	if c.packets == nil {
		return 0
	}
	return c.packets.buf.Len()
}

// packetReader passes a client's byte stream on one whole packet at a
// time: it reads a packet's fixed header, refuses a packet over the size
// limit, and reads the body into a buffer that grows only as bytes
// arrive, before handing any of it over. mochi allocates the length a
// packet header announces as soon as it reads the header; behind this, a
// client that announces a megabyte and sends nothing costs nothing, and
// one that trickles costs what it has sent. (The cost for honest clients
// is one copy of each packet.)
type packetReader struct {
	src  *connReader
	max  int
	buf  bytes.Buffer     // the packet being handed over
	seen func(pkt []byte) // when set, called with each whole packet read
}

// errPacketTooLarge is a packet over max_packet_size.
var errPacketTooLarge = errors.New("packet over max_packet_size")

func (r *packetReader) Read(p []byte) (int, error) {
	if r.buf.Len() == 0 {
		if err := r.next(); err != nil {
			return 0, err
		}
	}
	return r.buf.Read(p)
}

// complete reports whether a whole packet is buffered: reading it will not
// wait for the client.
func (r *packetReader) complete() bool {
	n := r.src.Buffered()
	if n < 2 {
		return false
	}
	_, ok := packetLen(r.src.Peek(n))
	return ok
}

// next reads the next whole packet into buf.
func (r *packetReader) next() error {
	r.buf.Reset()
	first, err := r.src.ReadByte()
	if err != nil {
		return err
	}
	var head [5]byte
	head[0] = first
	remaining, n := 0, 1
	for shift := 0; ; shift += 7 {
		if n == len(head) {
			return errMalformedLength
		}
		b, err := r.src.ReadByte()
		if err != nil {
			return err
		}
		head[n] = b
		remaining |= int(b&0x7f) << shift
		n++
		if b&0x80 == 0 {
			break
		}
	}
	if remaining+1 > r.max {
		return fmt.Errorf("%w: a packet of %d bytes (max_packet_size %d)", errPacketTooLarge, remaining+1, r.max)
	}
	r.buf.Write(head[:n])
	if err := r.src.copyTo(&r.buf, remaining); err != nil {
		return err
	}
	if r.seen != nil {
		r.seen(r.buf.Bytes())
	}
	return nil
}

func isClosedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}
