// Package mqtt is the MQTT sink: it publishes events (usually alerts) to MQTT
// topics through sluice's embedded broker, so dashboards, operators' phones
// and devices subscribed to alert topics receive them.
package mqtt

import (
	"context"
	"fmt"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/conf"
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
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var p conf.Problems
	if _, err := tmpl.Parse(c.Topic); err != nil {
		p.Addf("topic", "%v", err)
	}
	if c.QoS != nil && (*c.QoS < 0 || *c.QoS > 2) {
		p.Addf("qos", "%d: want 0, 1 or 2", *c.QoS)
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
}

// New returns a sink publishing through pub.
func New(cfg Config, stream sluice.Stream, pub Publisher) *Sink {
	cfg.SetDefaults(stream)
	return &Sink{cfg: cfg, topic: tmpl.MustParse(cfg.Topic), pub: pub}
}

// Connect does nothing: the embedded broker is always there.
func (s *Sink) Connect(ctx context.Context) error { return nil }

// Write publishes each event. The broker delivers to subscribers in memory,
// so a publish fails only when sluice is shutting down (retryable) or the
// event cannot be rendered (permanent).
func (s *Sink) Write(ctx context.Context, batch []sluice.Event) error {
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

// Close does nothing; the broker is closed by its owner.
func (s *Sink) Close(ctx context.Context) error { return nil }
