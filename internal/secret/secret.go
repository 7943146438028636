// Package secret holds what sluice must read but never show: String, a
// password or token that the config file gives inline, or names an
// environment variable or a file for, and that prints as "[redacted]"
// wherever it goes (fmt, slog, JSON, YAML); and TLS, the files a TLS client
// trusts and presents.
//
// In a config file a String is one of
//
//	password: s3cret                          # inline
//	password: {env: KAFKA_PASSWORD}           # an environment variable
//	password: {file: /run/secrets/kafka}      # a file; trailing newlines trimmed
//
// A relative file path is taken from the working directory.
//
// The variable or file is read when the config is loaded; an unset variable
// or an unreadable file is an error there, at the key's line, naming the
// variable or the file and never the value.
package secret

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"

	"github.com/sluicehq/sluice/internal/conf"
)

const redacted = "[redacted]"

// String is a secret configuration value. The zero value is unset. Only
// Reveal returns the value; every way of printing or encoding it gives
// "[redacted]" (or "" when unset).
//
// The value is held by a function, so that printing by reflection, which
// fmt does for a String in an unexported field (%+v of a sink), shows an
// address, not the text.
type String struct {
	reveal func() string // nil when unset
	source string        // "config", "env NAME", "file PATH"
}

// New returns a String holding text, as if written inline in the config
// file. New("") is unset.
func New(text string) String { return newString(text, "config") }

func newString(text, source string) String {
	if text == "" {
		return String{}
	}
	return String{reveal: func() string { return text }, source: source}
}

// Reveal returns the secret, for the one place that must send it.
func (s String) Reveal() string {
	if s.reveal == nil {
		return ""
	}
	return s.reveal()
}

// IsSet reports whether the secret holds a non-empty value.
func (s String) IsSet() bool { return s.reveal != nil }

// Source says where the secret came from, for messages that help an operator
// find a wrong one: "config", "env NAME" or "file PATH"; "" when unset.
func (s String) Source() string { return s.source }

// String returns "[redacted]", or "" when unset.
func (s String) String() string {
	if s.reveal == nil {
		return ""
	}
	return redacted
}

// GoString is String, for %#v.
func (s String) GoString() string { return s.String() }

// Format prints String for every verb (%v, %+v, %#v, %s, %q, %x, ...).
func (s String) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", s.String())
		return
	}
	io.WriteString(f, s.String())
}

// LogValue makes slog print String.
func (s String) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON encodes String.
func (s String) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalText encodes String, for encoders that use encoding.TextMarshaler.
func (s String) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MarshalYAML encodes String.
func (s String) MarshalYAML() (any, error) { return s.String(), nil }

// UnmarshalYAML decodes the inline text, {env: NAME} or {file: PATH}, and
// reads the variable or the file. A value YAML would read as a number or a
// boolean is kept as written (0123 stays "0123"). Errors carry the position
// of the offending node, so the config loader puts them on their line; none
// contains the secret.
//
// It takes the node rather than an unmarshal function: a function would give
// 0123 as "83" and errors without a position.
func (s *String) UnmarshalYAML(ctx context.Context, node ast.Node) error {
	switch n := unwrap(node).(type) {
	case *ast.NullNode:
		*s = String{}
		return nil
	case *ast.MappingNode:
		return s.fromSource(conf.Dir(ctx), n, n)
	case *ast.MappingValueNode:
		return s.fromSource(conf.Dir(ctx), n, n)
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		*s = New(n.GetToken().Value)
		return nil
	}
	var text string
	if err := yaml.NodeToValue(node, &text); err != nil {
		return errAt(node, "want the secret as text, or {env: NAME} or {file: PATH}")
	}
	*s = New(text)
	return nil
}

// unwrap looks through an anchor (&name) to the value it names.
func unwrap(n ast.Node) ast.Node {
	if a, ok := n.(*ast.AnchorNode); ok {
		return a.Value
	}
	return n
}

// fromSource reads the secret from the environment variable or the file the
// mapping names (relative to dir, the config file's folder).
func (s *String) fromSource(dir string, m ast.MapNode, node ast.Node) error {
	var env, file string
	var envAt, fileAt, first ast.Node
	for it := m.MapRange(); it.Next(); {
		key, val := it.Key(), it.Value()
		if first == nil {
			first = key
		}
		var text string
		if err := yaml.NodeToValue(val, &text); err != nil || text == "" {
			return errAt(val, "want a name or a path")
		}
		switch key.GetToken().Value {
		case "env":
			env, envAt = text, val
		case "file":
			file, fileAt = conf.Path(dir, text), val
		default:
			return errAt(key, "unknown key: a secret is text, {env: NAME} or {file: PATH}")
		}
	}
	switch {
	case envAt != nil && fileAt != nil:
		return errAt(fileAt, "set env or file, not both")
	case envAt != nil:
		text, ok := os.LookupEnv(env)
		if !ok {
			return errAt(envAt, fmt.Sprintf("environment variable %s is not set", env))
		}
		if text == "" {
			return errAt(envAt, fmt.Sprintf("environment variable %s is empty", env))
		}
		*s = newString(text, "env "+env)
	case fileAt != nil:
		data, err := os.ReadFile(file)
		if err != nil {
			return errAt(fileAt, fmt.Sprintf("read secret: %v", err))
		}
		text := strings.TrimRight(string(data), "\r\n")
		if text == "" {
			return errAt(fileAt, fmt.Sprintf("secret file %s is empty", file))
		}
		*s = newString(text, "file "+file)
	default:
		if first == nil {
			first = node
		}
		return errAt(first, "want {env: NAME} or {file: PATH}")
	}
	return nil
}

// errAt is an error at node's position. It is a yaml.Error, as goccy's own
// are, so the config loader reads the position off it; unlike goccy's, its
// text does not quote the source around it (where a secret may be written).
func errAt(node ast.Node, msg string) error {
	return &posError{msg: msg, tk: node.GetToken()}
}

type posError struct {
	msg string
	tk  *token.Token
}

var _ yaml.Error = (*posError)(nil)

func (e *posError) Error() string {
	if e.tk == nil {
		return e.msg
	}
	return fmt.Sprintf("[%d:%d] %s", e.tk.Position.Line, e.tk.Position.Column, e.msg)
}

func (e *posError) GetToken() *token.Token       { return e.tk }
func (e *posError) GetMessage() string           { return e.msg }
func (e *posError) FormatError(_, _ bool) string { return e.Error() }
