package secret_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"

	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/secret"
)

const pw = "hunter2-Zq9"

type config struct {
	User     string        `yaml:"user"`
	Password secret.String `yaml:"password"`
}

// holder keeps a config in an unexported field, as a sink keeps its Config:
// fmt reaches such fields by reflection, without calling their methods.
type holder struct {
	cfg config
	ptr *config
}

func TestEveryWayOfPrintingRedacts(t *testing.T) {
	s := secret.New(pw)
	c := config{User: "sluice", Password: s}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10s", "%T"} {
		out = append(out, fmt.Sprintf(verb, s), fmt.Sprintf(verb, c), fmt.Sprintf(verb, &c),
			fmt.Sprintf(verb, holder{cfg: c, ptr: &c}), fmt.Sprintf(verb, &holder{cfg: c}), fmt.Sprintf(verb, []secret.String{s}),
			fmt.Sprintf(verb, map[string]secret.String{"k": s}))
	}
	out = append(out, fmt.Sprint(s), fmt.Sprintln(c), s.String(), s.GoString(), fmt.Errorf("connect: %w", fmt.Errorf("%v", c)).Error())
	for _, v := range []any{s, c, &c, holder{cfg: c}} {
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		y, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(j), string(y))
	}
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var b bytes.Buffer
		log := slog.New(h(&b))
		log.Info("config", "password", s, "config", c, "ptr", &c, "holder", holder{cfg: c}, slog.Any("any", s), slog.Group("g", "p", s))
		out = append(out, b.String())
	}
	for _, o := range out {
		if strings.Contains(o, pw) || strings.Contains(o, fmt.Sprintf("%x", pw)) || strings.Contains(o, fmt.Sprintf("%X", pw)) {
			t.Errorf("leaked: %s", o)
		}
	}
	if got := fmt.Sprintf("%v|%+v|%q", s, c, s); got != `[redacted]|{User:sluice Password:[redacted]}|"[redacted]"` {
		t.Errorf("got %s", got)
	}
	if j, _ := json.Marshal(c); string(j) != `{"User":"sluice","Password":"[redacted]"}` {
		t.Errorf("json %s", j)
	}
	if s.Reveal() != pw || !s.IsSet() || s.Source() != "config" {
		t.Errorf("Reveal %q IsSet %v Source %q", s.Reveal(), s.IsSet(), s.Source())
	}
	var unset secret.String
	if fmt.Sprintf("%v%s", unset, unset) != "" || unset.IsSet() || unset.Reveal() != "" || secret.New("").IsSet() {
		t.Errorf("unset prints %q", fmt.Sprint(unset))
	}
}

func TestSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	if err := os.WriteFile(file, []byte(pw+"\r\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SECRET_TEST_PW", pw)
	cases := []struct {
		yaml, want, source string
	}{
		{"password: " + pw, pw, "config"},
		{`password: "0123"`, "0123", "config"},
		{"password: 0123", "0123", "config"}, // as written, not 83
		{"password: 1.50", "1.50", "config"},
		{"password: true", "true", "config"},
		{"password: {env: SECRET_TEST_PW}", pw, "env SECRET_TEST_PW"},
		{"password:\n  env: SECRET_TEST_PW", pw, "env SECRET_TEST_PW"},
		{"password: {file: " + file + "}", pw, "file " + file},
		{"password: &a {file: " + file + "}", pw, "file " + file},
		{"password:", "", ""},
		{"user: x", "", ""},
	}
	for _, c := range cases {
		t.Run(c.yaml, func(t *testing.T) {
			var v config
			if _, err := conf.Decode("s.yaml", []byte(c.yaml+"\n"), &v); err != nil {
				t.Fatal(err)
			}
			if v.Password.Reveal() != c.want || v.Password.Source() != c.source || v.Password.IsSet() != (c.want != "") {
				t.Fatalf("got %q from %q, want %q from %q", v.Password.Reveal(), v.Password.Source(), c.want, c.source)
			}
		})
	}
}

func TestErrorsNameTheSourceNotTheValue(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SECRET_TEST_PW", pw)
	t.Setenv("SECRET_TEST_EMPTY", "")
	os.Unsetenv("SECRET_TEST_UNSET")
	// Every case has the secret written inline next to the bad key, so an
	// error that quoted its neighbourhood would show it.
	cases := []struct {
		name, yaml, want string
	}{
		{"unset variable", "other: " + pw + "\npassword: {env: SECRET_TEST_UNSET}",
			"s.yaml:2:17: password.env: environment variable SECRET_TEST_UNSET is not set"},
		{"empty variable", "other: " + pw + "\npassword: {env: SECRET_TEST_EMPTY}",
			"s.yaml:2:17: password.env: environment variable SECRET_TEST_EMPTY is empty"},
		{"missing file", "other: " + pw + "\npassword:\n  file: " + dir + "/nosuch",
			"s.yaml:3:9: password.file: read secret: open " + dir + "/nosuch: no such file or directory"},
		{"empty file", "other: " + pw + "\npassword: {file: " + empty + "}",
			"s.yaml:2:18: password.file: secret file " + empty + " is empty"},
		{"both", "other: " + pw + "\npassword: {env: SECRET_TEST_PW, file: " + empty + "}",
			"s.yaml:2:39: password.file: set env or file, not both"},
		{"neither", "other: " + pw + "\npassword: {}", "s.yaml:2:11: password: want {env: NAME} or {file: PATH}"},
		{"unknown key", "other: " + pw + "\npassword: {envv: X}",
			"s.yaml:2:12: password.envv: unknown key: a secret is text, {env: NAME} or {file: PATH}"},
		{"a list", "other: " + pw + "\npassword: [" + pw + "]",
			"s.yaml:2:11: password: want the secret as text, or {env: NAME} or {file: PATH}"},
		{"a list as the name", "other: " + pw + "\npassword: {env: [" + pw + "]}", "s.yaml:2:17: password.env: want a name or a path"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var v struct {
				Other    string        `yaml:"other"`
				Password secret.String `yaml:"password"`
			}
			_, err := conf.Decode("s.yaml", []byte(c.yaml+"\n"), &v)
			if err == nil {
				t.Fatal("no error")
			}
			if err.Error() != c.want {
				t.Errorf("got  %s\nwant %s", err, c.want)
			}
			if strings.Contains(err.Error(), pw) || strings.Contains(fmt.Sprintf("%+v", err), pw) {
				t.Errorf("error shows the secret: %s", err)
			}
		})
	}
}

func TestTLSValidate(t *testing.T) {
	for _, c := range []struct {
		tls  secret.TLS
		want string
	}{
		{secret.TLS{}, ""},
		{secret.TLS{CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem"}, ""},
		{secret.TLS{CertFile: "c.pem"}, "cert_file: needs key_file: the client certificate's private key"},
		{secret.TLS{KeyFile: "k.pem"}, "key_file: needs cert_file: the client certificate"},
	} {
		err := c.tls.Validate()
		if got := fmt.Sprint(err); (err == nil && c.want != "") || (err != nil && got != c.want) {
			t.Errorf("%+v: got %v, want %q", c.tls, err, c.want)
		}
	}
}
