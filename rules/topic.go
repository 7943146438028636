package rules

import (
	"fmt"
	"strings"
)

// Filter is an MQTT topic filter whose single-level wildcards may be named:
// "plant/+site/+line/+device/telemetry" matches "plant/north/l1/b7/telemetry"
// and binds site=north, line=l1, device=b7. A trailing "#" may be named too
// ("+name" and "#name"); it binds the rest of the topic.
type Filter struct {
	text   string
	levels []level
	names  []string
}

type level struct {
	lit  string // literal level, when kind == litLevel
	kind byte   // litLevel, plusLevel or hashLevel
	slot int    // index into names, or -1 when unnamed
}

const (
	litLevel byte = iota
	plusLevel
	hashLevel
)

// ParseFilter parses a topic filter with optional named wildcards.
func ParseFilter(text string) (*Filter, error) {
	if text == "" {
		return nil, fmt.Errorf("empty topic filter")
	}
	f := &Filter{text: text}
	parts := strings.Split(text, "/")
	seen := map[string]bool{}
	for i, p := range parts {
		l := level{slot: -1}
		switch {
		case strings.HasPrefix(p, "+"):
			l.kind = plusLevel
		case strings.HasPrefix(p, "#"):
			if i != len(parts)-1 {
				return nil, fmt.Errorf("topic filter %q: # must be the last level", text)
			}
			l.kind = hashLevel
		default:
			if strings.ContainsAny(p, "+#") {
				return nil, fmt.Errorf("topic filter %q: a wildcard must fill a whole level, not %q", text, p)
			}
			l.lit = p
		}
		if l.kind != litLevel {
			if name := p[1:]; name != "" {
				if !isIdent(name) {
					return nil, fmt.Errorf("topic filter %q: segment name %q must be a letter followed by letters, digits or _", text, name)
				}
				if seen[name] {
					return nil, fmt.Errorf("topic filter %q: segment name %q used twice", text, name)
				}
				seen[name] = true
				l.slot = len(f.names)
				f.names = append(f.names, name)
			}
		}
		f.levels = append(f.levels, l)
	}
	return f, nil
}

// MustFilter is ParseFilter for filters known to be valid.
func MustFilter(text string) *Filter {
	f, err := ParseFilter(text)
	if err != nil {
		panic(err)
	}
	return f
}

func (f *Filter) String() string { return f.text }

// Names lists the segment names in the order they appear.
func (f *Filter) Names() []string { return f.names }

// Match reports whether topic matches. When it does and values is not nil,
// values[i] is set to the level bound to Names()[i]; values must have
// len(Names()) elements.
func (f *Filter) Match(topic string, values []string) bool {
	// Topics starting with $ (such as $SYS) are not matched by a leading
	// wildcard [MQTT-4.7.2-1].
	if len(topic) > 0 && topic[0] == '$' && len(f.levels) > 0 && f.levels[0].kind != litLevel {
		return false
	}
	rest := topic
	for i, l := range f.levels {
		if l.kind == hashLevel {
			if l.slot >= 0 && values != nil {
				values[l.slot] = rest
			}
			return true
		}
		var part string
		cut := strings.IndexByte(rest, '/')
		last := cut < 0
		if last {
			part = rest
		} else {
			part, rest = rest[:cut], rest[cut+1:]
		}
		switch l.kind {
		case litLevel:
			if part != l.lit {
				return false
			}
		case plusLevel:
			if l.slot >= 0 && values != nil {
				values[l.slot] = part
			}
		}
		if last {
			// The topic ended: it matches if the filter ends here too, or
			// continues only with "#" (which matches the parent level).
			next := f.levels[i+1:]
			if len(next) == 1 && next[0].kind == hashLevel {
				if next[0].slot >= 0 && values != nil {
					values[next[0].slot] = ""
				}
				return true
			}
			return len(next) == 0
		}
	}
	return false
}

func isIdent(s string) bool {
	for i, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case i > 0 && r >= '0' && r <= '9':
		default:
			return false
		}
	}
	return s != ""
}
