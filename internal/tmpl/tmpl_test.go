package tmpl

import (
	"testing"

	"github.com/sluicehq/sluice"
)

func TestRender(t *testing.T) {
	rec := &sluice.Event{
		Stream:  sluice.StreamRecords,
		Message: &sluice.Message{Topic: "plant/north/l1/b7/telemetry", ClientID: "dev-7"},
		Record: &sluice.Record{Rule: "boiler", Tags: []sluice.Tag{{Key: "device", Value: "b7"}},
			Fields: []sluice.Field{{Name: "temperature", Value: 91.5}, {Name: "count", Value: 3.0}}},
	}
	alert := &sluice.Event{
		Stream:  sluice.StreamAlerts,
		Message: rec.Message,
		Alert:   &sluice.Alert{Rule: "overheat", Severity: "critical", Device: "b7", Tags: []sluice.Tag{{Key: "site", Value: "north"}}},
	}
	cases := []struct {
		tmpl string
		ev   *sluice.Event
		want string
	}{
		{"{device}", rec, "b7"},
		{"{1}/{3}", rec, "north/b7"},
		{"{temperature}|{count}|{rule}", rec, "91.5|3|boiler"},
		{"alerts/{site}/{device}/{rule}/{severity}", alert, "alerts/north/b7/overheat/critical"},
		{"{topic} from {client_id}", alert, "plant/north/l1/b7/telemetry from dev-7"},
		{"static", rec, "static"},
	}
	for _, tc := range cases {
		got, err := MustParse(tc.tmpl).Render(tc.ev)
		if err != nil || got != tc.want {
			t.Errorf("%q: got %q, %v; want %q", tc.tmpl, got, err, tc.want)
		}
	}
	for _, bad := range []string{"{nope}", "{9}"} {
		if _, err := MustParse(bad).Render(rec); err == nil {
			t.Errorf("%q rendered", bad)
		}
	}
	for _, bad := range []string{"{", "a{}b", "{-1}"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}
