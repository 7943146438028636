package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/barchart"
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/statetimeline"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// The panels below carry the options every sluice dashboard sets the same
// way; a dashboard chains what is particular to one panel (description,
// size, overrides). Targets come from prom or flux.

// targets is what a panel queries, in order: refIds A, B, ...
type targets = []cog.Builder[variants.Dataquery]

// Grafana's grid is 24 columns wide.
const (
	fullWidth = 24
	halfWidth = 12
)

func timeseriesPanel(title, unit string, t targets) *timeseries.PanelBuilder {
	return timeseries.NewPanelBuilder().
		Title(title).
		Unit(unit).
		Targets(t).
		Height(8).
		Span(halfWidth).
		FillOpacity(10).
		Legend(legend()).
		Tooltip(tooltip())
}

// statPanel shows one number: the last value of its query. It is a sixth
// of a row wide.
func statPanel(title, unit string, t targets) *stat.PanelBuilder {
	return stat.NewPanelBuilder().
		Title(title).
		Unit(unit).
		Targets(t).
		Height(4).
		Span(fullWidth / 6).
		GraphMode(common.BigValueGraphModeArea).
		ColorMode(common.BigValueColorModeValue).
		TextMode(common.BigValueTextModeValue).
		Orientation(common.VizOrientationAuto).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Values(false))
}

func tablePanel(title string, t targets) *table.PanelBuilder {
	return table.NewPanelBuilder().
		Title(title).
		Targets(t).
		Height(10).
		Span(fullWidth).
		ShowHeader(true).
		Filterable(true)
}

// stateTimelinePanel shows each series as a band coloured by its state.
func stateTimelinePanel(title string, t targets, states ...state) *statetimeline.PanelBuilder {
	return statetimeline.NewPanelBuilder().
		Title(title).
		Targets(t).
		Height(8).
		Span(halfWidth).
		ShowValue(common.VisibilityModeNever).
		MergeValues(true).
		Mappings(valueMappings(states)).
		Legend(legend()).
		Tooltip(tooltip())
}

// barChartPanel draws one bar per row of its query, labelled by xField.
func barChartPanel(title, xField string, t targets) *barchart.PanelBuilder {
	return barchart.NewPanelBuilder().
		Title(title).
		Targets(t).
		Height(8).
		Span(halfWidth).
		XField(xField).
		Orientation(common.VizOrientationHorizontal).
		ShowValue(common.VisibilityModeAuto).
		Legend(legend().ShowLegend(false)).
		Tooltip(tooltip())
}

// legend lists the series below a graph.
func legend() *common.VizLegendOptionsBuilder {
	return common.NewVizLegendOptionsBuilder().
		ShowLegend(true).
		DisplayMode(common.LegendDisplayModeList).
		Placement(common.LegendPlacementBottom)
}

// tooltip shows every series at the pointer, highest first.
func tooltip() *common.VizTooltipOptionsBuilder {
	return common.NewVizTooltipOptionsBuilder().
		Mode(common.TooltipDisplayModeMulti).
		Sort(common.SortOrderDescending)
}

// state is how a state timeline names and colours one value.
type state struct{ value, text, color string }

func valueMappings(states []state) []dashboard.ValueMapping {
	options := make(map[string]dashboard.ValueMappingResult, len(states))
	for i, s := range states {
		options[s.value] = dashboard.ValueMappingResult{Text: ptr(s.text), Color: ptr(s.color), Index: ptr(int32(i))}
	}
	return []dashboard.ValueMapping{{ValueMap: &dashboard.ValueMap{Type: dashboard.MappingTypeValueToText, Options: options}}}
}

// redFrom colours a value green, and red from limit up.
func redFrom(limit float64) *dashboard.ThresholdsConfigBuilder {
	return dashboard.NewThresholdsConfigBuilder().
		Mode(dashboard.ThresholdsModeAbsolute).
		Steps([]dashboard.Threshold{{Color: "green"}, {Value: ptr(limit), Color: "red"}})
}

// refID names a panel's i-th query as Grafana does: A, B, ...
func refID(i int) string { return string(rune('A' + i)) }
