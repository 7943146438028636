package secret

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Redactor takes the configured secrets out of text that leaves sluice: a
// server that echoes the request it refused (its Authorization header, its
// URL) puts a secret into an error, which becomes a log line, a sink's last
// error in /api/v1/status, a dead letter's reason. Every String a
// configuration holds is replaced with "[redacted]" wherever it appears, as
// written and as JSON, Go quoting and URL query encoding would write it;
// with a Username beside it, so is the HTTP basic credential the two make.
//
// A nil *Redactor leaves text as it is.
type Redactor struct {
	r     *strings.Replacer
	forms []string // what r replaces, the longest first
}

// NewRedactor returns a Redactor of the secrets held in config: every set
// String reachable from it through exported fields, pointers, slices,
// arrays and maps. It finds them by their type, so that a component's
// secrets are redacted without anyone listing them. It returns nil when
// there are none.
func NewRedactor(config any) *Redactor {
	var found []string
	collect(reflect.ValueOf(config), map[uintptr]bool{}, &found)
	var forms []string
	for _, s := range found {
		j, _ := json.Marshal(s) // a string always encodes
		q := strconv.Quote(s)
		forms = append(forms, s, string(j[1:len(j)-1]), q[1:len(q)-1], url.QueryEscape(s))
	}
	// The longest first: where two match at one place, the longer wins.
	slices.SortFunc(forms, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	forms = slices.Compact(forms)
	if len(forms) == 0 {
		return nil
	}
	pairs := make([]string, 0, 2*len(forms))
	for _, f := range forms {
		if f != "" {
			pairs = append(pairs, f, redacted)
		}
	}
	return &Redactor{r: strings.NewReplacer(pairs...), forms: forms}
}

var stringType = reflect.TypeFor[String]()

// collect appends the values of the Strings v holds to found (seen: the
// pointers followed).
func collect(v reflect.Value, seen map[uintptr]bool, found *[]string) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() || seen[v.Pointer()] {
			return
		}
		seen[v.Pointer()] = true
		collect(v.Elem(), seen, found)
	case reflect.Interface:
		if !v.IsNil() {
			collect(v.Elem(), seen, found)
		}
	case reflect.Struct:
		if v.Type() == stringType {
			if s := v.Interface().(String); s.IsSet() {
				*found = append(*found, s.Reveal())
			}
			return
		}
		t := v.Type()
		for i := range t.NumField() {
			if t.Field(i).IsExported() {
				collect(v.Field(i), seen, found)
			}
		}
		// The HTTP basic credential a username and a password make.
		user, pass := v.FieldByName("Username"), v.FieldByName("Password")
		if user.IsValid() && user.Kind() == reflect.String && user.String() != "" && pass.IsValid() && pass.Type() == stringType {
			if p := pass.Interface().(String); p.IsSet() {
				*found = append(*found, base64.StdEncoding.EncodeToString([]byte(user.String()+":"+p.Reveal())))
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			collect(v.Index(i), seen, found)
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			collect(it.Value(), seen, found)
		}
	}
}

// Redact returns text with every secret replaced, and the start of one
// (4 bytes or more) where text is cut short, before an ellipsis ("...",
// "…"): errors keep only the start of what a server answered, and mark the
// cut so.
func (r *Redactor) Redact(text string) string {
	if r == nil {
		return text
	}
	text = r.r.Replace(text)
	for _, cut := range cuts(text) {
		for _, f := range r.forms {
			if k := startAt(text[:cut], f); k > 0 {
				text = text[:cut-k] + redacted + text[cut:]
				break
			}
		}
	}
	return text
}

// minCut is the shortest start of a secret redacted where text is cut.
const minCut = 4

// cuts returns where text was cut short (before an ellipsis), last first
// (so that replacing at one leaves the others where they were).
func cuts(text string) []int {
	var at []int
	for _, mark := range []string{"...", "…"} {
		for i := 0; ; {
			j := strings.Index(text[i:], mark)
			if j < 0 {
				break
			}
			k := i + j
			for k > 0 && text[k-1] == ' ' {
				k-- // "cut ..."
			}
			at = append(at, k)
			i += j + len(mark)
		}
	}
	slices.Sort(at)
	slices.Reverse(at)
	return slices.Compact(at)
}

// startAt returns the length of the longest start of form (at least minCut,
// short of the whole) that text ends with, or 0.
func startAt(text, form string) int {
	for k := min(len(form)-1, len(text)); k >= minCut; k-- {
		if strings.HasSuffix(text, form[:k]) {
			return k
		}
	}
	return 0
}

// Handler wraps h so that no record it handles carries a secret: in the
// message, in any attribute's value (errors and other values as they
// print), in groups and in the attributes of With. With a nil Redactor it
// returns h.
func (r *Redactor) Handler(h slog.Handler) slog.Handler {
	if r == nil {
		return h
	}
	return &redactingHandler{r: r, h: h}
}

type redactingHandler struct {
	r *Redactor
	h slog.Handler
}

func (h *redactingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.h.Enabled(ctx, l)
}

func (h *redactingHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.r.Redact(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.r.attr(a))
		return true
	})
	return h.h.Handle(ctx, out)
}

func (h *redactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		out[i] = h.r.attr(a)
	}
	return &redactingHandler{r: h.r, h: h.h.WithAttrs(out)}
}

func (h *redactingHandler) WithGroup(name string) slog.Handler {
	return &redactingHandler{r: h.r, h: h.h.WithGroup(name)}
}

// attr returns a with the secrets out of its value. A value that holds none
// is kept as it is (an error stays an error, for handlers that treat it so).
func (r *Redactor) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		a.Value = slog.StringValue(r.Redact(v.String()))
	case slog.KindGroup:
		g := v.Group()
		out := make([]slog.Attr, len(g))
		for i, ga := range g {
			out[i] = r.attr(ga)
		}
		a.Value = slog.GroupValue(out...)
	case slog.KindAny:
		var text string
		switch x := v.Any().(type) {
		case error:
			text = x.Error()
		case fmt.Stringer:
			text = x.String()
		case []byte:
			text = string(x)
		default:
			text = fmt.Sprintf("%+v", x)
		}
		if red := r.Redact(text); red != text {
			a.Value = slog.StringValue(red)
		} else {
			a.Value = v
		}
	default:
		a.Value = v
	}
	return a
}
