package rules

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/rules/decode"
)

// Payload names: which names of the payload each expression reads, so that
// a failure can say "`tmp` is not in the payload, which has `temp`" rather
// than "invalid operation: <nil> > int", and so that sample payloads can be
// checked against the rules before they run (CheckSamples).

// nameRead is a payload name a rule reads, where it first reads it.
type nameRead struct {
	name string
	at   *conf.Error // the place, without a message
	// where: read by the rule's where or key, which see every reading of
	// the rule's topics; optional: the rule checks it for nil somewhere
	// (`x != nil`, `x ?? 0`), so it may be missing.
	where, optional bool
}

// record notes the payload names one compiled expression reads: for the
// program (failures) and for its rule (CheckSamples).
func (c *compiler) record(doc *conf.Doc, path, src string, offset int, res *resolver, optional map[string]bool, progs ...*vm.Program) {
	if len(res.reads) == 0 {
		return
	}
	names := make([]string, len(res.reads))
	for i, rd := range res.reads {
		names[i] = rd.name
	}
	for _, p := range progs {
		if p != nil {
			c.set.reads[p] = names
		}
	}
	r := res.scope.rule
	stage := path[strings.Index(path, ".")+1:]
next:
	for _, rd := range res.reads {
		for i := range r.reads {
			if r.reads[i].name == rd.name {
				r.reads[i].optional = r.reads[i].optional || optional[rd.name]
				continue next
			}
		}
		line, col := lineCol(src, rd.at)
		if line <= 1 {
			col += offset
		}
		r.reads = append(r.reads, nameRead{name: rd.name, at: doc.ErrorAt(path, line, col, ""),
			where: stage == "where" || stage == "key", optional: optional[rd.name]})
	}
}

// nilChecked returns the names a tree compares with nil or gives a
// default with ??.
func nilChecked(tree ast.Node) map[string]bool {
	m := map[string]bool{}
	ident := func(n ast.Node) string {
		if call, ok := n.(*ast.CallNode); ok && len(call.Arguments) == 3 { // a unit conversion
			n = call.Arguments[0]
		}
		if id, ok := n.(*ast.IdentifierNode); ok {
			return id.Value
		}
		return ""
	}
	find(tree, func(n ast.Node) bool {
		b, ok := n.(*ast.BinaryNode)
		if !ok {
			return false
		}
		switch b.Operator {
		case "??":
			m[ident(b.Left)] = true
		case "==", "!=":
			if _, isNil := b.Right.(*ast.NilNode); isNil {
				m[ident(b.Left)] = true
			}
			if _, isNil := b.Left.(*ast.NilNode); isNil {
				m[ident(b.Right)] = true
			}
		}
		return false
	})
	return m
}

// explain adds to a failed evaluation the payload names its expression
// reads that the reading does not have: a typo ("tmp" for "temp") fails as
// "invalid operation: <nil> > int", which says nothing of the cause.
// Missing names are said only when the evaluation failed: an optional field
// that is missing is no mistake.
func (ev *Evaluator) explain(err error, reading decode.Reading) error {
	var se *stageError
	if !errors.As(err, &se) || se.prog == nil {
		return err
	}
	var missing []string
	for _, name := range ev.set.reads[se.prog] {
		if _, ok := ev.env[name]; !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return err
	}
	have := make([]string, len(reading))
	for i, f := range reading {
		have[i] = f.Name
	}
	return &stageError{stage: se.stage, prog: se.prog,
		err: fmt.Errorf("%s: %w", describeMissing(missing, have, "the payload", "which has"), se.err)}
}

// describeMissing says that names are not in what has the names have:
// "`tmp` is not in the payload, which has `hum`, `temp` (did you mean `temp`?)".
func describeMissing(missing, have []string, in, which string) string {
	var b strings.Builder
	for i, m := range missing {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "`%s`", m)
	}
	if len(missing) == 1 {
		fmt.Fprintf(&b, " is not in %s, ", in)
	} else {
		fmt.Fprintf(&b, " are not in %s, ", in)
	}
	b.WriteString(listNames(have, which))
	var hints []string
	for _, m := range missing {
		if alt := conf.Closest(m, have); alt != "" {
			hints = append(hints, fmt.Sprintf("`%s`", alt))
		}
	}
	if len(hints) > 0 {
		fmt.Fprintf(&b, " (did you mean %s?)", strings.Join(hints, ", "))
	}
	return b.String()
}

// listNames lists names for a message: "which has `a`, `b`", at most 12.
func listNames(names []string, which string) string {
	const most = 12
	if len(names) == 0 {
		return which + " no fields"
	}
	var b strings.Builder
	b.WriteString(which)
	for i, n := range names {
		if i == most {
			fmt.Fprintf(&b, " and %d more", len(names)-most)
			break
		}
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, " `%s`", n)
	}
	return b.String()
}

// Sample is a payload as a device sends it, on its topic, for
// CheckSamples.
type Sample struct {
	Topic       string
	Payload     []byte
	ContentType string
}

// CheckSamples reports the payload names the rules read that no sample
// has, each at the place in the rule file that reads it, with the closest
// name the samples have: a typo (`when: tmp > 80` on payloads with `temp`)
// compiles, and would make every message a dead letter.
//
// A rule is checked against the samples that reach it: those on its topics
// that decode. Names read by its where (or key) must be in one of them;
// other names in one of those that pass its where, when some do. Names the
// rule checks for nil (`x != nil`, `x ?? 0`) are optional and not
// reported, nor are rules no sample reaches. The samples go through the
// rules as messages would, on an evaluator of their own.
func (s *Set) CheckSamples(samples []Sample) conf.ErrorList {
	ev := s.NewEvaluator(nil, Limits{})
	type seen struct {
		all, passed map[string]bool
	}
	per := make([]seen, len(s.rules))
	for i := range per {
		per[i] = seen{map[string]bool{}, map[string]bool{}}
	}
	at := time.Unix(0, 0)
	for _, smp := range samples {
		at = at.Add(time.Second)
		msg := &sluice.Message{Topic: smp.Topic, Payload: smp.Payload, ContentType: smp.ContentType, Received: at, QoS: 1}
		before := ev.Stats()
		ev.Eval(msg, nil)
		after := ev.Stats()
		for i, r := range s.rules {
			if after[i].Evaluated == before[i].Evaluated {
				continue // not its topic, or not decoded
			}
			passed := after[i].Passed > before[i].Passed
			for _, reading := range ev.readings[r.chain] {
				for _, f := range reading {
					per[i].all[f.Name] = true
					if passed {
						per[i].passed[f.Name] = true
					}
				}
			}
		}
	}
	var out conf.ErrorList
	for i, r := range s.rules {
		if len(per[i].all) == 0 {
			continue
		}
		for _, rd := range r.reads {
			have, which := per[i].passed, "the samples that pass its where have"
			if rd.where || len(have) == 0 {
				have, which = per[i].all, "the samples on its topics have"
			}
			if rd.optional || have[rd.name] {
				continue
			}
			names := make([]string, 0, len(have))
			for n := range have {
				names = append(names, n)
			}
			sort.Strings(names)
			e := *rd.at
			e.Msg = describeMissing([]string{rd.name}, names, "any sample", which)
			out = append(out, &e)
		}
	}
	return out
}
