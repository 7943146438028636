package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// The alerts sink (sinks/influxdb) writes each alert transition to the
// measurement "alerts": tags rule, severity, status (firing or resolved),
// device, series and the rule's tags; fields message, firing (1 or 0),
// value or value_text, and duration_s on a resolved alert.
var (
	isAlert      = `r._measurement == "alerts"`
	ofAlertRule  = matches("rule", "rule")
	ofSeverity   = matches("severity", "severity")
	chosenAlerts = filter(isAlert, ofAlertRule, ofSeverity)
	// fired keeps the transitions to firing.
	fired = filter(`r._field == "firing"`, "r._value == 1")
)

// lookBack is how far back the "now" panels look, whatever the dashboard's
// time range: an alert that fired before the range may be firing now.
const lookBack = "7d"

// firingNow is, for each rule and series, its last transition if that is
// firing (then applies steps). A series' firing and resolved points are in
// different InfluxDB series (status is a tag), so they are regrouped first.
func firingNow(steps ...string) string {
	return fromBucket(append([]string{
		chosenAlerts,
		`filter(fn: (r) => r._field == "firing" or r._field == "message")`,
		`pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")`,
		`group(columns: ["rule", "series"])`,
		`sort(columns: ["_time"])`,
		`last(column: "_time")`,
		"filter(fn: (r) => r.firing == 1)",
		"group()",
	}, steps...)...)
}

// Alerts is the "alerts" dashboard: what is firing now, what fired when,
// which rules are noisy and how long alerts last. Flux, from the alert
// transitions written to InfluxDB.
func Alerts() (dashboard.Dashboard, error) {
	b := newDashboard("sluice-alerts", "alerts",
		"What is firing now, what fired when, which rules are noisiest and how long alerts lasted: the alert transitions sluice wrote to InfluxDB.").
		WithVariable(bucketVariable()).
		WithVariable(tagVariable("rule", "Rule", tagValues("rule", isAlert))).
		WithVariable(tagVariable("severity", "Severity", tagValues("severity", isAlert, ofAlertRule))).
		WithRow(dashboard.NewRowBuilder("Now")).
		WithPanel(statPanel("Firing now", "short", flux(firingNow(`count(column: "rule")`, `rename(columns: {rule: "firing"})`))).
			TimeFrom(lookBack).
			NoValue("0"). // nothing firing: no rows
			Height(8).
			Thresholds(redFrom(1)).
			Description("Series whose last alert transition is firing.")).
		WithPanel(tablePanel("Firing now", flux(firingNow(
			`keep(columns: ["_time", "severity", "rule", "device", "message"])`,
			`sort(columns: ["_time"], desc: true)`,
			`rename(columns: {_time: "notified"})`,
		))).
			TimeFrom(lookBack).
			Height(8).Span(fullWidth - fullWidth/6).
			Description("Each series firing now, with its last notification.")).
		WithRow(dashboard.NewRowBuilder("History")).
		WithPanel(stateTimelinePanel("Alert timeline", flux(fromBucket(
			chosenAlerts,
			`filter(fn: (r) => r._field == "firing")`,
			`group(columns: ["rule", "device"])`,
			`sort(columns: ["_time"])`,
			`keep(columns: ["_time", "_value", "rule", "device"])`,
		)), state{"1", "firing", "red"}, state{"0", "resolved", "green"}).
			DisplayName("${__field.labels.rule} ${__field.labels.device}").
			Height(10).Span(fullWidth).
			Description("When each rule fired and resolved, per device.")).
		WithPanel(barChartPanel("Noisiest rules", "rule", flux(fromBucket(
			chosenAlerts,
			fired,
			`group(columns: ["rule"])`,
			"count()",
			"group()",
			`sort(columns: ["_value"], desc: true)`,
			"limit(n: 10)",
			`rename(columns: {_value: "fired"})`,
		))).Description("The rules that fired most often in the time range.")).
		WithPanel(timeseriesPanel("Alerts fired", "short", flux(fromBucket(
			chosenAlerts,
			fired,
			`group(columns: ["severity"])`,
			"aggregateWindow(every: v.windowPeriod, fn: count, createEmpty: false)",
		))).
			DrawStyle(common.GraphDrawStyleBars).
			DisplayName("${__field.labels.severity}").
			Description("Alerts that fired in each interval, by severity.")).
		WithPanel(tablePanel("Recent alerts", flux(fromBucket(
			chosenAlerts,
			`pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")`,
			"group()",
			`sort(columns: ["_time"], desc: true)`,
			"limit(n: 500)",
			`keep(columns: ["_time", "status", "severity", "rule", "device", "message", "value", "value_text", "duration_s"])`,
		))).
			OverrideByName("duration_s", seconds).
			Description("Every transition, newest first; duration_s is how long a resolved alert had fired.")).
		WithPanel(tablePanel("Longest alerts", flux(fromBucket(
			chosenAlerts,
			`filter(fn: (r) => r._field == "duration_s")`,
			"group()",
			`sort(columns: ["_value"], desc: true)`,
			"limit(n: 100)",
			`keep(columns: ["_time", "severity", "rule", "device", "_value"])`,
			`rename(columns: {_time: "resolved", _value: "fired for"})`,
		))).
			OverrideByName("fired for", seconds).
			Description("Resolved alerts, longest first: how long each had fired."))
	return finish(b, influxDS)
}

// seconds shows a table column in seconds.
var seconds = []dashboard.DynamicConfigValue{{Id: "unit", Value: "s"}}
