package pipelines_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

// A site-level rule (the average over every device of a site) next to a
// device-level one: the site rule's state must see every device of its site.
const partitionRules = `
rules:
  - name: site_avg
    match: plant/+site/+line/+device/telemetry
    key: site
    fields:
      site_temp: avg_over(temperature, "1h")
    alert:
      when: avg_over(temperature, "1h") > 60
      clear: avg_over(temperature, "1h") < 57
      value: avg_over(temperature, "1h")
      message: "site {{ site }} averages {{ avg_over(temperature, \"1h\") }}"
  - name: device_hot
    match: plant/+site/+line/+device/telemetry
    alert:
      when: temperature > 90
      clear: temperature < 80
      value: temperature
`

const partitionConfig = `
log: {level: warn}
data_dir: %[1]s/data
broker:
  listeners:
    - {name: tcp, address: 127.0.0.1:0, allow_anonymous: true}
pipelines:
  - name: telemetry
    topics: ["plant/#"]
    rules: [rules.yaml]
    workers: %[2]d
    sinks: [records, alerts]
sinks:
  - name: records
    stream: records
    batch: {size: 500, interval: 20ms}
    file: {path: %[1]s/records.jsonl}
  - name: alerts
    stream: alerts
    file: {path: %[1]s/alerts.jsonl}
`

// TestWorkersDoNotSplitSeries runs the same input through one worker and
// through eight: a site-keyed rule and a device-keyed rule must give the
// same records and the same alert transitions, whatever the number of
// workers (the state of a series lives on one worker).
func TestWorkersDoNotSplitSeries(t *testing.T) {
	type reading struct {
		topic string
		temp  float64
	}
	// Two sites of 40 devices over two lines; north heats up and cools
	// down, south stays cool; one device of each site runs hot for a while.
	var input []reading
	for round := range 12 {
		for _, site := range []string{"north", "south"} {
			for d := range 40 {
				temp := 40.0 + float64(d%7)
				if site == "north" && round >= 3 && round < 8 {
					temp += 30
				}
				if d == 17 && round >= 5 && round < 9 {
					temp = 95 - float64(round)
				}
				input = append(input, reading{fmt.Sprintf("plant/%s/l%d/dev-%02d/telemetry", site, d%2, d), temp})
			}
		}
	}

	run := func(workers int) (records, alerts []string) {
		dir := t.TempDir()
		must(t, os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(partitionRules), 0o644))
		cfgPath := filepath.Join(dir, "sluice.yaml")
		must(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(partitionConfig, dir, workers)), 0o644))
		cfg, err := pipelines.Load(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		svc, err := pipelines.New(cfg, pipelines.Options{})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		must(t, svc.Start(ctx))
		defer svc.Close(ctx)
		device := testsvc.MQTT(t, svc.Broker().Addr("tcp"), fmt.Sprintf("gateway-%d", workers))
		for _, r := range input {
			if rc := device.Publish(t, r.topic, 1, []byte(fmt.Sprintf(`{"temperature":%g}`, r.temp))); rc != 0 {
				t.Fatalf("publish refused: reason %#x", rc)
			}
		}
		// Two records per reading (one per rule).
		records = waitLines(t, filepath.Join(dir, "records.jsonl"), 2*len(input))
		waitFor(t, "the sinks to catch up", svc.CaughtUp)
		alerts = readLines(t, filepath.Join(dir, "alerts.jsonl"))
		return normalize(t, records), normalize(t, alerts)
	}

	oneRecords, oneAlerts := run(1)
	eightRecords, eightAlerts := run(8)
	if len(oneAlerts) == 0 {
		t.Fatal("no alerts at all: the input does not exercise the alert lifecycle")
	}
	// Per series, in order: the order between series may differ, the
	// order within one may not.
	if d := diffLines(bySeries(oneRecords), bySeries(eightRecords)); d != "" {
		t.Errorf("records with 8 workers differ from 1 worker:\n%s", d)
	}
	if d := diffLines(bySeries(oneAlerts), bySeries(eightAlerts)); d != "" {
		t.Errorf("alert transitions with 8 workers differ from 1 worker:\n%s", d)
	}
	var north []string
	for _, a := range oneAlerts {
		if strings.Contains(a, `"rule":"site_avg"`) {
			north = append(north, a)
		}
	}
	if len(north) != 2 || !strings.Contains(north[0], `"status":"firing"`) || !strings.Contains(north[1], `"status":"resolved"`) {
		t.Errorf("site_avg transitions: want north firing once and resolving once, got\n%s", strings.Join(north, "\n"))
	}
}

