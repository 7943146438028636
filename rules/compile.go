package rules

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"

	"github.com/sluicehq/sluice/internal/conf"
)

// Env is what rule expressions see. Payload fields, named topic segments and
// the rule's derived fields are also reachable by bare name: in a rule that
// matches plant/+site/+line/+device/telemetry, "device" is segments.device,
// "temp_f" is a derived field if the rule defines one before, and any other
// name is a payload field ("temperature" is payload.temperature).
type Env struct {
	Payload  map[string]any    `expr:"payload"`
	Fields   map[string]any    `expr:"fields"`
	Segments map[string]string `expr:"segments"`
	Topic    string            `expr:"topic"`
	ClientID string            `expr:"client_id"`
	Username string            `expr:"username"`
	QoS      int               `expr:"qos"`
	Retain   bool              `expr:"retain"`
	Received time.Time         `expr:"received"`
	// Props holds the MQTT 5 user properties (the first value of each key).
	Props map[string]string `expr:"props"`
}

var envNames = map[string]bool{
	"payload": true, "fields": true, "segments": true, "topic": true, "client_id": true,
	"username": true, "qos": true, "retain": true, "received": true, "props": true,
}

// maxNodes bounds the size of one expression: a rule is a line or two, and a
// runaway (generated or pasted) expression must not stall compilation.
const maxNodes = 2000

// Severities an alert may have when none is given.
const defaultSeverity = "warning"

// Set is a compiled rule set: immutable, shared by every worker. Evaluate
// it with an Evaluator.
type Set struct {
	rules []*rule
	files []string
}

// Rules lists the rule names in evaluation order.
func (s *Set) Rules() []string {
	names := make([]string, len(s.rules))
	for i, r := range s.rules {
		names[i] = r.name
	}
	return names
}

// Files lists the rule files the set was compiled from.
func (s *Set) Files() []string { return s.files }

type rule struct {
	name     string
	file     string
	filter   *Filter // nil matches everything
	segNames []string
	decode   string
	key      *vm.Program
	where    *vm.Program
	fields   []derived
	alert    *alertRule
}

type derived struct {
	name string
	prog *vm.Program
}

type alertRule struct {
	when     *vm.Program
	value    *vm.Program
	severity string
	message  template
}

// template is text with {{ expression }} parts.
type template []templatePart

type templatePart struct {
	text string
	prog *vm.Program
}

// Load reads and compiles rule files (see Expand for paths). Every problem
// in every file is reported, as a conf.ErrorList of file:line:col errors.
func Load(paths ...string) (*Set, error) {
	files, err := Expand(paths...)
	if err != nil {
		return nil, err
	}
	c := &compiler{set: &Set{}, names: map[string]string{}}
	for _, f := range files {
		var rf File
		doc, err := conf.DecodeFile(f, &rf)
		if err != nil {
			if !c.addErr(err) {
				return nil, err
			}
			continue
		}
		c.file(doc, &rf)
	}
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	return c.set, nil
}

// Parse compiles one rule file's content; name is used in error messages.
func Parse(name string, data []byte) (*Set, error) {
	c := &compiler{set: &Set{}, names: map[string]string{}}
	var rf File
	doc, err := conf.Decode(name, data, &rf)
	if err != nil {
		return nil, err
	}
	c.file(doc, &rf)
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	return c.set, nil
}

type compiler struct {
	set   *Set
	errs  conf.ErrorList
	names map[string]string // rule name -> file defining it
}

func (c *compiler) addErr(err error) bool {
	var list conf.ErrorList
	if errors.As(err, &list) {
		c.errs = append(c.errs, list...)
		return true
	}
	return false
}

func (c *compiler) file(doc *conf.Doc, f *File) {
	c.set.files = append(c.set.files, doc.File)
	if f.Rules == nil {
		c.errs = append(c.errs, &conf.Error{File: doc.File, Line: 1, Msg: `missing required key "rules"`})
		return
	}
	for i := range f.Rules {
		s := &f.Rules[i]
		at := fmt.Sprintf("rules[%d]", i)
		if err := s.validate(); err != nil {
			var p conf.Problems
			p.Nest(at, err)
			c.addErr(doc.Place(p))
			continue
		}
		if prev, dup := c.names[s.Name]; dup {
			where := "in " + prev
			if prev == doc.File {
				where = "above"
			}
			c.errs = append(c.errs, doc.ErrorAt(at+".name", 0, 0, fmt.Sprintf("rule %q is already defined %s", s.Name, where)))
			continue
		}
		c.names[s.Name] = doc.File
		if r := c.rule(doc, at, s); r != nil {
			c.set.rules = append(c.set.rules, r)
		}
	}
}

