package ingest

import (
	"fmt"
	"math"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ingest/auth"
	"github.com/sluicehq/sluice/internal/conf"
)

// Config is the broker section of the configuration.
type Config struct {
	// Enabled runs the embedded broker (default true). With false sluice
	// takes messages only from its sources (an external broker, HTTP, ...):
	// no listener, no stored state.
	Enabled   *bool            `yaml:"enabled"`
	Listeners []ListenerConfig `yaml:"listeners"`
	// Auth names the password and ACL files.
	Auth AuthConfig `yaml:"auth"`
	// Limits bound what one client, and all of them, may take.
	Limits Limits `yaml:"limits"`
	// Persistence keeps the broker's state (sessions, subscriptions,
	// retained messages, QoS 1/2 messages in flight to subscribers) in
	// <data_dir>/broker.db, so it survives a restart (default true).
	Persistence *bool `yaml:"persistence"`

	// StatePath is where the state is kept; set by the caller from data_dir.
	StatePath string `yaml:"-"`
	// StateKey, when set, encrypts the stored state (32 bytes, AES-256);
	// set by the caller from the encryption key file.
	StateKey []byte `yaml:"-"`
	// StateSync writes the state to disk (fsync) at every change; set by
	// the caller when a pipeline runs with durability fsync.
	StateSync bool `yaml:"-"`
}

// ListenerConfig is one network listener.
type ListenerConfig struct {
	// Name identifies the listener in logs and metrics.
	Name string `yaml:"name"`
	// Type is the transport: tcp, tls, ws (WebSocket) or wss (WebSocket
	// over TLS). Default tcp, or tls when a tls section is given.
	Type string `yaml:"type"`
	// Address is host:port to bind; port 0 picks a free port.
	Address string `yaml:"address"`
	// TLS is the certificate (tls and wss), and client certificates.
	TLS *TLSConfig `yaml:"tls"`
	// AllowAnonymous lets clients connect without credentials. Off by
	// default; anonymous clients have no username for ACLs.
	AllowAnonymous bool `yaml:"allow_anonymous"`
	// MaxConnections bounds this listener's open connections; 0 leaves
	// only the broker-wide limit.
	MaxConnections int `yaml:"max_connections"`
	// Path is the HTTP path WebSocket clients connect to (default /mqtt).
	Path string `yaml:"path"`
	// AllowedOrigins, when set, is the list of browser origins
	// ("https://ops.example.com") a WebSocket upgrade may come from.
	// Requests without an Origin header (devices, not browsers) are allowed.
	AllowedOrigins []string `yaml:"allowed_origins"`
}

// TLSConfig is a listener's TLS setup. Certificate files are re-read when
// they change (a renewal), for the next handshake, without a restart.
type TLSConfig struct {
	// CertFile and KeyFile are PEM files: the certificate (with its chain)
	// and its private key.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`
	// ClientCAFile is a PEM bundle of the CAs client certificates must be
	// signed by. Setting it turns on mutual TLS.
	ClientCAFile string `yaml:"client_ca_file"`
	// ClientCerts is required (the default with client_ca_file: a client
	// without a valid certificate fails the handshake) or optional (a
	// client may instead log in with a password, or anonymously where the
	// listener allows it).
	ClientCerts string `yaml:"client_certs"`
	// Identity is the part of a client certificate that becomes the
	// client's username for ACLs: cn (subject common name, the default),
	// san_dns, san_email or san_uri (the first such subject alternative
	// name).
	Identity string `yaml:"identity"`
}

// AuthConfig names the files that say who may connect and what they may do.
// Both are reloaded when they change, and on SIGHUP.
type AuthConfig struct {
	// PasswordFile holds "user:bcrypt-hash" lines; manage it with
	// `sluice passwd FILE USER`.
	PasswordFile string `yaml:"password_file"`
	// ACLFile lists who may publish and subscribe to what. Without one,
	// every connected client may publish and subscribe to any topic; with
	// one, what it does not allow is denied.
	ACLFile string `yaml:"acl_file"`
	// FailureBackoff delays the refusal of failed password logins from an
	// address, or for a user, that keeps failing.
	FailureBackoff FailureBackoff `yaml:"failure_backoff"`
}

