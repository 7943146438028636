package auth

import (
	"fmt"
	"strings"
)

// A pattern is an ACL topic filter: MQTT levels where "+" and "#" are
// wildcards, and where %u (username) and %c (client id) stand for the
// client's values inside any literal level.
type pattern struct {
	text   string
	levels []string
	vars   bool // some level holds %u or %c
}

func parsePattern(text string) (pattern, error) {
	if text == "" {
		return pattern{}, fmt.Errorf("empty topic filter")
	}
	if err := checkFilter(text); err != nil {
		return pattern{}, err
	}
	p := pattern{text: text, levels: strings.Split(text, "/")}
	p.vars = strings.Contains(text, "%u") || strings.Contains(text, "%c")
	return p, nil
}

// checkFilter reports whether text is a valid MQTT topic filter: "#" only
// as the whole last level, "+" only as a whole level.
func checkFilter(text string) error {
	levels := strings.Split(text, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return fmt.Errorf("topic filter %q: # must be the last level", text)
		case l != "#" && l != "+" && strings.ContainsAny(l, "+#"):
			return fmt.Errorf("topic filter %q: a wildcard must fill a whole level, not %q", text, l)
		}
	}
	return nil
}

// who is the client a check is for.
type who struct {
	user, client string
}

// level returns pattern level i with %u and %c replaced, and whether the
// replacement is usable: a value holding "/", "+" or "#" (or an empty one)
// would widen the pattern beyond the client's own subtree, so a pattern
// needing it applies to nobody.
func (p *pattern) level(i int, w who) (string, bool) {
	l := p.levels[i]
	if !p.vars || !strings.Contains(l, "%") {
		return l, true
	}
	var b strings.Builder
	for j := 0; j < len(l); j++ {
		if l[j] == '%' && j+1 < len(l) && (l[j+1] == 'u' || l[j+1] == 'c') {
			v := w.user
			if l[j+1] == 'c' {
				v = w.client
			}
			if v == "" || strings.ContainsAny(v, "/+#") {
				return "", false
			}
			b.WriteString(v)
			j++
			continue
		}
		b.WriteByte(l[j])
	}
	return b.String(), true
}

// matches reports whether the pattern matches topic (a topic name, no
// wildcards). A leading wildcard does not match a topic starting with "$"
// [MQTT-4.7.2-1].
func (p *pattern) matches(topic string, w who) bool {
	if strings.HasPrefix(topic, "$") && isWild(p.levels[0]) {
		return false
	}
	rest := topic
	for i := range p.levels {
		l, ok := p.level(i, w)
		if !ok {
			return false
		}
		if l == "#" {
			return true
		}
		part, more := cut(&rest)
		if l != "+" && l != part {
			return false
		}
		if !more {
			// The topic ended: a match if the pattern ends here too or
			// goes on with only "#" (which also matches the parent level).
			return i == len(p.levels)-1 || (i == len(p.levels)-2 && p.levels[i+1] == "#")
		}
	}
	return false
}

// intersects reports whether some topic is matched by both the pattern and
// the subscription filter f.
func (p *pattern) intersects(f []string, w who) bool {
	if strings.HasPrefix(f[0], "$") && isWild(p.levels[0]) {
		return false
	}
	if strings.HasPrefix(p.levels[0], "$") && isWild(f[0]) {
		return false
	}
	for i := 0; ; i++ {
		pEnd, fEnd := i == len(p.levels), i == len(f)
		switch {
		case pEnd && fEnd:
			return true
		case pEnd:
			return f[i] == "#"
		case fEnd:
			return p.levels[i] == "#"
		}
		l, ok := p.level(i, w)
		if !ok {
			return false
		}
		if l == "#" || f[i] == "#" {
			return true
		}
		if l != "+" && f[i] != "+" && l != f[i] {
			return false
		}
	}
}

// covers reports whether every topic the subscription filter f matches is
// also matched by the pattern.
func (p *pattern) covers(f []string, w who) bool {
	if strings.HasPrefix(f[0], "$") && isWild(p.levels[0]) {
		return false
	}
	for i := 0; ; i++ {
		pEnd, fEnd := i == len(p.levels), i == len(f)
		switch {
		case pEnd && fEnd:
			return true
		case pEnd:
			return false // f goes deeper than the pattern
		case fEnd:
			return p.levels[i] == "#" && i == len(p.levels)-1
		}
		l, ok := p.level(i, w)
		if !ok {
			return false
		}
		switch {
		case l == "#":
			return true
		case f[i] == "#":
			return false
		case l == "+":
		case f[i] == "+" || l != f[i]:
			return false
		}
	}
}

func isWild(level string) bool { return level == "+" || level == "#" }

// cut takes the first level off *rest and reports whether more follow.
func cut(rest *string) (string, bool) {
	i := strings.IndexByte(*rest, '/')
	if i < 0 {
		part := *rest
		*rest = ""
		return part, false
	}
	part := (*rest)[:i]
	*rest = (*rest)[i+1:]
	return part, true
}

// hasWildcard reports whether a filter holds "+" or "#" levels.
func hasWildcard(filter string) bool {
	for _, l := range strings.Split(filter, "/") {
		if isWild(l) {
			return true
		}
	}
	return false
}

// stripShare returns the filter of a shared subscription
// ("$share/<group>/<filter>"), or filter itself.
func stripShare(filter string) string {
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			return rest[i+1:]
		}
	}
	return filter
}
