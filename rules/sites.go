package rules

import (
	"fmt"
	"slices"

	"github.com/expr-lang/expr/ast"
	exprconf "github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
)

// Feeding stateful functions.
//
// A stateful call inside an expression would see only the readings for which
// the expression reaches it: in `count_over("10m") >= 30 and zscore(v, "10m")
// > 4`, zscore would learn the mean of the readings where the count was
// high, and a call in clear, message or labels would see almost none. So the
// compiler lifts every stateful call out of its expression (the hoister
// below): the call's value argument becomes the site's own small program,
// and the call becomes a read of the site's value. At run time the
// evaluator feeds every site once per reading, in the order the rule is
// written, just before the expression that first calls it:
//
//   - sites called in where: for every reading whose topic matches the rule;
//   - every other site: for every reading that passed where (the sites of
//     let and fields before that let or field, the sites of the alert's when,
//     clear, value, message and labels before when).
//
// Calls written the same way share one site. An alert raised by the timer
// (absent, renotify) has no reading: its sites are not fed, and read as they
// stand then (see callCtx.peek).

// hoister lifts the stateful calls of one compiled expression into sites of
// its rule.
type hoister struct {
	c     *compiler
	res   *resolver
	src   string
	stage string // the expression's place in the rule: "alert.when"
}

// walk visits the tree depth first, so that a call inside another's
// argument becomes a site first; decls are the expr lets (`let x = ...;`)
// in scope.
func (h *hoister) walk(node *ast.Node, decls []*ast.VariableDeclaratorNode) {
	switch n := (*node).(type) {
	case *ast.VariableDeclaratorNode:
		h.walk(&n.Value, decls)
		h.walk(&n.Expr, append(decls[:len(decls):len(decls)], n))
		return
	case *ast.CallNode:
		for i := range n.Arguments {
			h.walk(&n.Arguments[i], decls)
		}
		if st, ok := h.res.calls[n]; ok {
			h.hoist(node, n, st, decls)
		}
		return
	}
	for _, child := range children(*node) {
		h.walk(child, decls)
	}
}

// hoist makes the call at node a site of the rule (or finds the site of a
// call written the same way) and replaces it with a read of the site.
func (h *hoister) hoist(node *ast.Node, call *ast.CallNode, st site, decls []*ast.VariableDeclaratorNode) {
	var feed ast.Node
	if st.hasArg {
		feed = withDecls(call.Arguments[2], decls)
		if find(feed, func(n ast.Node) bool { _, ok := n.(*ast.PointerNode); return ok }) {
			h.res.fail(call, "%s: its argument cannot use the element of a predicate (#): a stateful function is fed once per reading, not once per element", st.fn)
			return
		}
	}
	sc := h.res.scope
	r := sc.rule
	key := fmt.Sprintf("%s|%d|%g|%d", st.fn, st.span, st.percent, st.min)
	if feed != nil {
		key += "|" + feed.String()
	}
	idx, ok := sc.sites[key]
	if !ok {
		st.stage = h.stage
		if feed != nil && !h.bindArg(&st, feed) {
			return
		}
		idx = len(r.sites)
		r.sites = append(r.sites, st)
		sc.sites[key] = idx
	}
	read := readNum
	if st.cond {
		read = readCond
	}
	ast.Patch(node, &ast.CallNode{Callee: &ast.IdentifierNode{Value: read},
		Arguments: []ast.Node{&ast.IdentifierNode{Value: ctxKey}, &ast.IntegerNode{Value: idx}}})
}

// bindArg sets how a site reads its value argument: a plain name (perhaps
// converted by units) straight from the environment, anything else as a
// program of its own.
func (h *hoister) bindArg(st *site, feed ast.Node) bool {
	switch n := feed.(type) {
	case *ast.IdentifierNode:
		if n.Value != ctxKey {
			st.argKey = n.Value
			return true
		}
	case *ast.CallNode:
		callee, _ := n.Callee.(*ast.IdentifierNode)
		if callee != nil && callee.Value == "__convert" && len(n.Arguments) == 3 {
			id, ok1 := n.Arguments[0].(*ast.IdentifierNode)
			scale, ok2 := n.Arguments[1].(*ast.FloatNode)
			offset, ok3 := n.Arguments[2].(*ast.FloatNode)
			if ok1 && ok2 && ok3 {
				st.argKey, st.conv = id.Value, &conversion{scale: scale.Value, offset: offset.Value}
				return true
			}
		}
	}
	tree := &parser.Tree{Node: feed, Source: file.NewSource(h.src)}
	prog, err := h.c.build(tree, h.c.feedConfig())
	if err != nil {
		h.res.fail(feed, "%s: %v", st.fn, err)
		return false
	}
	st.arg = prog
	h.res.feeds = append(h.res.feeds, prog)
	return true
}

// withDecls returns arg wrapped in the expr lets it uses (copies of them: the
// expression keeps its own), innermost last.
func withDecls(arg ast.Node, decls []*ast.VariableDeclaratorNode) ast.Node {
	need := names(arg)
	var used []*ast.VariableDeclaratorNode
	for i := len(decls) - 1; i >= 0; i-- {
		d := decls[i]
		if !need[d.Name] {
			continue
		}
		delete(need, d.Name) // an outer let of the same name is shadowed...
		used = append(used, d)
		for n := range names(d.Value) { // ...unless this one's value reads it
			need[n] = true
		}
	}
	out := arg
	for _, d := range used {
		out = &ast.VariableDeclaratorNode{Name: d.Name, Value: clone(d.Value), Expr: out}
	}
	return out
}

