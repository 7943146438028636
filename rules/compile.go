package rules

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/checker"
	exprcompiler "github.com/expr-lang/expr/compiler"
	exprconf "github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/optimizer"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"

	"github.com/goccy/go-yaml"

	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/rules/decode"
)

// The expression environment is one map per evaluator, which expr reads
// fastest. Its keys:
//
//	topic, client_id, ...   the message (see builtins)
//	<name>                  a payload field, by its name
//	@<name>                 a named topic level of the current rule
//	=<name>                 a let or derived field of the current rule
//	__sluice_ctx            the call context of stateful functions
//
// Bare names in expressions are rewritten at compile time to the right key,
// so a rule's derived field "temp_f" never collides with a payload field of
// that name seen by another rule.
var builtins = map[string]any{
	"topic":        "",
	"client_id":    "",
	"username":     "",
	"content_type": "",
	"qos":          0,
	"retain":       false,
	"received":     time.Time{},
	"props":        map[string]string{},
	"payload":      map[string]any{},
}

// maxNodes bounds the size of one expression: a rule is a line or two, and a
// runaway (generated or pasted) expression must not stall compilation.
const maxNodes = 2000

// memoryBudget bounds what one evaluation may allocate in expr's VM (arrays
// and maps built by an expression).
const memoryBudget = 100_000

// defaultTTL is how long the state of a silent series is kept.
const defaultTTL = time.Hour

const defaultSeverity = "warning"

// Set is a compiled rule set: immutable, shared by every worker. Evaluate
// it with an Evaluator.
type Set struct {
	rules   []*rule
	files   []string
	filters []*Filter       // distinct topic filters, shared by rules
	chains  []*decode.Chain // distinct decode chains (with their split)
	splits  []string
	// fields lists the payload names some expression reads; only these are
	// put in the environment. slots maps each to its index in fields.
	fields []string
	slots  map[string]int
	// reads lists the payload names each program reads, to explain its
	// failures (names.go).
	reads map[*vm.Program][]string
	// uses says which message properties some expression reads; only those
	// are put in the environment.
	uses struct {
		topic, clientID, username, contentType, qos, retain, received, props, payload bool
	}
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
	name        string
	file        string
	fingerprint string
	filter      int // index into Set.filters, -1 for every topic
	segNames    []string
	segKeys     []string // "@name"
	chain       int      // index into Set.chains
	key         *vm.Program
	keySegment  int // when the key is a plain named level, its index (fast path), else -1
	where       *vm.Program
	// quickWhere, when set, is where in a form evaluated without the VM:
	// a conjunction of name ==/!= a string, a bool or nil.
	quickWhere []quickTerm
	lets       []derived
	fields     []derived
	rename     map[string]string
	units      map[string]conversion
	keep, drop map[string]bool
	records    bool
	ttl        time.Duration
	// sites are the rule's stateful calls; each expression feeds the
	// sites before its feed index (sites.go), where those before whereFeed.
	sites     []site
	whereFeed int
	alert     *alertRule
	// needsSeries: the rule keeps per-series state (stateful functions or
	// an alert); whereSites: its where calls stateful functions, so the
	// series must exist before where runs.
	needsSeries bool
	whereSites  bool
	// reads are the payload names the rule reads (names.go).
	reads []nameRead
}

type derived struct {
	name, key string // key is "=name"
	prog      *vm.Program
	output    bool // a field of the record (not a let)
	feed      int  // the rule's sites up to this one are fed before it
}

type alertRule struct {
	feed     int // sites fed before when (those of when, clear, value, message, labels)
	when     *vm.Program
	clear    *vm.Program
	absent   time.Duration
	hold     time.Duration // for
	value    *vm.Program
	severity string
	message  template
	labels   []label
	renotify time.Duration
}

type label struct {
	key string
	t   template
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
	c := newCompiler()
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
	return c.finish()
}

// Parse compiles one rule file's content; name is used in error messages.
func Parse(name string, data []byte) (*Set, error) {
	c := newCompiler()
	var rf File
	doc, err := conf.Decode(name, data, &rf)
	if err != nil {
		return nil, err
	}
	c.file(doc, &rf)
	return c.finish()
}

type compiler struct {
	set     *Set
	errs    conf.ErrorList
	names   map[string]string // rule name -> file defining it
	filters map[string]int
	chains  map[string]int
	fields  map[string]bool
	funcs   []expr.Option
	feedCfg *exprconf.Config
}