// FailureBackoff is the schedule of delayed refusals (see auth.Backoff):
// after After failures of an address or a user name, each further failed
// login waits Initial before its refusal, doubling up to Max; failures are
// forgotten Forget after the last. A login that succeeds never waits.
type FailureBackoff struct {
	// Enabled is true by default.
	Enabled *bool         `yaml:"enabled"`
	After   int           `yaml:"after"`
	Initial time.Duration `yaml:"initial"`
	Max     time.Duration `yaml:"max"`
	Forget  time.Duration `yaml:"forget"`
}

// IsEnabled reports whether failed logins are delayed.
func (f *FailureBackoff) IsEnabled() bool { return f.Enabled == nil || *f.Enabled }

func (f *FailureBackoff) schedule() auth.BackoffConfig {
	return auth.BackoffConfig{After: f.After, Initial: f.Initial, Max: f.Max, Forget: f.Forget}
}

func (f *FailureBackoff) validate() error {
	var p conf.Problems
	if f.After < 0 {
		p.Addf("after", "must not be negative")
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"initial", f.Initial}, {"max", f.Max}, {"forget", f.Forget}} {
		if d.v < 0 {
			p.Addf(d.key, "must not be negative")
		}
	}
	if f.Initial > 0 && f.Max > 0 && f.Initial > f.Max {
		p.Addf("initial", "%v is above max %v", f.Initial, f.Max)
	}
	return p.Err()
}

// Limits bound the broker's resources. Zero means the default; the
// defaults are in SetDefaults and docs/security.md.
type Limits struct {
	// MaxConnections bounds open connections over all listeners.
	MaxConnections int `yaml:"max_connections"`
	// MaxPacketSize bounds any MQTT packet a client sends (a PUBLISH's
	// payload is most of it). Larger packets close the connection.
	MaxPacketSize conf.Bytes `yaml:"max_packet_size"`
	// ConnectTimeout is how long a new connection has to complete its TLS
	// handshake and send its CONNECT.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// PublishRate is each client's sustained PUBLISH rate, per second, and
	// PublishBurst how many it may send at once above it. Over the rate, an
	// MQTT 5 client's QoS 1/2 publish is refused with reason "quota
	// exceeded" (it sends it again later); other publishes wait, which
	// slows the client. 0 (the default) is unlimited.
	PublishRate  float64 `yaml:"publish_rate"`
	PublishBurst int     `yaml:"publish_burst"`
	// MaxSubscriptions bounds each client's subscriptions.
	MaxSubscriptions int `yaml:"max_subscriptions"`
	// MinKeepAlive and MaxKeepAlive bound the keep-alive a client asks
	// for. An MQTT 5 client outside them is told the server's value in
	// CONNACK; an MQTT 3 client asking for more than the maximum is refused,
	// and one asking for less is given the minimum silently.
	MinKeepAlive time.Duration `yaml:"min_keep_alive"`
	MaxKeepAlive time.Duration `yaml:"max_keep_alive"`
	// SessionExpiry is the longest a disconnected client's session (its
	// subscriptions and queued messages) is kept.
	SessionExpiry time.Duration `yaml:"session_expiry"`
	// MaxInflight is how many QoS 1/2 publishes a client may have
	// unacknowledged at once (MQTT 5 receive maximum).
	MaxInflight int `yaml:"max_inflight"`
	// MaxQueued is how many QoS 1/2 messages the broker holds for one
	// subscriber (in flight, or waiting while it is offline); more are
	// dropped for that subscriber.
	MaxQueued int `yaml:"max_queued"`
	// MaxTopicAliases is how many topic aliases an MQTT 5 client may set
	// (Topic Alias Maximum, in CONNACK). Each holds a topic name for the
	// connection's lifetime.
	MaxTopicAliases int `yaml:"max_topic_aliases"`
	// MaxRetainedSize bounds a retained message's payload, and
	// MaxRetainedMessages the number of retained topics. A message over
	// either is delivered but not retained.
	MaxRetainedSize     conf.Bytes `yaml:"max_retained_size"`
	MaxRetainedMessages int        `yaml:"max_retained_messages"`
}

// Listener types.
const (
	typeTCP = "tcp"
	typeTLS = "tls"
	typeWS  = "ws"
	typeWSS = "wss"
)

// DefaultAddress is where the broker listens when no listener is configured:
// loopback only, as mosquitto 2 does, until an operator opens it up.
const DefaultAddress = "127.0.0.1:1883"

