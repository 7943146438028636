package secret_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/secret"
)

// A configuration as sluice's hold them: secrets in nested structs, behind
// pointers, in slices and maps; a username beside a password.
type redactConfig struct {
	Token   secret.String
	Sinks   []redactSink
	Headers map[string]secret.String
	Remote  *struct {
		Username string
		Password secret.String
	}
	Unset  secret.String
	hidden secret.String // unexported: not configuration
}

type redactSink struct {
	Name string
	Key  *secret.String
}

func TestRedactorFindsEverySecretOfAConfig(t *testing.T) {
	key := secret.New(`k<e>y&"quote"\back`)
	cfg := redactConfig{
		Token:   secret.New("tok-123"),
		Sinks:   []redactSink{{Name: "a"}, {Name: "b", Key: &key}},
		Headers: map[string]secret.String{"X-Api-Key": secret.New("api-456")},
		Remote: &struct {
			Username string
			Password secret.String
		}{"alice", secret.New("pass word/789")},
		hidden: secret.New("not-config"),
	}
	r := secret.NewRedactor(&cfg)
	basic := base64.StdEncoding.EncodeToString([]byte("alice:pass word/789"))
	for _, tc := range []struct{ in, want string }{
		{"token tok-123 refused", "token [redacted] refused"},
		{"Authorization: Basic " + basic, "Authorization: Basic [redacted]"},
		{"X-Api-Key=api-456;", "X-Api-Key=[redacted];"},
		{"as written: " + `k<e>y&"quote"\back`, "as written: [redacted]"},
		{`as JSON: {"e":"k\u003ce\u003ey\u0026\"quote\"\\back"}`, `as JSON: {"e":"[redacted]"}`},
		{"as Go quotes it: " + fmt.Sprintf("%q", `k<e>y&"quote"\back`), `as Go quotes it: "[redacted]"`},
		{"in a query: ?p=" + url.QueryEscape("pass word/789"), "in a query: ?p=[redacted]"},
		{"unexported fields are not configuration: not-config", "unexported fields are not configuration: not-config"},
		{"nothing secret", "nothing secret"},
		{"an answer cut short: Token tok-1 ...", "an answer cut short: Token [redacted] ..."},
		{"a value that starts like a secret: tok-12", "a value that starts like a secret: tok-12"},
		{"cut twice: tok-… and api-4...", "cut twice: [redacted]… and [redacted]..."},
		{"too short a start to tell: to...", "too short a start to tell: to..."},
	} {
		if got := r.Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
	if secret.NewRedactor(redactConfig{}) != nil {
		t.Error("a config without secrets has a Redactor")
	}
	var none *secret.Redactor
	if got := none.Redact("tok-123"); got != "tok-123" {
		t.Errorf("a nil Redactor changed the text: %q", got)
	}
}

type echoError struct{ body string }

func (e *echoError) Error() string { return "server said: " + e.body }

func TestRedactingHandlerLeavesNoSecretInARecord(t *testing.T) {
	cfg := redactConfig{Token: secret.New("tok-123")}
	r := secret.NewRedactor(cfg)
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			var h slog.Handler = slog.NewTextHandler(&buf, nil)
			if format == "json" {
				h = slog.NewJSONHandler(&buf, nil)
			}
			log := slog.New(r.Handler(h)).With("with", "tok-123")
			log.WithGroup("g").Warn("message tok-123",
				"string", "a tok-123 b",
				"error", &echoError{"Authorization: Token tok-123"},
				"wrapped", fmt.Errorf("write: %w", errors.New("tok-123")),
				"bytes", []byte("tok-123"),
				"struct", struct{ Header string }{"Token tok-123"},
				"stringer", stringer("tok-123"),
				slog.Group("group", "inner", "tok-123"),
				"count", 3,
				"plain error", errors.New("no secret here"),
			)
			out := buf.String()
			if strings.Contains(out, "tok-123") {
				t.Fatalf("the secret is in the record:\n%s", out)
			}
			for _, want := range []string{"message [redacted]", "a [redacted] b", "Authorization: Token [redacted]", "write: [redacted]", "no secret here", "3"} {
				if !strings.Contains(out, want) {
					t.Errorf("the record lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

type stringer string

func (s stringer) String() string { return string(s) }
