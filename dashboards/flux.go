package dashboards

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// fluxQuery is a query of Grafana's InfluxDB data source in Flux mode, as
// Grafana stores it in a panel's targets. The Foundation SDK has no
// InfluxDB query type, so this is one (see the SDK's "custom query type").
type fluxQuery struct {
	RefID      string               `json:"refId"`
	Query      string               `json:"query"`
	Datasource common.DataSourceRef `json:"datasource"`
}

var (
	_ variants.Dataquery              = fluxQuery{}
	_ cog.Builder[variants.Dataquery] = fluxQuery{}
)

func (fluxQuery) ImplementsDataqueryVariant() {}
func (fluxQuery) DataqueryType() string       { return "influxdb" }

func (q fluxQuery) Validate() error {
	if strings.TrimSpace(q.Query) == "" {
		return errors.New("empty Flux query")
	}
	return nil
}

func (q fluxQuery) Equals(other variants.Dataquery) bool {
	o, ok := other.(fluxQuery)
	return ok && reflect.DeepEqual(q, o)
}

// Build makes a fluxQuery its own builder, so a panel takes it as a target.
func (q fluxQuery) Build() (variants.Dataquery, error) {
	if err := q.Validate(); err != nil {
		return nil, cog.MakeBuildErrors("influxdb.flux", err)
	}
	return q, nil
}

// flux returns a panel's Flux targets.
func flux(queries ...string) targets {
	t := make(targets, len(queries))
	for i, q := range queries {
		t[i] = fluxQuery{RefID: refID(i), Query: q, Datasource: influxDS}
	}
	return t
}

// The Flux below uses what Grafana's InfluxDB data source gives a query:
// v.timeRangeStart, v.timeRangeStop and v.windowPeriod (it writes the
// dashboard's time range and interval in their place), and the dashboard's
// variables: ${bucket}, and ${name:regex} for a tag (a regex of the selected
// values, or ".*" for All).

// fromBucket reads the dashboard's bucket over its time range, then applies
// steps, one per line.
func fromBucket(steps ...string) string {
	var b strings.Builder
	b.WriteString(`from(bucket: "${bucket}")` + "\n  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)")
	for _, s := range steps {
		b.WriteString("\n  |> ")
		b.WriteString(s)
	}
	return b.String()
}

// tagValues lists the values of tag in the points the predicates keep.
//
// It is what schema.tagValues does (and InfluxDB 2 reads it from the index
// the same way), spelled out: the schema package is not in the Flux of
// InfluxDB 1.8, which sluice's tests and demo run, and v1.tagValues there
// takes no time as start, while the dashboard's range must apply.
func tagValues(tag string, predicates ...string) string {
	return fromBucket(
		filter(predicates...),
		fmt.Sprintf("keep(columns: [%q])", tag),
		"group()",
		fmt.Sprintf("distinct(column: %q)", tag),
	)
}

// matches is a Flux predicate: the column's value is one the variable
// selects.
func matches(column, variable string) string {
	return fmt.Sprintf("r.%s =~ /^${%s:regex}$/", column, variable)
}

// and joins Flux predicates.
func and(predicates ...string) string { return strings.Join(predicates, " and ") }

// filter is a Flux filter step.
func filter(predicates ...string) string {
	return "filter(fn: (r) => " + and(predicates...) + ")"
}

// bucketVariable is the ${bucket} the Flux queries read: a text box, so that
// InfluxDB 1.8's "database/retention-policy" can be typed in too.
func bucketVariable() *dashboard.TextBoxVariableBuilder {
	const bucket = "telemetry" // the docker-compose stack's bucket
	return dashboard.NewTextBoxVariableBuilder("bucket").
		Label("Bucket").
		Description("The InfluxDB bucket sluice writes to (InfluxDB 1.8: database/retention-policy).").
		DefaultValue(dashboard.StringOrMap{String: ptr(bucket)}).
		Current(dashboard.VariableOption{
			Text:  dashboard.StringOrArrayOfString{String: ptr(bucket)},
			Value: dashboard.StringOrArrayOfString{String: ptr(bucket)},
		})
}

// tagVariable lets the viewer pick values of a tag, listed by a Flux query
// when the time range changes; All is ".*", so ${name:regex} matches
// everything, tags still unseen included.
func tagVariable(name, label, query string) *dashboard.QueryVariableBuilder {
	return dashboard.NewQueryVariableBuilder(name).
		Label(label).
		Datasource(influxDS).
		Query(dashboard.StringOrMap{String: ptr(query)}).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
		Sort(dashboard.VariableSortAlphabeticalAsc).
		Multi(true).
		IncludeAll(true).
		AllValue(".*").
		Current(dashboard.VariableOption{
			Text:  dashboard.StringOrArrayOfString{ArrayOfString: []string{"All"}},
			Value: dashboard.StringOrArrayOfString{ArrayOfString: []string{"$__all"}},
		})
}
