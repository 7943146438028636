package console

import (
	"cmp"
	"encoding/json"
	"net/http"
	"slices"
	"sync"

	"github.com/sluicehq/sluice"
)

// Alerts knows which series are firing now and the recent alert
// transitions. The firing series come from the evaluators themselves (each
// worker reports its own into a slot, when they change), so the list is the
// rules' state, not a tally of transitions that a reload or a cluster
// hand-over could leave stale.
type Alerts struct {
	mu     sync.Mutex
	slots  map[*FiringSlot]struct{}
	recent []Transition // oldest first
	max    int
}

// Transition is an alert transition as the rules emitted it.
type Transition struct {
	Pipeline string
	Alert    *sluice.Alert
}

// Firing is a series firing now.
type Firing = Transition

// NewAlerts returns a board keeping the last n transitions (0: 200).
func NewAlerts(n int) *Alerts {
	if n <= 0 {
		n = 200
	}
	return &Alerts{slots: map[*FiringSlot]struct{}{}, max: n}
}

// FiringSlot holds the series one evaluator has firing.
type FiringSlot struct {
	a        *Alerts
	pipeline string
	firing   []*sluice.Alert
}

// Slot returns a slot for one evaluator of pipeline; Close it when the
// evaluator goes. (A nil board gives a slot that keeps nothing.)
func (a *Alerts) Slot(pipeline string) *FiringSlot {
	s := &FiringSlot{a: a, pipeline: pipeline}
	if a == nil {
		return s
	}
	a.mu.Lock()
	a.slots[s] = struct{}{}
	a.mu.Unlock()
	return s
}

// Set replaces the slot's firing series (the slice is copied; the alerts
// must not change).
func (s *FiringSlot) Set(firing []*sluice.Alert) {
	if s.a == nil {
		return
	}
	s.a.mu.Lock()
	s.firing = append(s.firing[:0], firing...)
	s.a.mu.Unlock()
}

// Close takes the slot's series off the board.
func (s *FiringSlot) Close() {
	if s.a == nil {
		return
	}
	s.a.mu.Lock()
	delete(s.a.slots, s)
	s.a.mu.Unlock()
}

// Transition notes an alert transition.
func (a *Alerts) Transition(pipeline string, al *sluice.Alert) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.recent) >= a.max {
		copy(a.recent, a.recent[1:])
		a.recent = a.recent[:len(a.recent)-1]
	}
	a.recent = append(a.recent, Transition{Pipeline: pipeline, Alert: al})
}

// Firing returns the series firing now, the longest firing first.
func (a *Alerts) Firing() []Firing {
	a.mu.Lock()
	var out []Firing
	for s := range a.slots {
		for _, al := range s.firing {
			out = append(out, Firing{Pipeline: s.pipeline, Alert: al})
		}
	}
	a.mu.Unlock()
	slices.SortFunc(out, func(x, y Firing) int {
		return cmp.Or(x.Alert.Since.Compare(y.Alert.Since), cmp.Compare(x.Alert.Rule, y.Alert.Rule),
			cmp.Compare(x.Alert.Series, y.Alert.Series), cmp.Compare(x.Pipeline, y.Pipeline))
	})
	return out
}

// Recent returns the recent transitions, the newest first.
func (a *Alerts) Recent() []Transition {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := slices.Clone(a.recent)
	slices.Reverse(out)
	return out
}

// AlertsView is what GET /api/v1/alerts answers: the series firing now,
// the longest firing first, and the recent transitions, newest first.
type AlertsView struct {
	Firing []json.RawMessage `json:"firing"`
	Recent []json.RawMessage `json:"recent"`
}

func (s *Server) alerts(w http.ResponseWriter, r *http.Request) {
	v := AlertsView{Firing: []json.RawMessage{}, Recent: []json.RawMessage{}}
	for _, f := range s.o.Hub.Alerts.Firing() {
		v.Firing = append(v.Firing, alertJSON(f.Pipeline, f.Alert))
	}
	for _, t := range s.o.Hub.Alerts.Recent() {
		v.Recent = append(v.Recent, alertJSON(t.Pipeline, t.Alert))
	}
	writeJSON(w, http.StatusOK, v)
}
