package pipelines

import (
	"context"
	"fmt"

	"github.com/sluicehq/sluice/ingest/coap"
	"github.com/sluicehq/sluice/ingest/httpin"
	"github.com/sluicehq/sluice/ingest/mqttsource"
	"github.com/sluicehq/sluice/ingest/opcua"
	"github.com/sluicehq/sluice/internal/conf"
)

// SourceConfig is one way into the pipelines beside the embedded broker's
// listeners. It has exactly one of its kinds.
type SourceConfig struct {
	// Name labels the source's metrics (as "listener") and logs; it must
	// differ from every other source's and broker listener's.
	Name string `yaml:"name"`
	// HTTP takes POST /v1/publish requests (ingest/httpin/README.md).
	HTTP *httpin.Config `yaml:"http"`
	// MQTT subscribes to another broker (ingest/mqttsource/README.md).
	MQTT *mqttsource.Config `yaml:"mqtt"`
	// CoAP takes POST/PUT over UDP or DTLS (ingest/coap/README.md).
	CoAP *coap.Config `yaml:"coap"`
	// OPCUA subscribes to an OPC UA server's nodes (ingest/opcua/README.md).
	OPCUA *opcua.Config `yaml:"opcua"`
}

// kinds lists the source kinds, for messages.
const kinds = "http, mqtt, coap, opcua"

// Kind is the source's kind: "http", or "" if none is set.
func (c *SourceConfig) Kind() string {
	switch {
	case c.HTTP != nil:
		return "http"
	case c.MQTT != nil:
		return "mqtt"
	case c.CoAP != nil:
		return "coap"
	case c.OPCUA != nil:
		return "opcua"
	}
	return ""
}

func (c *SourceConfig) setDefaults() {
	if c.HTTP != nil {
		c.HTTP.SetDefaults()
	}
	if c.MQTT != nil {
		c.MQTT.SetDefaults()
	}
	if c.CoAP != nil {
		c.CoAP.SetDefaults()
	}
	if c.OPCUA != nil {
		c.OPCUA.SetDefaults()
	}
}

func (c *SourceConfig) resolve(dir string) {
	if c.HTTP != nil {
		c.HTTP.Resolve(dir)
	}
	if c.MQTT != nil {
		c.MQTT.Resolve(dir)
	}
	if c.CoAP != nil {
		c.CoAP.Resolve(dir)
	}
	if c.OPCUA != nil {
		c.OPCUA.Resolve(dir)
	}
}

func (c *SourceConfig) validate() error {
	var p conf.Problems
	if c.Name == "" {
		p.Missing("name")
	}
	n := 0
	if c.HTTP != nil {
		n++
		p.Nest("http", c.HTTP.Validate())
	}
	if c.MQTT != nil {
		n++
		p.Nest("mqtt", c.MQTT.Validate())
	}
	if c.CoAP != nil {
		n++
		p.Nest("coap", c.CoAP.Validate())
	}
	if c.OPCUA != nil {
		n++
		p.Nest("opcua", c.OPCUA.Validate())
	}
	if n != 1 {
		p.Addf("name", "source %q: want exactly one of %s", c.Name, kinds)
	}
	return p.Err()
}

// CheckFiles reads every file the broker and the sources name (passwords,
// ACLs, certificates), so that validate finds what run would.
func (c *Config) CheckFiles() error {
	if err := c.Broker.CheckFiles(); err != nil {
		return err
	}
	for i := range c.Sources {
		if err := c.Sources[i].checkFiles(); err != nil {
			return err
		}
	}
	return nil
}

// checkFiles reads the files a source names (certificates), for validate.
func (c *SourceConfig) checkFiles() error {
	var err error
	switch {
	case c.HTTP != nil:
		err = c.HTTP.CheckFiles()
	case c.MQTT != nil:
		err = c.MQTT.CheckFiles()
	case c.CoAP != nil:
		err = c.CoAP.CheckFiles()
	case c.OPCUA != nil:
		err = c.OPCUA.CheckFiles()
	}
	if err != nil {
		return fmt.Errorf("source %q: %w", c.Name, err)
	}
	return nil
}

// source is a running way in: it hands what it takes to the Service.
type source interface {
	Start(ctx context.Context) error
	Close(ctx context.Context) error
}

// SourceAddr is the address a source listens on ("" for a source that
// does not listen, or an unknown name): to find a port picked at random.
func (s *Service) SourceAddr(name string) string {
	for i, src := range s.sources {
		if a, ok := src.(interface{ Addr() string }); ok && s.cfg.Sources[i].Name == name {
			return a.Addr()
		}
	}
	return ""
}

// newSource builds a configured source feeding s.
func (s *Service) newSource(sc SourceConfig) (source, error) {
	switch {
	case sc.HTTP != nil:
		return httpin.New(*sc.HTTP, httpin.Options{Name: sc.Name, Handler: s, ACL: s.broker,
			Logger: s.log, Metrics: s.metrics})
	case sc.MQTT != nil:
		return mqttsource.New(*sc.MQTT, mqttsource.Options{Name: sc.Name, Handler: s, Publisher: s.broker,
			Logger: s.log, Metrics: s.metrics})
	case sc.CoAP != nil:
		return coap.New(*sc.CoAP, coap.Options{Name: sc.Name, Handler: s, ACL: s.broker,
			Logger: s.log, Metrics: s.metrics})
	case sc.OPCUA != nil:
		return opcua.New(*sc.OPCUA, opcua.Options{Name: sc.Name, Handler: s, Logger: s.log, Metrics: s.metrics})
	}
	return nil, fmt.Errorf("source %q has no kind", sc.Name)
}
