package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/rules"
)

// RulesView is what GET /api/v1/rules answers: each pipeline, the rule
// files it runs with their content (what the playground starts from), and
// whether the playground may save them.
type RulesView struct {
	Pipelines  []PipelineRules `json:"pipelines"`
	WriteRules bool            `json:"write_rules"`
}

// PipelineRules is one pipeline's rules.
type PipelineRules struct {
	Name      string     `json:"name"`
	Topics    []string   `json:"topics"`
	Journal   string     `json:"journal,omitempty"`
	Retention string     `json:"retention,omitempty"`
	Rules     []string   `json:"rules"`
	Files     []RuleFile `json:"files"`
}

// RuleFile is a rule file and its content.
type RuleFile struct {
	Path    string `json:"path"`
	Content string `json:"content"`
	Error   string `json:"error,omitempty"`
}

func (s *Server) rules(w http.ResponseWriter, r *http.Request) {
	v := RulesView{Pipelines: []PipelineRules{}, WriteRules: s.o.WriteRules}
	for _, p := range s.o.Backend.Pipelines() {
		pr := PipelineRules{Name: p.Name, Topics: p.Topics, Journal: p.Journal, Rules: []string{}, Files: []RuleFile{}}
		if p.Retention > 0 {
			pr.Retention = p.Retention.String()
		}
		if set := s.o.Backend.Rules(p.Name); set != nil {
			pr.Rules = set.Rules()
			for _, f := range set.Files() {
				rf := RuleFile{Path: f}
				if b, err := os.ReadFile(f); err != nil {
					rf.Error = err.Error()
				} else {
					rf.Content = string(b)
				}
				pr.Files = append(pr.Files, rf)
			}
		}
		v.Pipelines = append(v.Pipelines, pr)
	}
	writeJSON(w, http.StatusOK, v)
}

// PlaygroundRequest runs rules over messages: the last Last messages of a
// pipeline's journal whose topic Topic matches, or the Payloads given.
type PlaygroundRequest struct {
	Pipeline string `json:"pipeline"`
	// File names the rules in errors (file:line:col); default
	// playground.yaml.
	File  string `json:"file,omitempty"`
	Rules string `json:"rules"`
	// Topic is an MQTT topic filter of the journal's messages (default:
	// every message); Last how many (default 50, at most 1000).
	Topic    string          `json:"topic,omitempty"`
	Last     int             `json:"last,omitempty"`
	Payloads []PastedMessage `json:"payloads,omitempty"`
}

// PastedMessage is a message given to the playground. Pasted messages are
// received a second apart, the last one now.
type PastedMessage struct {
	Topic   string `json:"topic"`
	Payload string `json:"payload"`
}

// PlaygroundResult is what the rules made of the messages, in order (an
// alert raised by time between two messages has an entry of its own), and
// the series firing at the end; or the problems in the rules.
type PlaygroundResult struct {
	Errors   []LintError       `json:"errors,omitempty"`
	Messages []MessageView     `json:"messages"`
	Firing   []json.RawMessage `json:"firing"`
	Summary  struct {
		Messages    int `json:"messages"`
		Records     int `json:"records"`
		Alerts      int `json:"alerts"`
		DeadLetters int `json:"dead_letters"`
	} `json:"summary"`
}

const (
	defaultPlaygroundLast = 50
	maxPlaygroundLast     = 1000
)