// IsEnabled reports whether the embedded broker runs.
func (c *Config) IsEnabled() bool { return c.Enabled == nil || *c.Enabled }

// SetDefaults fills in what the operator left out.
func (c *Config) SetDefaults() {
	if !c.IsEnabled() {
		off := false
		c.Persistence = &off
	}
	if len(c.Listeners) == 0 && c.IsEnabled() {
		c.Listeners = []ListenerConfig{{Name: "tcp", Type: typeTCP, Address: DefaultAddress}}
	}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if l.Type == "" {
			l.Type = typeTCP
			if l.TLS != nil {
				l.Type = typeTLS
			}
		}
		if l.Name == "" {
			l.Name = fmt.Sprintf("%s-%d", l.Type, i)
		}
		if l.Path == "" && (l.Type == typeWS || l.Type == typeWSS) {
			l.Path = "/mqtt"
		}
		if t := l.TLS; t != nil {
			if t.MinVersion == "" {
				t.MinVersion = "1.2"
			}
			if t.ClientCerts == "" && t.ClientCAFile != "" {
				t.ClientCerts = "required"
			}
			if t.Identity == "" {
				t.Identity = "cn"
			}
		}
	}
	c.Limits.setDefaults()
}

func (l *Limits) setDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.MaxConnections, 10000)
	if l.MaxPacketSize == 0 {
		l.MaxPacketSize = 1 << 20
	}
	defDur(&l.ConnectTimeout, 10*time.Second)
	if l.PublishRate > 0 && l.PublishBurst == 0 {
		l.PublishBurst = max(1, int(math.Ceil(l.PublishRate)))
	}
	def(&l.MaxSubscriptions, 1000)
	defDur(&l.MinKeepAlive, 5*time.Second)
	defDur(&l.MaxKeepAlive, 65535*time.Second)
	defDur(&l.SessionExpiry, 24*time.Hour)
	def(&l.MaxInflight, 1024)
	def(&l.MaxQueued, 8192)
	def(&l.MaxTopicAliases, 10)
	if l.MaxRetainedSize == 0 {
		l.MaxRetainedSize = 64 << 10
	}
	def(&l.MaxRetainedMessages, 100000)
}

// Validate checks the broker section.
func (c *Config) Validate() error {
	var p conf.Problems
	if !c.IsEnabled() && len(c.Listeners) > 0 {
		p.Addf("listeners", "the embedded broker is disabled (enabled: false): remove its listeners, or enable it")
	}
	names := map[string]bool{}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		at := fmt.Sprintf("listeners[%d]", i)
		if names[l.Name] {
			p.Addf(at+".name", "listener name %q is used twice", l.Name)
		}
		names[l.Name] = true
		p.Nest(at, l.validate())
	}
	p.Nest("auth.failure_backoff", c.Auth.FailureBackoff.validate())
	p.Nest("limits", c.Limits.validate())
	return p.Err()
}

func (l *ListenerConfig) validate() error {
	var p conf.Problems
	switch l.Type {
	case typeTCP, typeWS:
		if l.TLS != nil {
			secure := map[string]string{typeTCP: typeTLS, typeWS: typeWSS}[l.Type]
			p.Addf("tls", "a %s listener does not use TLS; for TLS use type %s", l.Type, secure)
		}
	case typeTLS, typeWSS:
		if l.TLS == nil {
			p.Missing("tls")
		}
	default:
		p.Addf("type", "unknown listener type %q (want tcp, tls, ws or wss)", l.Type)
	}
	if l.Address == "" {
		p.Missing("address")
	} else if _, _, err := net.SplitHostPort(l.Address); err != nil {
		p.Addf("address", "%q is not host:port", l.Address)
	}
	if l.MaxConnections < 0 {
		p.Addf("max_connections", "must not be negative")
	}
	if l.Type == typeWS || l.Type == typeWSS {
		if !strings.HasPrefix(l.Path, "/") {
			p.Addf("path", "%q must start with /", l.Path)
		}
	} else {
		if l.Path != "" {
			p.Addf("path", "only WebSocket listeners (ws, wss) have a path")
		}
		if len(l.AllowedOrigins) > 0 {
			p.Addf("allowed_origins", "only WebSocket listeners (ws, wss) have origins")
		}
	}
	if t := l.TLS; t != nil {
		if t.CertFile == "" {
			p.Missing("tls.cert_file")
		}
		if t.KeyFile == "" {
			p.Missing("tls.key_file")
		}
		if t.MinVersion != "1.2" && t.MinVersion != "1.3" {
			p.Addf("tls.min_version", "%q: want 1.2 or 1.3", t.MinVersion)
		}
		switch t.ClientCerts {
		case "":
		case "required", "optional":
			if t.ClientCAFile == "" {
				p.Addf("tls.client_certs", "client certificates need tls.client_ca_file, the CAs that sign them")
			}
		default:
			p.Addf("tls.client_certs", "%q: want required or optional", t.ClientCerts)
		}
		switch t.Identity {
		case "cn", "san_dns", "san_email", "san_uri":
		default:
			p.Addf("tls.identity", "%q: want cn, san_dns, san_email or san_uri", t.Identity)
		}
	}
	return p.Err()
}

