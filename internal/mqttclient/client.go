package mqttclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho/session/state"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/ratelog"
	"github.com/sluicehq/sluice/internal/secret"
)

// Options are what a Client is given rather than configured with.
type Options struct {
	// Name names the user of the connection (a sink or a source) in logs
	// and in the default client id.
	Name   string
	Logger *slog.Logger
	// Subscriptions are made on every connection.
	Subscriptions []Subscription
	// ReceiveMaximum, when not 0, is announced to the remote (MQTT 5): the
	// most QoS 1/2 messages it sends before sluice acknowledges them.
	// Without it the remote may send up to 65535.
	ReceiveMaximum uint16
	// OnMessage receives the messages the remote sends, one at a time, in
	// the order they arrive. While it runs the next message waits, and once
	// max_inflight QoS 1/2 messages wait, the remote waits too. It must
	// call Ack or Reject for each message; a message is acknowledged to
	// the remote only by Ack.
	OnMessage func(m *Message)
	// OnUp is called when a connection is up (with the protocol spoken);
	// OnDown when it ends; OnRefused when an attempt fails, with a bounded
	// reason (network, tls, timeout, auth, protocol, client_id,
	// unavailable, other). For metrics; they must not block.
	OnUp      func(protocol string)
	OnDown    func(err error)
	OnRefused func(reason string)
}

// Subscription is a filter to subscribe to, at a QoS.
type Subscription struct {
	Filter string
	QoS    byte
}

// Outgoing is a message to publish.
type Outgoing struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// ContentType and UserProperties are sent as MQTT 5 properties (MQTT
	// 3.1.1 has none: they are dropped).
	ContentType    string
	UserProperties []sluice.Property
}

// Message is a message the remote sent.
type Message struct {
	Topic          string
	Payload        []byte
	QoS            byte
	Retain         bool
	ContentType    string
	UserProperties []sluice.Property
	// Duplicate is the remote's DUP flag: it may have sent this before.
	Duplicate bool

	conn conn
	ack  func() error
}

// Ack acknowledges the message to the remote (nothing for QoS 0). Call it
// only once the message is safe. Acknowledgements leave in the order the
// messages arrived. On a connection that has ended it does nothing: the
// remote sends the message again on the next one (at least once).
func (m *Message) Ack() error {
	select {
	case <-m.conn.done():
		return ErrConnectionLost
	default:
	}
	return m.ack()
}

// Reject says the message could not be taken. It is not acknowledged; the
// connection is dropped (in the background), the messages after it on this
// connection are not handed over, and the remote sends them all again on the
// next connection (a persistent session; QoS 0 messages are lost).
func (m *Message) Reject(err error) { m.conn.fail(err) }

// conn is one connection to the remote, MQTT 5 or 3.1.1.
type conn interface {
	protocol() string
	// publish sends msgs in order and records each one's result in errs;
	// it returns once every one is acknowledged or has failed.
	publish(ctx context.Context, msgs []*Outgoing, errs []error)
	subscribe(ctx context.Context, subs []Subscription) error
	// done is closed when the connection has ended; err says why.
	done() <-chan struct{}
	err() error
	// fail ends the connection without acknowledging what it holds.
	fail(err error)
	// failed reports whether fail was called: later messages are skipped.
	failed() bool
	// disconnect ends the connection cleanly (DISCONNECT) and waits.
	disconnect()
}

// Client keeps a connection to a remote broker; see the package comment.
type Client struct {
	cfg   Config
	url   *url.URL
	o     Options
	log   *slog.Logger
	rlog  *ratelog.Logger
	state *state.State // MQTT 5 session state, kept across connections
	// store is the MQTT 3.1.1 session state, kept across connections. It
	// must be ordered: paho.mqtt.golang sends the publishes left in it
	// again, at the next connection, in the order the store lists them (a
	// MemoryStore lists them in map order, shuffling a topic's messages).
	store *mqtt3.OrderedMemoryStore

	mu       sync.Mutex
	cur      conn
	up       chan struct{} // closed when cur is set; replaced when it is lost
	lastErr  error
	v3       bool // speaking MQTT 3.1.1 (configured, or fallen back)
	closing  bool
	started  bool
	busy     sync.WaitGroup     // OnMessage calls in progress
	handling int                // how many (guarded by mu): Close waits only when some are
	stop     context.CancelFunc // ends run
	loopDone chan struct{}
	first    chan struct{} // closed when the first attempt has ended
}

