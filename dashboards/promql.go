package dashboards

import (
	"slices"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

// MetricNames returns, sorted, every metric family the health dashboard's
// PromQL reads: what sluice's /metrics must export for its panels to show
// data. The series of a histogram (name_bucket, _sum, _count) count as the
// family's name.
func MetricNames() ([]string, error) {
	d, err := Health()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, p := range d.Panels {
		if p.Panel == nil {
			continue
		}
		for _, t := range p.Panel.Targets {
			if q, ok := t.(prometheus.Dataquery); ok {
				names = append(names, metricsIn(q.Expr)...)
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// metricsIn returns the metric families an expression selects. It reads
// just enough PromQL for the expressions sluice's dashboards hold: it
// skips label matchers ({...}), ranges ([...]), strings, numbers and the
// label lists of by, without, on, ignoring, group_left and group_right,
// and takes a name that is not a function, aggregation or keyword for a
// metric.
func metricsIn(expr string) []string {
	var names []string
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '{':
			i = skipPast(expr, i, '}')
		case c == '[':
			i = skipPast(expr, i, ']')
		case isQuote(c):
			i = skipPast(expr, i, c)
		case isDigit(c) || c == '.':
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.') {
				i++ // a number or a duration (5m, 1e3)
			}
		case isIdentStart(c):
			start := i
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
			word := expr[start:i]
			next := nextNonSpace(expr, i)
			switch {
			case labelListKeywords[word]:
				if next < len(expr) && expr[next] == '(' {
					i = skipPast(expr, next, ')')
				}
			case next < len(expr) && expr[next] == '(', aggregations[word], keywords[word]:
				// a function call, an aggregation (sum by (...) (...)), or an operator
			default:
				names = append(names, family(word))
			}
		default:
			i++
		}
	}
	return names
}

// family is a series name's metric family: a histogram's or summary's
// series drop their suffix.
func family(name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if f, ok := strings.CutSuffix(name, suffix); ok {
			return f
		}
	}
	return name
}

var (
	labelListKeywords = set("by", "without", "on", "ignoring", "group_left", "group_right")
	aggregations      = set("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
		"bottomk", "topk", "quantile", "limitk", "limit_ratio")
	keywords = set("and", "or", "unless", "bool", "offset", "atan2", "inf", "nan")
)

func set(words ...string) map[string]bool {
	m := make(map[string]bool, len(words))
	for _, w := range words {
		m[w] = true
	}
	return m
}

// skipPast returns the index after the end that closes what opens at
// expr[i]: a matcher, a range or a label list (skipping the strings inside
// it), or a string.
func skipPast(expr string, i int, end byte) int {
	quote := byte(0)
	if isQuote(end) {
		quote = end
	}
	for i++; i < len(expr); i++ {
		switch c := expr[i]; {
		case quote != 0 && c == '\\':
			i++
		case quote != 0 && c == quote:
			if quote == end {
				return i + 1
			}
			quote = 0
		case quote != 0:
		case c == end:
			return i + 1
		case isQuote(c):
			quote = c
		}
	}
	return i
}

func nextNonSpace(s string, i int) int {
	for i < len(s) && strings.IndexByte(" \t\n", s[i]) >= 0 {
		i++
	}
	return i
}

func isQuote(c byte) bool { return c == '"' || c == '\'' || c == '`' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}
func isIdent(c byte) bool { return isIdentStart(c) || isDigit(c) }
