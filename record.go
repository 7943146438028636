package sluice

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// Tag is a named string attached to a record or alert: a named topic level
// ("device": "b7") or a rule label.
type Tag struct {
	Key, Value string
}

// Field is a named value of a record: float64, int64, bool or string.
type Field struct {
	Name  string
	Value any
}

// Record is what a rule derives from a message: tags (the rule's named topic
// levels and labels) and fields (decoded payload values and derived values),
// both in a stable order.
type Record struct {
	Rule   string
	Topic  string
	Time   time.Time
	Tags   []Tag
	Fields []Field
}

// Tag returns the value of the tag named key.
func (r *Record) Tag(key string) (string, bool) { return findTag(r.Tags, key) }

// Field returns the value of the field named name.
func (r *Record) Field(name string) (any, bool) {
	for i := range r.Fields {
		if r.Fields[i].Name == name {
			return r.Fields[i].Value, true
		}
	}
	return nil, false
}

func findTag(tags []Tag, key string) (string, bool) {
	for i := range tags {
		if tags[i].Key == key {
			return tags[i].Value, true
		}
	}
	return "", false
}

// Lookup resolves a name used in a sink template: a tag first, then a field.
func (r *Record) Lookup(name string) (string, bool) {
	if v, ok := r.Tag(name); ok {
		return v, true
	}
	if v, ok := r.Field(name); ok {
		return FormatValue(v), true
	}
	if name == "rule" {
		return r.Rule, true
	}
	return "", false
}

// MarshalJSON renders the record as downstream consumers see it in Kafka and
// MQTT: {"rule","topic","time","tags":{...},"fields":{...}}.
func (r *Record) MarshalJSON() ([]byte, error) { return r.AppendJSON(nil), nil }

// AppendJSON appends the record's JSON to b.
func (r *Record) AppendJSON(b []byte) []byte {
	b = append(b, `{"rule":`...)
	b = AppendJSONString(b, r.Rule)
	b = append(b, `,"topic":`...)
	b = AppendJSONString(b, r.Topic)
	b = append(b, `,"time":"`...)
	b = r.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","tags":`...)
	b = appendTags(b, r.Tags)
	b = append(b, `,"fields":{`...)
	for i, f := range r.Fields {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendJSONString(b, f.Name)
		b = append(b, ':')
		b = AppendJSONValue(b, f.Value)
	}
	return append(b, "}}"...)
}

func appendTags(b []byte, tags []Tag) []byte {
	b = append(b, '{')
	for i, t := range tags {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendJSONString(b, t.Key)
		b = append(b, ':')
		b = AppendJSONString(b, t.Value)
	}
	return append(b, '}')
}

// AppendJSONValue appends a field value as JSON: numbers, booleans and
// strings as themselves; NaN and infinities (not JSON) as null.
func AppendJSONValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case float64:
		return appendJSONFloat(b, x)
	case int64:
		return strconv.AppendInt(b, x, 10)
	case int:
		return strconv.AppendInt(b, int64(x), 10)
	case bool:
		return strconv.AppendBool(b, x)
	case string:
		return AppendJSONString(b, x)
	case nil:
		return append(b, "null"...)
	}
	return AppendJSONString(b, FormatValue(v))
}

// appendJSONFloat formats like encoding/json: plain notation for ordinary
// magnitudes, exponent notation for very large or small ones.
func appendJSONFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	abs := math.Abs(f)
	if f == math.Trunc(f) && abs < 1e15 && !(f == 0 && math.Signbit(f)) {
		// Whole numbers (counters, sequence numbers, timestamps) have the
		// same digits as an integer, which strconv writes several times
		// faster.
		return strconv.AppendInt(b, int64(f), 10)
	}
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		b = strconv.AppendFloat(b, f, 'e', -1, 64)
		// clean up e-09 to e-9, as encoding/json does
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
		return b
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64)
}

// AppendJSONString appends s as a JSON string, escaping what JSON requires
// and replacing invalid UTF-8 with U+FFFD.
func AppendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
