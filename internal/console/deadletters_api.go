package console

import (
	"context"
	"fmt"
	"net/http"

	"github.com/sluicehq/sluice"
)

// DeadLettersView is what GET /api/v1/deadletters answers: the dead
// letters held, newest first, and how many there were since start.
type DeadLettersView struct {
	DeadLetters []DeadLetterView `json:"dead_letters"`
	Total       uint64           `json:"total"`
	Held        int              `json:"held"`
}

func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request) {
	list := s.o.Hub.DeadLetters.List()
	v := DeadLettersView{DeadLetters: make([]DeadLetterView, 0, len(list)), Total: s.o.Hub.DeadLetters.Total(), Held: len(list)}
	for i := len(list) - 1; i >= 0; i-- {
		v.DeadLetters = append(v.DeadLetters, viewDeadLetter(&list[i]))
	}
	writeJSON(w, http.StatusOK, v)
}

// ReplayRequest asks to replay dead letters: those listed, or all held that
// were not sent yet. Again replays ones already sent (their records are
// written again).
type ReplayRequest struct {
	IDs   []uint64 `json:"ids,omitempty"`
	All   bool     `json:"all,omitempty"`
	Again bool     `json:"again,omitempty"`
}

// ReplayResult is what replaying one dead letter did.
type ReplayResult struct {
	ID       uint64 `json:"id"`
	Pipeline string `json:"pipeline"`
	Rule     string `json:"rule,omitempty"`
	Stage    string `json:"stage"`
	ReplayOutcome
}

// replayDeadLetters sends dead letters through the current rules after a
// fix: each through the rule that failed on it, alone (the message's other
// rules did their part the first time: evaluating them again would write
// their records twice), with no state (windows and alert episodes belong
// to the running evaluators). The rule's records go to the pipeline's
// sinks; its alerts are counted, not sent. A dead letter is replayed once:
// its records are not written twice unless asked again.
func (s *Server) replayDeadLetters(w http.ResponseWriter, r *http.Request) {
	var req ReplayRequest
	if !decodeBody(w, r, &req) {
		return
	}
	ids := req.IDs
	if req.All {
		for _, d := range s.o.Hub.DeadLetters.List() {
			if d.Replay == nil || !d.Replay.Sent || req.Again {
				ids = append(ids, d.ID)
			}
		}
	}
	results := []ReplayResult{}
	done := map[uint64]bool{}
	for _, id := range ids {
		if done[id] {
			continue
		}
		group, err := s.o.Hub.DeadLetters.take(id, req.Again)
		if err != nil {
			results = append(results, ReplayResult{ID: id, ReplayOutcome: ReplayOutcome{Error: err.Error()}})
			continue
		}
		o := s.replay(r.Context(), group)
		var gids []uint64
		for _, d := range group {
			gids = append(gids, d.ID)
			done[d.ID] = true
		}
		s.o.Hub.DeadLetters.replayed(gids, o)
		for _, d := range group { // the message's other readings that failed in the rule go with it
			results = append(results, ReplayResult{ID: d.ID, Pipeline: d.Pipeline, Rule: d.Rule, Stage: d.Stage, ReplayOutcome: o})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": results})
}

// replay replays the dead letters of one message and one rule.
func (s *Server) replay(ctx context.Context, group []DeadLetter) ReplayOutcome {
	d := group[0]
	no := func(format string, args ...any) ReplayOutcome {
		return ReplayOutcome{Error: fmt.Sprintf(format, args...)}
	}
	switch {
	case d.Stage == "sink":
		return no("sink %q refused what the rules made of it: the rules did their part; fix the sink or the data and publish the message again", d.Sink)
	case d.Truncated:
		return no("its payload is larger than the store keeps whole (%d bytes): publish it again", maxKeptPayload)
	}
	set := s.o.Backend.Rules(d.Pipeline)
	if set == nil {
		return no("pipeline %q is gone", d.Pipeline)
	}
	only := set.Only(d.Rule)
	if only == nil {
		return no("pipeline %q has no rule %q now", d.Pipeline, d.Rule)
	}
	limits := s.o.Backend.DecodeLimits()
	if d.Stage == "rule" {
		if _, readings, err := only.Decode(d.Message, limits); err == nil && len(readings) > len(group) {
			return no("only %d of the message's %d readings failed in rule %q: the others' records were written the first time, and a replay would write them twice",
				len(group), len(readings), d.Rule)
		}
	}
	out, _ := only.NewEvaluator(nil, limits).Eval(d.Message, nil)
	var records []sluice.Event
	o := ReplayOutcome{}
	for _, e := range out {
		switch {
		case e.Record != nil:
			records = append(records, e)
		case e.Alert != nil:
			o.Alerts++
		case e.DeadLetter != nil && o.Error == "":
			o.Error = "fails again: " + e.DeadLetter.Reason
		}
	}
	if o.Error != "" {
		return o
	}
	if err := s.o.Backend.Resend(ctx, d.Pipeline, d.Message, records); err != nil {
		return no("%v", err)
	}
	o.Sent, o.Records = true, len(records)
	return o
}
