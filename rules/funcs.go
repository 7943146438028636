package rules

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"

	"github.com/sluicehq/sluice/rules/window"
)

// Stateful functions keep state per series. The compiler binds every call to
// a "site" of its rule: calls written the same way (the same function, the
// same arguments, in the same scope) share one site, wherever they stand,
// and so one state; different calls have their own. Each site is fed once
// per reading, before the expression that first calls it is evaluated (see
// sites.go), so that `and`, `or`, `?:` and `??` cannot starve it; the
// expressions then read the value the feeding produced.
//
// A function without enough data yet (the first message of a series, an empty
// window) returns NaN: comparisons with NaN are false, so no alert fires on
// missing data, and a NaN field is left out of records.

type argKind uint8

const (
	argValue    argKind = iota // the series' value: a number (or a condition for held)
	argDuration                // a constant duration string: "5m"
	argPercent                 // a constant number 0..100
	argMin                     // optional, last: a constant count of samples, at least 2
)

// op names a stateful function's behaviour, so that feeding a site is a
// switch rather than a lookup by name.
type op uint8

const (
	opDelta op = iota
	opRate
	opIncrease
	opChanged
	opAvg
	opMin
	opMax
	opSum
	opStddev
	opCount
	opZScore
	opPercentile
	opEWMA
	opHeld
	opDeriv
	opDeltaOver
)

// funcSpec describes a stateful function rules can call.
type funcSpec struct {
	op   op
	args []argKind
	cond bool // returns a condition (true or false) rather than a number
	// min is the default of the optional last argument argMin: the fewest
	// samples in the window for a value; 0 for functions without it.
	min int
	// state creates the per-series state of one site.
	state func(s *site) any
	usage string
}

// site is one stateful call of a rule (or several written the same way).
// It is compile-time data; the state it feeds lives in the series.
type site struct {
	fn      string
	op      op
	cond    bool
	span    time.Duration
	percent float64
	min     int // fewest samples for a value (zscore, stddev_over)
	// stage is the expression the site is first called in ("alert.when"),
	// for error messages.
	stage string
	// The value argument: none (count_over), an environment entry read
	// directly (argKey, converted when conv is set: the common case of a
	// plain field name), or a program.
	hasArg bool
	argKey string
	conv   *conversion
	arg    *vm.Program
}

var stateful = map[string]funcSpec{
	"delta":           {opDelta, []argKind{argValue}, false, 0, lastState, "delta(value)"},
	"rate":            {opRate, []argKind{argValue}, false, 0, lastState, "rate(value)"},
	"increase":        {opIncrease, []argKind{argValue}, false, 0, lastState, "increase(counter)"},
	"changed":         {opChanged, []argKind{argValue}, true, 0, lastState, "changed(value)"},
	"avg_over":        {opAvg, []argKind{argValue, argDuration}, false, 0, statsState, `avg_over(value, "5m")`},
	"min_over":        {opMin, []argKind{argValue, argDuration}, false, 0, statsState, `min_over(value, "5m")`},
	"max_over":        {opMax, []argKind{argValue, argDuration}, false, 0, statsState, `max_over(value, "5m")`},
	"sum_over":        {opSum, []argKind{argValue, argDuration}, false, 0, statsState, `sum_over(value, "5m")`},
	"stddev_over":     {opStddev, []argKind{argValue, argDuration, argMin}, false, minStddev, statsState, `stddev_over(value, "5m") or stddev_over(value, "5m", min_samples)`},
	"count_over":      {opCount, []argKind{argDuration}, false, 0, statsState, `count_over("5m")`},
	"zscore":          {opZScore, []argKind{argValue, argDuration, argMin}, false, minZScore, statsState, `zscore(value, "10m") or zscore(value, "10m", min_samples)`},
	"percentile_over": {opPercentile, []argKind{argValue, argPercent, argDuration}, false, 0, quantState, `percentile_over(value, 95, "5m")`},
	"deriv":           {opDeriv, []argKind{argValue, argDuration, argMin}, false, minDeriv, derivState, `deriv(value, "5m") or deriv(value, "5m", min_samples)`},
	"delta_over":      {opDeltaOver, []argKind{argValue, argDuration}, false, 0, deltaOverState, `delta_over(value, "5m")`},
	"ewma":            {opEWMA, []argKind{argValue, argDuration}, false, 0, ewmaState, `ewma(value, "1m")`},
	"held":            {opHeld, []argKind{argValue, argDuration}, true, 0, heldState, `held(condition, "5m")`},
	"for":             {opHeld, []argKind{argValue, argDuration}, true, 0, heldState, `for(condition, "5m")`},
}

