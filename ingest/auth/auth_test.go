package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPatternMatches(t *testing.T) {
	w := who{user: "alice", client: "dev-1"}
	cases := []struct {
		pattern, topic string
		want           bool
	}{
		{"devices/%u/#", "devices/alice/t", true},
		{"devices/%u/#", "devices/alice", true},
		{"devices/%u/#", "devices/bob/t", false},
		{"devices/%u-%c/+", "devices/alice-dev-1/t", true},
		{"devices/%u-%c/+", "devices/alice-dev-1/t/x", false},
		{"#", "a/b", true},
		{"#", "$SYS/broker", false},
		{"+/b", "$SYS/b", false},
		{"$SYS/#", "$SYS/broker/uptime", true},
		{"a/+/c", "a/b/c", true},
		{"a/+/c", "a//c", true},
		{"a/+", "a", false},
		{"a", "a/b", false},
	}
	for _, c := range cases {
		p, err := parsePattern(c.pattern)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.matches(c.topic, w); got != c.want {
			t.Errorf("%q matches %q = %v, want %v", c.pattern, c.topic, got, c.want)
		}
	}
}

func TestPatternPlaceholderCannotWiden(t *testing.T) {
	p, _ := parsePattern("devices/%u/#")
	for _, user := range []string{"+", "#", "a/b", ""} {
		w := who{user: user, client: "c"}
		if p.matches("devices/"+user+"/x", w) {
			t.Errorf("user %q matched through a placeholder", user)
		}
		if p.intersects(strings.Split("devices/+/x", "/"), w) {
			t.Errorf("user %q: placeholder intersected a wildcard filter", user)
		}
	}
}

func TestPatternCoversAndIntersects(t *testing.T) {
	w := who{user: "alice"}
	cases := []struct {
		pattern, filter    string
		covers, intersects bool
	}{
		{"devices/%u/#", "devices/alice/#", true, true},
		{"devices/%u/#", "devices/alice/+/temp", true, true},
		{"devices/%u/#", "devices/+/temp", false, true},
		{"devices/%u/#", "#", false, true},
		{"devices/%u/#", "devices/bob/#", false, false},
		{"devices/%u/#", "other/#", false, false},
		{"a/+", "a/#", false, true},
		{"a/#", "a/#", true, true},
		{"a/b", "a/b/#", false, true},
		{"#", "$SYS/#", false, false},
		{"$SYS/#", "#", false, false},
		{"+/x", "a/+", false, true},
	}
	for _, c := range cases {
		p, _ := parsePattern(c.pattern)
		f := strings.Split(c.filter, "/")
		if got := p.covers(f, w); got != c.covers {
			t.Errorf("%q covers %q = %v, want %v", c.pattern, c.filter, got, c.covers)
		}
		if got := p.intersects(f, w); got != c.intersects {
			t.Errorf("%q intersects %q = %v, want %v", c.pattern, c.filter, got, c.intersects)
		}
	}
}

const testACL = `
rules:
  - users: admin
    allow: all
    topics: ["#"]
  - deny: subscribe
    topics: ["devices/+/secrets/#"]
  - users: "*"
    allow: [publish, subscribe]
    topics: ["devices/%u/#"]
  - users: "*"
    allow: subscribe
    topics: ["broadcast/#"]
  - anonymous: true
    allow: publish
    topics: ["anon/%c/#"]
`

func TestACLDecisions(t *testing.T) {
	a, err := ParseACL("acl.yaml", []byte(testACL))
	if err != nil {
		t.Fatal(err)
	}
	pub := []struct {
		user, client, topic string
		want                bool
	}{
		{"alice", "c1", "devices/alice/temp", true},
		{"alice", "c1", "devices/bob/temp", false},
		{"admin", "c2", "anything/at/all", true},
		{"", "c3", "anon/c3/x", true},
		{"", "c3", "anon/c4/x", false},
		{"", "c3", "devices//x", false},
		{"alice", "c1", "broadcast/all", false},
	}
	for _, c := range pub {
		if got := a.CanPublish(c.user, c.client, c.topic); got != c.want {
			t.Errorf("publish %s/%s %q = %v, want %v", c.user, c.client, c.topic, got, c.want)
		}
	}
	sub := []struct {
		user, filter string
		want         bool
	}{
		{"alice", "devices/alice/#", true},
		{"alice", "devices/alice/secrets/x", false}, // the deny comes first
		{"alice", "devices/+/secrets/#", false},
		{"alice", "#", true},              // overlaps; deliveries are checked by topic
		{"alice", "devices/bob/#", false}, // no overlap with anything allowed
		{"alice", "$share/g/devices/alice/t", true},
		{"alice", "broadcast/news", true},
		{"admin", "$SYS/#", false}, // "#" does not reach $ topics [MQTT-4.7.2-1]
		{"", "#", false},
	}
	for _, c := range sub {
		if got := a.CanSubscribe(c.user, "c", c.filter); got != c.want {
			t.Errorf("subscribe %s %q = %v, want %v", c.user, c.filter, got, c.want)
		}
	}
}

