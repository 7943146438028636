package sluice_test

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice"
)

// TestAlertLookup: every alert attribute a sink template can name (a
// webhook body "{message}", an Alertmanager annotation "{value}"), and a tag.
func TestAlertLookup(t *testing.T) {
	at := time.Date(2026, 11, 25, 13, 0, 1, 500e6, time.FixedZone("CET", 3600))
	a := &sluice.Alert{Rule: "boiler", Severity: "critical", Status: sluice.AlertFiring, Series: "b7", Device: "boiler-7",
		Value: 95.5, Message: "boiler-7 at 95.5 °C", Time: at, Since: at.Add(-time.Minute), Notification: 2,
		Tags: []sluice.Tag{{Key: "site", Value: "north"}}}
	for name, want := range map[string]string{
		"rule": "boiler", "severity": "critical", "status": "firing", "series": "b7", "device": "boiler-7",
		"message": "boiler-7 at 95.5 °C", "value": "95.5", "time": "2026-11-25T12:00:01.5Z",
		"since": "2026-11-25T11:59:01.5Z", "notification": "2", "site": "north",
	} {
		if got, ok := a.Lookup(name); !ok || got != want {
			t.Errorf("{%s} = %q, %v; want %q", name, got, ok, want)
		}
	}
	if got, ok := a.Lookup("line"); ok {
		t.Errorf("{line} = %q: the alert has no such tag", got)
	}
	if got, _ := (&sluice.Alert{}).Lookup("value"); got != "" {
		t.Errorf("{value} of an alert without one = %q, want empty", got)
	}
}