// New returns a client for cfg (validated, defaults set). It does no I/O.
func New(cfg Config, o Options) (*Client, error) {
	cfg.SetDefaults()
	u, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ClientID == "" {
		cfg.ClientID = DefaultClientID(o.Name)
	}
	log := o.Logger.With("remote", u.Redacted(), "client_id", cfg.ClientID)
	c := &Client{
		cfg: cfg, url: u, o: o, log: log, rlog: ratelog.New(log, 30*time.Second, nil),
		state: state.NewInMemory(), store: mqtt3.NewOrderedMemoryStore(),
		up: make(chan struct{}), v3: cfg.Protocol == Protocol311,
		loopDone: make(chan struct{}), first: make(chan struct{}),
	}
	return c, nil
}

// DefaultClientID is sluice-<hostname>-<name>: stable across restarts (so
// the session is found again) and different on every host.
func DefaultClientID(name string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "host"
	}
	if name == "" {
		return "sluice-" + host
	}
	return "sluice-" + host + "-" + name
}

// ClientID is the client id the client connects with.
func (c *Client) ClientID() string { return c.cfg.ClientID }

// Start starts connecting, and keeps the connection up until Close. It
// waits for the first attempt and returns its error, if it failed; the
// client keeps trying either way, so an unreachable remote is not fatal.
func (c *Client) Start(ctx context.Context) error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return errors.New("client closed")
	}
	if !c.started {
		c.started = true
		// The connection outlives Start's ctx: it ends with Close.
		runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
		c.stop = stop
		go c.run(runCtx)
	}
	c.mu.Unlock()
	select {
	case <-c.first:
	case <-ctx.Done():
		return ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != nil {
		return nil
	}
	return c.lastErr
}

// Protocol is the protocol of the current (or next) connection: "5" or
// "3.1.1".
func (c *Client) Protocol() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.v3 {
		return Protocol311
	}
	return Protocol5
}

// run connects, and connects again whenever the connection ends, until ctx
// ends. The connection in place when ctx ends is Close's to disconnect.
func (c *Client) run(ctx context.Context) {
	defer close(c.loopDone)
	var firstOnce sync.Once
	first := func() { firstOnce.Do(func() { close(c.first) }) }
	defer first()
	for attempt := 0; ; {
		cn, err := c.connectAndSubscribe(ctx)
		if ctx.Err() != nil {
			if cn != nil {
				cn.disconnect()
			}
			return
		}
		if err != nil {
			c.mu.Lock()
			c.lastErr = err
			c.mu.Unlock()
			first()
			if c.o.OnRefused != nil {
				c.o.OnRefused(refusalKind(err))
			}
			delay := backoff(c.cfg.Reconnect, attempt)
			attempt++
			c.rlog.Warn("connect", "cannot connect to the remote broker; retrying", "attempt", attempt, "in", delay.Round(time.Millisecond), "error", err)
			if !sleep(ctx, delay) {
				return
			}
			continue
		}

		since := time.Now()
		c.mu.Lock()
		c.cur, c.lastErr = cn, nil
		close(c.up)
		c.mu.Unlock()
		first()
		c.log.Info("connected to the remote broker", "protocol", cn.protocol(), "attempts", attempt+1)
		if c.o.OnUp != nil {
			c.o.OnUp(cn.protocol())
		}
		select {
		case <-cn.done():
		case <-ctx.Done():
			return
		}
		lost := cn.err()
		if lost == nil {
			lost = ErrConnectionLost
		}
		c.mu.Lock()
		c.cur, c.lastErr = nil, lost
		c.up = make(chan struct{})
		c.mu.Unlock()
		if c.o.OnDown != nil {
			c.o.OnDown(lost)
		}
		if time.Since(since) >= c.cfg.Reconnect.Max {
			attempt = 0 // it was up for a while: start the backoff again
		}
		delay := backoff(c.cfg.Reconnect, attempt)
		attempt++
		c.rlog.Warn("lost", "connection to the remote broker lost; reconnecting", "in", delay.Round(time.Millisecond), "error", lost)
		if !sleep(ctx, delay) {
			return
		}
	}
}