func TestACLErrorsNameLineAndKey(t *testing.T) {
	cases := []struct{ text, want string }{
		{"rules:\n  - allow: publish\n    topics: [\"a/#/b\"]\n", "acl.yaml:3"},
		{"rules:\n  - allow: publish\n    deny: subscribe\n    topics: [a]\n", "either allows or denies"},
		{"rules:\n  - allow: write\n    topics: [a]\n", `unknown action "write"`},
		{"rules:\n  - allow: publish\n", `missing required key "topics"`},
		{"rules:\n  - alow: publish\n    topics: [a]\n", "alow"},
		{"", "no rules"},
	}
	for _, c := range cases {
		_, err := ParseACL("acl.yaml", []byte(c.text))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseACL(%q) = %v, want an error containing %q", c.text, err, c.want)
		}
	}
}

func TestPasswordFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	if err := SetPassword(path, "alice", []byte("s3cret"), 4); err != nil {
		t.Fatal(err)
	}
	if err := SetPassword(path, "bob", []byte("hunter2"), 4); err != nil {
		t.Fatal(err)
	}
	if err := SetPassword(path, "alice", []byte("changed"), 4); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("password file mode %v, want 0600", st.Mode().Perm())
	}
	p, err := LoadPasswords(path)
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != 2 {
		t.Fatalf("%d users, want 2", p.Len())
	}
	v := NewVerifier(p)
	for _, c := range []struct {
		user, pw string
		want     bool
	}{
		{"alice", "changed", true}, {"alice", "changed", true}, // second from the cache
		{"alice", "s3cret", false}, {"bob", "hunter2", true}, {"carol", "x", false}, {"bob", "", false},
	} {
		if got := v.Verify(c.user, []byte(c.pw)); got != c.want {
			t.Errorf("Verify(%s, %s) = %v, want %v", c.user, c.pw, got, c.want)
		}
	}

	// A changed hash invalidates what the verifier remembers.
	if err := SetPassword(path, "alice", []byte("third"), 4); err != nil {
		t.Fatal(err)
	}
	p2, _ := LoadPasswords(path)
	v.Swap(p2)
	if v.Verify("alice", []byte("changed")) {
		t.Error("old password still accepted after the file changed")
	}
	if err := DeletePassword(path, "bob"); err != nil {
		t.Fatal(err)
	}
	p3, _ := LoadPasswords(path)
	if p3.Has("bob") || !p3.Has("alice") {
		t.Errorf("after deleting bob: bob=%v alice=%v", p3.Has("bob"), p3.Has("alice"))
	}
	if err := DeletePassword(path, "bob"); err == nil || !strings.Contains(err.Error(), `no user "bob"`) {
		t.Errorf("deleting a missing user: %v", err)
	}
}

func TestPasswordFileErrors(t *testing.T) {
	cases := []struct{ text, want string }{
		{"alice\n", "passwd:1: want user:hash"},
		{"# comment\n\nalice:plaintext\n", `passwd:3: user "alice": not a bcrypt hash`},
		{"alice:$2a$04$abcdefghijklmnopqrstuu5m0dqf2ZIdS6vdQ0Dj6BnCW1r6h6tJi\nalice:$2a$04$abcdefghijklmnopqrstuu5m0dqf2ZIdS6vdQ0Dj6BnCW1r6h6tJi\n", "listed twice"},
		{" alice :x\n", "white space"},
	}
	for _, c := range cases {
		_, err := ParsePasswords("passwd", []byte(c.text))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParsePasswords(%q) = %v, want an error containing %q", c.text, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "$2a$") {
			t.Errorf("error shows a hash: %v", err)
		}
	}
	if err := SetPassword(filepath.Join(t.TempDir(), "p"), "a:b", []byte("x"), 4); err == nil {
		t.Error("a user name with a colon was accepted")
	}
	if err := SetPassword(filepath.Join(t.TempDir(), "p"), "a", []byte(strings.Repeat("x", 73)), 4); err == nil || !strings.Contains(err.Error(), "72 bytes") {
		t.Errorf("a 73-byte password: %v", err)
	}
}
