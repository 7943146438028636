package conf

import (
	"reflect"
	"strings"
)

// suggest returns the known key closest to the unknown key at path, if one is
// close enough to be a typo ("brokrs" -> "brokers"), by walking the type of v.
func suggest(v any, path string) string {
	t := reflect.TypeOf(v)
	parts := splitPath(path)
	if len(parts) == 0 {
		return ""
	}
	for _, part := range parts[:len(parts)-1] {
		t = deref(t)
		switch {
		case strings.HasPrefix(part, "["):
			if t.Kind() != reflect.Slice && t.Kind() != reflect.Array {
				return ""
			}
			t = t.Elem()
		case t.Kind() == reflect.Struct:
			f, ok := fieldByKey(t, part)
			if !ok {
				return ""
			}
			t = f.Type
		case t.Kind() == reflect.Map:
			t = t.Elem()
		default:
			return ""
		}
	}
	t = deref(t)
	if t.Kind() != reflect.Struct {
		return ""
	}
	unknown := parts[len(parts)-1]
	best, bestDist := "", 3
	for _, k := range structKeys(t) {
		if d := distance(unknown, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

func splitPath(p string) []string {
	var parts []string
	for p != "" {
		switch {
		case p[0] == '.':
			p = p[1:]
		case p[0] == '[':
			i := strings.IndexByte(p, ']')
			if i < 0 {
				return append(parts, p)
			}
			parts = append(parts, p[:i+1])
			p = p[i+1:]
		default:
			i := strings.IndexAny(p, ".[")
			if i < 0 {
				return append(parts, p)
			}
			parts = append(parts, p[:i])
			p = p[i:]
		}
	}
	return parts
}

func yamlKey(f reflect.StructField) (string, bool) {
	tag := f.Tag.Get("yaml")
	name, _, _ := strings.Cut(tag, ",")
	if name == "-" || !f.IsExported() {
		return "", false
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name, true
}

func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if strings.Contains(f.Tag.Get("yaml"), ",inline") {
			if inner, ok := fieldByKey(deref(f.Type), key); ok {
				return inner, true
			}
			continue
		}
		if k, ok := yamlKey(f); ok && k == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func structKeys(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		if strings.Contains(f.Tag.Get("yaml"), ",inline") {
			keys = append(keys, structKeys(deref(f.Type))...)
			continue
		}
		if k, ok := yamlKey(f); ok {
			keys = append(keys, k)
		}
	}
	return keys
}

// distance is the Levenshtein edit distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Closest returns the candidate closest to name, if one is close enough to
// be a typo of it ("tmp" -> "temp"), else "".
func Closest(name string, candidates []string) string {
	best, bestDist := "", min(3, max(len(name)/2, 1)+1)
	for _, c := range candidates {
		d := distance(strings.ToLower(name), strings.ToLower(c))
		if d < bestDist || (d == bestDist && best != "" && c < best) {
			best, bestDist = c, d
		}
	}
	return best
}
