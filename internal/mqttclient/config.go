// Package mqttclient keeps a connection to a remote MQTT broker for the
// parts of sluice that talk to one: the MQTT sink in remote mode (bridge
// out) and the MQTT source (an external broker, and bridge in).
//
// A Client connects over TCP, TLS or WebSocket, speaks MQTT 5 (paho.golang)
// and, when the remote refuses MQTT 5, MQTT 3.1.1 (paho.mqtt.golang); it
// keeps one session across reconnects, connects again after a lost
// connection with exponential backoff and jitter, and never lets a password
// into a log line or an error.
//
// Publishing returns only when the remote acknowledged each QoS 1/2 message
// (PUBACK, PUBCOMP), and keeps the order of messages on the same topic.
// Receiving hands each message to a callback, in order; the callback
// acknowledges it (Message.Ack) only once it is safe, or rejects it
// (Message.Reject), which drops the connection so that the remote sends it
// again on the next one.
package mqttclient

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/secret"
)

// Protocol versions accepted in configuration.
const (
	ProtocolAuto = "auto" // MQTT 5, falling back to 3.1.1 when the remote refuses 5
	Protocol5    = "5"
	Protocol311  = "3.1.1"
)

// Config says how to reach a remote broker and which session to keep there.
type Config struct {
	// URL of the remote broker: mqtt://host:1883 (TCP), mqtts://host:8883
	// (TLS), ws://host:80/mqtt or wss://host:443/mqtt (WebSocket). tcp://,
	// ssl:// and tls:// are accepted as aliases. The port defaults to 1883,
	// 8883, 80 and 443. Credentials go in username and password, not here.
	URL string `yaml:"url"`
	// ClientID identifies sluice's session on the remote. Every sluice
	// instance needs its own (two connections with one client id throw
	// each other out). Default: sluice-<hostname>-<name>.
	ClientID string `yaml:"client_id"`
	// Username and Password authenticate to the remote. Send a password
	// over TLS only.
	Username string        `yaml:"username"`
	Password secret.String `yaml:"password"`
	// TLS configures what a mqtts:// or wss:// connection trusts and
	// presents; without it the system's roots are trusted.
	TLS *secret.TLS `yaml:"tls"`
	// Protocol is auto (the default: MQTT 5, and 3.1.1 from the first time
	// the remote refuses 5), 5, or 3.1.1.
	Protocol string `yaml:"protocol"`
	// CleanStart starts a new session at every connection. The default,
	// false, keeps the session across reconnects for SessionExpiry: the
	// remote keeps subscriptions and the messages not yet acknowledged, and
	// sends them again after a reconnect.
	CleanStart bool `yaml:"clean_start"`
	// SessionExpiry is how long the remote keeps the session after the
	// connection closes (default 1h; 0 ends it with the connection). MQTT
	// 3.1.1 has no expiry: a session that is not clean lasts until the
	// remote drops it.
	SessionExpiry *time.Duration `yaml:"session_expiry"`
	// KeepAlive is the longest silence on the connection before a ping
	// (default 30s; a lost connection is noticed within 1.5 of it).
	KeepAlive time.Duration `yaml:"keep_alive"`
	// ConnectTimeout bounds one connection attempt: dial, TLS and CONNACK
	// (default 10s).
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// AckTimeout bounds the wait for the remote's acknowledgement of one
	// publish or subscribe on a connection that otherwise looks alive
	// (default 60s).
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// Reconnect is the delay between connection attempts: it doubles from
	// Initial up to Max, with jitter.
	Reconnect Backoff `yaml:"reconnect"`
}

// Backoff is an exponential backoff with jitter.
type Backoff struct {
	// Initial is the first delay (default 500ms).
	Initial time.Duration `yaml:"initial"`
	// Max is the longest delay (default 30s).
	Max time.Duration `yaml:"max"`
}

// DefaultSessionExpiry is how long the remote keeps sluice's session.
const DefaultSessionExpiry = time.Hour

// SetDefaults fills in what the operator left out.
func (c *Config) SetDefaults() {
	if c.Protocol == "" {
		c.Protocol = ProtocolAuto
	}
	if c.SessionExpiry == nil {
		d := DefaultSessionExpiry
		if c.CleanStart {
			d = 0
		}
		c.SessionExpiry = &d
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 30 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = time.Minute
	}
	if c.Reconnect.Initial == 0 {
		c.Reconnect.Initial = 500 * time.Millisecond
	}
	if c.Reconnect.Max == 0 {
		c.Reconnect.Max = 30 * time.Second
	}
}