// sleep waits d; false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// connect makes one connection attempt, in the protocol in force; in auto
// mode a remote that refuses MQTT 5 is asked again at once in 3.1.1, which
// is then kept.
func (c *Client) connect(ctx context.Context) (conn, error) {
	tlsCfg, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	v3 := c.v3
	c.mu.Unlock()
	if !v3 {
		cn, err := c.connect5(ctx, tlsCfg)
		var refused *RefusedError
		if err == nil || c.cfg.Protocol != ProtocolAuto || !errors.As(err, &refused) || !refused.ProtocolRefused() {
			return cn, c.explain(err)
		}
		c.log.Warn("the remote broker refused MQTT 5; using MQTT 3.1.1 from now on", "error", err)
		c.mu.Lock()
		c.v3 = true
		c.mu.Unlock()
	}
	cn, err := c.connect3(ctx, tlsCfg)
	return cn, c.explain(err)
}

// connectAndSubscribe connects and makes the subscriptions.
func (c *Client) connectAndSubscribe(ctx context.Context) (conn, error) {
	cn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.subscribeAll(ctx, cn); err != nil {
		cn.disconnect()
		return nil, err
	}
	return cn, nil
}

// subscribeAll subscribes on a new connection. A refused filter is logged
// (the others stay); a subscribe that fails as a whole fails the
// connection.
func (c *Client) subscribeAll(ctx context.Context, cn conn) error {
	if len(c.o.Subscriptions) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.AckTimeout)
	defer cancel()
	err := cn.subscribe(ctx, c.o.Subscriptions)
	var refused *SubscribeError
	if errors.As(err, &refused) {
		c.log.Error("the remote broker refused subscriptions; the others are in place", "refused", refused.Filters)
		return nil
	}
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	return nil
}

// SubscribeError names the filters a SUBACK refused, with their reasons.
type SubscribeError struct {
	Filters map[string]string
}

func (e *SubscribeError) Error() string {
	return fmt.Sprintf("subscriptions refused: %v", e.Filters)
}

func (c *Client) tlsConfig() (*tls.Config, error) {
	if c.url.Scheme != "mqtts" && c.url.Scheme != "wss" {
		return nil, nil
	}
	var cfg *tls.Config
	if c.cfg.TLS != nil {
		var err error
		if cfg, err = c.cfg.TLS.Load(); err != nil {
			return nil, err
		}
	} else {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = c.url.Hostname()
	}
	return cfg, nil
}

// explain adds what to check to a refusal for credentials or a failed TLS
// handshake. It names the user and where the password came from, never
// the password.
func (c *Client) explain(err error) error {
	var refused *RefusedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &refused) && refused.Kind() == "auth":
		src := "no password"
		if c.cfg.Password.IsSet() {
			src = "password from " + c.cfg.Password.Source()
		}
		return fmt.Errorf("%w; check username %q (%s) and the remote's ACL", err, c.cfg.Username, src)
	case secret.IsTLSFailure(err):
		return fmt.Errorf("TLS with the remote broker failed; check tls (ca_file, cert_file, key_file, server_name): %w", err)
	}
	return err
}

func refusalKind(err error) string {
	var refused *RefusedError
	switch {
	case errors.As(err, &refused):
		return refused.Kind()
	case secret.IsTLSFailure(err):
		return "tls"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "network"
}

// deliver hands a message to OnMessage unless the client is closing or
// the connection has failed (the remote sends it again then).
func (c *Client) deliver(m *Message) {
	if c.o.OnMessage == nil {
		// A publisher's session may hold subscriptions from an earlier
		// configuration: nobody wants these messages.
		m.Ack()
		return
	}
	c.mu.Lock()
	if c.closing || m.conn.failed() {
		c.mu.Unlock()
		return
	}
	c.busy.Add(1)
	c.handling++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.handling--
		c.mu.Unlock()
		c.busy.Done()
	}()
	c.o.OnMessage(m)
}

