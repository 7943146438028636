package admin

import (
	"cmp"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Status is what /api/v1/status returns and `sluice status` shows. Counters
// are totals since start; a reader takes two and divides by the time
// between them for a rate.
type Status struct {
	Version     string      `json:"version"`
	Uptime      float64     `json:"uptime_seconds"`
	Ready       bool        `json:"ready"`
	Problems    []string    `json:"problems,omitempty"`
	Notes       []string    `json:"notes,omitempty"`
	Connections float64     `json:"connections"`
	Received    float64     `json:"messages_received_total"`
	Rejected    float64     `json:"messages_rejected_total"`
	Listeners   []Listener  `json:"listeners"`
	Pipelines   []Pipeline  `json:"pipelines"`
	Firing      []AlertRule `json:"alerts_firing"`
}

// Listener is one broker listener.
type Listener struct {
	Name        string  `json:"name"`
	Address     string  `json:"address"`
	Connections float64 `json:"connections"`
}

// Pipeline is one pipeline and its sinks.
type Pipeline struct {
	Name         string  `json:"name"`
	Messages     float64 `json:"messages_total"`
	DeadLetters  float64 `json:"dead_letters_total"`
	JournalBytes int64   `json:"journal_bytes"`
	MaxBytes     int64   `json:"journal_max_bytes"`
	Full         bool    `json:"journal_full"`
	Sinks        []Sink  `json:"sinks"`
	// Cluster is this node's part of the pipeline, in a cluster.
	Cluster *ClusterHealth `json:"cluster,omitempty"`
}

// Sink is one sink of a pipeline.
type Sink struct {
	Name         string  `json:"name"`
	Ready        bool    `json:"ready"`
	Written      float64 `json:"written_total"`
	Failures     float64 `json:"failures_total"`
	Backlog      uint64  `json:"backlog_records"`
	BacklogBytes int64   `json:"backlog_bytes"`
	BacklogAge   float64 `json:"backlog_age_seconds"`
	FailingFor   float64 `json:"failing_for_seconds,omitempty"`
	LastError    string  `json:"last_error,omitempty"`
}

// AlertRule is a rule with series firing now.
type AlertRule struct {
	Rule     string  `json:"rule"`
	Severity string  `json:"severity"`
	Firing   float64 `json:"firing"`
}

// BuildStatus reads the service's health and metrics at now.
func BuildStatus(o Options, started, now time.Time) (*Status, error) {
	families, err := o.Gatherer.Gather()
	if err != nil {
		return nil, err
	}
	m := metricIndex{}
	for _, f := range families {
		m[f.GetName()] = f.GetMetric()
	}
	h := o.Health(now)
	st := &Status{
		Version: o.Version, Uptime: now.Sub(started).Seconds(), Ready: h.Ready, Problems: h.Problems, Notes: h.Notes,
		Connections: m.sum("sluice_broker_connections", nil),
		Received:    m.sum("sluice_messages_received_total", nil),
		Rejected:    m.sum("sluice_messages_rejected_total", nil),
		Listeners:   []Listener{},
		Pipelines:   []Pipeline{},
		Firing:      []AlertRule{},
	}
	for _, l := range h.Listeners {
		st.Listeners = append(st.Listeners, Listener{Name: l.Name, Address: l.Address,
			Connections: m.sum("sluice_broker_connections", map[string]string{"listener": l.Name})})
	}
	for _, p := range h.Pipelines {
		by := map[string]string{"pipeline": p.Name}
		sp := Pipeline{Name: p.Name, JournalBytes: p.JournalBytes, MaxBytes: p.MaxBytes, Full: p.Full, Cluster: p.Cluster,
			Messages:    m.sum("sluice_pipeline_messages_total", by),
			DeadLetters: m.sum("sluice_dead_letters_total", by),
		}
		for _, s := range p.Sinks {
			by := map[string]string{"sink": s.Name}
			sp.Sinks = append(sp.Sinks, Sink{Name: s.Name, Ready: s.Ready,
				Written:  m.sum("sluice_sink_events_written_total", by),
				Failures: m.sum("sluice_sink_failures_total", by),
				Backlog:  s.Backlog, BacklogBytes: s.BacklogBytes, BacklogAge: s.BacklogAge.Seconds(),
				FailingFor: s.FailingFor.Seconds(), LastError: s.LastError,
			})
		}
		st.Pipelines = append(st.Pipelines, sp)
	}
	for _, mm := range m["sluice_alerts_firing"] {
		if v := mm.GetGauge().GetValue(); v > 0 {
			st.Firing = append(st.Firing, AlertRule{Rule: label(mm, "rule"), Severity: label(mm, "severity"), Firing: v})
		}
	}
	slices.SortFunc(st.Firing, func(a, b AlertRule) int {
		return cmp.Or(cmp.Compare(b.Firing, a.Firing), cmp.Compare(a.Rule, b.Rule))
	})
	return st, nil
}

// metricIndex holds gathered metrics by family name.
type metricIndex map[string][]*dto.Metric

// sum adds up the values of a family's series whose labels include match.
func (m metricIndex) sum(name string, match map[string]string) float64 {
	var total float64
next:
	for _, mm := range m[name] {
		for k, v := range match {
			if label(mm, k) != v {
				continue next
			}
		}
		switch {
		case mm.Counter != nil:
			total += mm.Counter.GetValue()
		case mm.Gauge != nil:
			total += mm.Gauge.GetValue()
		}
	}
	return total
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
