// Package mqtt is the MQTT sink: it publishes events (usually alerts) to MQTT
// topics through sluice's embedded broker, so dashboards, operators' phones
// and devices subscribed to alert topics receive them.
//
// With a remote block it publishes to another broker instead: a bridge out
// (an edge sluice forwarding to a cloud broker). A write then returns only
// once the remote acknowledged every QoS 1/2 message, so the journal keeps
// what the remote does not have yet and sends it when the link is back.
package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/mqttclient"
	"github.com/sluicehq/sluice/internal/tmpl"
)

// Config configures an MQTT sink.
type Config struct {
	// Topic is a template for the topic published to, e.g.
	// "alerts/{site}/{device}/{rule}". Default "sluice/alerts/{rule}/{device}"
	// for alerts and "sluice/records/{rule}/{topic}" for records.
	Topic string `yaml:"topic"`
	// QoS of the published messages (0, 1 or 2; default 1).
	QoS *int `yaml:"qos"`
	// Retain publishes retained messages, so a subscriber that comes
	// later sees the last one per topic.
	Retain bool `yaml:"retain"`
	// Remote, when set, publishes to this remote broker instead of the
	// embedded one (a bridge out). Unset, the sink publishes through the
	// embedded broker.
	Remote *mqttclient.Config `yaml:"remote"`
}

// SetDefaults fills in what the operator left out.
func (c *Config) SetDefaults(stream sluice.Stream) {
	if c.Topic == "" {
		c.Topic = "sluice/alerts/{rule}/{device}"
		if stream != sluice.StreamAlerts {
			c.Topic = "sluice/" + stream.String() + "/{topic}"
		}
	}
	if c.QoS == nil {
		one := 1
		c.QoS = &one
	}
	if c.Remote != nil {
		c.Remote.SetDefaults()
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var p conf.Problems
	if t, err := tmpl.Parse(c.Topic); err != nil {
		p.Addf("topic", "%v", err)
	} else if t.Static() {
		if err := mqttclient.ValidTopic(c.Topic); err != nil {
			p.Addf("topic", "%v", err)
		}
	}
	if c.QoS != nil && (*c.QoS < 0 || *c.QoS > 2) {
		p.Addf("qos", "%d: want 0, 1 or 2", *c.QoS)
	}
	if c.Remote != nil {
		p.Nest("remote", c.Remote.Validate())
	}
	return p.Err()
}

// Publisher publishes to MQTT subscribers: the embedded broker.
type Publisher interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
}

// Sink publishes events.
type Sink struct {
	cfg   Config
	topic *tmpl.Template
	pub   Publisher
	// remote is the connection to the remote broker (remote mode);
	// remoteErr why there is none.
	remote    *mqttclient.Client
	remoteErr error
}

// Option gives a sink what it is not configured with.
type Option func(*options)

type options struct {
	name string
	log  *slog.Logger
}

