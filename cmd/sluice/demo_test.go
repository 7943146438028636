package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testsvc"
)

// TestDemoSummaryAndTheOperationsQueries runs the demo: its summary counts
// the alert points apart from the records' ("influxdb N points" counted
// both), and shows the series firing (rule, device, since, value) when
// they change. Then the InfluxQL examples of docs/operations.md run
// against the demo's InfluxDB, and the one about one device finds it
// (boiler-07, which the demo does not have, found nothing).
func TestDemoSummaryAndTheOperationsQueries(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo with influxd")
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr testsvc.LogBuffer
	exited := make(chan int, 1)
	args := append(demoArgs(t), "-devices", "12", "-interval", "250ms")
	go func() { exited <- Main(ctx, args, &stdout, &stderr) }()
	defer func() {
		cancel()
		if code := <-exited; code != exitOK {
			t.Errorf("demo: exit %d\n%s", code, stderr.String())
		}
	}()
	wait := func(re *regexp.Regexp) []string {
		t.Helper()
		var m []string
		waitUntil(t, 3*time.Minute, func() bool {
			m = re.FindStringSubmatch(stdout.String())
			return m != nil
		}, func() string {
			return "the demo did not print " + re.String() + "\n" + stdout.String() + stderr.String()
		})
		return m
	}
	influx := wait(regexp.MustCompile(`influxd is process \d+, at (\S+);`))[1]
	summary := regexp.MustCompile(`influxdb (\d+) points \+ (\d+) alert points \| kafka (\d+) records \+ (\d+) alerts \| alerts \d+ firing, (\d+) transitions`)
	waitUntil(t, 3*time.Minute, func() bool {
		all := summary.FindAllStringSubmatch(stdout.String(), -1)
		return len(all) > 0 && all[len(all)-1][2] != "0" && all[len(all)-1][4] != "0"
	}, func() string { return "no alert points in the summary:\n" + stdout.String() })
	wait(regexp.MustCompile(`(?m)^firing: \d+ series\n  RULE +DEVICE +SEVERITY +SINCE +FOR +VALUE +MESSAGE\n  (boiler|pump\S*|coldchain\S*|motor\S*) +(\S+-\d\d) +\S+ +\d\d:\d\d:\d\d +\S+ +[\d.]+ `))

	text, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, _ := strings.Cut(string(text), "The same in InfluxQL")
	_, block, _ = strings.Cut(block, "```sql\n")
	block, _, _ = strings.Cut(block, "```")
	for _, q := range strings.Split(strings.TrimSpace(block), "\n") {
		resp, err := http.PostForm(influx+"/query", url.Values{"db": {"sluice"}, "q": {q}})
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Results []struct {
				Error  string
				Series []json.RawMessage
			}
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || len(body.Results) != 1 || body.Results[0].Error != "" {
			t.Errorf("docs/operations.md: %s: %v %+v", q, err, body)
			continue
		}
		if strings.Contains(q, `"device" = `) && len(body.Results[0].Series) == 0 {
			t.Errorf("docs/operations.md: %s: nothing; the demo's devices are boiler-01, pump-02, ...", q)
		}
	}
}
