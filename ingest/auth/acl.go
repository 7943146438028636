// Package auth decides who may connect to the broker and what each client
// may publish and subscribe to: the password file (bcrypt hashes, managed
// with `sluice passwd`) and the ACL file. It knows nothing of mochi; the
// ingest hook asks it.
package auth

import (
	"fmt"
	"os"
	"strings"

	"github.com/sluicehq/sluice/internal/conf"
)

// ACL is a parsed ACL file: rules checked top to bottom, the first that
// applies to the client, the action and the topic decides; when none does,
// the answer is no. A broker without an ACL file allows everything.
type ACL struct {
	File  string
	rules []rule
}

// aclFile is the ACL file's YAML shape.
type aclFile struct {
	Rules []ruleConfig `yaml:"rules"`
}

type ruleConfig struct {
	// Users the rule applies to: names (usernames or certificate
	// identities), or "*" for every authenticated client. Omitted: every
	// client, anonymous ones too.
	Users stringList `yaml:"users"`
	// Anonymous makes the rule apply to anonymous clients only.
	Anonymous bool `yaml:"anonymous"`
	// Allow or Deny: publish, subscribe or all (one, or a list).
	Allow stringList `yaml:"allow"`
	Deny  stringList `yaml:"deny"`
	// Topics are MQTT topic filters; %u is the username, %c the client id.
	Topics []string `yaml:"topics"`
}

// stringList decodes from one string or a list of strings.
type stringList []string

func (s *stringList) UnmarshalYAML(unmarshal func(any) error) error {
	var one string
	if err := unmarshal(&one); err == nil {
		*s = stringList{one}
		return nil
	}
	var many []string
	if err := unmarshal(&many); err != nil {
		return fmt.Errorf("want a string or a list of strings")
	}
	*s = many
	return nil
}

func (f *aclFile) Validate() error {
	var p conf.Problems
	if len(f.Rules) == 0 {
		p.Addf("rules", "no rules: an empty ACL denies everything; list at least one rule")
	}
	for i, r := range f.Rules {
		p.Nest(fmt.Sprintf("rules[%d]", i), r.validate())
	}
	return p.Err()
}

func (r *ruleConfig) validate() error {
	var p conf.Problems
	switch {
	case len(r.Allow) > 0 && len(r.Deny) > 0:
		p.Addf("", "a rule either allows or denies; split it in two")
	case len(r.Allow) == 0 && len(r.Deny) == 0:
		p.Addf("", "missing required key \"allow\" or \"deny\"")
	}
	for _, key := range []string{"allow", "deny"} {
		list := r.Allow
		if key == "deny" {
			list = r.Deny
		}
		for _, a := range list {
			if a != "publish" && a != "subscribe" && a != "all" {
				p.Addf(key, "unknown action %q (want publish, subscribe or all)", a)
			}
		}
	}
	if r.Anonymous && len(r.Users) > 0 {
		p.Addf("anonymous", "a rule for anonymous clients cannot also name users")
	}
	for _, u := range r.Users {
		if u == "" {
			p.Addf("users", "empty user name")
		}
	}
	if len(r.Topics) == 0 {
		p.Missing("topics")
	}
	for j, t := range r.Topics {
		if _, err := parsePattern(t); err != nil {
			p.Addf(fmt.Sprintf("topics[%d]", j), "%v", err)
		}
	}
	return p.Err()
}

// LoadACL reads and checks an ACL file. Problems are reported with the
// file, line and key.
func LoadACL(path string) (*ACL, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseACL(path, data)
}

// ParseACL parses ACL file content; name is used in error messages.
func ParseACL(name string, data []byte) (*ACL, error) {
	var f aclFile
	if _, err := conf.Decode(name, data, &f); err != nil {
		return nil, err
	}
	a := &ACL{File: name}
	for _, rc := range f.Rules {
		r := rule{anonymous: rc.Anonymous, allow: len(rc.Allow) > 0}
		actions := rc.Allow
		if !r.allow {
			actions = rc.Deny
		}
		for _, act := range actions {
			r.publish = r.publish || act == "publish" || act == "all"
			r.subscribe = r.subscribe || act == "subscribe" || act == "all"
		}
		for _, u := range rc.Users {
			if u == "*" {
				r.anyUser = true
			} else {
				r.users = append(r.users, u)
			}
		}
		for _, t := range rc.Topics {
			p, _ := parsePattern(t) // checked by Validate
			r.topics = append(r.topics, p)
		}
		a.rules = append(a.rules, r)
	}
	return a, nil
}

type rule struct {
	allow              bool
	publish, subscribe bool
	anonymous          bool     // anonymous clients only
	anyUser            bool     // "*": every authenticated client
	users              []string // named users
	topics             []pattern
}

// appliesTo reports whether the rule is about client w.
func (r *rule) appliesTo(w who) bool {
	switch {
	case r.anonymous:
		return w.user == ""
	case r.anyUser && w.user != "":
		return true
	case len(r.users) > 0:
		for _, u := range r.users {
			if u == w.user {
				return true
			}
		}
		return false
	default:
		return !r.anyUser // no users named: everyone
	}
}

// CanPublish reports whether the client (user "" when anonymous) may
// publish to topic.
func (a *ACL) CanPublish(user, clientID, topic string) bool {
	w := who{user: user, client: clientID}
	for i := range a.rules {
		r := &a.rules[i]
		if !r.publish || !r.appliesTo(w) {
			continue
		}
		for j := range r.topics {
			if r.topics[j].matches(topic, w) {
				return r.allow
			}
		}
	}
	return false
}

// CanSubscribe reports whether the client may subscribe to filter, or,
// for a topic name (no wildcards), receive a message published to it.
//
// A filter with wildcards is allowed when the first rule that decides it is
// an allow rule some of whose topics overlap it; a deny rule decides only
// when it covers the whole filter. A subscription that is allowed because
// it overlaps an allowed subtree still receives only the messages whose
// topics are allowed: the broker checks each delivery by topic.
func (a *ACL) CanSubscribe(user, clientID, filter string) bool {
	w := who{user: user, client: clientID}
	filter = stripShare(filter)
	if !hasWildcard(filter) {
		for i := range a.rules {
			r := &a.rules[i]
			if !r.subscribe || !r.appliesTo(w) {
				continue
			}
			for j := range r.topics {
				if r.topics[j].matches(filter, w) {
					return r.allow
				}
			}
		}
		return false
	}
	levels := strings.Split(filter, "/")
	for i := range a.rules {
		r := &a.rules[i]
		if !r.subscribe || !r.appliesTo(w) {
			continue
		}
		for j := range r.topics {
			if r.allow && r.topics[j].intersects(levels, w) {
				return true
			}
			if !r.allow && r.topics[j].covers(levels, w) {
				return false
			}
		}
	}
	return false
}

// Len is the number of rules.
func (a *ACL) Len() int { return len(a.rules) }
