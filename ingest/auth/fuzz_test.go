package auth

import (
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// FuzzParseACL feeds the ACL parser arbitrary files: it must answer with
// rules or an error, never panic, and a parsed ACL must answer every check.
func FuzzParseACL(f *testing.F) {
	f.Add([]byte(testACL))
	f.Add([]byte("rules:\n  - users: [a, \"*\"]\n    deny: all\n    topics: [\"%u/%c/+/#\"]\n"))
	f.Add([]byte("rules: []\n"))
	f.Add([]byte("rules:\n  - allow: publish\n    topics: [\"a/#/b\"]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseACL("acl.yaml", data)
		if err != nil {
			if a != nil {
				t.Fatal("an ACL and an error")
			}
			return
		}
		for _, topic := range []string{"a", "a/b", "$SYS/x", "devices/u/c", ""} {
			a.CanPublish("u", "c", topic)
			a.CanSubscribe("u", "c", topic)
			a.CanSubscribe("", "", topic+"/#")
			a.CanSubscribe("u", "c", "+/"+topic)
		}
	})
}

// FuzzPatternChecks checks the filter relations against each other on
// arbitrary filters: a filter that covers another intersects it, and a
// topic it matches is matched by what covers it.
func FuzzPatternChecks(f *testing.F) {
	f.Add("devices/%u/#", "devices/u/+/x", "devices/u/a/x")
	f.Add("#", "$SYS/#", "$SYS/a")
	f.Add("a/+", "a/#", "a")
	f.Fuzz(func(t *testing.T, rule, filter, topic string) {
		p, err := parsePattern(rule)
		if err != nil || checkFilter(filter) != nil || filter == "" || strings.ContainsAny(topic, "+#") {
			return
		}
		w := who{user: "u", client: "c"}
		levels := strings.Split(filter, "/")
		covers, meets := p.covers(levels, w), p.intersects(levels, w)
		if covers && !meets {
			t.Fatalf("%q covers %q but does not intersect it", rule, filter)
		}
		sub, _ := parsePattern(filter)
		if covers && sub.matches(topic, w) && !p.matches(topic, w) {
			t.Fatalf("%q covers %q, which matches %q, but %q does not", rule, filter, topic, rule)
		}
		if !meets && sub.matches(topic, w) && p.matches(topic, w) {
			t.Fatalf("%q and %q both match %q but do not intersect", rule, filter, topic)
		}
	})
}

// FuzzParsePasswords feeds the password file parser arbitrary files; its
// errors never show a hash.
func FuzzParsePasswords(f *testing.F) {
	f.Add([]byte("# users\nalice:$2a$04$abcdefghijklmnopqrstuu5m0dqf2ZIdS6vdQ0Dj6BnCW1r6h6tJi\n"))
	f.Add([]byte("bob:$2y$10$x\n\r\n:x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePasswords("passwd", data)
		if err != nil {
			for _, line := range strings.Split(string(data), "\n") {
				_, hash, _ := strings.Cut(strings.TrimRight(line, "\r"), ":")
				if _, herr := bcrypt.Cost([]byte(hash)); herr == nil && strings.Contains(err.Error(), hash) {
					t.Fatalf("an error shows a hash: %v", err)
				}
			}
			return
		}
		NewVerifier(p)
	})
}
