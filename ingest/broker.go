// Package ingest runs the embedded MQTT broker (mochi-mqtt) and hands every
// PUBLISH to the pipelines from mochi's OnPublish hook, which runs on the
// client's read goroutine before the broker sends PUBACK or PUBREC. That makes
// the hook the place where a message becomes safe and where backpressure
// happens: while the hook waits, that one client is slowed over TCP.
//
// This is the only package that imports mochi.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/ingest/auth"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/ratelog"
)

// Handler receives every PUBLISH a client sends, before it is acknowledged.
type Handler interface {
	// Handle takes msg and returns once it is safe (durable as configured);
	// the broker then acknowledges it. While there is no room it waits
	// (backpressure: that client is slowed), or, with refuse, returns
	// sluice.ErrBusy at once. It gives up when ctx ends. Any error means msg
	// was not accepted: it is not acknowledged.
	Handle(ctx context.Context, msg *sluice.Message, refuse bool) error
}

// Broker is the embedded MQTT broker.
type Broker struct {
	cfg     Config
	handler Handler
	log     *slog.Logger
	rlog    *ratelog.Logger
	metrics *metrics.Metrics
	server  *mqtt.Server

	// ctx ends when publishes still waiting in the hook must give up.
	ctx    context.Context
	cancel context.CancelFunc

	// mu guards closing against new publishes entering the hook.
	mu       sync.RWMutex
	closing  bool
	inflight sync.WaitGroup

	open      atomic.Int64 // connections, over all listeners
	passwords *auth.Verifier
	backoff   *auth.Backoff // nil when failed logins are not delayed
	acl       atomic.Pointer[auth.ACL]
	listeners map[string]*ListenerConfig

	closed atomic.Bool
}

// New returns a broker that hands publishes to h. It does no I/O; Start
// reads the auth and TLS files and binds the listeners.
func New(cfg Config, h Handler, log *slog.Logger, m *metrics.Metrics) *Broker {
	cfg.SetDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{cfg: cfg, handler: h, log: log, metrics: m, ctx: ctx, cancel: cancel,
		rlog: ratelog.New(log, 10*time.Second, nil), listeners: map[string]*ListenerConfig{}}
	for i := range b.cfg.Listeners {
		b.listeners[b.cfg.Listeners[i].Name] = &b.cfg.Listeners[i]
	}
	lim := cfg.Limits
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = uint32(lim.MaxPacketSize)
	caps.MaximumSessionExpiryInterval = uint32(lim.SessionExpiry / time.Second)
	caps.ReceiveMaximum = uint16(lim.MaxInflight)
	caps.MaximumInflight = uint16(lim.MaxQueued)
	caps.TopicAliasMaximum = uint16(lim.MaxTopicAliases)
	caps.MaximumClientWritesPending = maxPendingWrites
	// A message expires only when its publisher says so (MQTT 5 3.3.2.3.3).
	// mochi's default (a day) puts an expiry on every message it forwards,
	// and deletes retained messages a day after they were set.
	caps.MaximumMessageExpiryInterval = 0
	// mochi copies the PUBLISH's properties (user properties included) onto
	// its PUBACK/PUBREC, and then also writes a QoS code (0x01) as the
	// reason code, which is not a valid PUBACK reason [MQTT-3.4.2.1]:
	// strict clients reject it. Acks carry no inherited properties.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	b.server = mqtt.New(&mqtt.Options{
		Capabilities: caps,
		InlineClient: true, // sinks publish alerts through the broker
		Logger:       slog.New(newBrokerLog(log.Handler(), b.rlog)).With("component", "broker"),
		// mochi reads each client through a buffer of its own, on top of
		// the listener's packetReader, which already buffers the socket
		// and hands over whole packets: a small one saves memory per
		// connection and costs a copy, not a system call.
		ClientNetReadBufferSize: 512,
	})
	for _, l := range b.cfg.Listeners {
		m.SubDropped.WithLabelValues(l.Name)
		m.AuthDelayed.WithLabelValues(l.Name)
		for _, reason := range protocolReasonList() {
			m.ProtocolErrors.WithLabelValues(l.Name, reason)
		}
	}
	if fb := &b.cfg.Auth.FailureBackoff; fb.IsEnabled() {
		b.backoff = auth.NewBackoff(fb.schedule(), nil)
	}
	return b
}

