package mqttsource

import (
	"fmt"
	"strings"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/mqttclient"
	"github.com/sluicehq/sluice/internal/tmpl"
)

// Config configures an MQTT source: the remote broker and session
// (url, client_id, username, password, tls, protocol, clean_start,
// session_expiry, keep_alive, connect_timeout, ack_timeout, reconnect: see
// mqttclient.Config), what to subscribe to, and what to do with what
// arrives.
type Config struct {
	mqttclient.Config `yaml:",inline"`
	// Subscriptions are the topic filters subscribed to on the remote, at
	// every connection. A filter may be a shared subscription,
	// $share/<group>/<filter>: the remote hands each message to one member
	// of the group, so several sluice instances split the stream.
	Subscriptions []Subscription `yaml:"subscriptions"`
	// Topic renames incoming topics: a template with {topic} (the topic on
	// the remote), {N} (its level N, from 0) and {client_id} (the source's
	// name), e.g. "site1/{topic}" or "plant/{1}/{3}/telemetry". Default:
	// the topic as it is on the remote.
	Topic string `yaml:"topic"`
	// Inject also publishes each message, under its (renamed) topic, into
	// sluice's embedded broker, so local subscribers receive it: a bridge
	// in. Default false: the messages only go to the pipelines.
	Inject bool `yaml:"inject"`
	// ReceiveMaximum, when set, is announced to the remote (MQTT 5): the
	// most QoS 1/2 messages it sends before sluice acknowledges them.
	// Unset, the remote may send up to 65535 (sluice acknowledges each
	// once it is durable, and slows the connection while the pipelines
	// are full). Leave it unset with mochi-based brokers (sluice's own
	// included), which strand messages once a small receive maximum is
	// reached.
	ReceiveMaximum int `yaml:"receive_maximum"`
}

// Subscription is one topic filter on the remote.
type Subscription struct {
	Filter string `yaml:"filter"`
	// QoS is the most the remote delivers at (0, 1 or 2; default 1). At
	// QoS 0 the remote does not wait for sluice: what is lost in transit
	// or refused is gone.
	QoS *int `yaml:"qos"`
}

// SetDefaults fills in what the operator left out.
func (c *Config) SetDefaults() {
	c.Config.SetDefaults()
	for i := range c.Subscriptions {
		if c.Subscriptions[i].QoS == nil {
			one := 1
			c.Subscriptions[i].QoS = &one
		}
	}
}

// Validate checks the configuration (after SetDefaults); keys are relative
// to the source block.
func (c *Config) Validate() error {
	var p conf.Problems
	p.Nest("", c.Config.Validate())
	if len(c.Subscriptions) == 0 {
		p.Missing("subscriptions")
	}
	seen := map[string]bool{}
	for i, s := range c.Subscriptions {
		at := fmt.Sprintf("subscriptions[%d]", i)
		switch {
		case s.Filter == "":
			p.Missing(at + ".filter")
		case seen[s.Filter]:
			p.Addf(at+".filter", "%q is subscribed twice", s.Filter)
		default:
			if err := mqttclient.ValidFilter(s.Filter); err != nil {
				p.Addf(at+".filter", "%v", err)
			}
		}
		seen[s.Filter] = true
		if s.QoS != nil && (*s.QoS < 0 || *s.QoS > 2) {
			p.Addf(at+".qos", "%d: want 0, 1 or 2", *s.QoS)
		}
	}
	if c.ReceiveMaximum < 0 || c.ReceiveMaximum > 65535 {
		p.Addf("receive_maximum", "%d: want 1 to 65535", c.ReceiveMaximum)
	}
	if c.Topic != "" {
		if _, err := parseTopic(c.Topic); err != nil {
			p.Addf("topic", "%v", err)
		}
	}
	return p.Err()
}

// parseTopic parses the topic template and checks that it names only
// what an incoming message has, and makes a valid topic.
func parseTopic(src string) (*tmpl.Template, error) {
	t, err := tmpl.Parse(src)
	if err != nil {
		return nil, err
	}
	// A topic deep enough for every {N}: only a name the message lacks
	// can fail.
	sample := &sluice.Event{Stream: sluice.StreamRaw, Message: &sluice.Message{
		Topic: strings.Repeat("x/", 255) + "x", ClientID: "source"}}
	out, err := t.Render(sample)
	if err != nil {
		return nil, fmt.Errorf("%v (a template here has {topic}, {client_id} and {N})", err)
	}
	if err := mqttclient.ValidTopic(out); err != nil {
		return nil, fmt.Errorf("template %q makes no valid topic: %v", src, err)
	}
	return t, nil
}