func newCompiler() *compiler {
	return &compiler{set: &Set{reads: map[*vm.Program][]string{}}, names: map[string]string{}, filters: map[string]int{}, chains: map[string]int{},
		fields: map[string]bool{}, funcs: runtimeFunctions()}
}

func (c *compiler) finish() (*Set, error) {
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	for f := range c.fields {
		c.set.fields = append(c.set.fields, f)
	}
	sort.Strings(c.set.fields)
	c.set.slots = make(map[string]int, len(c.set.fields))
	for i, f := range c.set.fields {
		c.set.slots[f] = i
	}
	return c.set, nil
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
	r := &rule{name: s.Name, file: doc.File, filter: -1, keySegment: -1, records: s.Records == nil || *s.Records, ttl: s.TTL}
	r.fingerprint = fingerprint(s)
	if s.Match != "" {
		idx, ok := c.filters[s.Match]
		if !ok {
			idx = len(c.set.filters)
			c.filters[s.Match] = idx
			c.set.filters = append(c.set.filters, MustFilter(s.Match))
		}
		r.filter = idx
		r.segNames = c.set.filters[idx].Names()
		for _, n := range r.segNames {
			r.segKeys = append(r.segKeys, "@"+n)
		}
	}
	chain, _ := decode.ParseChain(s.Decode) // validated
	chainID := chain.String() + "|" + s.Split
	idx, ok := c.chains[chainID]
	if !ok {
		idx = len(c.set.chains)
		c.chains[chainID] = idx
		c.set.chains = append(c.set.chains, chain)
		c.set.splits = append(c.set.splits, s.Split)
	}
	r.chain = idx

	sc := &scope{rule: r, segments: map[string]bool{}, vars: map[string]bool{}, rename: map[string]string{}, units: map[string]conversion{},
		sites: map[string]int{}}
	for _, n := range r.segNames {
		sc.segments[n] = true
	}
	for _, item := range s.Rename {
		from, to := fmt.Sprint(item.Key), fmt.Sprint(item.Value)
		if r.rename == nil {
			r.rename = map[string]string{}
		}
		r.rename[from] = to
		sc.rename[to] = from
	}
	for _, item := range s.Units {
		name := fmt.Sprint(item.Key)
		conv, _ := parseConversion(fmt.Sprint(item.Value)) // validated
		if r.units == nil {
			r.units = map[string]conversion{}
		}
		r.units[name] = conv
		sc.units[name] = conv
	}
	r.keep, r.drop = set(s.Keep), set(s.Drop)

	switch {
	case s.Key != "":
		sc.noSites = true
		r.key = c.compile(doc, at+".key", s.Key, sc)
		sc.noSites = false
	case sc.segments["device"]:
		r.keySegment = indexOf(r.segNames, "device")
	default:
		r.key = c.compile(doc, at+".key", "topic", sc)
	}
	if s.Where != "" {
		before := len(r.sites)
		r.where = c.compile(doc, at+".where", s.Where, sc, expr.AsBool())
		r.whereSites = len(r.sites) > before
		r.whereFeed = len(r.sites)
		if r.where != nil {
			r.quickWhere = quickTerms(r.where.Node())
		}
	}
	for _, group := range []struct {
		key    string
		items  yaml.MapSlice
		output bool
	}{{"let", s.Let, false}, {"fields", s.Fields, true}} {
		for _, item := range group.items {
			name := fmt.Sprint(item.Key)
			path := at + "." + group.key + "." + name
			if item.Value == nil {
				c.errs = append(c.errs, doc.ErrorAt(path, 0, 0, "empty expression"))
				continue
			}
			d := derived{name: name, key: "=" + name, output: group.output,
				prog: c.compile(doc, path, fmt.Sprint(item.Value), sc)}
			d.feed = len(r.sites)
			if group.output {
				r.fields = append(r.fields, d)
			} else {
				r.lets = append(r.lets, d)
			}
			sc.vars[name] = true
		}
	}
	if a := s.Alert; a != nil {
		ar := &alertRule{severity: a.Severity, absent: a.Absent, hold: a.For, renotify: a.Renotify}
		if ar.severity == "" {
			ar.severity = defaultSeverity
		}
		if a.When != "" {
			ar.when = c.compile(doc, at+".alert.when", a.When, sc, expr.AsBool())
		}
		if a.Clear != "" {
			ar.clear = c.compile(doc, at+".alert.clear", a.Clear, sc, expr.AsBool())
		}
		valueSrc, valueAt := a.Value, at+".alert.value"
		if valueSrc == "" && a.When != "" {
			valueSrc, valueAt = comparedValue(a.When), at+".alert.when"
		}
		if valueSrc != "" {
			ar.value = c.compile(doc, valueAt, valueSrc, sc)
		}
		ar.message = c.template(doc, at+".alert.message", a.Message, sc)
		for _, item := range a.Labels {
			k := fmt.Sprint(item.Key)
			ar.labels = append(ar.labels, label{key: k, t: c.template(doc, at+".alert.labels."+k, fmt.Sprint(item.Value), sc)})
		}
		ar.feed = len(r.sites)
		r.alert = ar
	}
	r.needsSeries = len(r.sites) > 0 || r.alert != nil
	c.ttl(doc, at, r)
	if len(c.errs) > before {
		return nil
	}
	return r
}

