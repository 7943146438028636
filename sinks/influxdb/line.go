package influxdb

import (
	"slices"
	"strconv"
	"strings"
	"time"
)

// point is one InfluxDB point, as line protocol will carry it.
type point struct {
	measurement string
	tags        map[string]string
	fields      map[string]any // float64, int64, bool or string
	time        time.Time
}

// appendLine appends the point in line protocol, with a nanosecond
// timestamp and a trailing newline: tags and fields sorted by key (as
// InfluxDB prefers), empty tag values left out (InfluxDB refuses them).
func (p *point) appendLine(b []byte) []byte {
	b = appendEscaped(b, p.measurement, measurementEscapes)
	keys := make([]string, 0, max(len(p.tags), len(p.fields)))
	for k, v := range p.tags {
		if v != "" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		b = append(b, ',')
		b = appendEscaped(b, k, keyEscapes)
		b = append(b, '=')
		b = appendEscaped(b, p.tags[k], keyEscapes)
	}
	keys = keys[:0]
	for k := range p.fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i == 0 {
			b = append(b, ' ')
		} else {
			b = append(b, ',')
		}
		b = appendEscaped(b, k, keyEscapes)
		b = append(b, '=')
		switch v := p.fields[k].(type) {
		case float64:
			b = strconv.AppendFloat(b, v, 'f', -1, 64)
		case int64:
			b = strconv.AppendInt(b, v, 10)
			b = append(b, 'i')
		case bool:
			b = strconv.AppendBool(b, v)
		case string:
			b = append(b, '"')
			b = appendEscaped(b, v, stringEscapes)
			b = append(b, '"')
		}
	}
	b = append(b, ' ')
	b = strconv.AppendInt(b, p.time.UnixNano(), 10)
	return append(b, '\n')
}

// Escapes of line protocol, as influxdata/line-protocol's encoder (which
// the client library uses) writes them: a measurement escapes commas and
// spaces; tag keys, tag values and field keys also equals signs; string
// field values quotes and backslashes; all of them write tabs, line
// breaks and form feeds as \t, \n, \r and \f.
const (
	measurementEscapes = ", \t\n\f\r"
	keyEscapes         = ",= \t\n\f\r"
	stringEscapes      = "\"\\\t\n\f\r"
)

func appendEscaped(b []byte, s, special string) []byte {
	if !strings.ContainsAny(s, special) {
		return append(b, s...)
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\t':
			b = append(b, `\t`...)
		case '\n':
			b = append(b, `\n`...)
		case '\f':
			b = append(b, `\f`...)
		case '\r':
			b = append(b, `\r`...)
		default:
			if strings.IndexByte(special, c) >= 0 {
				b = append(b, '\\')
			}
			b = append(b, c)
		}
	}
	return b
}
