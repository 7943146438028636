package pipelines

import (
	"fmt"
	"time"
)

// Health is the state /readyz and `sluice status` report.
type Health struct {
	// Ready is true when the broker is listening and every sink is writing
	// or buffering within its bounds; Problems says what is not, when not.
	Ready    bool
	Problems []string
	// Notes are what an operator should know that does not stop sluice
	// from working: damage found in a journal (the records lost are
	// skipped), whether ready or not.
	Notes     []string
	Listeners []ListenerHealth
	Pipelines []PipelineHealth
}

// ListenerHealth is one broker listener.
type ListenerHealth struct {
	Name, Address string
}

// PipelineHealth is one pipeline: its journal and its sinks.
type PipelineHealth struct {
	Name         string
	JournalBytes int64
	MaxBytes     int64
	// Full is true when the journal is at its bound: publishers wait
	// (overflow block) or old records go (drop_oldest).
	Full bool
	// WriteError is why the journal cannot write, while it cannot (a full
	// disk): publishes are refused until a write succeeds again.
	WriteError string
	// Damaged is how many records the journal lost to damage on disk since
	// start (skipped; see Health.Notes).
	Damaged uint64
	Sinks   []SinkHealth
	// Cluster is this node's part of the pipeline, in a cluster.
	Cluster *ClusterHealth
}

// SinkHealth is one sink as one pipeline feeds it.
type SinkHealth struct {
	Name  string
	Ready bool
	// FailingFor is how long every write has failed (0 while they succeed);
	// LastError is the latest failure.
	FailingFor   time.Duration
	LastError    string
	Backlog      uint64 // journal records not yet written
	BacklogBytes int64
	BacklogAge   time.Duration // age of the oldest of them
}

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