// names returns the identifiers a tree reads.
func names(n ast.Node) map[string]bool {
	m := map[string]bool{}
	find(n, func(n ast.Node) bool {
		if id, ok := n.(*ast.IdentifierNode); ok {
			m[id.Value] = true
		}
		return false
	})
	return m
}

// find reports whether some node of the tree satisfies f.
func find(n ast.Node, f func(ast.Node) bool) bool {
	if n == nil {
		return false
	}
	if f(n) {
		return true
	}
	for _, c := range children(n) {
		if find(*c, f) {
			return true
		}
	}
	return false
}

// children returns the places of a node's children, as ast.Walk visits them.
func children(node ast.Node) []*ast.Node {
	var out []*ast.Node
	add := func(p *ast.Node) {
		if *p != nil {
			out = append(out, p)
		}
	}
	switch n := node.(type) {
	case *ast.UnaryNode:
		add(&n.Node)
	case *ast.BinaryNode:
		add(&n.Left)
		add(&n.Right)
	case *ast.ChainNode:
		add(&n.Node)
	case *ast.MemberNode:
		add(&n.Node)
		add(&n.Property)
	case *ast.SliceNode:
		add(&n.Node)
		add(&n.From)
		add(&n.To)
	case *ast.CallNode:
		add(&n.Callee)
		for i := range n.Arguments {
			add(&n.Arguments[i])
		}
	case *ast.BuiltinNode:
		for i := range n.Arguments {
			add(&n.Arguments[i])
		}
	case *ast.PredicateNode:
		add(&n.Node)
	case *ast.VariableDeclaratorNode:
		add(&n.Value)
		add(&n.Expr)
	case *ast.SequenceNode:
		for i := range n.Nodes {
			add(&n.Nodes[i])
		}
	case *ast.ConditionalNode:
		add(&n.Cond)
		add(&n.Exp1)
		add(&n.Exp2)
	case *ast.ArrayNode:
		for i := range n.Nodes {
			add(&n.Nodes[i])
		}
	case *ast.MapNode:
		for i := range n.Pairs {
			add(&n.Pairs[i])
		}
	case *ast.PairNode:
		add(&n.Key)
		add(&n.Value)
	}
	return out
}

// clone returns a deep copy of a tree.
func clone(node ast.Node) ast.Node {
	var c ast.Node
	switch n := node.(type) {
	case nil:
		return nil
	case *ast.NilNode:
		x := *n
		c = &x
	case *ast.IdentifierNode:
		x := *n
		c = &x
	case *ast.IntegerNode:
		x := *n
		c = &x
	case *ast.FloatNode:
		x := *n
		c = &x
	case *ast.BoolNode:
		x := *n
		c = &x
	case *ast.StringNode:
		x := *n
		c = &x
	case *ast.BytesNode:
		x := *n
		c = &x
	case *ast.ConstantNode:
		x := *n
		c = &x
	case *ast.PointerNode:
		x := *n
		c = &x
	case *ast.UnaryNode:
		x := *n
		c = &x
	case *ast.BinaryNode:
		x := *n
		c = &x
	case *ast.ChainNode:
		x := *n
		c = &x
	case *ast.MemberNode:
		x := *n
		c = &x
	case *ast.SliceNode:
		x := *n
		c = &x
	case *ast.CallNode:
		x := *n
		x.Arguments = slices.Clone(n.Arguments)
		c = &x
	case *ast.BuiltinNode:
		x := *n
		x.Arguments = slices.Clone(n.Arguments)
		c = &x
	case *ast.PredicateNode:
		x := *n
		c = &x
	case *ast.VariableDeclaratorNode:
		x := *n
		c = &x
	case *ast.SequenceNode:
		x := *n
		x.Nodes = slices.Clone(n.Nodes)
		c = &x
	case *ast.ConditionalNode:
		x := *n
		c = &x
	case *ast.ArrayNode:
		x := *n
		x.Nodes = slices.Clone(n.Nodes)
		c = &x
	case *ast.MapNode:
		x := *n
		x.Pairs = slices.Clone(n.Pairs)
		c = &x
	case *ast.PairNode:
		x := *n
		c = &x
	default:
		panic(fmt.Sprintf("rules: clone: unknown node %T", node))
	}
	for _, p := range children(c) {
		*p = clone(*p)
	}
	return c
}

// feed feeds the sites [*fed, end) of rule r the current reading, and
// records their values for the expressions to read.
func (ev *Evaluator) feed(r *rule, fed *int, end int) error {
	c := &ev.ctx
	for i := *fed; i < end; i++ {
		st := &r.sites[i]
		var v any
		switch {
		case st.arg != nil:
			x, err := ev.run(st.arg)
			if err != nil {
				return &stageError{stage: st.stage, err: err, prog: st.arg}
			}
			v = x
		case st.argKey != "":
			v = ev.env[st.argKey]
		}
		res, err := c.observe(i, st, v)
		if err != nil {
			return &stageError{stage: st.stage, err: err}
		}
		c.results[i] = res
	}
	*fed = max(*fed, end)
	return nil
}

// peekAll sets the value of every site of r as it stands, without a
// reading, for an alert raised by the timer.
func (ev *Evaluator) peekAll(r *rule) {
	for i := range r.sites {
		ev.ctx.results[i] = ev.ctx.peek(i, &r.sites[i])
	}
}

// feedConfig is the expr configuration of the programs computing sites'
// arguments.
func (c *compiler) feedConfig() *exprconf.Config {
	if c.feedCfg == nil {
		c.feedCfg = c.config(nil)
	}
	return c.feedCfg
}
