// Package opcua is the OPC UA client source: it connects to an OPC UA server
// (a PLC, a SCADA gateway), subscribes to the configured variables
// (monitored items) and publishes each value change as a message on the
// node's topic, as if a device had published it over MQTT. An unreachable
// or restarted server is reconnected to, with backoff and jitter, and the
// subscription made again.
//
// It uses github.com/gopcua/opcua; README.md beside this file is the
// operator's guide.
package opcua

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/ratelog"
)

// Options are what a Source is given rather than configured with.
type Options struct {
	// Name labels the source in logs and metrics (default "opcua").
	Name string
	// Handler takes each message into the pipelines.
	Handler ingest.Handler
	Logger  *slog.Logger
	Metrics *metrics.Metrics
}

// Source is an OPC UA client that keeps a subscription on one server.
type Source struct {
	cfg     Config
	name    string
	handler ingest.Handler
	log     *slog.Logger
	rlog    *ratelog.Logger
	metrics *metrics.Metrics
	now     func() time.Time
	nodes   []node

	// Read by Start.
	cert       []byte
	key        *rsa.PrivateKey
	serverCert []byte

	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	done    chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// node is a monitored variable; its index is its client handle.
type node struct {
	id    *ua.NodeID
	text  string // as configured
	topic string
}

// New returns a source for cfg. It does no I/O; Start reads the
// certificate files and starts connecting.
func New(cfg Config, o Options) (*Source, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if o.Handler == nil {
		return nil, errors.New("opcua: no handler")
	}
	if o.Name == "" {
		o.Name = "opcua"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	s := &Source{cfg: cfg, name: o.Name, handler: o.Handler, metrics: o.Metrics, now: time.Now}
	s.log = o.Logger.With("source", o.Name, "endpoint", cfg.Endpoint)
	s.rlog = ratelog.New(s.log, 10*time.Second, nil)
	for _, n := range cfg.Nodes {
		nid, _ := ua.ParseNodeID(n.ID) // checked by Validate
		topic, _ := nodeTopic(cfg.Topic, n, nid)
		s.nodes = append(s.nodes, node{id: nid, text: n.ID, topic: topic})
	}
	return s, nil
}

// Start reads the certificate files (a file that does not load fails
// Start) and starts the connection loop in the background. A server that
// cannot be reached is not a failure: it is retried, and logged.
func (s *Source) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return errors.New("opcua: already started")
	}
	f, err := s.cfg.loadFiles()
	if err != nil {
		return fmt.Errorf("opcua %q: %w", s.name, err)
	}
	s.cert, s.key, s.serverCert = f.cert, f.key, f.serverCert
	if s.cfg.Username != "" && s.cfg.SecurityPolicy == "None" {
		s.log.Warn("a password is sent to an OPC UA server over a channel without security; it is protected only if the server's user token policy encrypts it")
	}
	s.started = true
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel, s.done = cancel, make(chan struct{})
	go func() {
		defer close(s.done)
		s.run(runCtx)
	}()
	return nil
}

// Close stops the source: the value being handed to the pipelines gives up,
// the session is closed. It waits for that, or for ctx to end. It is safe
// to call more than once.
func (s *Source) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		started := s.started
		s.mu.Unlock()
		if !started {
			return
		}
		s.cancel()
		select {
		case <-s.done:
		case <-ctx.Done():
			s.closeErr = fmt.Errorf("opcua %q: close: %w", s.name, ctx.Err())
		}
	})
	return s.closeErr
}

