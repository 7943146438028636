package opcua

import (
	"fmt"
	"math"
	"net/url"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gopcua/opcua/ua"

	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/secret"
)

// Config is an OPC UA client source: the server to connect to, how, and the
// nodes whose value changes become messages. README.md beside this file
// describes every key.
type Config struct {
	// Endpoint is the server's endpoint URL, opc.tcp://host:port[/path].
	// sluice always connects to this address, whatever host name the
	// server advertises in its endpoint descriptions.
	Endpoint string `yaml:"endpoint"`
	// SecurityPolicy is None (the default), Basic256Sha256,
	// Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss (Basic256 and
	// Basic128Rsa15 are deprecated by the OPC Foundation but accepted).
	SecurityPolicy string `yaml:"security_policy"`
	// SecurityMode is None (the default with policy None), Sign or
	// SignAndEncrypt (the default with any other policy).
	SecurityMode string `yaml:"security_mode"`
	// CertFile and KeyFile are sluice's application instance certificate
	// (PEM or DER; its URI SAN becomes the application URI) and RSA private
	// key (PEM, PKCS #1 or #8). Required by every policy but None; the
	// server must trust the certificate.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerCertFile, when set, pins the server's certificate (PEM or DER):
	// a server presenting another one is not connected to. Without it the
	// certificate the server's endpoint description carries is used as is.
	ServerCertFile string `yaml:"server_cert_file"`
	// Username and Password authenticate the session; without a username
	// it is anonymous.
	Username string        `yaml:"username"`
	Password secret.String `yaml:"password"`

	// PublishingInterval is how often the server sends the changes it
	// has collected (default 1s).
	PublishingInterval time.Duration `yaml:"publishing_interval"`
	// SamplingInterval is how often the server samples each node (default:
	// the publishing interval).
	SamplingInterval time.Duration `yaml:"sampling_interval"`
	// QueueSize is how many changes of one node the server keeps between
	// two publishes; beyond it the oldest go (default 10).
	QueueSize uint32 `yaml:"queue_size"`
	// Topic is the topic template for nodes without a topic of their own:
	// {name} is the node's name, {ns} its namespace index, {id} its
	// identifier. Default "opcua/{name}".
	Topic string `yaml:"topic"`
	// Nodes are the variables to monitor.
	Nodes []NodeConfig `yaml:"nodes"`

	// Reconnect is the backoff between attempts to reach the server.
	Reconnect Backoff `yaml:"reconnect"`
	// RequestTimeout bounds each request to the server, connecting
	// included (default 10s).
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// KeepAlive is how often the connection is checked by reading the
	// server's clock; a failed read reconnects (default 10s).
	KeepAlive time.Duration `yaml:"keep_alive"`
}

// NodeConfig is one monitored variable.
type NodeConfig struct {
	// ID is the node id in OPC UA text form: ns=2;s=Boiler1.Temperature,
	// ns=3;i=1001, ns=1;g=<guid>, ns=1;b=<base64>.
	ID string `yaml:"id"`
	// Name names the node in the topic template (default: its identifier,
	// Boiler1.Temperature).
	Name string `yaml:"name"`
	// Topic is this node's topic, instead of the template.
	Topic string `yaml:"topic"`
}

// Backoff is a reconnect backoff: the first wait, doubling up to Max, each
// wait drawn at random from its upper half (jitter).
type Backoff struct {
	Initial time.Duration `yaml:"initial"`
	Max     time.Duration `yaml:"max"`
}

var policies = map[string]bool{
	"None": true, "Basic128Rsa15": true, "Basic256": true, "Basic256Sha256": true,
	"Aes128_Sha256_RsaOaep": true, "Aes256_Sha256_RsaPss": true,
}

// SetDefaults fills in what the operator left out.
func (c *Config) SetDefaults() {
	if c.SecurityPolicy == "" {
		c.SecurityPolicy = "None"
	}
	if c.SecurityMode == "" {
		c.SecurityMode = "SignAndEncrypt"
		if c.SecurityPolicy == "None" {
			c.SecurityMode = "None"
		}
	}
	if c.PublishingInterval == 0 {
		c.PublishingInterval = time.Second
	}
	if c.SamplingInterval == 0 {
		c.SamplingInterval = c.PublishingInterval
	}
	if c.QueueSize == 0 {
		c.QueueSize = 10
	}
	if c.Topic == "" {
		c.Topic = "opcua/{name}"
	}
	if c.Reconnect.Initial == 0 {
		c.Reconnect.Initial = time.Second
	}
	if c.Reconnect.Max == 0 {
		c.Reconnect.Max = time.Minute
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 10 * time.Second
	}
}

