package influxdb

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/influxdata/influxdb-client-go/v2/api/write"
	lp "github.com/influxdata/line-protocol"

	"github.com/sluicehq/sluice"
)

// clientLine is how the client library's write path (line-protocol's
// encoder) writes a point with these tags and fields: for a key given
// twice, the first tag and the last field win, as sluice's sink builds
// them.
func clientLine(t testing.TB, p point) string {
	tags := map[string]string{}
	for _, tag := range p.tags {
		if _, taken := tags[tag.Key]; !taken && tag.Value != "" {
			tags[tag.Key] = tag.Value
		}
	}
	fields := map[string]any{}
	for _, f := range p.fields {
		fields[f.Name] = f.Value
	}
	var buf bytes.Buffer
	e := lp.NewEncoder(&buf)
	e.SetFieldTypeSupport(lp.UintSupport)
	if _, err := e.Encode(write.NewPoint(p.measurement, tags, fields, p.time)); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// TestLineMatchesClientLibrary checks sluice's line protocol encoder
// against the client library's (which sluice used before) on the points
// that are hard to get right: escapes in every position, every field
// type, whole and fractional floats, unordered and repeated keys.
func TestLineMatchesClientLibrary(t *testing.T) {
	at := time.Unix(1795694401, 123456789)
	points := []point{
		{"boiler", tags("site", "north", "device", "b-7", "empty", ""), fields("t", 91.5, "n", int64(-3), "ok", true, "s", "x"), at},
		{"my measure,ment", tags("a b", "c,d=e", "z", "tab\there", "nl", "new\nline"), fields("f=ld, x", "quote \" back \\ nl \n tab \t cr \r ff \f"), at},
		{"m", tags("b", "2", "a", "1"), fields("big", 1e21, "small", 1e-7, "neg", -0.0, "i", int64(9007199254740993)), at},
		{"whole", tags("a", "1"), fields("zero", 0.0, "seq", 12345.0, "us", 1795694401123456.0, "e14", 99999999999999.0, "e15", 1e15, "minus", -42.0, "tiny", 5e-324, "half", -0.5, "huge", math.MaxFloat64), at},
		{"unicode °C", tags("name", "Kühlraum ❄"), fields("msg", "héllo"), time.Unix(0, 0)},
		{"repeated", tags("k", "", "k", "first", "k", "second", "a", "x"), fields("v", 1.5, "w", true, "v", 2.5, "v", "last"), at},
	}
	for _, p := range points {
		want := clientLine(t, p)
		p.tags = sortTags(append([]sluice.Tag(nil), p.tags...))
		p.fields = sortFields(append([]sluice.Field(nil), p.fields...))
		if got := string(p.appendLine(nil)); got != want {
			t.Errorf("point %q:\n got %q\nwant %q", p.measurement, got, want)
		}
	}
}

// TestAppendFloat checks the integer path for whole floats against strconv
// on values around its edges and on random ones.
func TestAppendFloat(t *testing.T) {
	values := []float64{0, math.Copysign(0, -1), 1, -1, 0.1, 1e15 - 1, 1e15, -1e15 + 1, 1e15 + 1, 1e21, 1 << 53, -(1 << 53),
		math.MaxInt64, math.MinInt64, math.NaN(), math.Inf(1), math.SmallestNonzeroFloat64}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		values = append(values, math.Float64frombits(r.Uint64()), math.Trunc(r.NormFloat64()*1e6), float64(r.Int64N(1<<54)-1<<53), r.Float64()*1000)
	}
	for _, v := range values {
		want := strconv.FormatFloat(v, 'f', -1, 64)
		if got := string(appendFloat(nil, v)); got != want {
			t.Fatalf("appendFloat(%v) = %q, want %q", v, got, want)
		}
	}
}

func tags(kv ...string) []sluice.Tag {
	var ts []sluice.Tag
	for i := 0; i < len(kv); i += 2 {
		ts = append(ts, sluice.Tag{Key: kv[i], Value: kv[i+1]})
	}
	return ts
}

func fields(kv ...any) []sluice.Field {
	var fs []sluice.Field
	for i := 0; i < len(kv); i += 2 {
		fs = append(fs, sluice.Field{Name: kv[i].(string), Value: kv[i+1]})
	}
	return fs
}

func benchPoint() point {
	return point{"boiler", []sluice.Tag{{Key: "device", Value: "boiler-7"}, {Key: "line", Value: "l1"}, {Key: "site", Value: "north"}},
		[]sluice.Field{{Name: "kind", Value: "boiler"}, {Name: "pressure", Value: 2.14}, {Name: "seq", Value: 12345.0},
			{Name: "temp_f", Value: 196.7}, {Name: "temperature", Value: 91.5}}, time.Now()}
}

func BenchmarkLine(b *testing.B) {
	p := benchPoint()
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = p.appendLine(buf[:0])
	}
}

func BenchmarkClientLibraryLine(b *testing.B) {
	p := benchPoint()
	b.ReportAllocs()
	for b.Loop() {
		_ = clientLine(b, p)
	}
}

// BenchmarkRecordPoint is the sink's work per record: building the point
// from a record (default tags) and writing its line.
func BenchmarkRecordPoint(b *testing.B) {
	s := New(Config{URL: "http://127.0.0.1:1", Bucket: "db"}, sluice.StreamRecords)
	e := sluice.Event{Stream: sluice.StreamRecords, Message: &sluice.Message{Topic: "plant/north/l1/boiler-7/telemetry"},
		Record: &sluice.Record{Rule: "boiler", Time: time.Now(),
			Tags: []sluice.Tag{{Key: "site", Value: "north"}, {Key: "line", Value: "l1"}, {Key: "device", Value: "boiler-7"}},
			Fields: []sluice.Field{{Name: "temperature", Value: 91.5}, {Name: "pressure", Value: 2.14}, {Name: "seq", Value: 12345.0},
				{Name: "temp_f", Value: 196.7}, {Name: "kind", Value: "boiler"}}}}
	var enc encoder
	b.ReportAllocs()
	for b.Loop() {
		p, err := s.point(&enc, &e)
		if err != nil {
			b.Fatal(err)
		}
		enc.body = p.appendLine(enc.body[:0])
	}
}

// TestFieldOrders checks the learned orders against sortFields, for
// records of a few rules whose field lists repeat, change and carry
// repeated names.
func TestFieldOrders(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	names := []string{"temperature", "pressure", "seq", "a", "b", "z", "temp_f", "kind"}
	shapes := make([][]string, 6)
	for i := range shapes {
		for range 1 + r.IntN(12) {
			shapes[i] = append(shapes[i], names[r.IntN(len(names))])
		}
	}
	orders := fieldOrders{}
	for n := range 5000 {
		rule := fmt.Sprint("rule-", r.IntN(3))
		shape := shapes[r.IntN(len(shapes))]
		var fs []sluice.Field
		for _, name := range shape {
			fs = append(fs, sluice.Field{Name: name, Value: float64(n)*10 + float64(len(fs))})
		}
		want := sortFields(slices.Clone(fs))
		if got := orders.sort(rule, fs, nil); !slices.Equal(got, want) {
			t.Fatalf("record %d of %s, fields %q:\n got %v\nwant %v", n, rule, shape, got, want)
		}
	}
}
