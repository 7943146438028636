package opcua

import (
	"math"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"
)

func TestEncode(t *testing.T) {
	ts := time.Date(2026, 11, 25, 12, 0, 1, 500e6, time.UTC)
	for _, tc := range []struct {
		name string
		dv   *ua.DataValue
		want string
	}{
		{"double", &ua.DataValue{Value: ua.MustVariant(71.25), SourceTimestamp: ts, ServerTimestamp: ts},
			`{"value":71.25,"node":"ns=2;s=T","status":"Good","source_time":"2026-11-25T12:00:01.5Z","server_time":"2026-11-25T12:00:01.5Z"}`},
		{"int32", &ua.DataValue{Value: ua.MustVariant(int32(-7))}, `{"value":-7,"node":"ns=2;s=T","status":"Good"}`},
		{"bool", &ua.DataValue{Value: ua.MustVariant(true)}, `{"value":true,"node":"ns=2;s=T","status":"Good"}`},
		{"string", &ua.DataValue{Value: ua.MustVariant("run")}, `{"value":"run","node":"ns=2;s=T","status":"Good"}`},
		{"NaN", &ua.DataValue{Value: ua.MustVariant(math.NaN())}, `{"value":null,"node":"ns=2;s=T","status":"Good"}`},
		{"array", &ua.DataValue{Value: ua.MustVariant([]float32{1.5, 2})}, `{"value":[1.5,2],"node":"ns=2;s=T","status":"Good"}`},
		{"date", &ua.DataValue{Value: ua.MustVariant(ts)}, `{"value":"2026-11-25T12:00:01.5Z","node":"ns=2;s=T","status":"Good"}`},
		{"text", &ua.DataValue{Value: ua.MustVariant(ua.NewLocalizedText("open"))}, `{"value":"open","node":"ns=2;s=T","status":"Good"}`},
		{"bad", &ua.DataValue{Status: ua.StatusBadSensorFailure}, `{"value":null,"node":"ns=2;s=T","status":"BadSensorFailure"}`},
		{"uncertain", &ua.DataValue{Value: ua.MustVariant(1.0), Status: ua.StatusUncertainLastUsableValue | 0x0400},
			`{"value":1,"node":"ns=2;s=T","status":"UncertainLastUsableValue"}`},
		{"unknown code", &ua.DataValue{Status: ua.StatusCode(0x80FF0000)}, `{"value":null,"node":"ns=2;s=T","status":"Bad (0x80FF0000)"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(encode("ns=2;s=T", tc.dv)); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{cfg: Backoff{Initial: time.Second, Max: 8 * time.Second}}
	for i, step := range []time.Duration{1, 2, 4, 8, 8} {
		step *= time.Second
		if d := b.next(); d < step/2 || d > step {
			t.Fatalf("wait %d: %v, want within [%v, %v]", i, d, step/2, step)
		}
	}
	b.reset()
	if d := b.next(); d > time.Second {
		t.Fatalf("after reset: %v", d)
	}
}
