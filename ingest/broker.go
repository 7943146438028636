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
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/listeners"
	"go.etcd.io/bbolt"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/metrics"
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

// Config is the broker section of the configuration.
type Config struct {
	Listeners []ListenerConfig `yaml:"listeners"`
	// Persistence keeps the broker's state (sessions, subscriptions,
	// retained messages, QoS 1/2 messages in flight to subscribers) in
	// <data_dir>/broker.db, so it survives a restart (default true).
	Persistence *bool `yaml:"persistence"`

	// StatePath is where the state is kept; set by the caller from data_dir.
	StatePath string `yaml:"-"`
}

// ListenerConfig is one network listener.
type ListenerConfig struct {
	// Name identifies the listener in logs and metrics.
	Name string `yaml:"name"`
	// Type is the transport: tcp.
	Type string `yaml:"type"`
	// Address is host:port to bind; port 0 picks a free port.
	Address string `yaml:"address"`
}

// DefaultAddress is where the broker listens when no listener is configured:
// loopback only, as mosquitto 2 does, until an operator opens it up.
const DefaultAddress = "127.0.0.1:1883"

// SetDefaults fills in what the operator left out.
func (c *Config) SetDefaults() {
	if len(c.Listeners) == 0 {
		c.Listeners = []ListenerConfig{{Name: "tcp", Type: "tcp", Address: DefaultAddress}}
	}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if l.Type == "" {
			l.Type = "tcp"
		}
		if l.Name == "" {
			l.Name = fmt.Sprintf("%s-%d", l.Type, i)
		}
	}
}

// Validate checks the broker section.
func (c *Config) Validate() error {
	var p conf.Problems
	names := map[string]bool{}
	for i, l := range c.Listeners {
		at := fmt.Sprintf("listeners[%d]", i)
		if names[l.Name] {
			p.Addf(at+".name", "listener name %q is used twice", l.Name)
		}
		names[l.Name] = true
		if l.Type != "tcp" {
			p.Addf(at+".type", "unknown listener type %q (want tcp)", l.Type)
		}
		if l.Address == "" {
			p.Missing(at + ".address")
		} else if _, _, err := net.SplitHostPort(l.Address); err != nil {
			p.Addf(at+".address", "%q is not host:port", l.Address)
		}
	}
	return p.Err()
}

// Broker is the embedded MQTT broker.
type Broker struct {
	cfg     Config
	handler Handler
	log     *slog.Logger
	metrics *metrics.Metrics
	server  *mqtt.Server

	// ctx ends when publishes still waiting in the hook must give up.
	ctx    context.Context
	cancel context.CancelFunc

	// mu guards closing against new publishes entering the hook.
	mu       sync.RWMutex
	closing  bool
	inflight sync.WaitGroup

	closed atomic.Bool
}

// New returns a broker that hands publishes to h. It does no I/O; Start
// binds the listeners.
func New(cfg Config, h Handler, log *slog.Logger, m *metrics.Metrics) *Broker {
	cfg.SetDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{cfg: cfg, handler: h, log: log, metrics: m, ctx: ctx, cancel: cancel}
	caps := mqtt.NewDefaultServerCapabilities()
	// mochi copies the PUBLISH's properties (user properties included) onto
	// its PUBACK/PUBREC, and then also writes a QoS code (0x01) as the
	// reason code, which is not a valid PUBACK reason [MQTT-3.4.2.1]:
	// strict clients reject it. Acks carry no inherited properties.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	b.server = mqtt.New(&mqtt.Options{
		Capabilities: caps,
		InlineClient: true, // sinks publish alerts through the broker
		Logger:       slog.New(quietHandler{log.Handler()}).With("component", "broker"),
	})
	return b
}

// Start binds every listener and starts serving. A listener that cannot
// bind (address in use) fails Start.
func (b *Broker) Start(ctx context.Context) error {
	if err := b.server.AddHook(&hook{b: b}, nil); err != nil {
		return fmt.Errorf("broker: add hook: %w", err)
	}
	if b.cfg.StatePath != "" && (b.cfg.Persistence == nil || *b.cfg.Persistence) {
		if err := os.MkdirAll(filepath.Dir(b.cfg.StatePath), 0o755); err != nil {
			return fmt.Errorf("broker: state folder: %w", err)
		}
		// bbolt: one file, pure Go, crash-safe transactions, little memory
		// (badger and pebble trade memory for write speed the broker's
		// state does not need). Like sluice's default journal mode, it
		// survives a crash of the process; NoSync spares an fsync per
		// stored packet.
		store := &boltStore{Hook: &bolt.Hook{}}
		err := b.server.AddHook(store, &bolt.Options{Path: b.cfg.StatePath,
			Options: &bbolt.Options{Timeout: 5 * time.Second, NoSync: true}})
		if err != nil {
			return fmt.Errorf("broker: open state %s: %w", b.cfg.StatePath, err)
		}
	}
	for _, l := range b.cfg.Listeners {
		tcp := listeners.NewTCP(listeners.Config{ID: l.Name, Address: l.Address})
		if err := b.server.AddListener(tcp); err != nil {
			b.server.Listeners.CloseAll(func(string) {})
			return fmt.Errorf("broker: listener %q on %s: %w", l.Name, l.Address, err)
		}
	}
	if err := b.server.Serve(); err != nil {
		return fmt.Errorf("broker: serve: %w", err)
	}
	return nil
}

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

// quietHandler passes mochi's records at warning level and above, and
// everything when debug logging is on: mochi's info lines repeat what
// sluice logs itself.
type quietHandler struct{ slog.Handler }

func (h quietHandler) Enabled(ctx context.Context, l slog.Level) bool {
	if h.Handler.Enabled(ctx, slog.LevelDebug) {
		return true
	}
	return l >= slog.LevelWarn && h.Handler.Enabled(ctx, l)
}

func (h quietHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return quietHandler{h.Handler.WithAttrs(a)}
}

func (h quietHandler) WithGroup(g string) slog.Handler { return quietHandler{h.Handler.WithGroup(g)} }