// Start reads the password, ACL and TLS files, binds every listener and
// starts serving. A file that does not load, or a listener that cannot
// bind (address in use), fails Start.
func (b *Broker) Start(ctx context.Context) error {
	if err := b.loadAuth(); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	h := &hook{b: b}
	if err := b.server.AddHook(h, nil); err != nil {
		return fmt.Errorf("broker: add hook: %w", err)
	}
	if err := b.server.AddHook(&conformHook{b: b, ingest: h}, nil); err != nil {
		return fmt.Errorf("broker: add hook: %w", err)
	}
	if b.cfg.StatePath != "" && (b.cfg.Persistence == nil || *b.cfg.Persistence) {
		if err := os.MkdirAll(filepath.Dir(b.cfg.StatePath), 0o755); err != nil {
			return fmt.Errorf("broker: state folder: %w", err)
		}
		// One bbolt file, encrypted with a key (see stateStore).
		store := newStateStore(b.cfg.StatePath, b.cfg.StateKey, b.log.With("component", "broker-state"))
		store.fsync = b.cfg.StateSync
		store.current = b.server.Clients.Get
		if err := b.server.AddHook(store, nil); err != nil {
			return fmt.Errorf("broker: open state %s: %w", b.cfg.StatePath, err)
		}
	}
	for _, lc := range b.cfg.Listeners {
		l, err := newListener(b, lc)
		if err == nil {
			err = b.server.AddListener(l)
		}
		if err != nil {
			b.server.Listeners.CloseAll(func(string) {})
			return fmt.Errorf("broker: %w", &ListenerError{Name: lc.Name, Address: lc.Address, Err: err})
		}
	}
	if err := b.server.Serve(); err != nil {
		return fmt.Errorf("broker: serve: %w", err)
	}
	h.countRetained(b.server)
	b.logAccess()
	return nil
}

// logAccess says at start who can connect where, so that an open listener
// (or one nobody can use) is not a surprise.
func (b *Broker) logAccess() {
	for _, lc := range b.cfg.Listeners {
		addr := b.Addr(lc.Name)
		mtls := lc.TLS != nil && lc.TLS.ClientCAFile != ""
		switch {
		case lc.AllowAnonymous && IsLoopback(addr):
			b.log.Warn("anonymous access is enabled on this listener (loopback only)", "listener", lc.Name, "address", addr)
		case lc.AllowAnonymous:
			b.log.Warn("anonymous access is enabled on a listener open to the network", "listener", lc.Name, "address", addr)
		case b.passwords == nil && !mtls:
			b.log.Warn("no client can connect to this listener: anonymous access is off and there is neither a password file nor client certificates",
				"listener", lc.Name, "address", addr)
		}
	}
	if b.acl.Load() == nil {
		b.log.Info("no ACL file: connected clients may publish and subscribe to any topic")
	}
}

// loadAuth reads the password and ACL files.
func (b *Broker) loadAuth() error {
	pw, acl, err := b.cfg.loadAuth()
	if err != nil {
		return err
	}
	if pw != nil {
		if b.passwords == nil {
			b.passwords = auth.NewVerifier(pw)
		} else {
			b.passwords.Swap(pw)
		}
	}
	b.acl.Store(acl)
	return nil
}

func (c *Config) loadAuth() (*auth.Passwords, *auth.ACL, error) {
	var pw *auth.Passwords
	var acl *auth.ACL
	var err error
	if f := c.Auth.PasswordFile; f != "" {
		if pw, err = auth.LoadPasswords(f); err != nil {
			return nil, nil, fmt.Errorf("password file: %w", err)
		}
	}
	if f := c.Auth.ACLFile; f != "" {
		if acl, err = auth.LoadACL(f); err != nil {
			return nil, nil, fmt.Errorf("ACL file: %w", err)
		}
	}
	return pw, acl, nil
}

