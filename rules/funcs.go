package rules

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"

	"github.com/sluicehq/sluice/rules/window"
)

// Stateful functions keep state per series. Each call in a rule is its own
// "site" with its own state: two rate() calls in one rule do not share. The
// compiler binds every call to its site (an index into the series' slots) and
// validates its constant arguments (durations, percentiles), so evaluation
// does no lookups by name.
//
// A function without enough data yet (the first message of a series, an empty
// window) returns NaN: comparisons with NaN are false, so no alert fires on
// missing data, and a NaN field is left out of records.

type argKind uint8

const (
	argValue    argKind = iota // the series' value: a number (or a condition for held)
	argDuration                // a constant duration string: "5m"
	argPercent                 // a constant number 0..100
	argUnit                    // a constant unit name
)

// funcSpec describes a function rules can call.
type funcSpec struct {
	args []argKind
	// state creates the per-series state of one site.
	state func(s site) any
	usage string
}

// site is one call of a stateful function in one rule.
type site struct {
	fn      string
	span    time.Duration
	percent float64
}

var stateful = map[string]funcSpec{
	"delta":           {[]argKind{argValue}, func(site) any { return new(window.Last) }, "delta(value)"},
	"rate":            {[]argKind{argValue}, func(site) any { return new(window.Last) }, "rate(value)"},
	"increase":        {[]argKind{argValue}, func(site) any { return new(window.Last) }, "increase(counter)"},
	"changed":         {[]argKind{argValue}, func(site) any { return new(window.Last) }, "changed(value)"},
	"avg_over":        {[]argKind{argValue, argDuration}, statsState, `avg_over(value, "5m")`},
	"min_over":        {[]argKind{argValue, argDuration}, statsState, `min_over(value, "5m")`},
	"max_over":        {[]argKind{argValue, argDuration}, statsState, `max_over(value, "5m")`},
	"sum_over":        {[]argKind{argValue, argDuration}, statsState, `sum_over(value, "5m")`},
	"stddev_over":     {[]argKind{argValue, argDuration}, statsState, `stddev_over(value, "5m")`},
	"count_over":      {[]argKind{argDuration}, statsState, `count_over("5m")`},
	"zscore":          {[]argKind{argValue, argDuration}, statsState, `zscore(value, "10m")`},
	"percentile_over": {[]argKind{argValue, argPercent, argDuration}, quantState, `percentile_over(value, 95, "5m")`},
	"ewma":            {[]argKind{argValue, argDuration}, ewmaState, `ewma(value, "1m")`},
	"held":            {[]argKind{argValue, argDuration}, func(site) any { return new(window.Held) }, `held(condition, "5m")`},
	"for":             {[]argKind{argValue, argDuration}, func(site) any { return new(window.Held) }, `for(condition, "5m")`},
}

func statsState(s site) any { st := window.NewStats(s.span); return &st }
func quantState(s site) any { q := window.NewQuantiles(s.span); return &q }
func ewmaState(s site) any  { e := window.NewEWMA(s.span); return &e }

// plain functions rules can call besides expr's built-ins; checked at
// compile time like the stateful ones.
var plain = map[string]string{
	"convert": `convert(value, "degF", "degC")`,
}

// ctxKey is the environment entry holding the evaluator's call context; the
// compiler passes it to every stateful call.
const ctxKey = "__sluice_ctx"

// callCtx is what a stateful function needs at run time: the series being
// evaluated and the time.
type callCtx struct {
	rule   *rule
	series *series
	now    int64
	rnd    uint64
}

func (c *callCtx) slot(i int) any {
	s := c.series
	if s.slots[i] == nil {
		st := c.rule.sites[i]
		s.slots[i] = stateful[st.fn].state(st)
	}
	return s.slots[i]
}