func (l *Limits) validate() error {
	var p conf.Problems
	nonNeg := func(key string, v int64) {
		if v < 0 {
			p.Addf(key, "must not be negative")
		}
	}
	nonNeg("max_connections", int64(l.MaxConnections))
	nonNeg("max_subscriptions", int64(l.MaxSubscriptions))
	nonNeg("publish_burst", int64(l.PublishBurst))
	nonNeg("max_retained_messages", int64(l.MaxRetainedMessages))
	nonNeg("max_retained_size", int64(l.MaxRetainedSize))
	nonNeg("connect_timeout", int64(l.ConnectTimeout))
	nonNeg("session_expiry", int64(l.SessionExpiry))
	if l.PublishRate < 0 {
		p.Addf("publish_rate", "must not be negative")
	}
	const maxMQTTPacket = 268435455 + 5 // the largest remaining length, plus the fixed header
	if l.MaxPacketSize < 64 || l.MaxPacketSize > maxMQTTPacket {
		p.Addf("max_packet_size", "%v: want 64B to 256MiB", l.MaxPacketSize)
	}
	const maxKeepAlive = 65535 * time.Second
	if l.MinKeepAlive < 0 || l.MinKeepAlive > maxKeepAlive || l.MinKeepAlive%time.Second != 0 {
		p.Addf("min_keep_alive", "%v: want whole seconds up to 65535s", l.MinKeepAlive)
	}
	if l.MaxKeepAlive < 0 || l.MaxKeepAlive > maxKeepAlive || l.MaxKeepAlive%time.Second != 0 {
		p.Addf("max_keep_alive", "%v: want whole seconds up to 65535s", l.MaxKeepAlive)
	}
	if l.MinKeepAlive > l.MaxKeepAlive {
		p.Addf("min_keep_alive", "%v is above max_keep_alive %v", l.MinKeepAlive, l.MaxKeepAlive)
	}
	if l.SessionExpiry > math.MaxUint32*time.Second {
		p.Addf("session_expiry", "%v: want at most %v", l.SessionExpiry, math.MaxUint32*time.Second)
	}
	if l.MaxInflight < 0 || l.MaxInflight > 65535 {
		p.Addf("max_inflight", "%d: want 1 to 65535", l.MaxInflight)
	}
	if l.MaxQueued < 0 || l.MaxQueued > 65535 {
		p.Addf("max_queued", "%d: want 1 to 65535", l.MaxQueued)
	}
	if l.MaxTopicAliases < 0 || l.MaxTopicAliases > 65535 {
		p.Addf("max_topic_aliases", "%d: want 1 to 65535", l.MaxTopicAliases)
	}
	return p.Err()
}

// Resolve makes the file paths in c absolute against dir (the config file's
// folder), as rule paths are.
func (c *Config) Resolve(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) && dir != "" {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.Auth.PasswordFile)
	abs(&c.Auth.ACLFile)
	for i := range c.Listeners {
		if t := c.Listeners[i].TLS; t != nil {
			abs(&t.CertFile)
			abs(&t.KeyFile)
			abs(&t.ClientCAFile)
		}
	}
}

// Files lists the files the broker reads, for watching.
func (c *Config) Files() []string {
	var files []string
	for _, f := range []string{c.Auth.PasswordFile, c.Auth.ACLFile} {
		if f != "" {
			files = append(files, f)
		}
	}
	return files
}