// normalize drops what differs between two runs of the same input (times,
// client ids) and re-encodes each line with sorted keys.
func normalize(t *testing.T, lines []string) []string {
	t.Helper()
	out := make([]string, 0, len(lines))
	for _, l := range lines {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("not JSON: %s: %v", l, err)
		}
		for _, k := range []string{"time", "since", "received", "client_id"} {
			delete(v, k)
		}
		b, _ := json.Marshal(v)
		out = append(out, string(b))
	}
	return out
}

// bySeries orders lines by rule and series (or topic, for records),
// keeping the order within each.
func bySeries(lines []string) []string {
	key := func(l string) string {
		var v struct {
			Rule   string `json:"rule"`
			Series string `json:"series"`
			Topic  string `json:"topic"`
			Tags   struct {
				Site string `json:"site"`
			} `json:"tags"`
		}
		json.Unmarshal([]byte(l), &v)
		if v.Rule == "site_avg" {
			return v.Rule + "|" + v.Tags.Site
		}
		return v.Rule + "|" + v.Series + v.Topic
	}
	out := slices.Clone(lines)
	slices.SortStableFunc(out, func(a, b string) int { return strings.Compare(key(a), key(b)) })
	return out
}

func diffLines(a, b []string) string {
	var d []string
	for i := range max(len(a), len(b)) {
		var x, y string
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			d = append(d, fmt.Sprintf("  1 worker:  %s\n  8 workers: %s", x, y))
		}
		if len(d) == 5 {
			d = append(d, "  ...")
			break
		}
	}
	return strings.Join(d, "\n")
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 60s for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLines waits until path holds want lines.
func waitLines(t *testing.T, path string, want int) []string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		lines := readLines(t, path)
		if len(lines) >= want {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d lines after 60s, want %d", path, len(lines), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReloadRefusesAnotherPartitionKey: adding a site-keyed rule to
// device-keyed ones would move series between workers; the reload is
// refused with the way forward, and the running rules stay.
func TestReloadRefusesAnotherPartitionKey(t *testing.T) {
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	device := `
rules:
  - name: device_hot
    match: plant/+site/+line/+device/telemetry
    alert: {when: temperature > 90}
`
	must(t, os.WriteFile(rulesPath, []byte(device), 0o644))
	cfgPath := filepath.Join(dir, "sluice.yaml")
	must(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(partitionConfig, dir, 4)), 0o644))
	cfg, err := pipelines.Load(cfgPath)
	must(t, err)
	svc, err := pipelines.New(cfg, pipelines.Options{})
	must(t, err)
	ctx := context.Background()
	must(t, svc.Start(ctx))
	t.Cleanup(func() { svc.Close(ctx) })

	must(t, os.WriteFile(rulesPath, []byte(device+`
  - name: site_avg
    match: plant/+site/+line/+device/telemetry
    key: site
    fields:
      avg: avg_over(temperature, "5m")
`), 0o644))
	err = svc.ReloadRules()
	if err == nil || !strings.Contains(err.Error(), "now partition by site (topic level 2), not device (topic level 4): restart sluice") {
		t.Fatalf("reload: %v, want a refusal naming both keys", err)
	}
	if got := svc.Rules("telemetry").Rules(); !slices.Equal(got, []string{"device_hot"}) {
		t.Fatalf("rules in force after a refused reload: %v", got)
	}
}
