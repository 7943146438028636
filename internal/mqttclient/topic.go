package mqttclient

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ValidTopic checks a topic name to publish to: not empty, no wildcards, no
// NUL, at most 65535 bytes of UTF-8.
func ValidTopic(t string) error {
	switch {
	case t == "":
		return errors.New("empty topic")
	case len(t) > 65535:
		return errors.New("topic longer than 65535 bytes")
	case !utf8.ValidString(t):
		return errors.New("topic is not UTF-8")
	case strings.ContainsAny(t, "+#\x00"):
		return fmt.Errorf("topic %q has a wildcard (+ #) or NUL", t)
	}
	return nil
}

// ValidFilter checks a subscription filter, including shared subscriptions
// ($share/<group>/<filter>).
func ValidFilter(f string) error {
	if f == "" {
		return errors.New("empty filter")
	}
	if len(f) > 65535 || !utf8.ValidString(f) || strings.ContainsRune(f, 0) {
		return fmt.Errorf("filter %q: not UTF-8, has NUL, or longer than 65535 bytes", f)
	}
	inner := f
	if rest, ok := strings.CutPrefix(f, "$share/"); ok {
		group, filter, ok := strings.Cut(rest, "/")
		switch {
		case !ok || filter == "":
			return fmt.Errorf("filter %q: want $share/<group>/<filter>", f)
		case group == "" || strings.ContainsAny(group, "+#"):
			return fmt.Errorf("filter %q: the share group must be a name without + or #", f)
		}
		inner = filter
	}
	levels := strings.Split(inner, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return fmt.Errorf("filter %q: # must be the last level", f)
		case l != "#" && l != "+" && strings.ContainsAny(l, "+#"):
			return fmt.Errorf("filter %q: + and # must fill a whole level", f)
		}
	}
	return nil
}
