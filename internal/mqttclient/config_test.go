package mqttclient

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/secret"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"mqtt://broker", "mqtt://broker:1883", ""},
		{"tcp://broker:1884", "mqtt://broker:1884", ""},
		{"mqtts://broker", "mqtts://broker:8883", ""},
		{"ssl://10.0.0.1:8884", "mqtts://10.0.0.1:8884", ""},
		{"ws://broker/mqtt", "ws://broker:80/mqtt", ""},
		{"wss://[::1]/mqtt", "wss://[::1]:443/mqtt", ""},
		{"http://broker", "", "want mqtt://"},
		{"mqtt://user:pw@broker", "", "credentials in the url"},
		{"mqtt://broker/path", "", "a path is for ws://"},
		{"mqtt://", "", "no host"},
		{"broker:1883", "", "want mqtt://"},
	} {
		u, err := ParseURL(tc.in)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.in, err, tc.err)
			}
			if err != nil && strings.Contains(err.Error(), "pw") {
				t.Errorf("%s: error shows the password: %v", tc.in, err)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.in, err)
		case u.String() != tc.want:
			t.Errorf("%s: %s, want %s", tc.in, u, tc.want)
		}
	}
}

func TestValidFilter(t *testing.T) {
	for _, tc := range []struct {
		f  string
		ok bool
	}{
		{"a/b", true}, {"#", true}, {"a/+/c", true}, {"+/#", true}, {"$share/g/a/#", true}, {"$share/g/#", true},
		{"$SYS/#", true},
		{"", false}, {"a/#/b", false}, {"a+/b", false}, {"a/b#", false}, {"$share/g", false}, {"$share//a", false},
		{"$share/g+/a", false}, {"a\x00b", false},
	} {
		if err := ValidFilter(tc.f); (err == nil) != tc.ok {
			t.Errorf("ValidFilter(%q) = %v, want ok %v", tc.f, err, tc.ok)
		}
	}
	for _, tc := range []struct {
		topic string
		ok    bool
	}{{"a/b", true}, {"a//b", true}, {"", false}, {"a/+", false}, {"#", false}} {
		if err := ValidTopic(tc.topic); (err == nil) != tc.ok {
			t.Errorf("ValidTopic(%q) = %v, want ok %v", tc.topic, err, tc.ok)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	neg := -time.Second
	for _, tc := range []struct {
		name string
		c    Config
		want []string
	}{
		{"defaults", Config{URL: "mqtt://b"}, nil},
		{"no url", Config{}, []string{`missing required key "url"`}},
		{"tls on mqtt", Config{URL: "mqtt://b", TLS: &secret.TLS{}}, []string{"tls: set, but"}},
		{"tls files", Config{URL: "mqtts://b", TLS: &secret.TLS{CertFile: "c.pem"}}, []string{"tls.cert_file: needs key_file"}},
		{"password alone", Config{URL: "mqtt://b", Password: secret.New("x")}, []string{"password: set without a username"}},
		{"protocol", Config{URL: "mqtt://b", Protocol: "3"}, []string{`protocol: "3"`}},
		{"session expiry", Config{URL: "mqtt://b", SessionExpiry: &neg}, []string{"session_expiry: must not be negative"}},
		{"keep alive", Config{URL: "mqtt://b", KeepAlive: 20 * time.Hour}, []string{"keep_alive:"}},
		{"reconnect", Config{URL: "mqtt://b", Reconnect: Backoff{Initial: time.Minute, Max: time.Second}}, []string{"reconnect: want 0 < initial <= max"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.SetDefaults()
			err := tc.c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v, want %q", err, w)
				}
			}
		})
	}
	var c Config
	c.SetDefaults()
	if !c.Persistent() || *c.SessionExpiry != time.Hour || c.Protocol != ProtocolAuto {
		t.Errorf("defaults: %+v", c)
	}
	c = Config{CleanStart: true}
	c.SetDefaults()
	if c.Persistent() {
		t.Errorf("clean_start: true is persistent")
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	for n, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		want *= time.Millisecond
		for range 50 {
			if d := backoff(b, n); d < want/2 || d > want {
				t.Fatalf("attempt %d: %v, want within [%v, %v]", n, d, want/2, want)
			}
		}
	}
	if d := backoff(b, 1000); d > time.Second {
		t.Errorf("attempt 1000: %v", d)
	}
}

// TestKeepTopicOrder: after a message that will be retried, the ones after
// it on its topic fail too; other topics and permanent failures do not.
func TestKeepTopicOrder(t *testing.T) {
	lost := errors.New("connection lost")
	denied := &PublishError{Topic: "b", Code: 0x87}
	msgs := []*Outgoing{{Topic: "a"}, {Topic: "b"}, {Topic: "a"}, {Topic: "b"}, {Topic: "a"}, {Topic: "c"}}
	errs := []error{nil, denied, lost, nil, nil, nil}
	keepTopicOrder(msgs, errs)
	got := make([]string, len(errs))
	for i, err := range errs {
		switch {
		case err == nil:
			got[i] = "ok"
		case IsPermanent(err):
			got[i] = "permanent"
		case errors.Is(err, ErrEarlierFailed) && errors.Is(err, lost):
			got[i] = "after"
		default:
			got[i] = "retry"
		}
	}
	if want := "[ok permanent retry ok after ok]"; fmt.Sprint(got) != want {
		t.Errorf("got %v, want %s", got, want)
	}
}

func TestRefusedError(t *testing.T) {
	for _, tc := range []struct {
		e        RefusedError
		kind     string
		protocol bool
	}{
		{RefusedError{Code: 0x84}, "protocol", true},
		{RefusedError{Code: 0x01, V3: true}, "protocol", true},
		{RefusedError{Code: 0x86}, "auth", false},
		{RefusedError{Code: 0x04, V3: true}, "auth", false},
		{RefusedError{Code: 0x85}, "client_id", false},
		{RefusedError{Code: 0x89}, "unavailable", false},
		{RefusedError{Code: 0x80}, "other", false},
	} {
		if tc.e.Kind() != tc.kind || tc.e.ProtocolRefused() != tc.protocol {
			t.Errorf("%v: kind %s protocol %v", &tc.e, tc.e.Kind(), tc.e.ProtocolRefused())
		}
	}
}

func TestResolve(t *testing.T) {
	c := Config{URL: "mqtts://b", TLS: &secret.TLS{CAFile: "ca.pem", CertFile: "/abs/c.pem"}}
	c.Resolve("/etc/sluice")
	if c.TLS.CAFile != "/etc/sluice/ca.pem" || c.TLS.CertFile != "/abs/c.pem" || c.TLS.KeyFile != "" {
		t.Errorf("resolved %+v", c.TLS)
	}
	if err := c.CheckFiles(); err == nil || !strings.Contains(err.Error(), "ca_file") {
		t.Errorf("CheckFiles with a missing file: %v", err)
	}
}