// ttl sets the rule's TTL: by default 1h, or twice its longest time span
// if longer. An explicit TTL shorter than a window, a for or an absent is
// refused: a series silent that long would lose the state the span needs
// (a deadman would never fire, a window would never fill).
func (c *compiler) ttl(doc *conf.Doc, at string, r *rule) {
	longest, what := time.Duration(0), ""
	for _, st := range r.sites {
		if st.span > longest {
			longest, what = st.span, fmt.Sprintf("the %v window of %s", st.span, st.fn)
		}
	}
	if a := r.alert; a != nil {
		for _, x := range []struct {
			d    time.Duration
			what string
		}{{a.hold, "alert.for"}, {a.absent, "alert.absent"}} {
			if x.d > longest {
				longest, what = x.d, fmt.Sprintf("%s (%v)", x.what, x.d)
			}
		}
	}
	if r.ttl == 0 {
		renotify := time.Duration(0)
		if r.alert != nil {
			renotify = r.alert.renotify
		}
		r.ttl = max(defaultTTL, 2*longest, 2*renotify)
		return
	}
	if r.ttl < longest {
		c.errs = append(c.errs, doc.ErrorAt(at+".ttl", 0, 0, fmt.Sprintf(
			"%v is shorter than %s: a series silent for %v would lose that state; make ttl at least %v, or leave it out (the default is twice the longest span, at least 1h)",
			r.ttl, what, r.ttl, longest)))
	}
}