// run connects, subscribes and forwards changes until ctx ends, reconnecting
// with backoff and jitter whenever the connection is lost.
func (s *Source) run(ctx context.Context) {
	b := backoff{cfg: s.cfg.Reconnect}
	for {
		connected, err := s.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if connected {
			b.reset()
		}
		wait := b.next()
		if connected {
			s.log.Warn("OPC UA connection lost; reconnecting", "error", err, "retry_in", wait)
		} else {
			s.log.Warn("OPC UA server not reachable; retrying", "error", err, "retry_in", wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// session runs one connection: connect, subscribe, then forward changes
// until the connection fails. connected reports whether the subscription
// was made.
func (s *Source) session(ctx context.Context) (connected bool, err error) {
	states := make(chan opcua.ConnState, 16)
	notifs := make(chan *opcua.PublishNotificationData)
	c, err := s.connect(ctx, states, notifs)
	if err != nil {
		return false, err
	}
	defer func() {
		// The session is closed even as ctx ends; briefly, as the server
		// may be gone.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		c.Close(cctx)
	}()
	s.log.Info("OPC UA subscription made", "nodes", len(s.nodes), "publishing_interval", s.cfg.PublishingInterval)

	keepAlive := time.NewTicker(s.cfg.KeepAlive)
	defer keepAlive.Stop()
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case st := <-states:
			if st == opcua.Disconnected || st == opcua.Closed {
				return true, fmt.Errorf("connection %s", st)
			}
		case n := <-notifs:
			if n.Error != nil {
				return true, fmt.Errorf("subscription: %w", n.Error)
			}
			if err := s.notification(ctx, n.Value); err != nil {
				return true, err
			}
		case <-keepAlive.C:
			if err := s.ping(ctx, c); err != nil {
				return true, fmt.Errorf("keep-alive read: %w", err)
			}
		}
	}
}

// connect opens a session with the security the config asks for and
// subscribes to the nodes.
func (s *Source) connect(ctx context.Context, states chan opcua.ConnState, notifs chan *opcua.PublishNotificationData) (*opcua.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	eps, err := opcua.GetEndpoints(ctx, s.cfg.Endpoint, opcua.DialTimeout(s.cfg.RequestTimeout), opcua.RequestTimeout(s.cfg.RequestTimeout))
	if err != nil {
		return nil, fmt.Errorf("get endpoints: %w", err)
	}
	ep, err := opcua.SelectEndpoint(eps, s.cfg.SecurityPolicy, ua.MessageSecurityModeFromString(s.cfg.SecurityMode))
	if err != nil {
		return nil, fmt.Errorf("the server offers no endpoint with security policy %s and mode %s: %w", s.cfg.SecurityPolicy, s.cfg.SecurityMode, err)
	}
	if s.serverCert != nil && string(ep.ServerCertificate) != string(s.serverCert) {
		return nil, fmt.Errorf("the server's certificate is not the one in server_cert_file %s", s.cfg.ServerCertFile)
	}
	authType := ua.UserTokenTypeAnonymous
	opts := []opcua.Option{
		opcua.SecurityPolicy(s.cfg.SecurityPolicy),
		opcua.SecurityModeString(s.cfg.SecurityMode),
		opcua.AutoReconnect(false), // run reconnects, with backoff and jitter
		opcua.RequestTimeout(s.cfg.RequestTimeout),
		opcua.DialTimeout(s.cfg.RequestTimeout),
		opcua.StateChangedCh(states),
		opcua.ApplicationName("sluice"),
		opcua.SessionName("sluice " + s.name),
	}
	if s.cert != nil {
		opts = append(opts, opcua.Certificate(s.cert), opcua.PrivateKey(s.key))
	}
	if s.cfg.Username != "" {
		authType = ua.UserTokenTypeUserName
		opts = append(opts, opcua.AuthUsername(s.cfg.Username, s.cfg.Password.Reveal()))
	} else {
		opts = append(opts, opcua.AuthAnonymous())
	}
	opts = append(opts, opcua.SecurityFromEndpoint(ep, authType))
	c, err := opcua.NewClient(s.cfg.Endpoint, opts...)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if err := c.Connect(ctx); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			c.Close(context.WithoutCancel(ctx))
		}
	}()
	sub, err := c.Subscribe(ctx, &opcua.SubscriptionParameters{Interval: s.cfg.PublishingInterval}, notifs)
	if err != nil {
		return nil, fmt.Errorf("create subscription: %w", err)
	}
	items := make([]*ua.MonitoredItemCreateRequest, len(s.nodes))
	for i, n := range s.nodes {
		req := opcua.NewMonitoredItemCreateRequestWithDefaults(n.id, ua.AttributeIDValue, uint32(i))
		req.RequestedParameters.SamplingInterval = float64(s.cfg.SamplingInterval) / float64(time.Millisecond)
		req.RequestedParameters.QueueSize = s.cfg.QueueSize
		items[i] = req
	}
	res, err := sub.Monitor(ctx, ua.TimestampsToReturnBoth, items...)
	if err != nil {
		return nil, fmt.Errorf("create monitored items: %w", err)
	}
	monitored := 0
	for i, r := range res.Results {
		if i >= len(s.nodes) {
			break
		}
		if r.StatusCode != ua.StatusOK {
			s.log.Warn("OPC UA node not monitored", "node", s.nodes[i].text, "status", statusName(r.StatusCode))
			continue
		}
		monitored++
	}
	if monitored == 0 {
		return nil, errors.New("the server monitors none of the nodes")
	}
	ok = true
	return c, nil
}

