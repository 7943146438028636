package alertmanager

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/secret"
	"github.com/sluicehq/sluice/internal/tmpl"
)

// Config configures an Alertmanager sink.
type Config struct {
	// URLs are the Alertmanagers, e.g. http://alertmanager:9093 (with its
	// --web.route-prefix, if it has one). Every alert goes to each: the
	// members of an Alertmanager cluster share silences and what they
	// notified, not alerts.
	URLs []string `yaml:"urls"`
	// ResendInterval is how often the alerts still firing are sent again
	// (default 1m). Each is sent with endsAt four intervals ahead, so an
	// alert sluice stops sending (sluice stopped, or the rule forgot it)
	// resolves itself in Alertmanager after at most four intervals.
	ResendInterval time.Duration `yaml:"resend_interval"`
	// MaxAlerts bounds the alerts kept for re-sending (default 10000).
	MaxAlerts int `yaml:"max_alerts"`
	// Labels are added to every alert; values are templates. They
	// override the alert's own, except alertname.
	Labels map[string]string `yaml:"labels"`
	// Annotations are added to every alert; values are templates. They
	// override summary, value, since and topic.
	Annotations map[string]string `yaml:"annotations"`
	// GeneratorURL is a template for the alert's link back to its source
	// (Alertmanager shows it as "Source"), e.g. a Grafana dashboard.
	GeneratorURL string `yaml:"generator_url"`
	// Username and Password send HTTP basic authentication (Alertmanager's
	// web.config.file basic_auth_users); Token sends "Authorization:
	// Bearer <token>" (a proxy in front of it).
	Username string        `yaml:"username"`
	Password secret.String `yaml:"password"`
	Token    secret.String `yaml:"token"`
	// Timeout bounds one request to one Alertmanager (default 10s).
	Timeout time.Duration `yaml:"timeout"`
	// TLS sets what https urls trust (default: the system's roots) and the
	// client certificate for mutual TLS.
	TLS *secret.TLS `yaml:"tls"`
}

// Defaults.
const (
	DefaultResendInterval = time.Minute
	DefaultMaxAlerts      = 10000
	DefaultTimeout        = 10 * time.Second
)

// SetDefaults fills in what the operator left out.
func (c *Config) SetDefaults() {
	if c.ResendInterval == 0 {
		c.ResendInterval = DefaultResendInterval
	}
	if c.MaxAlerts == 0 {
		c.MaxAlerts = DefaultMaxAlerts
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var p conf.Problems
	if len(c.URLs) == 0 {
		p.Missing("urls")
	}
	seen := map[string]bool{}
	for i, raw := range c.URLs {
		at := fmt.Sprintf("urls[%d]", i)
		u, err := url.Parse(raw)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			p.Addf(at, "%q is not an http(s) URL", raw)
		case u.User != nil:
			p.Addf(at, "no credentials in the url: use username and password, or token")
		case u.RawQuery != "" || u.Fragment != "":
			p.Addf(at, "want the Alertmanager's address, without a query: sluice adds /api/v2/alerts")
		case seen[u.String()]:
			p.Addf(at, "%q is listed twice", raw)
		case c.TLS != nil && u.Scheme == "http":
			p.Addf("tls", "urls[%d] is http://, so TLS is not used for it; write https://", i)
		}
		if u != nil {
			seen[u.String()] = true
		}
	}
	if c.ResendInterval < time.Second {
		p.Addf("resend_interval", "%v: want at least 1s", c.ResendInterval)
	}
	if c.MaxAlerts < 1 {
		p.Addf("max_alerts", "must be at least 1")
	}
	for _, name := range sortedKeys(c.Labels) {
		switch {
		case !validName(name):
			p.Addf("labels", "%q is not a valid label name: want letters, digits and _, not starting with a digit", name)
		case name == "alertname":
			p.Addf("labels.alertname", "alertname is the rule's name")
		}
		if _, err := tmpl.Parse(c.Labels[name]); err != nil {
			p.Addf("labels."+name, "%v", err)
		}
	}
	for _, name := range sortedKeys(c.Annotations) {
		if !validName(name) {
			p.Addf("annotations", "%q is not a valid annotation name: want letters, digits and _, not starting with a digit", name)
		}
		if _, err := tmpl.Parse(c.Annotations[name]); err != nil {
			p.Addf("annotations."+name, "%v", err)
		}
	}
	if _, err := tmpl.Parse(c.GeneratorURL); err != nil && c.GeneratorURL != "" {
		p.Addf("generator_url", "%v", err)
	}
	if c.Password.IsSet() && c.Username == "" {
		p.Addf("password", "needs username")
	}
	if c.Token.IsSet() && c.Username != "" {
		p.Addf("token", "set token or username and password, not both: both use the Authorization header")
	}
	if c.Timeout < 0 {
		p.Addf("timeout", "must not be negative")
	}
	if c.TLS != nil {
		p.Nest("tls", c.TLS.Validate())
	}
	return p.Err()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// validName reports whether name is a label name Alertmanager 0.25
// accepts: [a-zA-Z_][a-zA-Z0-9_]*.
func validName(name string) bool {
	return name != "" && labelName(name) == name
}

// labelName makes s a valid label name: every other character becomes _,
// and a leading digit gets a _ before it ("line-1" → "line_1", "3" → "_3").
func labelName(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == '_', 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z':
		case '0' <= r && r <= '9':
			if i == 0 {
				b.WriteByte('_')
			}
		default:
			r = '_'
		}
		b.WriteRune(r)
	}
	if b.Len() == 0 {
		return "_"
	}
	return b.String()
}
