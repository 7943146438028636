package dashboards

import (
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

// series is one PromQL expression of a panel and how Grafana names the
// series it returns.
type series struct{ expr, legend string }

// prom returns a panel's PromQL targets.
func prom(qs ...series) targets {
	t := make(targets, len(qs))
	for i, q := range qs {
		b := prometheus.NewDataqueryBuilder().RefId(refID(i)).Expr(q.expr)
		if q.legend != "" {
			b.LegendFormat(q.legend)
		}
		t[i] = b
	}
	return t
}

// quantiles are the qs quantiles of a histogram over the last rate
// interval, one series per value of the by labels ("" for one overall).
func quantiles(histogram, by string, qs ...float64) []series {
	groups, legend := "le", ""
	if by != "" {
		groups, legend = by+", le", "{{"+by+"}} "
	}
	out := make([]series, len(qs))
	for i, q := range qs {
		out[i] = series{
			expr:   fmt.Sprintf("histogram_quantile(%g, sum by (%s) (rate(%s_bucket[$__rate_interval])))", q, groups, histogram),
			legend: fmt.Sprintf("%sp%g", legend, q*100),
		}
	}
	return out
}

// perSecond is the unit of a rate: what is counted, the legend says.
const perSecond = "suffix:/s"

// onlySluice keeps the series of a process-wide metric (process_*) that
// come from sluice: a Prometheus scrapes other programs that export them.
const onlySluice = " and on (job, instance) sluice_build_info"

// Health is the "sluice health" dashboard: is sluice keeping up, where is
// the time going, what is failing. Prometheus, from sluice's /metrics.
func Health() (dashboard.Dashboard, error) {
	b := newDashboard("sluice-health", "sluice health",
		"Is sluice keeping up (throughput, end-to-end latency, backlog), and where it is failing (dead letters, sink failures, refused clients). From sluice's /metrics.").
		WithRow(dashboard.NewRowBuilder("Overview")).
		WithPanel(statPanel("Messages in", perSecond, prom(series{"sum(rate(sluice_messages_received_total[$__rate_interval]))", ""})).
			Description("PUBLISH packets received from clients per second, all listeners.")).
		WithPanel(statPanel("Events written", perSecond, prom(series{"sum(rate(sluice_sink_events_written_total[$__rate_interval]))", ""})).
			Description("Records and alerts the sinks wrote per second, all sinks.")).
		WithPanel(statPanel("End-to-end p99", "s", prom(quantiles("sluice_ack_latency_seconds", "", 0.99)...)).
			Description("99th percentile of the time from receiving a message to the acknowledgement of its last sink write.").
			Thresholds(redFrom(1))).
		WithPanel(statPanel("Backlog", "short", prom(series{"sum(sluice_backlog_records)", ""})).
			Description("Journal records the rules or a sink have not finished, all pipelines.")).
		WithPanel(statPanel("Alerts firing", "short", prom(series{"sum(sluice_alerts_firing)", ""})).
			Description("Series whose alert is firing now, all rules.").
			Thresholds(redFrom(1))).
		WithPanel(statPanel("Sinks not ready", "short", prom(series{"sum(1 - sluice_sink_ready)", ""})).
			Description("Sinks failing for longer than their bound, or whose journal is nearly full (what /readyz reports).").
			Thresholds(redFrom(1))).
		WithRow(dashboard.NewRowBuilder("Throughput")).
		WithPanel(timeseriesPanel("Messages in", perSecond, prom(
			series{"sum by (listener, qos) (rate(sluice_messages_received_total[$__rate_interval]))", "{{listener}} QoS {{qos}}"})).
			Description("PUBLISH packets received per second, by listener and QoS.")).
		WithPanel(timeseriesPanel("Bytes in", "Bps", prom(
			series{"sum by (listener) (rate(sluice_received_bytes_total[$__rate_interval]))", "{{listener}}"})).
			Description("Payload bytes received per second, by listener.")).
		WithPanel(timeseriesPanel("Pipelines", perSecond, prom(
			series{"sum by (pipeline) (rate(sluice_pipeline_messages_total[$__rate_interval]))", "{{pipeline}} routed"},
			series{"sum by (pipeline) (rate(sluice_pipeline_decoded_total[$__rate_interval]))", "{{pipeline}} decoded"},
			series{"sum by (pipeline, reason) (rate(sluice_pipeline_dropped_total[$__rate_interval]))", "{{pipeline}} dropped: {{reason}}"},
			series{"sum(rate(sluice_unrouted_messages_total[$__rate_interval]))", "no pipeline"})).
			Description("Messages routed to each pipeline, decoded by its rules, and dropped (no rule matched the topic, or every where was false); and messages no pipeline subscribed to.")).
		WithPanel(timeseriesPanel("Records by rule", perSecond, prom(
			series{"sum by (rule) (rate(sluice_records_total[$__rate_interval]))", "{{rule}}"})).
			Description("Records the rules produced per second.")).
		WithRow(dashboard.NewRowBuilder("Latency")).
		WithPanel(timeseriesPanel("End-to-end latency", "s", prom(quantiles("sluice_ack_latency_seconds", "", 0.5, 0.95, 0.99)...)).
			Description("From receiving a message to the acknowledgement of its last sink write: what a device waits for before sluice may forget its message.")).
		WithPanel(timeseriesPanel("Rule evaluation time", "s", prom(quantiles("sluice_rule_evaluation_seconds", "rule", 0.95)...)).
			Description("95th percentile of the time one rule takes for one message, without the decoding rules share (sampled).")).
		WithRow(dashboard.NewRowBuilder("Sinks and backlog")).
		WithPanel(stateTimelinePanel("Sink ready", prom(series{"max by (sink) (sluice_sink_ready)", "{{sink}}"}),
			state{"1", "ready", "green"}, state{"0", "not ready", "red"}).
			Description("Not ready: failing for longer than its bound, or its journal nearly full.")).
		WithPanel(timeseriesPanel("Events written", perSecond, prom(
			series{"sum by (sink) (rate(sluice_sink_events_written_total[$__rate_interval]))", "{{sink}}"},
			series{"sum by (sink) (rate(sluice_sink_batches_total[$__rate_interval]))", "{{sink}} batches"})).
			Description("Events (records or alerts) and batches each sink wrote per second.")).
		WithPanel(timeseriesPanel("Sink write latency", "s", prom(quantiles("sluice_sink_write_seconds", "sink", 0.95, 0.99)...)).
			Description("Time one batch write takes, by sink.")).
		WithPanel(timeseriesPanel("Backlog age", "s", prom(
			series{"max by (pipeline, reader) (sluice_backlog_age_seconds)", "{{pipeline}} {{reader}}"})).
			Description("Age of the oldest journal record a reader (the rules, or sink:<name>) has not finished: how far behind it is.")).
		WithPanel(timeseriesPanel("Backlog records", "short", prom(
			series{"sum by (pipeline, reader) (sluice_backlog_records)", "{{pipeline}} {{reader}}"})).
			Description("Journal records a reader has not finished.")).
		WithPanel(timeseriesPanel("Backlog bytes", "bytes", prom(
			series{"sum by (pipeline, reader) (sluice_backlog_bytes)", "{{pipeline}} {{reader}}"},
			series{"sum by (pipeline) (sluice_journal_bytes)", "{{pipeline}} journal"})).
			Description("Bytes of journal records a reader has not finished, and all the journal holds.")).
		WithRow(dashboard.NewRowBuilder("Errors")).
		WithPanel(timeseriesPanel("Dead letters", perSecond, prom(
			series{"sum by (pipeline, stage) (rate(sluice_dead_letters_total[$__rate_interval]))", "{{pipeline}} {{stage}}"})).
			Description("Messages that could not be processed, by the stage that failed (decode, rule, sink).")).
		WithPanel(timeseriesPanel("Sink failures", perSecond, prom(
			series{"sum by (sink, class) (rate(sluice_sink_failures_total[$__rate_interval]))", "{{sink}} {{class}}"},
			series{"sum by (sink) (rate(sluice_sink_retries_total[$__rate_interval]))", "{{sink}} retries"})).
			Description("Failed batch writes by class (retryable: retried; permanent: dead-lettered), and retries.")).
		WithPanel(timeseriesPanel("Rule errors", perSecond, prom(
			series{"sum by (rule) (rate(sluice_rule_errors_total[$__rate_interval]))", "{{rule}}"})).
			Description("Rule evaluations that failed (a payload that does not decode, an expression error).")).
		WithPanel(timeseriesPanel("Publishes refused", perSecond, prom(
			series{"sum by (reason) (rate(sluice_messages_rejected_total[$__rate_interval]))", "not acknowledged: {{reason}}"},
			series{"sum by (action, reason) (rate(sluice_broker_denied_total[$__rate_interval]))", "denied {{action}}: {{reason}}"})).
			Description("Publishes sluice did not acknowledge (the client keeps and resends them: journal full, shutting down), and publishes and subscriptions denied (ACL, rate, subscription limit).")).
		WithRow(dashboard.NewRowBuilder("Connections")).
		WithPanel(timeseriesPanel("Open connections", "short", prom(
			series{"sum by (listener) (sluice_broker_connections)", "{{listener}}"})).
			Span(fullWidth / 3)).
		WithPanel(timeseriesPanel("Connections accepted", perSecond, prom(
			series{"sum by (listener) (rate(sluice_broker_connections_total[$__rate_interval]))", "{{listener}}"})).
			Span(fullWidth / 3).
			Description("A fleet reconnecting over and over shows here first.")).
		WithPanel(timeseriesPanel("Connections refused", perSecond, prom(
			series{"sum by (listener, reason) (rate(sluice_broker_connections_refused_total[$__rate_interval]))", "{{listener}} {{reason}}"})).
			Span(fullWidth / 3).
			Description("By reason: limit, tls, protocol, timeout, auth, keep_alive, shutting_down.")).
		WithRow(dashboard.NewRowBuilder("Rules and alerts")).
		WithPanel(timeseriesPanel("Alerts firing", "short", prom(
			series{"sum by (rule, severity) (sluice_alerts_firing)", "{{rule}} ({{severity}})"})).
			Description("Series whose alert is firing now.")).
		WithPanel(timeseriesPanel("Alert transitions", "short", prom(
			series{"sum by (severity, status) (increase(sluice_alert_transitions_total[$__rate_interval]))", "{{status}} ({{severity}})"})).
			Description("Alerts that fired or resolved in each interval.")).
		WithPanel(timeseriesPanel("Rule evaluations", perSecond, prom(
			series{"sum by (rule) (rate(sluice_rule_evaluations_total[$__rate_interval]))", "{{rule}} evaluated"},
			series{"sum by (rule) (rate(sluice_rule_matches_total[$__rate_interval]))", "{{rule}} passed where"})).
			Description("Readings each rule evaluated (its topic matched) and that passed its where.")).
		WithPanel(timeseriesPanel("Rule state", "short", prom(
			series{"sum by (rule) (sluice_rule_active_series)", "{{rule}} series"},
			series{"sum by (rule) (rate(sluice_rule_series_evicted_total[$__rate_interval]))", "{{rule}} evicted/s"})).
			Description("Series a rule keeps state for (windows, alert episodes), and series evicted after the rule's TTL without data.")).
		WithRow(dashboard.NewRowBuilder("Process")).
		WithPanel(timeseriesPanel("Memory", "bytes", prom(
			series{"process_resident_memory_bytes" + onlySluice, "{{instance}}"})).
			Description("Resident memory of the sluice process.")).
		WithPanel(timeseriesPanel("CPU", "percentunit", prom(
			series{"rate(process_cpu_seconds_total[$__rate_interval])" + onlySluice, "{{instance}}"})).
			Description("CPU time the sluice process used per second: 1 is one core."))
	return finish(b, prometheusDS)
}
