// Package metrics defines every Prometheus metric sluice exports, in one
// place, on a registry the caller owns (no global registry). Labels are of
// bounded cardinality: listener, pipeline, rule, sink, severity, class — never
// a device, client or topic.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds sluice's collectors.
type Metrics struct {
	Registry *prometheus.Registry

	// ingest
	MessagesIn     *prometheus.CounterVec // listener, qos
	BytesIn        *prometheus.CounterVec // listener
	Rejected       *prometheus.CounterVec // reason: publishes not accepted (shutting_down, journal_full, journal_write_error)
	Connections    *prometheus.GaugeVec   // listener: open connections
	Accepted       *prometheus.CounterVec // listener: connections accepted (CONNACK success)
	Refused        *prometheus.CounterVec // listener, reason: connections refused
	Denied         *prometheus.CounterVec // action (publish, subscribe), reason: acl, quota, rate
	NotRetained    *prometheus.CounterVec // reason (size, count): retained messages not kept
	SubDropped     *prometheus.CounterVec // listener: messages dropped for a subscriber that does not keep up
	AuthDelayed    *prometheus.CounterVec // listener: failed logins whose refusal waited (failure backoff)
	AuthWaiting    prometheus.Gauge       // failed logins whose refusal is waiting now
	ProtocolErrors *prometheus.CounterVec // listener, reason: connections closed for a protocol error
	CertExpiry     *prometheus.GaugeVec   // listener: when the served certificate expires

	// cluster (docs/scaling.md)
	ClusterPartitions   *prometheus.GaugeVec     // pipeline: partitions this node evaluates
	ClusterUnforwarded  *prometheus.GaugeVec     // pipeline: journal records not yet in Kafka
	ClusterTransactions *prometheus.CounterVec   // pipeline, result (committed, aborted)
	ClusterRestore      *prometheus.HistogramVec // pipeline: time to restore taken-over partitions' state
	ClusterSinkLag      *prometheus.GaugeVec     // pipeline: events in Kafka this node's sinks have not read

	// pipelines
	Routed         *prometheus.CounterVec   // pipeline
	Unrouted       prometheus.Counter       // messages no pipeline subscribed to
	Dropped        *prometheus.CounterVec   // pipeline, reason: unmatched, filtered
	Decoded        *prometheus.CounterVec   // pipeline: messages some rule decoded
	DeadLetters    *prometheus.CounterVec   // pipeline, stage
	Records        *prometheus.CounterVec   // pipeline, rule
	Alerts         *prometheus.CounterVec   // rule, severity, status
	RuleErrors     *prometheus.CounterVec   // rule
	RuleEvals      *prometheus.CounterVec   // rule: readings evaluated
	RulePassed     *prometheus.CounterVec   // rule: readings that passed the where
	RuleSeconds    *prometheus.HistogramVec // rule: one message's evaluation, sampled
	AlertsFiring   *prometheus.GaugeVec     // rule, severity: series firing now
	JournalBytes   *prometheus.GaugeVec     // pipeline
	JournalDropped *prometheus.CounterVec   // pipeline: records
	// JournalDroppedMessages counts the messages among JournalDropped's records.
	JournalDroppedMessages *prometheus.CounterVec // pipeline
	JournalCorrupt         *prometheus.CounterVec // pipeline: records lost to damage
	Expired                *prometheus.CounterVec // pipeline, reader: messages past their expiry, not delivered
	Backlog                *prometheus.GaugeVec   // pipeline, reader
	BacklogBytes           *prometheus.GaugeVec   // pipeline, reader
	BacklogAge             *prometheus.GaugeVec   // pipeline, reader
	RuleReloads            *prometheus.CounterVec // result
	RuleSeries             *prometheus.GaugeVec   // rule: series with state
	RuleEvicted            *prometheus.CounterVec // rule: series evicted after their TTL
	AckLatency             prometheus.Histogram   // receipt to the last sink acknowledgement
	TailDropped            prometheus.Counter     // messages the live tail dropped for slow watchers

	// sinks
	SinkWritten  *prometheus.CounterVec   // sink
	SinkBatches  *prometheus.CounterVec   // sink
	SinkFailures *prometheus.CounterVec   // sink, class: retryable, permanent
	SinkRetries  *prometheus.CounterVec   // sink
	SinkLatency  *prometheus.HistogramVec // sink: one batch write
	SinkReady    *prometheus.GaugeVec     // sink: 1 ready, 0 down past its bound

	// the alertmanager sink
	AlertmanagerAlerts    *prometheus.GaugeVec   // sink, state (firing, resolved): alerts it keeps re-sending
	AlertmanagerRequests  *prometheus.CounterVec // sink, target, result (ok, error): requests to each Alertmanager
	AlertmanagerUntracked *prometheus.CounterVec // sink: firing alerts sent but not kept for re-sending (max_alerts)

	BuildInfo *prometheus.GaugeVec // version, goversion: always 1
}