// The fewest samples in the window for a value, by default: one reading
// has no deviation, and a z-score against a handful of readings fires on
// normal noise (|z| > 4 for one reading in 4 after 2 samples, one in 165
// after 10; docs/rules.md has the table).
const (
	minStddev = 2
	minZScore = 10
	minDeriv  = 2
)

func lastState(*site) any    { return new(window.Last) }
func heldState(*site) any    { return new(window.Held) }
func statsState(s *site) any { st := window.NewStats(s.span); return &st }
func quantState(s *site) any { q := window.NewQuantiles(s.span); return &q }
func ewmaState(s *site) any  { e := window.NewEWMA(s.span); return &e }
func derivState(s *site) any { d := window.NewDeriv(s.span); return &d }
func deltaOverState(s *site) any {
	d := window.NewDeltaOver(s.span)
	return &d
}

// plain functions rules can call besides expr's built-ins; checked at
// compile time like the stateful ones.
var plain = map[string]string{
	"convert": `convert(value, "degF", "degC")`,
}

// ctxKey is the environment entry holding the evaluator's call context; the
// compiler passes it to every read of a site.
const ctxKey = "__sluice_ctx"

// The functions a compiled expression calls to read a site's value for the
// current reading: readNum for numbers, readCond for conditions.
const (
	readNum  = "__site"
	readCond = "__site_cond"
)

// callCtx is what feeding and reading sites needs at run time: the series
// being evaluated, the time, and the value of each site of the current rule
// for the current reading.
type callCtx struct {
	rule    *rule
	series  *series
	now     int64
	rnd     uint64
	results []any // per site of the current rule
}

