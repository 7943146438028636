// Package mqttsource makes an external MQTT broker (Mosquitto, EMQX,
// HiveMQ, another sluice) a source of messages: sluice connects to it as a
// client, subscribes, and hands every message to the pipelines, the same
// way the embedded broker does. With inject, it also publishes them into the
// embedded broker: a bridge in.
//
// A QoS 1/2 message is acknowledged to the remote (PUBACK, PUBREC) only
// after the pipelines have made it durable. A message the pipelines do not
// take is not acknowledged: the connection is dropped and, the session
// being persistent, the remote sends it again after the reconnect. So
// nothing the remote handed over is lost, and some may arrive twice (at
// least once).
package mqttsource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/mqttclient"
	"github.com/sluicehq/sluice/internal/ratelog"
	"github.com/sluicehq/sluice/internal/tmpl"
)

// Publisher publishes into the embedded broker (for inject).
type Publisher interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
}

// Options are what a Source is given rather than configured with.
type Options struct {
	// Name names the source: the client id of its messages, the listener
	// label of its metrics, the default client id on the remote
	// (sluice-<hostname>-<name>).
	Name string
	// Handler takes the messages (the pipelines).
	Handler ingest.Handler
	// Publisher is the embedded broker; required with inject.
	Publisher Publisher
	Logger    *slog.Logger
	Metrics   *metrics.Metrics
}

// Source is a connection to a remote broker feeding the pipelines.
type Source struct {
	cfg     Config
	name    string
	handler ingest.Handler
	pub     Publisher
	log     *slog.Logger
	rlog    *ratelog.Logger
	metrics *metrics.Metrics
	topic   *tmpl.Template // nil: topics as received
	client  *mqttclient.Client
	now     func() time.Time

	// ctx is given to Handle: it ends when Close stops waiting.
	ctx    context.Context
	cancel context.CancelFunc

	closeOnce sync.Once
	closeErr  error
}

var qosLabel = [3]string{"0", "1", "2"}

// New returns a source for cfg. It does no I/O.
func New(cfg Config, o Options) (*Source, error) {
	cfg.SetDefaults()
	switch {
	case o.Name == "":
		return nil, errors.New("mqtt source: no name")
	case o.Handler == nil:
		return nil, fmt.Errorf("mqtt source %q: no handler", o.Name)
	case cfg.Inject && o.Publisher == nil:
		return nil, fmt.Errorf("mqtt source %q: inject needs the embedded broker", o.Name)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mqtt source %q: %w", o.Name, err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	log := o.Logger.With("source", o.Name)
	s := &Source{
		cfg: cfg, name: o.Name, handler: o.Handler, pub: o.Publisher, log: log,
		rlog: ratelog.New(log, 10*time.Second, nil), metrics: o.Metrics, now: time.Now,
	}
	if cfg.Topic != "" {
		s.topic, _ = parseTopic(cfg.Topic) // Validate checked it
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	subs := make([]mqttclient.Subscription, len(cfg.Subscriptions))
	for i, sub := range cfg.Subscriptions {
		subs[i] = mqttclient.Subscription{Filter: sub.Filter, QoS: byte(*sub.QoS)}
	}
	m := o.Metrics
	client, err := mqttclient.New(cfg.Config, mqttclient.Options{
		Name: o.Name, Logger: log, Subscriptions: subs, OnMessage: s.receive, ReceiveMaximum: uint16(cfg.ReceiveMaximum),
		OnUp: func(string) {
			m.Connections.WithLabelValues(o.Name).Set(1)
			m.Accepted.WithLabelValues(o.Name).Inc()
		},
		OnDown:    func(error) { m.Connections.WithLabelValues(o.Name).Set(0) },
		OnRefused: func(reason string) { m.Refused.WithLabelValues(o.Name, reason).Inc() },
	})
	if err != nil {
		return nil, fmt.Errorf("mqtt source %q: %w", o.Name, err)
	}
	s.client = client
	return s, nil
}

// Start reads the TLS files and starts connecting; the connection is kept
// up (reconnecting with backoff and jitter) until Close. A TLS file that
// does not load fails Start; a remote that cannot be reached does not: it
// is logged and tried again.
func (s *Source) Start(ctx context.Context) error {
	if err := s.cfg.CheckFiles(); err != nil {
		return fmt.Errorf("mqtt source %q: %w", s.name, err)
	}
	s.metrics.Connections.WithLabelValues(s.name).Set(0)
	if err := s.client.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("mqtt source %q: %w", s.name, ctx.Err())
		}
		s.log.Warn("remote broker not reachable yet; retrying in the background", "error", err)
	}
	return nil
}

// Protocol is the MQTT version spoken with the remote: "5" or "3.1.1".
func (s *Source) Protocol() string { return s.client.Protocol() }

// ClientID is the client id sluice has on the remote.
func (s *Source) ClientID() string { return s.client.ClientID() }

// Close stops taking messages, waits for those being handed to the
// pipelines (until ctx ends, when they are given up: not acknowledged, so
// the remote sends them again), lets the acknowledgements leave, and
// disconnects. The subscriptions stay in the remote's session (if it is
// persistent), so the remote keeps what arrives meanwhile for the next
// start. Close is safe to call more than once.
func (s *Source) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		stop := context.AfterFunc(ctx, s.cancel)
		defer stop()
		if err := s.client.Close(ctx); err != nil {
			s.closeErr = fmt.Errorf("mqtt source %q: %w", s.name, err)
		}
		s.cancel()
		s.metrics.Connections.WithLabelValues(s.name).Set(0)
	})
	return s.closeErr
}

// receive takes one message from the remote: into the pipelines, into the
// embedded broker (inject), and only then acknowledged.
func (s *Source) receive(m *mqttclient.Message) {
	s.metrics.MessagesIn.WithLabelValues(s.name, qosLabel[min(m.QoS, 2)]).Inc()
	s.metrics.BytesIn.WithLabelValues(s.name).Add(float64(len(m.Payload)))
	msg := &sluice.Message{
		Topic:          m.Topic,
		Payload:        m.Payload,
		QoS:            m.QoS,
		Retain:         m.Retain,
		ClientID:       s.name,
		ContentType:    m.ContentType,
		UserProperties: m.UserProperties,
		Received:       s.now(),
	}
	if s.topic != nil {
		topic, err := s.topic.Render(&sluice.Event{Stream: sluice.StreamRaw, Message: msg})
		if err != nil {
			// The message is taken under its own topic rather than lost
			// or refused for ever.
			s.rlog.Warn("topic", "topic template does not fit this topic; keeping the remote topic", "topic", m.Topic, "error", err)
		} else {
			msg.Topic = topic
		}
	}
	if err := s.handler.Handle(s.ctx, msg, false); err != nil {
		s.reject(m, "the pipelines did not take a message; the remote broker will send it again", msg.Topic, err)
		return
	}
	if s.cfg.Inject {
		if err := s.pub.Publish(msg.Topic, msg.Payload, msg.Retain, msg.QoS); err != nil {
			s.reject(m, "could not publish a message into the embedded broker; the remote broker will send it again", msg.Topic, err)
			return
		}
	}
	if err := m.Ack(); err != nil {
		s.log.Debug("acknowledgement not sent; the remote broker will send the message again", "topic", msg.Topic, "error", err)
	}
}

func (s *Source) reject(m *mqttclient.Message, what, topic string, err error) {
	m.Reject(err)
	if s.ctx.Err() == nil {
		s.rlog.Warn("reject", what, "topic", topic, "error", err)
	}
}
