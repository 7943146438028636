package rules

import (
	"fmt"
	"math/bits"
	"strings"

	"github.com/expr-lang/expr/ast"
)

// Partition says which part of a message's topic decides where the message
// is evaluated: the worker of a pipeline in one process, the Kafka partition
// of the ingest topic in a cluster. Every reading of a series, for every
// rule, must meet the same state, so the partition key is derived from the
// rules' series keys, and from topic levels only: it is computed before a
// payload is decoded.
//
// Messages with the same key are evaluated in order by one worker; a key
// that is coarser than a rule's series key (site for a device-keyed rule) is
// correct, only less parallel. Derivation, for the rules that keep series
// state:
//
//   - when every rule's key uses some common topic levels, those levels
//     (device-keyed rules alone partition by device: exact);
//   - otherwise the level at the shallowest depth any key reaches (device
//     rules and site rules together partition by site), on the assumption,
//     true of topic hierarchies, that a deeper level belongs to one value of
//     a shallower one (a device is in one site);
//   - a key that reads anything but topic levels (a payload field, the
//     client id) cannot be computed before decoding: the pipeline then has a
//     single partition (one worker), and Notes says why.
//
// With no stateful rule the whole topic is the key, which keeps each topic's
// messages in order.
type Partition struct {
	levels levelSet // topic levels that form the key
	single bool     // one partition for everything
	// desc names the key for people: "site (topic level 2)".
	desc string
}

// String describes the partition key.
func (p Partition) String() string { return p.desc }

// Single reports whether everything goes to one partition.
func (p Partition) Single() bool { return p.single }

// Equal reports whether p and q put every topic in the same partition.
func (p Partition) Equal(q Partition) bool { return p.levels == q.levels && p.single == q.single }

// Key returns the partition key of a topic. Levels the topic does not have
// count as empty. The common cases (one level, a run of levels, the whole
// topic) return a part of topic without allocating.
func (p Partition) Key(topic string) string {
	if p.single {
		return ""
	}
	l := p.levels
	if l.from == 0 {
		return topic
	}
	lo, hi, ok := l.run()
	if !ok {
		return p.join(topic)
	}
	start, end := -1, len(topic)
	pos, levelStart := 0, 0
	for i := 0; i <= len(topic); i++ {
		if i < len(topic) && topic[i] != '/' {
			continue
		}
		// topic[levelStart:i] is level pos.
		if pos == lo {
			start = levelStart
		}
		if pos == hi {
			end = i
			break
		}
		pos++
		levelStart = i + 1
	}
	if start < 0 {
		return ""
	}
	return topic[start:end]
}

// join builds the key of levels that are not one run.
func (p Partition) join(topic string) string {
	var b strings.Builder
	for i, part := range strings.Split(topic, "/") {
		if p.levels.has(i) {
			if b.Len() > 0 {
				b.WriteByte('/')
			}
			b.WriteString(part)
		}
	}
	return b.String()
}

// levelSet is a set of topic levels (0-based): those in mask, and with from
// >= 0 every level from from on (a key naming a "#" level, or the whole
// topic: from 0).
type levelSet struct {
	mask uint64
	from int
}

const maxLevels = 64

func (s levelSet) has(i int) bool {
	return (s.from >= 0 && i >= s.from) || (i < maxLevels && s.mask&(1<<i) != 0)
}

func (s levelSet) empty() bool { return s.mask == 0 && s.from < 0 }

// deepest is the deepest level in s; maxLevels for an open set.
func (s levelSet) deepest() int {
	if s.from >= 0 {
		return maxLevels
	}
	return 63 - bits.LeadingZeros64(s.mask)
}

func (s levelSet) intersect(t levelSet) levelSet {
	out := levelSet{mask: s.mask & t.mask, from: -1}
	if s.from >= 0 {
		out.mask |= t.mask &^ (1<<s.from - 1)
	}
	if t.from >= 0 {
		out.mask |= s.mask &^ (1<<t.from - 1)
	}
	if s.from >= 0 && t.from >= 0 {
		out.from = max(s.from, t.from)
		out.mask &= 1<<out.from - 1
	}
	return out
}