// ReloadAuth reads the password and ACL files again and, when both load,
// applies them: the ACL to every check from now on (connected clients
// included), the passwords to the next CONNECT. When either has a problem,
// nothing changes and the problem is returned and logged.
func (b *Broker) ReloadAuth() error {
	if err := b.loadAuth(); err != nil {
		b.log.Error("password and ACL files not reloaded; the previous ones stay", "error", err)
		return err
	}
	n := 0
	if acl := b.acl.Load(); acl != nil {
		n = acl.Len()
	}
	users := 0
	if b.passwords != nil {
		users = b.passwords.Passwords().Len()
	}
	b.log.Info("password and ACL files reloaded", "users", users, "acl_rules", n)
	return nil
}

// ListenerError is a listener that could not start (its address in use,
// say): the caller can point at the listener's configuration.
type ListenerError struct {
	Name, Address string
	Err           error
}

func (e *ListenerError) Error() string {
	return fmt.Sprintf("listener %q on %s: %v", e.Name, e.Address, e.Err)
}

func (e *ListenerError) Unwrap() error { return e.Err }

// CheckFiles loads the password, ACL and TLS files the configuration
// names, as Start would, and reports every problem (for sluice validate).
func (c *Config) CheckFiles() error {
	var errs []error
	if _, _, err := c.loadAuth(); err != nil {
		errs = append(errs, err)
	}
	for _, l := range c.Listeners {
		if l.TLS != nil {
			if _, err := newTLSFiles(l.Name, *l.TLS, slog.New(slog.DiscardHandler), nil); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// authView is what the hook needs to authenticate and authorize.
type authView struct {
	passwords *auth.Verifier
	backoff   *auth.Backoff // nil when failed logins are not delayed
	acl       *auth.ACL
}

func (b *Broker) auth() authView { return authView{passwords: b.passwords, acl: b.acl.Load()} }

// CanPublish reports whether the ACL in force lets user (with clientID)
// publish to topic: for ingest paths beside MQTT (HTTP, CoAP), so one ACL
// governs them all. Without an ACL file everything is allowed.
func (b *Broker) CanPublish(user, clientID, topic string) bool {
	acl := b.auth().acl
	return acl == nil || acl.CanPublish(user, clientID, topic)
}

func (b *Broker) listenerConfig(name string) *ListenerConfig { return b.listeners[name] }

// Addr returns the bound address of the named listener ("" if unknown), so
// a listener configured on port 0 can be found.
func (b *Broker) Addr(listener string) string {
	l, ok := b.server.Listeners.Get(listener)
	if !ok {
		return ""
	}
	return l.Address()
}

// Listeners lists the configured listener names.
func (b *Broker) Listeners() []string {
	names := make([]string, len(b.cfg.Listeners))
	for i, l := range b.cfg.Listeners {
		names[i] = l.Name
	}
	return names
}

// Publish publishes a message through the broker to its subscribers, as
// sluice itself (alerts). It does not go through the pipelines.
func (b *Broker) Publish(topic string, payload []byte, retain bool, qos byte) error {
	if b.closed.Load() {
		return errors.New("broker is closed")
	}
	return b.server.Publish(topic, payload, retain, qos)
}

// StopIngest stops accepting publishes and connections, then waits until
// every publish already in the hook has been handled and acknowledged, or
// ctx ends. Publishes still waiting then are given up: they are not
// acknowledged, so their clients keep them and send them again.
func (b *Broker) StopIngest(ctx context.Context) error {
	b.mu.Lock()
	b.closing = true
	b.mu.Unlock()
	done := make(chan struct{})
	go func() { b.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		b.cancel()
		<-done
		return fmt.Errorf("broker: publishes still waiting for their sinks were not acknowledged: %w", ctx.Err())
	}
}

// Close disconnects every client and closes the listeners. It is safe to
// call more than once.
func (b *Broker) Close(ctx context.Context) error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	b.mu.Lock()
	b.closing = true
	b.mu.Unlock()
	b.cancel()
	return b.server.Close()
}

// enter registers a publish entering the hook; false while closing.
func (b *Broker) enter() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closing {
		return false
	}
	b.inflight.Add(1)
	return true
}

func (b *Broker) isClosing() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.closing
}

// isSysTopic reports whether topic is a broker topic ($SYS), not telemetry.
func isSysTopic(topic string) bool { return strings.HasPrefix(topic, "$") }