func (c *callCtx) slot(i int) any {
	s := c.series
	if s.slots[i] == nil {
		s.slots[i] = stateful[c.rule.sites[i].fn].state(&c.rule.sites[i])
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

var (
	nan        = math.NaN()
	nanAny any = nan // boxed once: a site without a value costs no allocation
)

// observe feeds site i the value v of the current reading and returns the
// function's value for it.
func (c *callCtx) observe(i int, st *site, v any) (any, error) {
	switch st.op {
	case opChanged:
		return c.slot(i).(*window.Last).Changed(c.now, v), nil
	case opHeld:
		cond, ok := v.(bool)
		if !ok && v != nil {
			return false, fmt.Errorf("%s: want a condition (true or false), got %T", st.fn, v)
		}
		return c.slot(i).(*window.Held).Observe(c.now, cond) >= st.span, nil
	case opCount:
		s := c.slot(i).(*window.Stats)
		s.Add(c.now, 0)
		return float64(s.Count(c.now)), nil
	}
	x, ok, err := number(st.fn, v)
	if err != nil || !ok {
		return nanAny, err
	}
	if st.conv != nil {
		x = st.conv.apply(x)
	}
	var f float64
	switch st.op {
	case opDelta:
		f, ok = c.slot(i).(*window.Last).Delta(c.now, x)
	case opRate:
		f, ok = c.slot(i).(*window.Last).Rate(c.now, x)
	case opIncrease:
		f, ok = c.slot(i).(*window.Last).Increase(c.now, x)
	case opZScore:
		f, ok = window.ZScore(c.slot(i).(*window.Stats), c.now, x, st.min)
	case opPercentile:
		q := c.slot(i).(*window.Quantiles)
		q.Add(c.now, x, c.random())
		f, ok = q.Quantile(c.now, st.percent/100)
	case opEWMA:
		f = c.slot(i).(*window.EWMA).Add(c.now, x)
		ok = !math.IsNaN(f)
	case opDeriv:
		d := c.slot(i).(*window.Deriv)
		d.Add(c.now, x)
		f, ok = d.Slope(c.now, st.min)
	case opDeltaOver:
		d := c.slot(i).(*window.DeltaOver)
		d.Add(c.now, x)
		f, ok = d.Value(c.now)
	default: // the Stats aggregates
		s := c.slot(i).(*window.Stats)
		s.Add(c.now, x)
		f, ok = statsValue(st, s, c.now)
	}
	if !ok {
		return nanAny, nil
	}
	return f, nil
}

func statsValue(st *site, s *window.Stats, now int64) (float64, bool) {
	switch st.op {
	case opAvg:
		return s.Mean(now)
	case opMin:
		return s.Min(now)
	case opMax:
		return s.Max(now)
	case opSum:
		return s.Sum(now), true
	case opStddev:
		if s.Count(now) < st.min {
			return 0, false
		}
		return s.Stddev(now)
	case opCount:
		return float64(s.Count(now)), true
	}
	return 0, false
}

// peek returns site i's value at the current time without a reading, for
// alerts raised by the timer: a window function gives its window as it is
// then; a function that needs a new value (delta, rate, zscore, ...) has
// none (NaN, or false for a condition).
func (c *callCtx) peek(i int, st *site) any {
	none := nanAny
	if st.cond {
		none = false
	}
	state := c.series.slots[i]
	if state == nil {
		return none
	}
	var f float64
	ok := false
	switch s := state.(type) {
	case *window.Stats:
		if st.op != opZScore {
			f, ok = statsValue(st, s, c.now)
		}
	case *window.Quantiles:
		f, ok = s.Quantile(c.now, st.percent/100)
	case *window.EWMA:
		f = s.Value()
		ok = !math.IsNaN(f)
	case *window.Deriv:
		f, ok = s.Slope(c.now, st.min)
	case *window.DeltaOver:
		f, ok = s.Value(c.now)
	}
	if !ok {
		return none
	}
	return f
}

// runtimeFunctions are the expr options registering every function rules
// may call, with the signatures the compiler rewrites calls to.
func runtimeFunctions() []expr.Option {
	opts := []expr.Option{
		expr.Function(readNum, func(p ...any) (any, error) {
			return p[0].(*callCtx).results[p[1].(int)], nil
		}, new(func(*callCtx, int) float64)),
		expr.Function(readCond, func(p ...any) (any, error) {
			return p[0].(*callCtx).results[p[1].(int)], nil
		}, new(func(*callCtx, int) bool)),
		expr.Function("__convert", func(p ...any) (any, error) {
			v, ok, err := number("convert", p[0])
			if err != nil || !ok {
				return nan, err
			}
			return v*p[1].(float64) + p[2].(float64), nil
		}, new(func(any, float64, float64) float64)),
	}
	// The stateful functions as written, for type checking only: the
	// compiler replaces every call with a read of its site.
	for name, spec := range stateful {
		unbound := func(...any) (any, error) { return nil, fmt.Errorf("%s: not bound to a site", name) }
		sig := any(new(func(*callCtx, int, any) float64))
		switch {
		case spec.cond:
			sig = new(func(*callCtx, int, any) bool)
		case spec.args[0] != argValue: // count_over
			sig = new(func(*callCtx, int) float64)
		}
		opts = append(opts, expr.Function(name, unbound, sig))
	}
	return opts
}

// bindCall checks a call of a sluice function. convert() is rewritten to
// its precomputed linear map; a stateful call gets its site's constant
// arguments (durations, percentiles) checked and recorded in st, and its
// arguments rewritten to (context, 0, value) for type checking until the
// hoister replaces it with a read of its site. It returns a problem to
// report, or "".
func bindCall(call *ast.CallNode, name string, st *site) string {
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
	args := spec.args
	if spec.min > 0 && len(call.Arguments) == len(args)-1 {
		args = args[:len(args)-1] // the optional argMin left out
	}
	if len(call.Arguments) != len(args) {
		if spec.min > 0 {
			return fmt.Sprintf("%s takes %d or %d arguments: %s", name, len(args)-1, len(args), spec.usage)
		}
		return fmt.Sprintf("%s takes %d argument(s): %s", name, len(args), spec.usage)
	}
	*st = site{fn: name, op: spec.op, cond: spec.cond, min: spec.min}
	var values []ast.Node
	for i, kind := range args {
		arg := call.Arguments[i]
		switch kind {
		case argMin:
			n, ok := arg.(*ast.IntegerNode)
			if !ok || n.Value < 2 {
				return fmt.Sprintf("%s: the fewest samples must be a constant whole number, at least 2: %s", name, spec.usage)
			}
			st.min = n.Value
		case argValue:
			values = append(values, arg)
			st.hasArg = true
		case argDuration:
			s, ok := arg.(*ast.StringNode)
			if !ok {
				return fmt.Sprintf("%s: the duration must be a constant string such as \"5m\": %s", name, spec.usage)
			}
			d, err := time.ParseDuration(s.Value)
			if err != nil || d <= 0 {
				return fmt.Sprintf("%s: want a positive duration such as 30s or 5m, got %q", name, s.Value)
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
	call.Arguments = append([]ast.Node{&ast.IdentifierNode{Value: ctxKey}, &ast.IntegerNode{Value: 0}}, values...)
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
