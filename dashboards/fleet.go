package dashboards

import (
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// A kind of device, as the example rules (examples/rules) store it: each
// rule writes its records to a measurement of its name, tagged site, line
// and device (the rule's named topic levels), with the payload's fields and
// the rule's derived fields.
type kind struct {
	measurement, title string
	fields             []field
}

// field is one field of a kind worth a graph: a level (a time series of its
// mean per interval), or a state (a state timeline, when states are given).
type field struct {
	name, title, unit string
	states            []state
}

var fleetKinds = []kind{
	{"boiler", "Boilers", []field{
		{name: "temperature", title: "Boiler temperature", unit: "celsius"},
		{name: "pressure", title: "Boiler pressure", unit: "pressurebar"},
	}},
	{"pump", "Pumps", []field{
		{name: "vibration", title: "Pump vibration", unit: "velocitymms"},
		{name: "flow", title: "Pump flow", unit: "suffix: m³/h"},
	}},
	{"coldchain", "Cold stores", []field{
		{name: "temperature", title: "Cold store temperature", unit: "celsius"},
		{name: "door_open", title: "Cold store doors", states: []state{
			{"false", "closed", "green"}, {"true", "open", "orange"},
		}},
	}},
	{"motor", "Motors", []field{
		{name: "vibration_rms", title: "Motor vibration (RMS)", unit: "velocitymms"},
		{name: "winding_temp", title: "Motor winding temperature", unit: "celsius"},
		{name: "current", title: "Motor current", unit: "amp"},
	}},
}

// The fleet dashboard's selection: the telemetry measurements (every one but
// the alerts'), of the chosen rules, sites, lines and devices.
var (
	telemetry = `r._measurement != "alerts"`
	ofRule    = matches("_measurement", "measurement")
	ofSite    = matches("site", "site")
	ofLine    = matches("line", "line")
	ofDevice  = matches("device", "device")
	chosen    = filter(telemetry, ofRule, ofSite, ofLine, ofDevice)
)

// readingsPerSite counts the readings of the chosen devices by site (then
// applies steps): InfluxDB keeps a series per field, so a device's readings
// are the count of its most frequent field.
func readingsPerSite(steps ...string) string {
	return fromBucket(append([]string{
		chosen,
		`group(columns: ["site", "_measurement", "device", "_field"])`,
		"count()",
		`group(columns: ["site", "_measurement", "device"])`,
		"max()",
		`group(columns: ["site"])`,
		"sum()",
		"group()",
	}, steps...)...)
}

// Fleet is the "fleet telemetry" dashboard: what the devices measure, per
// site, line and device. Flux, from the records the rules wrote to InfluxDB.
func Fleet() (dashboard.Dashboard, error) {
	b := newDashboard("sluice-fleet", "fleet telemetry",
		"What the devices measure, per site, line and device: the records sluice's rules wrote to InfluxDB.").
		WithVariable(bucketVariable()).
		// The alerts' measurement is left out after listing: under a filter on
		// _measurement, InfluxDB 1.8 lists no measurements.
		WithVariable(tagVariable("measurement", "Rule", fromBucket(
			`keep(columns: ["_measurement"])`, "group()", `distinct(column: "_measurement")`,
			`filter(fn: (r) => r._value != "alerts")`))).
		WithVariable(tagVariable("site", "Site", tagValues("site", telemetry, ofRule))).
		WithVariable(tagVariable("line", "Line", tagValues("line", telemetry, ofRule, ofSite))).
		WithVariable(tagVariable("device", "Device", tagValues("device", telemetry, ofRule, ofSite, ofLine))).
		WithRow(dashboard.NewRowBuilder("Fleet")).
		WithPanel(statPanel("Devices reporting", "short", flux(fromBucket(
			chosen, `keep(columns: ["device"])`, "group()", `distinct(column: "device")`, "count()"))).
			Height(8).Span(fullWidth / 4).
			Description("Devices that sent a reading in the time range.")).
		WithPanel(statPanel("Readings", "short", flux(readingsPerSite("sum()"))).
			Height(8).Span(fullWidth / 4).
			Description("Readings stored in the time range.")).
		WithPanel(barChartPanel("Readings per site", "site", flux(readingsPerSite(`rename(columns: {_value: "readings"})`))).
			Description("Readings stored in the time range, by site."))
	for _, k := range fleetKinds {
		b = b.WithRow(dashboard.NewRowBuilder(k.title))
		for _, f := range k.fields {
			b = b.WithPanel(fieldPanel(k, f, fullWidth/uint32(len(k.fields))))
		}
	}
	b = b.WithRow(dashboard.NewRowBuilder("Latest")).
		WithPanel(tablePanel("Latest readings", flux(fromBucket(
			chosen,
			"last()",
			`pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")`,
			"group()",
			`drop(columns: ["_start", "_stop"])`,
			`sort(columns: ["site", "line", "device"])`,
		))).Description("The last reading of every chosen device, one column per field."))
	return finish(b, influxDS)
}

// fieldPanel graphs one field of a kind, one series per chosen device: the
// mean of a level per interval, the last of a state.
func fieldPanel(k kind, f field, width uint32) cog.Builder[dashboard.Panel] {
	fn := "mean"
	if f.states != nil {
		fn = "last"
	}
	query := flux(fromBucket(
		filter(fmt.Sprintf("r._measurement == %q", k.measurement), fmt.Sprintf("r._field == %q", f.name)),
		filter(ofSite, ofLine, ofDevice),
		"aggregateWindow(every: v.windowPeriod, fn: "+fn+", createEmpty: false)",
		`keep(columns: ["_time", "_value", "device"])`,
	))
	const byDevice = "${__field.labels.device}"
	if f.states != nil {
		return stateTimelinePanel(f.title, query, f.states...).DisplayName(byDevice).Span(width)
	}
	return timeseriesPanel(f.title, f.unit, query).DisplayName(byDevice).Span(width)
}