// WithName names the sink: in the default client id of remote mode
// (sluice-<hostname>-<name>).
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithLogger is where remote mode logs its connection (connects, losses,
// the fallback to MQTT 3.1.1). Default: nowhere.
func WithLogger(log *slog.Logger) Option { return func(o *options) { o.log = log } }

// New returns a sink publishing through pub or, with cfg.Remote, to the
// remote broker (pub is then unused). It does no I/O.
func New(cfg Config, stream sluice.Stream, pub Publisher, opts ...Option) *Sink {
	cfg.SetDefaults(stream)
	s := &Sink{cfg: cfg, topic: tmpl.MustParse(cfg.Topic), pub: pub}
	if cfg.Remote != nil {
		var o options
		for _, opt := range opts {
			opt(&o)
		}
		s.remote, s.remoteErr = mqttclient.New(*cfg.Remote, mqttclient.Options{Name: o.name, Logger: o.log})
	}
	return s
}

// Connect does nothing for the embedded broker, which is always there. In
// remote mode it starts connecting (and keeps the connection up until
// Close), and returns the first attempt's error: the events wait in the
// journal until the remote is reachable.
func (s *Sink) Connect(ctx context.Context) error {
	if s.cfg.Remote == nil {
		return nil
	}
	if s.remoteErr != nil {
		return s.remoteErr
	}
	return s.remote.Start(ctx)
}

// Write publishes each event. The embedded broker delivers to subscribers
// in memory, so a publish fails only when sluice is shutting down
// (retryable) or the event cannot be rendered (permanent). In remote mode
// see writeRemote.
func (s *Sink) Write(ctx context.Context, batch []sluice.Event) error {
	if s.cfg.Remote != nil {
		return s.writeRemote(ctx, batch)
	}
	bad := map[int]error{}
	for i := range batch {
		e := &batch[i]
		topic, err := s.topic.Render(e)
		if err != nil {
			bad[i] = sluice.Permanent(err)
			continue
		}
		payload, err := e.Encode()
		if err != nil {
			bad[i] = sluice.Permanent(err)
			continue
		}
		if err := s.pub.Publish(topic, payload, s.cfg.Retain, byte(*s.cfg.QoS)); err != nil {
			bad[i] = sluice.Retryable(fmt.Errorf("publish to %q: %w", topic, err), 0)
		}
	}
	if len(bad) > 0 {
		return &sluice.BatchError{Errs: bad}
	}
	return nil
}

// Close disconnects from the remote broker; the embedded broker is closed
// by its owner.
func (s *Sink) Close(ctx context.Context) error {
	if s.remote == nil {
		return nil
	}
	return s.remote.Close(ctx)
}

// writeRemote publishes the batch to the remote broker and returns once the
// remote acknowledged every QoS 1/2 message (QoS 0: once written), so the
// journal moves only past what the remote has.
//
// Order per topic is kept across failures. Messages to one topic are
// published one after the other; when one fails and will be retried (the
// connection was lost, the remote is over quota), the ones after it on its
// topic are reported failed too, even if the remote already took some, and
// a *sluice.BatchError names them. The writer retries exactly those, in
// batch order, after the reconnect: the remote may see a message twice, but
// never one before an earlier one it has not seen. Other topics' messages
// that were acknowledged are not sent again. A message the remote refuses
// for good (not authorized for the topic, too large) is permanent and goes
// to the dead letters.
func (s *Sink) writeRemote(ctx context.Context, batch []sluice.Event) error {
	if s.remoteErr != nil {
		return sluice.Retryable(s.remoteErr, 0) // Validate rules it out
	}
	bad := map[int]error{}
	msgs := make([]*mqttclient.Outgoing, 0, len(batch))
	index := make([]int, 0, len(batch)) // msgs[k] is batch[index[k]]
	for i := range batch {
		e := &batch[i]
		topic, err := s.topic.Render(e)
		if err == nil {
			err = mqttclient.ValidTopic(topic)
		}
		if err != nil {
			bad[i] = sluice.Permanent(err)
			continue
		}
		payload, err := e.Encode()
		if err != nil {
			bad[i] = sluice.Permanent(err)
			continue
		}
		m := &mqttclient.Outgoing{Topic: topic, Payload: payload, QoS: byte(*s.cfg.QoS), Retain: s.cfg.Retain}
		if e.Stream == sluice.StreamRaw {
			// The original message, with its MQTT 5 properties.
			m.ContentType, m.UserProperties = e.Message.ContentType, e.Message.UserProperties
		} else {
			m.ContentType = "application/json"
		}
		msgs = append(msgs, m)
		index = append(index, i)
	}
	if len(msgs) == 0 && len(bad) == 0 {
		return nil
	}
	retryable := 0
	var first error
	for k, err := range s.remote.Publish(ctx, msgs) {
		switch {
		case err == nil:
		case mqttclient.IsPermanent(err):
			bad[index[k]] = sluice.Permanent(err)
		default:
			if first == nil {
				first = err
			}
			retryable++
			bad[index[k]] = sluice.Retryable(err, 0)
		}
	}
	switch {
	case len(bad) == 0:
		return nil
	case retryable == len(batch) && errors.Is(first, mqttclient.ErrNotConnected):
		return sluice.Retryable(fmt.Errorf("remote %s: %w", s.cfg.Remote.URL, first), 0)
	}
	return &sluice.BatchError{Errs: bad}
}
