package pipelines

import (
	"fmt"
	"time"

	"github.com/sluicehq/sluice/internal/admin"
)

// The health sluice reports is the admin listener's model (internal/admin):
// Service.Health fills it in.
type (
	Health         = admin.Health
	ListenerHealth = admin.ListenerHealth
	PipelineHealth = admin.PipelineHealth
	SinkHealth     = admin.SinkHealth
	ClusterHealth  = admin.ClusterHealth
)

// Health reports readiness at now. A sink is not ready once its writes
// have failed for admin.sink_down_after; a pipeline is not ready once its
// journal holds admin.journal_full_ratio of its max_bytes (its sinks are
// falling behind for good, and soon publishers wait or records are lost).
func (s *Service) Health(now time.Time) Health {
	h := Health{Ready: true}
	problem := func(format string, args ...any) {
		h.Ready = false
		h.Problems = append(h.Problems, fmt.Sprintf(format, args...))
	}
	if !s.serving.Load() {
		problem("broker: not accepting connections (starting or stopping)")
	}
	for _, name := range s.broker.Listeners() {
		addr := s.broker.Addr(name)
		h.Listeners = append(h.Listeners, ListenerHealth{Name: name, Address: addr})
		if addr == "" && s.serving.Load() {
			problem("listener %q: not listening", name)
		}
	}
	admin := s.cfg.Admin
	for _, p := range s.pipelines {
		st := p.journal.Stats()
		ph := PipelineHealth{Name: p.name, JournalBytes: st.Bytes, MaxBytes: p.maxBytes, Full: st.Full, WriteError: st.WriteError, Damaged: st.Damaged}
		switch {
		case st.Damaged > 0:
			h.Notes = append(h.Notes, fmt.Sprintf("pipeline %q: journal: %d damaged records skipped since start (sluice_journal_corrupt_records_total); latest: %s",
				p.name, st.Damaged, st.Damage))
		case st.Damage != "":
			h.Notes = append(h.Notes, fmt.Sprintf("pipeline %q: journal: %s", p.name, st.Damage))
		}
		switch {
		case st.WriteError != "" && !st.WriteErrorSince.IsZero():
			problem("pipeline %q: journal cannot write for %v, publishes refused until a write succeeds (tried every 200ms): %s",
				p.name, now.Sub(st.WriteErrorSince).Round(time.Second), st.WriteError)
		case st.WriteError != "":
			problem("pipeline %q: journal cannot write, publishes refused until sluice restarts: %s", p.name, st.WriteError)
		case st.Full:
			problem("pipeline %q: journal full (%d of %d bytes)", p.name, st.Bytes, p.maxBytes)
		case p.maxBytes > 0 && float64(st.Bytes-st.Retained) >= admin.JournalFullRatio*float64(p.maxBytes):
			// Messages kept for journal.retention give way when room is
			// needed: they do not fill it.
			problem("pipeline %q: journal %.0f%% full (%d of %d bytes)", p.name, 100*float64(st.Bytes-st.Retained)/float64(p.maxBytes), st.Bytes-st.Retained, p.maxBytes)
		}
		if p.cluster != nil {
			ph.Cluster = p.cluster.health()
		}
		for _, r := range p.sinks {
			sh := SinkHealth{Name: r.name, Ready: true}
			for _, rs := range st.Readers {
				if rs.Name == "sink:"+r.name {
					sh.Backlog, sh.BacklogBytes, sh.BacklogAge = rs.Lag, rs.LagBytes, rs.OldestAge
				}
			}
			if since := r.failingSince.Load(); since != 0 {
				sh.FailingFor = now.Sub(time.Unix(0, since))
				if e := r.lastErr.Load(); e != nil {
					sh.LastError = *e
				}
				if sh.FailingFor >= admin.SinkDownAfter {
					sh.Ready = false
					problem("sink %q (pipeline %q): writes failing for %v: %s", r.name, p.name, sh.FailingFor.Round(time.Second), sh.LastError)
				}
			}
			ph.Sinks = append(ph.Sinks, sh)
		}
		h.Pipelines = append(h.Pipelines, ph)
	}
	return h
}
