package opcua

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"

	"github.com/gopcua/opcua/ua"
)

// payload is the JSON a data change becomes.
type payload struct {
	// Value is the variable's value: a number, a string or a bool, or an
	// array of them; null when the status is bad.
	Value any `json:"value"`
	// Node is the node id as configured.
	Node string `json:"node"`
	// Status is the OPC UA status code's name: Good, Uncertain...,
	// Bad... (BadSensorFailure, BadCommunicationError...).
	Status string `json:"status"`
	// SourceTime and ServerTime are the device's and the server's
	// timestamps (RFC 3339, UTC), when the server sent them.
	SourceTime string `json:"source_time,omitempty"`
	ServerTime string `json:"server_time,omitempty"`
}

// encode turns a monitored item's data value into the message payload.
func encode(node string, dv *ua.DataValue) []byte {
	p := payload{Node: node, Status: "Good"}
	if dv != nil {
		p.Status = statusName(dv.Status)
		if dv.Value != nil {
			p.Value = jsonValue(dv.Value.Value())
		}
		if !dv.SourceTimestamp.IsZero() {
			p.SourceTime = dv.SourceTimestamp.UTC().Format(time.RFC3339Nano)
		}
		if !dv.ServerTimestamp.IsZero() {
			p.ServerTime = dv.ServerTimestamp.UTC().Format(time.RFC3339Nano)
		}
	}
	b, err := json.Marshal(p)
	if err != nil { // cannot happen: jsonValue gives only encodable values
		b, _ = json.Marshal(payload{Node: node, Status: p.Status, SourceTime: p.SourceTime, ServerTime: p.ServerTime})
	}
	return b
}

// jsonValue maps a variant's Go value onto JSON: numbers, strings and bools
// as they are (NaN and infinities, which JSON lacks, as null); DateTime as
// an RFC 3339 string; ByteString as base64; LocalizedText as its text;
// QualifiedName as its name; NodeId, GUID and StatusCode as their text;
// arrays element by element. Structures (ExtensionObject) and the rest give
// null.
func jsonValue(v any) any {
	switch x := v.(type) {
	case nil, bool, string, int8, int16, int32, int64, uint8, uint16, uint32, uint64, []byte:
		return x
	case float32:
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil
		}
		return x
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
		return x
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case *ua.LocalizedText:
		if x == nil {
			return nil
		}
		return x.Text
	case *ua.QualifiedName:
		if x == nil {
			return nil
		}
		return x.Name
	case *ua.NodeID:
		if x == nil {
			return nil
		}
		return x.String()
	case *ua.ExpandedNodeID:
		if x == nil {
			return nil
		}
		return x.String()
	case *ua.GUID:
		if x == nil {
			return nil
		}
		return x.String()
	case ua.StatusCode:
		return statusName(x)
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Slice {
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = jsonValue(rv.Index(i).Interface())
		}
		return out
	}
	return nil
}

// statusName is a status code's symbolic name without its "Status" prefix:
// Good, BadNodeIdUnknown, UncertainLastUsableValue. The low 16 bits (info
// bits) are ignored; an unknown code gives its severity and hex value.
func statusName(c ua.StatusCode) string {
	code := c & 0xFFFF0000
	if code == 0 {
		return "Good"
	}
	if d, ok := ua.StatusCodes[code]; ok && d.Name != "" {
		return strings.TrimPrefix(d.Name, "Status")
	}
	severity := "Bad"
	switch code >> 30 {
	case 0:
		severity = "Good"
	case 1:
		severity = "Uncertain"
	}
	return fmt.Sprintf("%s (0x%08X)", severity, uint32(c))
}