// playground compiles the rules given and runs them over the messages on a
// simulated clock, as a worker would have: nothing is written, no rule file
// is touched, the running rules go on.
func (s *Server) playground(w http.ResponseWriter, r *http.Request) {
	var req PlaygroundRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if s.o.Backend.Rules(req.Pipeline) == nil {
		apiError(w, http.StatusNotFound, "no pipeline %q", req.Pipeline)
		return
	}
	if req.File == "" {
		req.File = "playground.yaml"
	}
	res := PlaygroundResult{Messages: []MessageView{}, Firing: []json.RawMessage{}}
	set, err := rules.Parse(req.File, []byte(req.Rules))
	if err != nil {
		res.Errors = lintErrors(req.File, err)
		writeJSON(w, http.StatusOK, res)
		return
	}
	msgs, err := s.playgroundMessages(r, &req)
	if err != nil {
		apiError(w, http.StatusBadRequest, "%v", err)
		return
	}
	limits := s.o.Backend.DecodeLimits()
	sim := set.Simulate(limits)
	add := func(msg *sluice.Message, events []sluice.Event, set *rules.Set) {
		v := viewMessage("", msg, events, set, limits)
		res.Summary.Records += len(v.Records)
		res.Summary.Alerts += len(v.Alerts)
		res.Summary.DeadLetters += len(v.DeadLetters)
		res.Messages = append(res.Messages, v)
	}
	for _, m := range msgs {
		ticks, out, _ := sim.Eval(m)
		for i := range ticks {
			add(ticks[i].Message, ticks[i:i+1], nil)
		}
		add(m, out, set)
	}
	res.Summary.Messages = len(msgs)
	for _, a := range sim.Firing() {
		res.Firing = append(res.Firing, alertJSON(req.Pipeline, a))
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) playgroundMessages(r *http.Request, req *PlaygroundRequest) ([]*sluice.Message, error) {
	if len(req.Payloads) > 0 {
		if len(req.Payloads) > maxPlaygroundLast {
			return nil, fmt.Errorf("%d payloads: at most %d", len(req.Payloads), maxPlaygroundLast)
		}
		now := time.Now()
		msgs := make([]*sluice.Message, len(req.Payloads))
		for i, p := range req.Payloads {
			if p.Topic == "" {
				return nil, fmt.Errorf("payloads[%d]: a topic is needed", i)
			}
			msgs[i] = &sluice.Message{Topic: p.Topic, Payload: []byte(p.Payload), QoS: 1, ClientID: "playground",
				Received: now.Add(time.Duration(i-len(req.Payloads)+1) * time.Second)}
		}
		return msgs, nil
	}
	n := req.Last
	switch {
	case n == 0:
		n = defaultPlaygroundLast
	case n < 0 || n > maxPlaygroundLast:
		return nil, fmt.Errorf("last: %d, want 1 to %d", n, maxPlaygroundLast)
	}
	var filter *rules.Filter
	if req.Topic != "" {
		f, err := rules.ParseFilter(req.Topic)
		if err != nil {
			return nil, fmt.Errorf("topic: %w", err)
		}
		filter = f
	}
	return s.o.Backend.Recent(r.Context(), req.Pipeline, filter, n)
}

// SaveRuleFile asks to replace a rule file a pipeline loads.
type SaveRuleFile struct {
	Pipeline string `json:"pipeline"`
	Path     string `json:"path"`
	Content  string `json:"content"`
}

// saveRuleFile replaces one of the rule files a pipeline runs, when
// admin.write_rules allows it, and reloads the rules. Nothing is written
// unless the file compiles; if the reload refuses the rules (a name
// another file defines too, say), the file is put back as it was.
func (s *Server) saveRuleFile(w http.ResponseWriter, r *http.Request) {
	if !s.o.WriteRules {
		apiError(w, http.StatusForbidden, "the console writes no rule file: set admin.write_rules: true to let it")
		return
	}
	var req SaveRuleFile
	if !decodeBody(w, r, &req) {
		return
	}
	set := s.o.Backend.Rules(req.Pipeline)
	if set == nil {
		apiError(w, http.StatusNotFound, "no pipeline %q", req.Pipeline)
		return
	}
	if !slices.Contains(set.Files(), req.Path) {
		apiError(w, http.StatusForbidden, "%s is not a rule file of pipeline %q: the console writes only those", req.Path, req.Pipeline)
		return
	}
	if _, err := rules.Parse(req.Path, []byte(req.Content)); err != nil {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"errors": lintErrors(req.Path, err)})
		return
	}
	old, err := os.ReadFile(req.Path)
	if err != nil {
		apiError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	if err := writeFileAtomic(req.Path, []byte(req.Content)); err != nil {
		apiError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	if err := s.o.Backend.ReloadRules(); err != nil {
		if rerr := writeFileAtomic(req.Path, old); rerr != nil {
			err = errors.Join(err, fmt.Errorf("and putting %s back failed: %w", req.Path, rerr))
		}
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"errors": lintErrors(req.Path, err)})
		return
	}
	s.log.Info("console: rule file saved and rules reloaded", "file", req.Path)
	writeJSON(w, http.StatusOK, map[string]any{"saved": req.Path, "rules": s.o.Backend.Rules(req.Pipeline).Rules()})
}

// writeFileAtomic replaces path by a file with data, keeping its mode.
func writeFileAtomic(path string, data []byte) error {
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".sluice-rules-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