// Validate checks the configuration (after SetDefaults). Keys are relative
// to the block holding it.
func (c *Config) Validate() error {
	var p conf.Problems
	if c.URL == "" {
		p.Missing("url")
	} else if _, err := ParseURL(c.URL); err != nil {
		p.Addf("url", "%v", err)
	} else if c.TLS != nil && !c.secure() {
		p.Addf("tls", "set, but %s is not a TLS url: use mqtts:// or wss://", c.URL)
	}
	if c.TLS != nil {
		p.Nest("tls", c.TLS.Validate())
	}
	if c.Password.IsSet() && c.Username == "" {
		p.Addf("password", "set without a username")
	}
	if len(c.ClientID) > 65535 {
		p.Addf("client_id", "longer than 65535 bytes")
	}
	switch c.Protocol {
	case ProtocolAuto, Protocol5, Protocol311:
	default:
		p.Addf("protocol", "%q: want auto, 5 or 3.1.1", c.Protocol)
	}
	if c.SessionExpiry != nil {
		switch d := *c.SessionExpiry; {
		case d < 0:
			p.Addf("session_expiry", "must not be negative")
		case d/time.Second > 1<<32-1:
			p.Addf("session_expiry", "at most %v", time.Duration(1<<32-1)*time.Second)
		}
	}
	if c.KeepAlive < time.Second || c.KeepAlive/time.Second > 65535 {
		p.Addf("keep_alive", "%v: want 1s to 18h12m15s", c.KeepAlive)
	}
	if c.ConnectTimeout <= 0 {
		p.Addf("connect_timeout", "must be positive")
	}
	if c.AckTimeout <= 0 {
		p.Addf("ack_timeout", "must be positive")
	}
	if c.Reconnect.Initial <= 0 || c.Reconnect.Max < c.Reconnect.Initial {
		p.Addf("reconnect", "want 0 < initial <= max")
	}
	return p.Err()
}

// Resolve makes the TLS file paths absolute against dir (the config
// file's folder).
func (c *Config) Resolve(dir string) {
	if c.TLS == nil || dir == "" {
		return
	}
	for _, f := range []*string{&c.TLS.CAFile, &c.TLS.CertFile, &c.TLS.KeyFile} {
		if *f != "" && !filepath.IsAbs(*f) {
			*f = filepath.Join(dir, *f)
		}
	}
}

// CheckFiles reads the TLS files, as a connection attempt would, and
// reports a problem (for sluice validate).
func (c *Config) CheckFiles() error {
	if c.TLS == nil {
		return nil
	}
	_, err := c.TLS.Load()
	return err
}

// Persistent reports whether the remote keeps the session after the
// connection closes.
func (c *Config) Persistent() bool {
	return !c.CleanStart && (c.SessionExpiry == nil || *c.SessionExpiry > 0)
}

func (c *Config) secure() bool {
	u, err := ParseURL(c.URL)
	return err == nil && (u.Scheme == "mqtts" || u.Scheme == "wss")
}

// ParseURL checks a broker URL and returns it with its scheme made one of
// mqtt, mqtts, ws or wss and its port filled in.
func ParseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		// url's errors quote the text; it holds no credentials we accept,
		// but say it plainly.
		return nil, fmt.Errorf("not a URL: want mqtt://host:port, mqtts://, ws:// or wss://")
	}
	if u.User != nil {
		return nil, fmt.Errorf("credentials in the url: put them in username and password")
	}
	port := ""
	switch strings.ToLower(u.Scheme) {
	case "mqtt", "tcp":
		u.Scheme, port = "mqtt", "1883"
	case "mqtts", "ssl", "tls", "tcps":
		u.Scheme, port = "mqtts", "8883"
	case "ws":
		u.Scheme, port = "ws", "80"
	case "wss":
		u.Scheme, port = "wss", "443"
	default:
		return nil, fmt.Errorf("%q: want mqtt://host:port, mqtts://, ws:// or wss://", s)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%q: no host", s)
	}
	if u.Port() == "" {
		u.Host += ":" + port
	}
	if (u.Scheme == "mqtt" || u.Scheme == "mqtts") && strings.Trim(u.Path, "/") != "" {
		return nil, fmt.Errorf("%q: a path is for ws:// and wss:// only", s)
	}
	return u, nil
}
