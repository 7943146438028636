package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testsvc"
)

func TestBenchRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-qos", "3"},
		{"-shape", "xml"},
		{"-mqtt", "4"},
		{"-client", "paho", "-mqtt", "3"},
		{"-inflight", "2000"},
		{"-broker", "127.0.0.1:1883", "-c", "sluice.yaml"},
		{"-sources", "not-an-ip"},
		{"-job", "telegraf"},
		{"-job", "influx", "-cluster"},
		{"-series", "1000"},
		{"-scale", "-series", "1000", "-client", "paho"},
		{"stray"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, _, stderr := runMain(append([]string{"bench"}, args...)...)
			if code != exitUsage || stderr == "" {
				t.Errorf("exit code %d (want %d), stderr %q", code, exitUsage, stderr)
			}
		})
	}
}

// TestBenchAgainstABrokerAndAConfig runs `sluice bench` (load generator in
// process) against a running sluice as "any broker", then against sluice
// started in process from the same configuration file.
func TestBenchAgainstABrokerAndAConfig(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "rules.yaml", "rules:\n  - name: all\n    match: plant/+site/+line/+device/telemetry\n")
	path := writeFile(t, dir, "sluice.yaml", `data_dir: `+filepath.Join(dir, "data")+`
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines:
  - name: p
    topics: ["plant/#"]
    rules: [rules.yaml]
    sinks: [out]
sinks:
  - name: out
    file: {path: `+filepath.Join(dir, "out.jsonl")+`}
`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testsvc.LogBuffer
	exited := make(chan int, 1)
	go func() { exited <- Main(ctx, []string{"run", "-c", path}, &stdout, &stderr) }()
	addr := waitForListener(t, &stderr)

	for _, tc := range []struct {
		name, run string
		args      []string
	}{
		{"any broker", "| broker |", []string{"-broker", addr}},
		{"config", "| sluice |", []string{"-c", path}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			args := append([]string{"bench", "-inproc", "-baseline=false", "-devices", "4", "-messages", "400", "-out", out}, tc.args...)
			code, stdout, stderr := runMain(args...)
			if code != exitOK {
				t.Fatalf("exit code %d\n%s\n%s", code, stdout, stderr)
			}
			report, err := os.ReadFile(filepath.Join(out, "report.md"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(report), tc.run) || !strings.Contains(string(report), "| 400 |") {
				t.Errorf("report has no %q run with 400 messages acknowledged:\n%s", tc.run, report)
			}
			if _, err := os.Stat(filepath.Join(out, "report.csv")); err != nil {
				t.Error(err)
			}
		})
	}

	cancel()
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		t.Fatal("sluice run did not stop")
	}
}