// Publish publishes msgs, in order per topic, and returns each one's
// result once the remote acknowledged it (QoS 1: PUBACK; QoS 2: PUBCOMP;
// QoS 0: written to the connection) or it failed. Without a connection it
// waits up to the connect timeout for one.
//
// Order: messages to one topic are sent one after the other; once one
// fails in a way worth retrying (not IsPermanent), the ones after it on
// that topic fail too (sent or not), so that a retry of the failed ones
// keeps their order. Different topics go in parallel (up to 64, and as many as
// the remote's receive maximum lets be in flight).
func (c *Client) Publish(ctx context.Context, msgs []*Outgoing) []error {
	errs := make([]error, len(msgs))
	cn, err := c.connection(ctx)
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	// The publishes end with the connection.
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-cn.done():
			cancel()
		case <-pctx.Done():
		}
	}()
	cn.publish(pctx, msgs, errs)
	if ctx.Err() == nil && pctx.Err() != nil {
		// Cut short by the end of the connection: say so, and why.
		lost := ErrConnectionLost
		if why := cn.err(); why != nil {
			lost = fmt.Errorf("%w: %w", ErrConnectionLost, why)
		}
		for i, err := range errs {
			if errors.Is(err, context.Canceled) {
				errs[i] = lost
			}
		}
	}
	keepTopicOrder(msgs, errs)
	return errs
}

// ErrEarlierFailed is the result of a message not sent (or sent but to be
// sent again) because one before it on the same topic failed.
var ErrEarlierFailed = errors.New("an earlier message to the same topic failed")

// keepTopicOrder fails every message that follows, on its topic, one that
// failed and will be retried.
func keepTopicOrder(msgs []*Outgoing, errs []error) {
	var failed map[string]error
	for i, m := range msgs {
		if cause, ok := failed[m.Topic]; ok {
			if errs[i] == nil || IsPermanent(errs[i]) {
				errs[i] = fmt.Errorf("%w: %w", ErrEarlierFailed, cause)
			}
			continue
		}
		if errs[i] != nil && !IsPermanent(errs[i]) {
			if failed == nil {
				failed = map[string]error{}
			}
			failed[m.Topic] = errs[i]
		}
	}
}

// IsPermanent reports whether a publish error will recur however often the
// message is sent: the remote refuses the topic or the message.
func IsPermanent(err error) bool {
	var pe *PublishError
	if errors.As(err, &pe) {
		return pe.Permanent()
	}
	return errors.Is(err, errInvalid)
}

// errInvalid marks a message the remote cannot take as it is.
var errInvalid = errors.New("invalid message")

// connection returns the current connection, waiting up to the connect
// timeout for one.
func (c *Client) connection(ctx context.Context) (conn, error) {
	c.mu.Lock()
	cn, up, closing, started := c.cur, c.up, c.closing, c.started
	c.mu.Unlock()
	switch {
	case closing:
		return nil, errors.New("client closed")
	case !started:
		return nil, errors.New("client not started")
	case cn != nil:
		return cn, nil
	}
	t := time.NewTimer(c.cfg.ConnectTimeout)
	defer t.Stop()
	select {
	case <-up:
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.cur != nil {
			return c.cur, nil
		}
	case <-t.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastErr != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotConnected, c.lastErr)
	}
	return nil, ErrNotConnected
}

// Close stops reconnecting, waits for OnMessage calls in progress (until
// ctx ends), lets their acknowledgements leave, and disconnects. It is
// safe to call more than once.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return nil
	}
	c.closing = true
	started := c.started
	c.mu.Unlock()
	if !started {
		return nil
	}
	c.stop()
	<-c.loopDone

	var err error
	done := make(chan struct{})
	go func() { c.busy.Wait(); close(done) }()
	c.mu.Lock()
	handling := c.handling // no call starts once closing is set
	c.mu.Unlock()
	if handling > 0 {
		select {
		case <-done:
		case <-ctx.Done():
			err = fmt.Errorf("messages still being handled were not acknowledged: %w", ctx.Err())
		}
	}
	c.mu.Lock()
	cn := c.cur
	c.cur = nil
	c.mu.Unlock()
	if cn != nil {
		cn.disconnect()
	}
	<-done
	c.state.Close()
	return err
}

// backoff returns the delay before attempt n (0-based): doubling from the
// initial delay up to the maximum, then a random point in its upper half
// (so that many instances cut off together do not come back together).
func backoff(b Backoff, n int) time.Duration {
	d := b.Initial << min(n, 30)
	if d <= 0 || d > b.Max {
		d = b.Max
	}
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(d-half)+1))
}