// rule compiles one rule; it returns nil when anything in it failed.
func (c *compiler) rule(doc *conf.Doc, at string, s *Spec) *rule {
	before := len(c.errs)
	r := &rule{name: s.Name, file: doc.File, decode: s.Decode}
	if r.decode == "" {
		r.decode = "json"
	}
	if s.Match != "" {
		r.filter = MustFilter(s.Match) // validated when decoded
		r.segNames = r.filter.Names()
	}
	scope := &scope{segments: map[string]bool{}, derived: map[string]bool{}}
	for _, n := range r.segNames {
		scope.segments[n] = true
	}

	keySrc := s.Key
	if keySrc == "" {
		keySrc = "topic"
		if scope.segments["device"] {
			keySrc = "device"
		}
	}
	r.key = c.compile(doc, at+".key", keySrc, scope)
	if s.Where != "" {
		r.where = c.compile(doc, at+".where", s.Where, scope, expr.AsBool())
	}
	for _, item := range s.Fields {
		name := fmt.Sprint(item.Key)
		src := fmt.Sprint(item.Value)
		if item.Value == nil {
			c.errs = append(c.errs, doc.ErrorAt(at+".fields."+name, 0, 0, "empty expression"))
			continue
		}
		prog := c.compile(doc, at+".fields."+name, src, scope)
		r.fields = append(r.fields, derived{name: name, prog: prog})
		scope.derived[name] = true
	}
	if a := s.Alert; a != nil {
		ar := &alertRule{severity: a.Severity}
		if ar.severity == "" {
			ar.severity = defaultSeverity
		}
		ar.when = c.compile(doc, at+".alert.when", a.When, scope, expr.AsBool())
		valueSrc, valueAt := a.Value, at+".alert.value"
		if valueSrc == "" {
			valueSrc, valueAt = comparedValue(a.When), at+".alert.when"
		}
		if valueSrc != "" {
			ar.value = c.compile(doc, valueAt, valueSrc, scope)
		}
		ar.message = c.template(doc, at+".alert.message", a.Message, scope)
		r.alert = ar
	}
	if len(c.errs) > before {
		return nil
	}
	return r
}

// compile compiles one expression against Env, reporting errors at their
// position inside the value at path.
func (c *compiler) compile(doc *conf.Doc, path, src string, sc *scope, opts ...expr.Option) *vm.Program {
	return c.compileAt(doc, path, src, 0, sc, opts...)
}

func (c *compiler) compileAt(doc *conf.Doc, path, src string, offset int, sc *scope, opts ...expr.Option) *vm.Program {
	res := &resolver{scope: sc, callees: map[ast.Node]bool{}, lets: map[string]bool{}}
	all := append([]expr.Option{
		expr.Env(Env{}),
		expr.Patch(&collector{res}),
		expr.Patch(res),
		expr.MaxNodes(maxNodes),
	}, opts...)
	prog, err := expr.Compile(src, all...)
	if err != nil {
		line, col, msg := 0, 0, err.Error()
		var fe *file.Error
		if errors.As(err, &fe) {
			line, col, msg = fe.Line, fe.Column+1, fe.Message
			if line <= 1 {
				col += offset
			}
		}
		c.errs = append(c.errs, doc.ErrorAt(path, line, col, msg))
		return nil
	}
	return prog
}

// template compiles "text {{ expression }} text".
func (c *compiler) template(doc *conf.Doc, path, src string, sc *scope) template {
	var t template
	rest, offset := src, 0
	for {
		open := strings.Index(rest, "{{")
		if open < 0 {
			if rest != "" {
				t = append(t, templatePart{text: rest})
			}
			return t
		}
		end := strings.Index(rest[open:], "}}")
		if end < 0 {
			c.errs = append(c.errs, doc.ErrorAt(path, 1, offset+open+1, "unclosed {{ in message template"))
			return t
		}
		if open > 0 {
			t = append(t, templatePart{text: rest[:open]})
		}
		inner := rest[open+2 : open+end]
		prog := c.compileAt(doc, path, inner, offset+open+2, sc)
		t = append(t, templatePart{prog: prog})
		rest, offset = rest[open+end+2:], offset+open+end+2
	}
}

// comparedValue returns the left side of a comparison ("temperature" in
// "temperature > 90"), the value an alert reports by default.
func comparedValue(when string) string {
	tree, err := parser.Parse(when)
	if err != nil {
		return ""
	}
	if b, ok := tree.Node.(*ast.BinaryNode); ok {
		switch b.Operator {
		case ">", ">=", "<", "<=", "==", "!=":
			return b.Left.String()
		}
	}
	return ""
}

// scope is what bare names resolve to in one rule at one point.
type scope struct {
	segments map[string]bool
	derived  map[string]bool
}

// resolver rewrites bare names into Env lookups: a named segment to
// segments.x, an earlier derived field to fields.x, anything else to
// payload.x. Function names and let variables are left alone.
type resolver struct {
	scope   *scope
	callees map[ast.Node]bool
	lets    map[string]bool
}

func (r *resolver) Visit(node *ast.Node) {
	id, ok := (*node).(*ast.IdentifierNode)
	if !ok || envNames[id.Value] || r.callees[*node] || r.lets[id.Value] {
		return
	}
	base := "payload"
	switch {
	case r.scope.segments[id.Value]:
		base = "segments"
	case r.scope.derived[id.Value]:
		base = "fields"
	}
	ast.Patch(node, &ast.MemberNode{
		Node:     &ast.IdentifierNode{Value: base},
		Property: &ast.StringNode{Value: id.Value},
	})
}

// collector runs before the resolver and records the identifiers it must
// not touch: called functions and let-bound variables.
type collector struct{ r *resolver }

func (c *collector) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.CallNode:
		c.r.callees[n.Callee] = true
	case *ast.VariableDeclaratorNode:
		c.r.lets[n.Name] = true
	}
}