// run reports the levels lo..hi when s is one run of levels (hi -1: to the
// end of the topic).
func (s levelSet) run() (lo, hi int, ok bool) {
	m := s.mask
	if s.from >= 0 {
		m |= ^uint64(0) << s.from
	}
	if m == 0 {
		return 0, 0, false
	}
	lo = bits.TrailingZeros64(m)
	run := m >> lo
	if run&(run+1) != 0 {
		return 0, 0, false // a hole
	}
	if s.from >= 0 {
		return lo, -1, true
	}
	return lo, lo + bits.Len64(run) - 1, true
}

// seriesKey is what a rule's series key reads.
type seriesKey struct {
	rule    *rule
	levels  levelSet
	topical bool   // computed from topic levels alone
	reads   string // what else it reads, when not topical
}

// seriesKeyOf analyses the series key of a rule that keeps series state.
func seriesKeyOf(f *Filter, r *rule) seriesKey {
	k := seriesKey{rule: r, levels: levelSet{from: -1}, topical: true}
	if r.keySegment >= 0 {
		k.levels = f.levelOf(r.segNames[r.keySegment])
		return k
	}
	ast.Find(r.key.Node(), func(n ast.Node) bool {
		id, ok := n.(*ast.IdentifierNode)
		if !ok || !k.topical {
			return false
		}
		switch name := id.Value; {
		case strings.HasPrefix(name, "@") && f != nil:
			l := f.levelOf(name[1:])
			k.levels.mask |= l.mask
			if l.from >= 0 && (k.levels.from < 0 || l.from < k.levels.from) {
				k.levels.from = l.from
			}
		case name == "topic":
			k.levels.from = 0
		default:
			k.topical, k.reads = false, name
		}
		return false
	})
	if k.topical && k.levels.empty() {
		// A constant key: one series for every topic the rule matches.
		k.levels = levelSet{from: -1}
	}
	return k
}

// levelOf is the topic level a named wildcard stands at (a "#" name stands
// for its level and every one after it).
func (f *Filter) levelOf(name string) levelSet {
	for i, l := range f.levels {
		if l.slot >= 0 && f.names[l.slot] == name {
			if l.kind == hashLevel {
				return levelSet{from: i}
			}
			return levelSet{mask: 1 << i, from: -1}
		}
	}
	return levelSet{from: -1}
}

// Partition derives the partition key of the set's rules (see Partition),
// or takes the one stated: by is "" (derive), "topic", "none" (one
// partition), or the name of a topic level some rule's match names. A
// stated key that would split some rule's series is an error that names
// the rule. Notes say, for people, what the key costs: a single partition
// and why, or the assumption a coarser key rests on.
func (s *Set) Partition(by string) (Partition, []string, error) {
	var keys []seriesKey
	for _, r := range s.rules {
		if !r.needsSeries {
			continue
		}
		var f *Filter
		if r.filter >= 0 {
			f = s.filters[r.filter]
		}
		keys = append(keys, seriesKeyOf(f, r))
	}
	switch by {
	case "":
		return derivePartition(s, keys)
	case "none":
		return Partition{single: true, desc: "none (one partition)"}, nil, nil
	case "topic":
		p := Partition{levels: levelSet{from: 0}, desc: "the whole topic"}
		for _, k := range keys {
			if !k.topical || k.levels.from != 0 {
				return Partition{}, nil, splitError(s, k, p)
			}
		}
		return p, nil, nil
	}
	level, err := s.levelNamed(by)
	if err != nil {
		return Partition{}, nil, err
	}
	p := Partition{levels: level, desc: describeLevels(s, level)}
	var notes []string
	for _, k := range keys {
		switch {
		case !k.topical || k.levels.empty() || k.levels.deepest() < level.deepest():
			return Partition{}, nil, splitError(s, k, p)
		case k.levels.intersect(level) != level:
			notes = append(notes, hierarchyNote(s, k, p))
		}
	}
	return p, notes, nil
}