func set(list []string) map[string]bool {
	if len(list) == 0 {
		return nil
	}
	m := make(map[string]bool, len(list))
	for _, s := range list {
		m[s] = true
	}
	return m
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// fingerprint identifies a rule's definition: a reload keeps the state of
// rules whose fingerprint did not change.
func fingerprint(s *Spec) string {
	b, _ := json.Marshal(s)
	sum := sha256.Sum256(b)
	return fmt.Sprintf("%x", sum[:12])
}

// compile compiles one expression, reporting errors at their position inside
// the value at path.
func (c *compiler) compile(doc *conf.Doc, path, src string, sc *scope, opts ...expr.Option) *vm.Program {
	return c.compileAt(doc, path, src, 0, sc, opts...)
}

// compileAt compiles as expr.Compile does, with a step between type checking
// and code generation: the hoister lifts the stateful calls into sites of
// the rule (see sites.go).
func (c *compiler) compileAt(doc *conf.Doc, path, src string, offset int, sc *scope, opts ...expr.Option) *vm.Program {
	res := &resolver{scope: sc, c: c, lets: map[string]bool{}, callees: map[ast.Node]bool{}, done: map[ast.Node]bool{},
		calls: map[*ast.CallNode]site{}}
	cfg := c.config([]ast.Visitor{binder{res}, res}, opts...)
	var prog *vm.Program
	tree, err := checker.ParseCheck(src, cfg)
	if res.problem == "" && err == nil {
		optional := nilChecked(tree.Node)
		stage := path[strings.Index(path, ".")+1:]
		h := hoister{c: c, res: res, src: src, stage: stage}
		h.walk(&tree.Node, nil)
		if res.problem == "" {
			prog, err = c.build(tree, cfg)
		}
		if res.problem == "" && err == nil {
			c.record(doc, path, src, offset, res, optional, append(res.feeds, prog)...)
			return prog
		}
	}
	line, col, msg := 1, 1, ""
	switch {
	case res.problem != "":
		msg = res.problem
		if res.at.From >= 0 {
			line, col = lineCol(src, res.at.From)
		}
	default:
		msg = err.Error()
		var fe *file.Error
		if errors.As(err, &fe) {
			line, col, msg = fe.Line, fe.Column+1, fe.Message
		}
	}
	if line <= 1 {
		col += offset
	}
	c.errs = append(c.errs, doc.ErrorAt(path, line, col, msg))
	return nil
}

// config is the expr configuration of rule expressions, with the given
// patches.
func (c *compiler) config(patches []ast.Visitor, opts ...expr.Option) *exprconf.Config {
	cfg := exprconf.CreateNew()
	all := append([]expr.Option{
		expr.Env(builtinsWithCtx),
		expr.AllowUndefinedVariables(), // payload fields are not known in advance
		expr.MaxNodes(maxNodes),
	}, c.funcs...)
	for _, p := range patches {
		all = append(all, expr.Patch(p))
	}
	for _, op := range append(all, opts...) {
		op(cfg)
	}
	for name := range cfg.Disabled {
		delete(cfg.Builtins, name)
	}
	cfg.Check()
	return cfg
}

// build type-checks, optimises and compiles a tree.
func (c *compiler) build(tree *parser.Tree, cfg *exprconf.Config) (*vm.Program, error) {
	if _, err := checker.Check(tree, cfg); err != nil {
		return nil, err
	}
	if cfg.Optimize {
		if err := optimizer.Optimize(&tree.Node, cfg); err != nil {
			var fe *file.Error
			if errors.As(err, &fe) {
				return nil, fe.Bind(tree.Source)
			}
			return nil, err
		}
	}
	return exprcompiler.Compile(tree, cfg)
}

var builtinsWithCtx = func() map[string]any {
	m := map[string]any{ctxKey: (*callCtx)(nil)}
	for k, v := range builtins {
		m[k] = v
	}
	return m
}()

func lineCol(src string, offset int) (int, int) {
	line, col := 1, 1
	for i, r := range src {
		if i >= offset {
			break
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
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
			c.errs = append(c.errs, doc.ErrorAt(path, 1, offset+open+1, "unclosed {{ in template"))
			return t
		}
		if open > 0 {
			t = append(t, templatePart{text: rest[:open]})
		}
		inner := rest[open+2 : open+end]
		t = append(t, templatePart{prog: c.compileAt(doc, path, inner, offset+open+2, sc)})
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

// quickTerm is one term of a where evaluated without the VM: the
// environment value at key equals (or, with not, differs from) value.
type quickTerm struct {
	key   string
	value any // a string, a bool, or nil
	not   bool
}

// quickTerms recognises a compiled where that is a conjunction of
// comparisons of a name with a string, a bool or nil, the discriminators
// most rules start with ("kind == \"boiler\" and pressure != nil"). For those
// operands Go's == on interfaces gives exactly expr's answer. Anything else
// returns nil: the VM evaluates it.
func quickTerms(n ast.Node) []quickTerm {
	b, ok := n.(*ast.BinaryNode)
	if !ok {
		return nil
	}
	switch b.Operator {
	case "and", "&&":
		l, r := quickTerms(b.Left), quickTerms(b.Right)
		if l == nil || r == nil {
			return nil
		}
		return append(l, r...)
	case "==", "!=":
		id, ok := b.Left.(*ast.IdentifierNode)
		if !ok {
			return nil
		}
		t := quickTerm{key: id.Value, not: b.Operator == "!="}
		switch v := b.Right.(type) {
		case *ast.StringNode:
			t.value = v.Value
		case *ast.BoolNode:
			t.value = v.Value
		case *ast.NilNode:
		default:
			return nil
		}
		return []quickTerm{t}
	}
	return nil
}

// scope is what bare names resolve to in one rule at one point.
type scope struct {
	rule     *rule
	segments map[string]bool
	vars     map[string]bool // lets and derived fields defined so far
	rename   map[string]string
	units    map[string]conversion
	sites    map[string]int // sites of the rule by the text of their call
	noSites  bool           // compiling the key: no stateful calls
}

// binder runs first over a parsed expression (expr walks children before
// their parent, so names must be known before the resolver sees them): it
// records called functions and expr's own let names, and checks and binds
// calls of sluice's functions to their state.
type binder struct{ r *resolver }

func (b binder) Visit(node *ast.Node) {
	r := b.r
	switch n := (*node).(type) {
	case *ast.VariableDeclaratorNode:
		r.lets[n.Name] = true
	case *ast.CallNode:
		id, ok := n.Callee.(*ast.IdentifierNode)
		if !ok || r.isBound(n) {
			return
		}
		r.callees[id] = true
		switch {
		case stateful[id.Value].usage != "" || plain[id.Value] != "":
			var st site
			if msg := bindCall(n, id.Value, &st); msg != "" {
				r.fail(n, "%s", msg)
			} else if st.fn != "" {
				if r.scope.noSites {
					r.fail(n, "%s: a series key cannot call a stateful function (state is kept per key)", id.Value)
				}
				r.calls[n] = st
			}
			if callee, ok := n.Callee.(*ast.IdentifierNode); ok {
				r.callees[callee] = true
			}
		case !isBuiltinFunc(id.Value):
			r.fail(n, "unknown function %s", id.Value)
		}
	}
}

// resolver rewrites bare names into environment keys: a named level, a let
// or derived field, or a payload field, renamed and converted as the rule
// says.
type resolver struct {
	scope   *scope
	c       *compiler
	lets    map[string]bool // names bound by expr's own let
	callees map[ast.Node]bool
	problem string
	at      file.Location
	done    map[ast.Node]bool
	// calls are the stateful calls seen by the binder, with their sites'
	// constant arguments.
	calls map[*ast.CallNode]site
	// reads are the payload names the expression reads, with the offset
	// of the first read; feeds the programs of its sites' arguments.
	reads []read
	feeds []*vm.Program
}

type read struct {
	name string
	at   int
}

func (r *resolver) fail(n ast.Node, format string, args ...any) {
	if r.problem == "" {
		r.problem = fmt.Sprintf(format, args...)
		r.at = n.Location()
	}
}

func (r *resolver) Visit(node *ast.Node) {
	n, ok := (*node).(*ast.IdentifierNode)
	if !ok || r.done[n] || r.callees[n] || r.lets[n.Value] || n.Value == ctxKey ||
		strings.HasPrefix(n.Value, "@") || strings.HasPrefix(n.Value, "=") {
		return
	}
	if _, builtin := builtins[n.Value]; builtin {
		u := &r.c.set.uses
		switch n.Value {
		case "topic":
			u.topic = true
		case "client_id":
			u.clientID = true
		case "username":
			u.username = true
		case "content_type":
			u.contentType = true
		case "qos":
			u.qos = true
		case "retain":
			u.retain = true
		case "received":
			u.received = true
		case "props":
			u.props = true
		case "payload":
			u.payload = true
		}
		return
	}
	sc := r.scope
	var repl ast.Node
	switch {
	case sc.segments[n.Value]:
		repl = &ast.IdentifierNode{Value: "@" + n.Value}
	case sc.vars[n.Value]:
		repl = &ast.IdentifierNode{Value: "=" + n.Value}
	default:
		name := n.Value
		if from, ok := sc.rename[name]; ok {
			name = from
		}
		r.c.fields[name] = true
		if !slices.ContainsFunc(r.reads, func(x read) bool { return x.name == name }) {
			r.reads = append(r.reads, read{name, n.Location().From})
		}
		id := &ast.IdentifierNode{Value: name}
		r.done[id] = true
		repl = id
		if conv, ok := sc.units[n.Value]; ok {
			repl = &ast.CallNode{Callee: &ast.IdentifierNode{Value: "__convert"},
				Arguments: []ast.Node{id, &ast.FloatNode{Value: conv.scale}, &ast.FloatNode{Value: conv.offset}}}
		} else if name == n.Value {
			return
		}
	}
	ast.Patch(node, repl)
}

// isBound reports whether a call was already rewritten (its first argument
// is the context).
func (r *resolver) isBound(n *ast.CallNode) bool {
	if len(n.Arguments) == 0 {
		return false
	}
	id, ok := n.Arguments[0].(*ast.IdentifierNode)
	return ok && id.Value == ctxKey
}

func isBuiltinFunc(name string) bool {
	_, ok := builtin.Index[name]
	return ok
}
