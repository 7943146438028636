package influxdb

import (
	"errors"
	"net/http"
	"regexp"
	"strconv"

	http2 "github.com/influxdata/influxdb-client-go/v2/api/http"

	"github.com/sluicehq/sluice"
)

// A partial write is InfluxDB storing the points of a request it can and
// refusing the others, with a 400 (422 from some 2.x versions) whose message
// says why and how many it dropped; the reason names the points, e.g.
//
//	partial write: field type conflict: input field "v" on measurement "telemetry" is type string, already exists as type float dropped=2
//
// Only the first reason is given when points were dropped for several. A
// request with two points that disagree on the type of a field new to
// InfluxDB is refused as a whole ("field type conflict", no point named),
// as are points outside the retention policy ("points beyond retention
// policy dropped=3"): those are left to the writer, which writes halves of
// the batch until each bad point is alone.

// fieldConflict is a partial write for points whose field has another type
// than the field stored: InfluxDB 1.8's message, and 2.x's after a prefix.
var fieldConflict = regexp.MustCompile(`partial write: field type conflict: input field "(.*)" on measurement "(.*)" is type (\w+), already exists as type \w+ dropped=(\d+)`)

// refusal is what InfluxDB said of a partial write: which points it refused
// (named) and how many it dropped in all.
type refusal struct {
	named   func(p *point) bool
	dropped int
}

// partialWrite reads the refusal in a write error: nil when the error is no
// partial write, or one whose points cannot be told from its message.
func partialWrite(err error) *refusal {
	var he *http2.Error
	if !errors.As(err, &he) || (he.StatusCode != http.StatusBadRequest && he.StatusCode != http.StatusUnprocessableEntity) {
		return nil
	}
	m := fieldConflict.FindStringSubmatch(he.Message)
	if m == nil {
		return nil
	}
	field, measurement, typ := m[1], m[2], m[3]
	dropped, _ := strconv.Atoi(m[4])
	return &refusal{dropped: dropped, named: func(p *point) bool {
		if p.measurement != measurement {
			return false
		}
		for _, f := range p.fields {
			if f.Name == field {
				return influxType(f) == typ
			}
		}
		return false
	}}
}

// influxType is the name InfluxDB gives the type of a field's value.
func influxType(f sluice.Field) string {
	switch f.Value.(type) {
	case float64:
		return "float"
	case int64:
		return "integer"
	case string:
		return "string"
	case bool:
		return "boolean"
	}
	return ""
}