// New creates the collectors and registers them, with the Go runtime and
// process collectors, on a new registry.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &Metrics{Registry: reg}

	m.MessagesIn = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_messages_received_total", Help: "PUBLISH packets received from clients, by listener and QoS.",
	}, []string{"listener", "qos"})
	m.BytesIn = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_received_bytes_total", Help: "Payload bytes received from clients, by listener.",
	}, []string{"listener"})
	m.Rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_messages_rejected_total", Help: "Publishes not acknowledged (the client keeps and resends them), by reason.",
	}, []string{"reason"})

	m.Connections = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_broker_connections", Help: "Open client connections, by listener.",
	}, []string{"listener"})
	m.Accepted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_broker_connections_total", Help: "Client connections accepted (authenticated, CONNACK sent), by listener.",
	}, []string{"listener"})
	m.Refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_broker_connections_refused_total", Help: "Connections refused, by listener and reason (limit, tls, protocol, timeout, auth, acl, session, keep_alive, shutting_down).",
	}, []string{"listener", "reason"})
	m.Denied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_broker_denied_total", Help: "Publishes and subscriptions refused, by action and reason (acl, max_subscriptions, rate).",
	}, []string{"action", "reason"})
	m.NotRetained = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_broker_not_retained_total", Help: "Retained messages delivered but not kept, by reason (size, count).",
	}, []string{"reason"})
	m.SubDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_broker_subscriber_dropped_total",
		Help: "Messages not delivered to a subscriber that does not keep up (max_queued QoS 1/2 messages unacknowledged, or its write queue full), by the subscriber's listener.",
	}, []string{"listener"})
	m.AuthDelayed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_broker_auth_delayed_total",
		Help: "Failed password logins whose refusal waited, after repeated failures from their address or for their user name, by listener.",
	}, []string{"listener"})
	m.AuthWaiting = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_broker_auth_delaying", Help: "Failed password logins whose refusal is waiting now.",
	})
	m.ProtocolErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_broker_protocol_errors_total",
		Help: "Connections closed because the client broke the MQTT protocol, by listener and reason (malformed_packet, protocol_error, receive_maximum_exceeded, ...).",
	}, []string{"listener", "reason"})
	m.CertExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_tls_certificate_expiry_timestamp_seconds", Help: "When the certificate a TLS listener serves expires (Unix time).",
	}, []string{"listener"})

	m.Routed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_pipeline_messages_total", Help: "Messages routed to a pipeline.",
	}, []string{"pipeline"})
	m.Unrouted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sluice_unrouted_messages_total", Help: "Messages that matched no pipeline's topics.",
	})
	m.Dropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_pipeline_dropped_total", Help: "Messages a pipeline produced nothing for, by reason (unmatched: no rule matched the topic; filtered: every matching rule's where was false).",
	}, []string{"pipeline", "reason"})
	m.Decoded = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_pipeline_decoded_total", Help: "Messages at least one matching rule decoded.",
	}, []string{"pipeline"})
	m.DeadLetters = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_dead_letters_total", Help: "Messages that could not be processed, by pipeline and stage (decode, rule, sink).",
	}, []string{"pipeline", "stage"})
	m.Records = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_records_total", Help: "Records produced by rules.",
	}, []string{"pipeline", "rule"})
	m.Alerts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_alert_transitions_total", Help: "Alert transitions (firing, resolved), by rule and severity.",
	}, []string{"rule", "severity", "status"})
	m.RuleErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_rule_errors_total", Help: "Rule evaluations that failed (decode or expression error).",
	}, []string{"rule"})
	m.RuleEvals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_rule_evaluations_total", Help: "Readings a rule evaluated (its topic filter matched).",
	}, []string{"rule"})
	m.RulePassed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_rule_matches_total", Help: "Readings that passed a rule's where.",
	}, []string{"rule"})
	m.RuleSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sluice_rule_evaluation_seconds",
		Help:    "Time a rule took to evaluate one message (decoding shared with other rules excluded), sampled one message in 16.",
		Buckets: prometheus.ExponentialBuckets(250e-9, 4, 10),
	}, []string{"rule"})
	m.AlertsFiring = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_alerts_firing", Help: "Series whose alert is firing now, by rule and severity.",
	}, []string{"rule", "severity"})
	m.RuleReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_rule_reloads_total", Help: "Rule reloads, by result (success, failure: the running rules stayed).",
	}, []string{"result"})
	m.RuleSeries = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_rule_active_series", Help: "Series a rule keeps state for (windows, alert episodes).",
	}, []string{"rule"})
	m.RuleEvicted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_rule_series_evicted_total", Help: "Series whose state was evicted after the rule's TTL without data.",
	}, []string{"rule"})
	m.ClusterPartitions = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_cluster_partitions", Help: "Partitions of a pipeline's ingest topic this node evaluates (a cluster node with the rules role).",
	}, []string{"pipeline"})
	m.ClusterUnforwarded = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_cluster_unforwarded_records", Help: "Journal records of a pipeline not yet in Kafka (a cluster node with the ingest role).",
	}, []string{"pipeline"})
	m.ClusterTransactions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_cluster_transactions_total", Help: "Rule transactions (outputs, state and input offsets committed together), by result: committed, aborted (the partitions restart from their last commit).",
	}, []string{"pipeline", "result"})
	m.ClusterRestore = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sluice_cluster_restore_seconds",
		Help:    "Time to read the state of partitions this node took over, from the state topic.",
		Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"pipeline"})
	m.ClusterSinkLag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_cluster_sink_lag_records", Help: "Events in a pipeline's events topic this node's sinks have not read yet.",
	}, []string{"pipeline"})
	m.JournalBytes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_journal_bytes", Help: "Bytes a pipeline's journal holds.",
	}, []string{"pipeline"})
	m.JournalDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_journal_dropped_total", Help: "Journal records drop_oldest deleted before every reader had them: messages and what the rules derived from them (a message is one record, and one more once the rules made something of it).",
	}, []string{"pipeline"})
	m.JournalDroppedMessages = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_journal_dropped_messages_total", Help: "Messages drop_oldest deleted from the journal before every reader had them (of the records sluice_journal_dropped_total counts).",
	}, []string{"pipeline"})
	m.JournalCorrupt = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_journal_corrupt_records_total", Help: "Journal records lost to damage on disk (a checksum that fails, a segment missing or empty), found at start or while reading: skipped.",
	}, []string{"pipeline"})
	m.Expired = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_messages_expired_total", Help: "Messages whose MQTT 5 expiry passed while they waited in the journal: not evaluated (reader rules) or not written (reader sink:<name>).",
	}, []string{"pipeline", "reader"})
	m.Backlog = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_backlog_records", Help: "Journal records a reader (the rules, or sink:<name>) has not finished.",
	}, []string{"pipeline", "reader"})
	m.BacklogBytes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_backlog_bytes", Help: "Bytes of journal records a reader has not finished.",
	}, []string{"pipeline", "reader"})
	m.BacklogAge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_backlog_age_seconds", Help: "Age of the oldest journal record a reader has not finished.",
	}, []string{"pipeline", "reader"})
	m.AckLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "sluice_ack_latency_seconds",
		Help:    "Time from receipt of a message to the acknowledgement of its last sink write.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	})
	m.TailDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sluice_tail_dropped_total", Help: "Messages the live tail (sluice tail, the console) did not show a watcher that read too slowly: dropped rather than slow down ingest.",
	})

	m.SinkWritten = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_sink_events_written_total", Help: "Events a sink wrote successfully.",
	}, []string{"sink"})
	m.SinkBatches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_sink_batches_total", Help: "Batches a sink wrote successfully.",
	}, []string{"sink"})
	m.SinkFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_sink_failures_total", Help: "Failed sink writes, by class (retryable, permanent).",
	}, []string{"sink", "class"})
	m.SinkRetries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_sink_retries_total", Help: "Batch writes retried after a retryable failure.",
	}, []string{"sink"})
	m.SinkLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sluice_sink_write_seconds",
		Help:    "Time one batch write took.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 12),
	}, []string{"sink"})

	m.SinkReady = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_sink_ready", Help: "1 when a sink is writing or within its bounds, 0 when it has been failing for longer than admin.sink_down_after or its journal is nearly full.",
	}, []string{"sink"})
	m.AlertmanagerAlerts = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_alertmanager_alerts", Help: "Alerts an alertmanager sink keeps re-sending: firing, and resolved (re-sent for four resend intervals).",
	}, []string{"sink", "state"})
	m.AlertmanagerRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_alertmanager_requests_total", Help: "Requests an alertmanager sink made to each Alertmanager (target), by result (ok, error).",
	}, []string{"sink", "target", "result"})
	m.AlertmanagerUntracked = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_alertmanager_untracked_total", Help: "Firing alerts an alertmanager sink sent once but could not keep for re-sending: max_alerts was reached.",
	}, []string{"sink"})
	m.BuildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_build_info", Help: "Always 1; the labels say which sluice is running.",
	}, []string{"version", "goversion"})

	// Series of fixed label values start at 0, so dashboards and alerts see
	// a 0 rather than no data until the first event.
	for _, reason := range []string{"journal_full", "journal_write_error", "shutting_down"} {
		m.Rejected.WithLabelValues(reason)
	}

	for _, c := range []prometheus.Collector{
		m.MessagesIn, m.BytesIn, m.Rejected, m.Connections, m.Accepted, m.Refused, m.Denied, m.NotRetained, m.SubDropped, m.AuthDelayed, m.AuthWaiting, m.ProtocolErrors, m.CertExpiry,
		m.ClusterPartitions, m.ClusterUnforwarded, m.ClusterTransactions, m.ClusterRestore, m.ClusterSinkLag,
		m.Routed, m.Unrouted, m.Dropped, m.Decoded, m.DeadLetters, m.Records, m.Alerts, m.RuleErrors,
		m.RuleEvals, m.RulePassed, m.RuleSeconds, m.AlertsFiring, m.RuleReloads, m.RuleSeries, m.RuleEvicted, m.AckLatency, m.TailDropped,
		m.JournalBytes, m.JournalDropped, m.JournalDroppedMessages, m.JournalCorrupt, m.Expired, m.Backlog, m.BacklogBytes, m.BacklogAge,
		m.SinkWritten, m.SinkBatches, m.SinkFailures, m.SinkRetries, m.SinkLatency, m.SinkReady, m.BuildInfo,
		m.AlertmanagerAlerts, m.AlertmanagerRequests, m.AlertmanagerUntracked,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		f(c)
	}
	return m
}

