package sluice_test

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
)

func TestRecordJSON(t *testing.T) {
	r := &sluice.Record{
		Rule: "boiler", Topic: "plant/n\"orth/b7",
		Time: time.Date(2026, 11, 25, 12, 0, 1, 500000000, time.FixedZone("x", 3600)),
		Tags: []sluice.Tag{{Key: "device", Value: "b7"}, {Key: "site", Value: "n\"orth"}},
		Fields: []sluice.Field{{Name: "t", Value: 91.5}, {Name: "n", Value: int64(3)}, {Name: "ok", Value: true},
			{Name: "s", Value: "a\nb\x01\xff"}, {Name: "big", Value: 1e21}, {Name: "tiny", Value: 1e-7}, {Name: "nan", Value: math.NaN()}},
	}
	got := r.AppendJSON(nil)
	var back map[string]any
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, got)
	}
	want := `{"rule":"boiler","topic":"plant/n\"orth/b7","time":"2026-11-25T11:00:01.5Z","tags":{"device":"b7","site":"n\"orth"},` +
		`"fields":{"t":91.5,"n":3,"ok":true,"s":"a\nb\u0001\ufffd","big":1e+21,"tiny":1e-7,"nan":null}}`
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestJSONFloatsMatchEncodingJSON(t *testing.T) {
	floats := []float64{0, math.Copysign(0, -1), 1, -1, 0.1, 91.5, 1e20, 1e21, 1e-6, 1e-7, 123456789.125, -3.5e-9,
		1e15 - 1, 1e15, 1e15 + 1, -(1e15 - 1), 1 << 53, 1795694401123456}
	r := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		f := math.Float64frombits(r.Uint64())
		if math.IsNaN(f) || math.IsInf(f, 0) {
			continue
		}
		floats = append(floats, f, math.Trunc(r.NormFloat64()*1e9), float64(r.Int64N(1<<52)-1<<51))
	}
	for _, f := range floats {
		want, _ := json.Marshal(f)
		got := sluice.AppendJSONValue(nil, f)
		if string(got) != string(want) {
			t.Errorf("%v: got %s, want %s", f, got, want)
		}
	}
}

func TestAlertJSON(t *testing.T) {
	a := &sluice.Alert{Rule: "r", Severity: "critical", Status: sluice.AlertFiring, Device: "d", Series: "d", Value: 95.0,
		Message: "m", Time: time.Unix(0, 0), Since: time.Unix(0, 0), Topic: "t", Tags: []sluice.Tag{{Key: "site", Value: "n"}}, Notification: 1}
	var back struct {
		Rule, Status, Device string
		Value                float64
		Notification         int
		Tags                 map[string]string
	}
	if err := json.Unmarshal(a.AppendJSON(nil), &back); err != nil {
		t.Fatal(err)
	}
	if back.Rule != "r" || back.Status != "firing" || back.Value != 95 || back.Tags["site"] != "n" || back.Notification != 1 {
		t.Fatalf("%+v", back)
	}
}
