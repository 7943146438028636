package influxdb

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice"
)

// point is one InfluxDB point, as line protocol will carry it. Its tags and
// fields are slices, not maps, so that building one allocates nothing once
// the encoder's scratch space has grown: a point is made and written for
// every record (sluice bench).
type point struct {
	measurement string
	tags        []sluice.Tag
	fields      []sluice.Field // float64, int64, bool or string
	time        time.Time
}

// sortTags sorts tags by key, keeping the first of a key given twice (a
// record's tags before the defaults added after them) and leaving out empty
// values (InfluxDB refuses them).
func sortTags(tags []sluice.Tag) []sluice.Tag {
	tags = slices.DeleteFunc(tags, func(t sluice.Tag) bool { return t.Value == "" })
	if !slices.IsSortedFunc(tags, compareTags) {
		slices.SortStableFunc(tags, compareTags)
	}
	return slices.CompactFunc(tags, func(a, b sluice.Tag) bool { return a.Key == b.Key })
}

func compareTags(a, b sluice.Tag) int { return cmp.Compare(a.Key, b.Key) }

// sortFields sorts fields by name, keeping the last of a name given twice
// (as a later value of a record's field replaces an earlier one).
func sortFields(fields []sluice.Field) []sluice.Field {
	if !slices.IsSortedFunc(fields, compareFields) {
		slices.SortStableFunc(fields, compareFields)
	}
	out := fields[:0]
	for i, f := range fields {
		if i+1 < len(fields) && fields[i+1].Name == f.Name {
			continue
		}
		out = append(out, f)
	}
	return out
}

func compareFields(a, b sluice.Field) int { return cmp.Compare(a.Name, b.Name) }

// fieldOrders remembers how the fields of each rule's records sort: a
// rule's records carry their fields in the same order, record after
// record, so sorting them is mostly a check that the names are the same
// (sorting each record's twenty-odd fields anew was 3.7% of sluice's CPU
// under load: sluice bench).
type fieldOrders map[string]*fieldOrder

// maxFieldOrders bounds fieldOrders; past it, it starts again.
const maxFieldOrders = 256

type fieldOrder struct {
	names []string
	keep  []int // indexes of the fields to write, sorted by name
}

// sort appends fields to out sorted by name, keeping the last of a name
// given twice, as sortFields does, learning the order of rule's records.
func (o fieldOrders) sort(rule string, fields, out []sluice.Field) []sluice.Field {
	ord := o[rule]
	if ord == nil || !ord.fits(fields) {
		if len(o) >= maxFieldOrders {
			clear(o)
		}
		ord = learnOrder(fields)
		o[rule] = ord
	}
	for _, i := range ord.keep {
		out = append(out, fields[i])
	}
	return out
}

func (ord *fieldOrder) fits(fields []sluice.Field) bool {
	if len(fields) != len(ord.names) {
		return false
	}
	for i := range fields {
		if fields[i].Name != ord.names[i] {
			return false
		}
	}
	return true
}

func learnOrder(fields []sluice.Field) *fieldOrder {
	ord := &fieldOrder{names: make([]string, len(fields))}
	idx := make([]int, len(fields))
	for i, f := range fields {
		ord.names[i] = f.Name
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(fields[a].Name, fields[b].Name) })
	for k, i := range idx {
		if k+1 < len(idx) && fields[idx[k+1]].Name == fields[i].Name {
			continue
		}
		ord.keep = append(ord.keep, i)
	}
	return ord
}

// appendLine appends the point in line protocol, with a nanosecond
// timestamp and a trailing newline. Tags and fields must be sorted by key
// (as InfluxDB prefers; sortTags, sortFields).
func (p *point) appendLine(b []byte) []byte {
	b = appendEscaped(b, p.measurement, measurementEscapes)
	for _, t := range p.tags {
		b = append(b, ',')
		b = appendEscaped(b, t.Key, keyEscapes)
		b = append(b, '=')
		b = appendEscaped(b, t.Value, keyEscapes)
	}
	for i, f := range p.fields {
		if i == 0 {
			b = append(b, ' ')
		} else {
			b = append(b, ',')
		}
		b = appendEscaped(b, f.Name, keyEscapes)
		b = append(b, '=')
		switch v := f.Value.(type) {
		case float64:
			b = appendFloat(b, v)
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

// appendFloat writes f as strconv's shortest 'f' format does; whole numbers
// (counters, sequence numbers, timestamps: most of what devices send) take
// the integer path, which writes the same digits several times faster.
func appendFloat(b []byte, f float64) []byte {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 && !(f == 0 && math.Signbit(f)) {
		return strconv.AppendInt(b, int64(f), 10)
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64)
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