func derivePartition(s *Set, keys []seriesKey) (Partition, []string, error) {
	if len(keys) == 0 {
		return Partition{levels: levelSet{from: 0}, desc: "the whole topic (no rule keeps state)"}, nil, nil
	}
	common := levelSet{from: 0}
	shallowest := maxLevels + 1
	for _, k := range keys {
		if !k.topical {
			return Partition{single: true, desc: "none (one partition)"}, []string{fmt.Sprintf(
				"rule %q (%s) keys its series by %q, which is known only once the payload is decoded: "+
					"the pipeline's rules run on one worker (one partition in a cluster); key the rule by "+
					"topic levels to spread it over workers", k.rule.name, k.rule.file, k.reads)}, nil
		}
		if k.levels.empty() {
			// A constant key: all of the rule's messages meet one state.
			return Partition{single: true, desc: "none (one partition)"}, []string{fmt.Sprintf(
				"rule %q (%s) has one series for every topic it matches: the pipeline's rules run on one worker",
				k.rule.name, k.rule.file)}, nil
		}
		common = common.intersect(k.levels)
		shallowest = min(shallowest, k.levels.deepest())
	}
	if !common.empty() {
		return Partition{levels: common, desc: describeLevels(s, common)}, nil, nil
	}
	level := levelSet{mask: 1 << shallowest, from: -1}
	p := Partition{levels: level, desc: describeLevels(s, level)}
	var notes []string
	for _, k := range keys {
		if !k.levels.has(shallowest) {
			notes = append(notes, hierarchyNote(s, k, p))
		}
	}
	return p, notes, nil
}

func splitError(s *Set, k seriesKey, p Partition) error {
	what := describeLevels(s, k.levels)
	switch {
	case !k.topical:
		what = fmt.Sprintf("%q, known only once the payload is decoded", k.reads)
	case k.levels.empty():
		what = "a constant (one series for every topic it matches)"
	}
	return fmt.Errorf("rule %q (%s) keys its series by %s: partitioning by %s would split a series' "+
		"state over workers; partition by a level its key includes or one above it", k.rule.name, k.rule.file, what, p)
}

func hierarchyNote(s *Set, k seriesKey, p Partition) string {
	return fmt.Sprintf("rule %q keys its series by %s, partitioned by %s: each of its series must "+
		"stay under one value of that level (as a device stays in one site)", k.rule.name, describeLevels(s, k.levels), p)
}

// levelNamed finds the topic level that the rules' matches give a name.
// The matches must agree on where it stands.
func (s *Set) levelNamed(name string) (levelSet, error) {
	var found levelSet
	var in *Filter
	for _, f := range s.filters {
		l := f.levelOf(name)
		switch {
		case l.empty():
		case in == nil:
			found, in = l, f
		case l != found:
			return levelSet{}, fmt.Errorf("the matches %q and %q put the level %q at different places in the topic: "+
				"partition by a level that stands at one place", in, f, name)
		}
	}
	if in == nil {
		return levelSet{}, fmt.Errorf("no rule's match names a topic level %q", name)
	}
	return found, nil
}

// describeLevels names levels for people, with the names the rules' matches
// give them: "site (topic level 2)".
func describeLevels(s *Set, l levelSet) string {
	var parts []string
	for i := 0; i < maxLevels; i++ {
		if l.from >= 0 && i == l.from {
			parts = append(parts, fmt.Sprintf("topic levels %d and on", i+1))
			break
		}
		if !l.has(i) {
			continue
		}
		name := ""
		if s != nil {
			name = s.levelName(i)
		}
		if name != "" {
			parts = append(parts, fmt.Sprintf("%s (topic level %d)", name, i+1))
		} else {
			parts = append(parts, fmt.Sprintf("topic level %d", i+1))
		}
	}
	if l.from == 0 {
		return "the whole topic"
	}
	return strings.Join(parts, ", ")
}

func (s *Set) levelName(i int) string {
	for _, f := range s.filters {
		if i < len(f.levels) && f.levels[i].slot >= 0 {
			return f.names[f.levels[i].slot]
		}
	}
	return ""
}