// serverTime is the server's clock (Server_ServerStatus_CurrentTime), read
// to check the connection.
var serverTime = ua.NewNumericNodeID(0, id.Server_ServerStatus_CurrentTime)

// ping reads the server's clock.
func (s *Source) ping(ctx context.Context, c *opcua.Client) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	_, err := c.Read(ctx, &ua.ReadRequest{
		NodesToRead:        []*ua.ReadValueID{{NodeID: serverTime, AttributeID: ua.AttributeIDValue}},
		TimestampsToReturn: ua.TimestampsToReturnNeither,
	})
	return err
}

// notification hands the data changes of one publish to the pipelines, one
// message per change, in the order the server sent them.
func (s *Source) notification(ctx context.Context, v any) error {
	switch n := v.(type) {
	case *ua.DataChangeNotification:
		for _, item := range n.MonitoredItems {
			if item == nil || int(item.ClientHandle) >= len(s.nodes) {
				continue
			}
			nd := s.nodes[item.ClientHandle]
			msg := &sluice.Message{
				Topic:       nd.topic,
				Payload:     encode(nd.text, item.Value),
				QoS:         1,
				ClientID:    s.name,
				ContentType: "application/json",
				Received:    s.now(),
			}
			if err := s.deliver(ctx, msg); err != nil {
				return err
			}
		}
	case *ua.StatusChangeNotification:
		// The server ended the subscription (its lifetime ran out).
		if n.Status != ua.StatusOK {
			return fmt.Errorf("the server changed the subscription's status to %s", statusName(n.Status))
		}
	}
	return nil
}

// deliver hands msg to the pipelines, waiting while a journal is full, and
// trying again after any other failure: the server cannot be asked to send
// a change again, so it is not given up until sluice stops.
func (s *Source) deliver(ctx context.Context, msg *sluice.Message) error {
	s.metrics.MessagesIn.WithLabelValues(s.name, "1").Inc()
	s.metrics.BytesIn.WithLabelValues(s.name).Add(float64(len(msg.Payload)))
	b := backoff{cfg: s.cfg.Reconnect}
	for {
		err := s.handler.Handle(ctx, msg, false)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := b.next()
		s.rlog.Error("handle", "OPC UA value not accepted; trying again", "topic", msg.Topic, "error", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// backoff doubles from Initial to Max; each wait is drawn from the upper
// half of the current step, so many sluices do not reconnect in step.
type backoff struct {
	cfg  Backoff
	step time.Duration
}

func (b *backoff) next() time.Duration {
	if b.step == 0 {
		b.step = b.cfg.Initial
	} else {
		b.step = min(2*b.step, b.cfg.Max)
	}
	half := b.step / 2
	return half + rand.N(half+1)
}

func (b *backoff) reset() { b.step = 0 }

// files are the certificates and the key a config names.
type files struct {
	cert, serverCert []byte // DER
	key              *rsa.PrivateKey
}

// loadFiles reads the certificates and the key.
func (c *Config) loadFiles() (files, error) {
	var f files
	var err error
	if c.CertFile != "" {
		if f.cert, err = loadCert(c.CertFile); err != nil {
			return f, fmt.Errorf("cert_file: %w", err)
		}
		if f.key, err = loadKey(c.KeyFile); err != nil {
			return f, fmt.Errorf("key_file: %w", err)
		}
	}
	if c.ServerCertFile != "" {
		if f.serverCert, err = loadCert(c.ServerCertFile); err != nil {
			return f, fmt.Errorf("server_cert_file: %w", err)
		}
	}
	return f, nil
}

// CheckFiles reads the certificate and key files, as Start would, and
// reports what does not load (for sluice validate).
func (c *Config) CheckFiles() error {
	if _, err := c.loadFiles(); err != nil {
		return fmt.Errorf("opcua: %w", err)
	}
	return nil
}

// loadCert reads a PEM or DER certificate and returns it as DER.
func loadCert(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: a PEM %s, not a CERTIFICATE", path, block.Type)
		}
		data = block.Bytes
	}
	if _, err := x509.ParseCertificate(data); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}

// loadKey reads an RSA private key, PEM (PKCS #1 or #8) or DER.
func loadKey(path string) (*rsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if block, _ := pem.Decode(data); block != nil {
		data = block.Bytes
	}
	if k, err := x509.ParsePKCS1PrivateKey(data); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: not an RSA private key (PEM or DER, PKCS #1 or #8)", path)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: a %T; OPC UA wants an RSA key", path, k)
	}
	return rk, nil
}
