package rules

import (
	"time"

	"github.com/sluicehq/sluice"
)

// Firing appends to out an alert for each series whose alert is firing now:
// the last notification of its episode (its value and message as they were
// then; Since is when the episode began). A series restored from a
// cluster's changelog, not notified since, has no message yet. The alerts
// are shared: they must not be modified.
func (ev *Evaluator) Firing(out []*sluice.Alert) []*sluice.Alert {
	for i, r := range ev.set.rules {
		if r.alert == nil {
			continue
		}
		for key, s := range ev.states[i].series {
			st := &s.alert
			if st.phase != firing {
				continue
			}
			a := st.last
			if a == nil {
				a = &sluice.Alert{Rule: r.name, Severity: r.alert.severity, Status: sluice.AlertFiring,
					Series: key, Device: key, Value: st.value, Time: time.Unix(0, st.notified),
					Since: time.Unix(0, st.since), Topic: s.topic, Tags: s.tags, Notification: st.count}
				if d, ok := findTag(s.tags, "device"); ok {
					a.Device = d
				}
				a.Episode = episode(r.name, key, a.Since)
				st.last = a
			}
			out = append(out, a)
		}
	}
	return out
}

// AlertGeneration changes whenever a series starts or stops firing, or is
// notified again: a caller that keeps what Firing returned calls it again
// only when the generation moved.
func (ev *Evaluator) AlertGeneration() uint64 { return ev.alertGen }