// InitPipeline starts a pipeline's series at 0.
func (m *Metrics) InitPipeline(pipeline string) {
	m.Routed.WithLabelValues(pipeline)
	m.Decoded.WithLabelValues(pipeline)
	for _, reason := range []string{"unmatched", "filtered"} {
		m.Dropped.WithLabelValues(pipeline, reason)
	}
	for _, stage := range []string{"decode", "rule", "sink"} {
		m.DeadLetters.WithLabelValues(pipeline, stage)
	}
	m.JournalDropped.WithLabelValues(pipeline)
	m.JournalDroppedMessages.WithLabelValues(pipeline)
	m.JournalCorrupt.WithLabelValues(pipeline)
	m.Expired.WithLabelValues(pipeline, "rules")
}

// InitSink starts a sink's series at 0.
func (m *Metrics) InitSink(sink string) {
	m.SinkWritten.WithLabelValues(sink)
	m.SinkBatches.WithLabelValues(sink)
	m.SinkRetries.WithLabelValues(sink)
	for _, class := range []string{"retryable", "permanent"} {
		m.SinkFailures.WithLabelValues(sink, class)
	}
}

// InitRule starts a rule's series at 0.
func (m *Metrics) InitRule(rule string) {
	m.RuleEvals.WithLabelValues(rule)
	m.RulePassed.WithLabelValues(rule)
	m.RuleErrors.WithLabelValues(rule)
	m.RuleSeries.WithLabelValues(rule)
	m.RuleEvicted.WithLabelValues(rule)
}
