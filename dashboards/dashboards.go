package dashboards

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// The data source uids the dashboards refer to; the provisioning file
// provisioning/datasources/sluice.yaml creates data sources with these uids.
const (
	PrometheusUID = "sluice-prometheus"
	InfluxDBUID   = "sluice-influxdb"
)

var (
	prometheusDS = common.DataSourceRef{Type: ptr("prometheus"), Uid: ptr(PrometheusUID)}
	influxDS     = common.DataSourceRef{Type: ptr("influxdb"), Uid: ptr(InfluxDBUID)}
)

// board is one dashboard and the file (in json/) it is written to.
type board struct {
	file  string
	build func() (dashboard.Dashboard, error)
}

var boards = []board{
	{"sluice-health.json", Health},
	{"fleet-telemetry.json", Fleet},
	{"alerts.json", Alerts},
}

// Files returns every dashboard as Grafana JSON, by file name (in json/):
// indented, with a trailing newline, byte for byte the same on every run.
func Files() (map[string][]byte, error) {
	files := make(map[string][]byte, len(boards))
	for _, b := range boards {
		d, err := b.build()
		if err != nil {
			return nil, fmt.Errorf("dashboard %s: %w", b.file, err)
		}
		j, err := json.MarshalIndent(d, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("dashboard %s: encode: %w", b.file, err)
		}
		files[b.file] = []byte(unescapeHTML.Replace(string(j)) + "\n")
	}
	return files, nil
}

// newDashboard starts a dashboard with what all of sluice's share.
func newDashboard(uid, title, description string) *dashboard.DashboardBuilder {
	return dashboard.NewDashboardBuilder(title).
		Uid(uid).
		Description(description).
		Tags([]string{"sluice"}).
		Readonly(). // provisioned from files: edit the Go code instead
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Refresh("30s").
		Time("now-1h", "now")
}

// finish numbers the panels (Grafana links to a panel by its id) and gives
// every panel the dashboard's data source.
func finish(b *dashboard.DashboardBuilder, ds common.DataSourceRef) (dashboard.Dashboard, error) {
	d, err := b.Build()
	if err != nil {
		return d, err
	}
	id := uint32(0)
	for _, p := range d.Panels {
		id++
		switch {
		case p.RowPanel != nil:
			p.RowPanel.Id = id
		case p.Panel != nil:
			p.Panel.Id = ptr(id)
			p.Panel.Datasource = &ds
		}
	}
	return d, nil
}

// unescapeHTML undoes encoding/json's escaping of <, > and &, which the SDK's
// marshallers apply, so that Flux's |> and PromQL's > read as written. An
// escaped backslash is matched first and kept, so "\\u003e" stays as it is.
var unescapeHTML = strings.NewReplacer(`\\`, `\\`, `\u003c`, "<", `\u003e`, ">", `\u0026`, "&")

func ptr[T any](v T) *T { return &v }