// Validate checks the configuration without reading the files it names or
// reaching the server.
func (c *Config) Validate() error {
	var p conf.Problems
	if c.Endpoint == "" {
		p.Missing("endpoint")
	} else if u, err := url.Parse(c.Endpoint); err != nil || u.Scheme != "opc.tcp" || u.Host == "" {
		p.Addf("endpoint", "%q: want opc.tcp://host:port", c.Endpoint)
	}
	if !policies[c.SecurityPolicy] {
		p.Addf("security_policy", "%q: want None, Basic256Sha256, Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss", c.SecurityPolicy)
	}
	switch c.SecurityMode {
	case "None":
		if c.SecurityPolicy != "None" {
			p.Addf("security_mode", "None goes with security_policy None; %s wants Sign or SignAndEncrypt", c.SecurityPolicy)
		}
	case "Sign", "SignAndEncrypt":
		if c.SecurityPolicy == "None" {
			p.Addf("security_mode", "%s needs a security_policy other than None", c.SecurityMode)
		}
	default:
		p.Addf("security_mode", "%q: want None, Sign or SignAndEncrypt", c.SecurityMode)
	}
	if c.SecurityPolicy != "None" && c.SecurityPolicy != "" {
		if c.CertFile == "" {
			p.Addf("cert_file", "security_policy %s needs sluice's certificate (cert_file, key_file)", c.SecurityPolicy)
		}
		if c.KeyFile == "" {
			p.Addf("key_file", "security_policy %s needs the certificate's private key", c.SecurityPolicy)
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		p.Addf("cert_file", "cert_file and key_file go together")
	}
	if c.Password.IsSet() && c.Username == "" {
		p.Addf("password", "a password needs a username")
	}
	if c.PublishingInterval < 10*time.Millisecond {
		p.Addf("publishing_interval", "%v: want at least 10ms", c.PublishingInterval)
	}
	if c.SamplingInterval < 0 {
		p.Addf("sampling_interval", "must not be negative")
	}
	if c.QueueSize > math.MaxInt32 {
		p.Addf("queue_size", "%d is too large", c.QueueSize)
	}
	if c.Reconnect.Initial <= 0 || c.Reconnect.Max < c.Reconnect.Initial {
		p.Addf("reconnect", "want 0 < initial (%v) <= max (%v)", c.Reconnect.Initial, c.Reconnect.Max)
	}
	if c.RequestTimeout <= 0 {
		p.Addf("request_timeout", "must be positive")
	}
	if c.KeepAlive <= 0 {
		p.Addf("keep_alive", "must be positive")
	}
	if _, err := parseTemplate(c.Topic); err != nil {
		p.Addf("topic", "%v", err)
	}
	if len(c.Nodes) == 0 {
		p.Addf("nodes", "no nodes: list the node ids to monitor")
	}
	seen := map[string]bool{}
	for i, n := range c.Nodes {
		at := fmt.Sprintf("nodes[%d]", i)
		if n.ID == "" {
			p.Missing(at + ".id")
			continue
		}
		nid, err := ua.ParseNodeID(n.ID)
		if err != nil {
			p.Addf(at+".id", "%q is not a node id such as ns=2;s=Boiler1.Temperature: %v", n.ID, err)
			continue
		}
		if seen[nid.String()] {
			p.Addf(at+".id", "node %s is listed twice", n.ID)
		}
		seen[nid.String()] = true
		if _, err := nodeTopic(c.Topic, n, nid); err != nil {
			p.Addf(at+".topic", "%v", err)
		}
	}
	return p.Err()
}

// Resolve makes the file paths in c absolute against dir (the config
// file's folder).
func (c *Config) Resolve(dir string) {
	if dir == "" {
		return
	}
	for _, f := range []*string{&c.CertFile, &c.KeyFile, &c.ServerCertFile} {
		if *f != "" && !filepath.IsAbs(*f) {
			*f = filepath.Join(dir, *f)
		}
	}
}

// nodeTopic is the topic of node n: its own, or the template's.
func nodeTopic(template string, n NodeConfig, id *ua.NodeID) (string, error) {
	topic := n.Topic
	if topic == "" {
		parts, err := parseTemplate(template)
		if err != nil {
			return "", err
		}
		name := n.Name
		if name == "" {
			name = identifier(id)
		}
		var b strings.Builder
		for _, part := range parts {
			switch part {
			case "{name}":
				b.WriteString(name)
			case "{ns}":
				fmt.Fprint(&b, id.Namespace())
			case "{id}":
				b.WriteString(identifier(id))
			default:
				b.WriteString(part)
			}
		}
		topic = b.String()
	}
	if err := validTopic(topic); err != nil {
		return "", fmt.Errorf("topic %q: %w", topic, err)
	}
	return topic, nil
}

// identifier is a node id's identifier, without its namespace:
// Boiler1.Temperature for ns=2;s=Boiler1.Temperature, 1001 for ns=3;i=1001.
func identifier(id *ua.NodeID) string {
	s := id.String()
	if _, rest, ok := strings.Cut(s, ";"); ok {
		s = rest
	}
	if len(s) > 2 && s[1] == '=' {
		s = s[2:]
	}
	return s
}

// parseTemplate splits a topic template into text and placeholders.
func parseTemplate(t string) ([]string, error) {
	var parts []string
	rest := t
	for rest != "" {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			parts = append(parts, rest)
			break
		}
		if open > 0 {
			parts = append(parts, rest[:open])
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("template %q: unclosed {", t)
		}
		ph := rest[open : open+end+1]
		switch ph {
		case "{name}", "{ns}", "{id}":
		default:
			return nil, fmt.Errorf("template %q: unknown placeholder %s (want {name}, {ns} or {id})", t, ph)
		}
		parts = append(parts, ph)
		rest = rest[open+end+1:]
	}
	return parts, nil
}

// validTopic checks that topic is one an MQTT client could publish to.
func validTopic(topic string) error {
	switch {
	case topic == "":
		return fmt.Errorf("empty")
	case len(topic) > 65535:
		return fmt.Errorf("longer than 65535 bytes")
	case !utf8.ValidString(topic):
		return fmt.Errorf("not UTF-8")
	case strings.ContainsAny(topic, "+#\x00"):
		return fmt.Errorf("holds a wildcard (+ or #) or U+0000")
	case strings.HasPrefix(topic, "$"):
		return fmt.Errorf("topics starting with $ are reserved for the broker")
	case strings.HasPrefix(topic, "/") || strings.HasSuffix(topic, "/") || strings.Contains(topic, "//"):
		return fmt.Errorf("has an empty level")
	}
	return nil
}