func (c *callCtx) random() uint64 {
	// splitmix64: cheap, good enough for reservoir sampling
	c.rnd += 0x9e3779b97f4a7c15
	z := c.rnd
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// number turns an expression value into a float64. nil (a missing field)
// is reported as not ok, so the function returns NaN without touching its
// state.
func number(fn string, v any) (float64, bool, error) {
	switch x := v.(type) {
	case float64:
		return x, !math.IsNaN(x), nil
	case int:
		return float64(x), true, nil
	case int64:
		return float64(x), true, nil
	case float32:
		return float64(x), true, nil
	case nil:
		return 0, false, nil
	case string:
		if f, err := strconv.ParseFloat(x, 64); err == nil {
			return f, true, nil
		}
	}
	return 0, false, fmt.Errorf("%s: want a number, got %T %v", fn, v, v)
}

var nan = math.NaN()

// runtimeFunctions are the expr options registering every function rules
// may call, with the signatures the compiler rewrites calls to.
func runtimeFunctions() []expr.Option {
	valueFn := func(name string, f func(c *callCtx, i int, v float64) float64) expr.Option {
		return expr.Function(name, func(p ...any) (any, error) {
			c, i := p[0].(*callCtx), p[1].(int)
			v, ok, err := number(name, p[2])
			if err != nil || !ok {
				return nan, err
			}
			return f(c, i, v), nil
		}, new(func(*callCtx, int, any) float64))
	}
	last := func(c *callCtx, i int) *window.Last { return c.slot(i).(*window.Last) }
	stats := func(c *callCtx, i int) *window.Stats { return c.slot(i).(*window.Stats) }
	orNaN := func(v float64, ok bool) float64 {
		if !ok {
			return nan
		}
		return v
	}
	return []expr.Option{
		valueFn("delta", func(c *callCtx, i int, v float64) float64 { return orNaN(last(c, i).Delta(c.now, v)) }),
		valueFn("rate", func(c *callCtx, i int, v float64) float64 { return orNaN(last(c, i).Rate(c.now, v)) }),
		valueFn("increase", func(c *callCtx, i int, v float64) float64 { return orNaN(last(c, i).Increase(c.now, v)) }),
		expr.Function("changed", func(p ...any) (any, error) {
			c, i := p[0].(*callCtx), p[1].(int)
			return last(c, i).Changed(c.now, p[2]), nil
		}, new(func(*callCtx, int, any) bool)),
		valueFn("avg_over", func(c *callCtx, i int, v float64) float64 {
			s := stats(c, i)
			s.Add(c.now, v)
			return orNaN(s.Mean(c.now))
		}),
		valueFn("min_over", func(c *callCtx, i int, v float64) float64 {
			s := stats(c, i)
			s.Add(c.now, v)
			return orNaN(s.Min(c.now))
		}),
		valueFn("max_over", func(c *callCtx, i int, v float64) float64 {
			s := stats(c, i)
			s.Add(c.now, v)
			return orNaN(s.Max(c.now))
		}),
		valueFn("sum_over", func(c *callCtx, i int, v float64) float64 {
			s := stats(c, i)
			s.Add(c.now, v)
			return s.Sum(c.now)
		}),
		valueFn("stddev_over", func(c *callCtx, i int, v float64) float64 {
			s := stats(c, i)
			s.Add(c.now, v)
			return orNaN(s.Stddev(c.now))
		}),
		expr.Function("count_over", func(p ...any) (any, error) {
			c, i := p[0].(*callCtx), p[1].(int)
			s := stats(c, i)
			s.Add(c.now, 0)
			return float64(s.Count(c.now)), nil
		}, new(func(*callCtx, int) float64)),
		valueFn("zscore", func(c *callCtx, i int, v float64) float64 { return orNaN(window.ZScore(stats(c, i), c.now, v)) }),
		valueFn("percentile_over", func(c *callCtx, i int, v float64) float64 {
			q := c.slot(i).(*window.Quantiles)
			q.Add(c.now, v, c.random())
			return orNaN(q.Quantile(c.now, c.rule.sites[i].percent/100))
		}),
		valueFn("ewma", func(c *callCtx, i int, v float64) float64 { return c.slot(i).(*window.EWMA).Add(c.now, v) }),
		heldFn("held"),
		heldFn("for"), // for(condition, "5m") reads as the rule language's for(duration)
		expr.Function("__convert", func(p ...any) (any, error) {
			v, ok, err := number("convert", p[0])
			if err != nil || !ok {
				return nan, err
			}
			return v*p[1].(float64) + p[2].(float64), nil
		}, new(func(any, float64, float64) float64)),
	}
}

// heldFn is held(condition, "5m"): true once the condition has been true
// continuously for the duration.
func heldFn(name string) expr.Option {
	return expr.Function(name, func(p ...any) (any, error) {
		c, i := p[0].(*callCtx), p[1].(int)
		cond, ok := p[2].(bool)
		if !ok && p[2] != nil {
			return false, fmt.Errorf("%s: want a condition (true or false), got %T", name, p[2])
		}
		return c.slot(i).(*window.Held).Observe(c.now, cond) >= c.rule.sites[i].span, nil
	}, new(func(*callCtx, int, any) bool))
}

// bindCall checks a call of a sluice function and rewrites it to its runtime
// form: stateful calls get the context and their site, convert() gets its
// precomputed linear map. It returns a problem to report, or "".
func bindCall(call *ast.CallNode, name string, r *rule) string {
	if name == "convert" {
		if len(call.Arguments) != 3 {
			return fmt.Sprintf("convert takes 3 arguments: %s", plain["convert"])
		}
		from, ok1 := call.Arguments[1].(*ast.StringNode)
		to, ok2 := call.Arguments[2].(*ast.StringNode)
		if !ok1 || !ok2 {
			return `convert: the units must be constant strings, e.g. convert(t, "degF", "degC")`
		}
		conv, err := convert(from.Value, to.Value)
		if err != nil {
			return "convert: " + err.Error()
		}
		call.Callee = &ast.IdentifierNode{Value: "__convert"}
		call.Arguments = []ast.Node{call.Arguments[0], &ast.FloatNode{Value: conv.scale}, &ast.FloatNode{Value: conv.offset}}
		return ""
	}
	spec := stateful[name]
	if len(call.Arguments) != len(spec.args) {
		return fmt.Sprintf("%s takes %d argument(s): %s", name, len(spec.args), spec.usage)
	}
	st := site{fn: name}
	var values []ast.Node
	for i, kind := range spec.args {
		arg := call.Arguments[i]
		switch kind {
		case argValue:
			values = append(values, arg)
		case argDuration:
			s, ok := arg.(*ast.StringNode)
			if !ok {
				return fmt.Sprintf("%s: the duration must be a constant string such as \"5m\": %s", name, spec.usage)
			}
			d, err := time.ParseDuration(s.Value)
			if err != nil || d <= 0 {
				return fmt.Sprintf("%s: %q is not a positive duration such as \"30s\" or \"5m\"", name, s.Value)
			}
			st.span = d
		case argPercent:
			p, ok := constNumber(arg)
			if !ok || p < 0 || p > 100 {
				return fmt.Sprintf("%s: the percentile must be a constant from 0 to 100: %s", name, spec.usage)
			}
			st.percent = p
		}
	}
	idx := len(r.sites)
	r.sites = append(r.sites, st)
	call.Arguments = append([]ast.Node{&ast.IdentifierNode{Value: ctxKey}, &ast.IntegerNode{Value: idx}}, values...)
	return ""
}

func constNumber(n ast.Node) (float64, bool) {
	switch x := n.(type) {
	case *ast.IntegerNode:
		return float64(x.Value), true
	case *ast.FloatNode:
		return x.Value, true
	}
	return 0, false
}
