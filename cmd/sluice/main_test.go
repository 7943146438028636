package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ingest/auth"
	"github.com/sluicehq/sluice/internal/keyfile"
	"github.com/sluicehq/sluice/internal/secret/secrettest"
	"github.com/sluicehq/sluice/internal/testsvc"
)

func runMain(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Main(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidateReportsFileLineKey(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, config, want string
	}{
		{
			name: "typo in a key",
			config: `pipelines:
  - name: p
    topics: ["#"]
    sinks: [events]
sinks:
  - name: events
    kafka:
      brokrs: [localhost:9092]
      topic: t
`,
			want: `sluice.yaml:8:7: sinks[0].kafka.brokrs: unknown key (did you mean "brokers"?)`,
		},
		{
			name: "wrong type",
			config: `pipelines:
  - name: p
    topics: ["#"]
    sinks: [a]
    workers: four
sinks:
  - name: a
    mqtt: {}
`,
			want: `sluice.yaml:5:14: pipelines[0].workers: want a whole number, got a string "four"`,
		},
		{
			name: "missing required key",
			config: `pipelines:
  - name: p
    topics: ["#"]
    sinks: [influx]
sinks:
  - name: influx
    influxdb:
      url: http://localhost:8086
`,
			want: `sluice.yaml:7:5: sinks[0].influxdb: missing required key "bucket"`,
		},
		{
			name: "unknown sink",
			config: `pipelines:
  - name: p
    topics: ["#"]
    sinks: [nowhere]
`,
			want: `sluice.yaml:4:13: pipelines[0].sinks[0]: no sink is named "nowhere"`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, dir, "sluice.yaml", tc.config)
			code, _, stderr := runMain("validate", "-c", path)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d", code, exitUsage)
			}
			if !strings.Contains(stderr, filepath.Join(dir, tc.want)) {
				t.Errorf("stderr\n%s\nlacks\n%s", stderr, tc.want)
			}
		})
	}
}

func TestValidateReportsRuleErrors(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "rules/a.yaml", "rules:\n  - name: hot\n    where: temperature >\n")
	path := writeFile(t, dir, "sluice.yaml", `pipelines:
  - name: p
    topics: ["#"]
    rules: [rules]
    sinks: [a]
sinks:
  - name: a
    mqtt: {}
`)
	code, _, stderr := runMain("validate", "-c", path)
	want := filepath.Join(dir, "rules/a.yaml") + ":3:"
	if code != exitUsage || !strings.Contains(stderr, want) || !strings.Contains(stderr, "rules[0].where") {
		t.Fatalf("exit %d, stderr:\n%s\nwant %s ... rules[0].where", code, stderr, want)
	}
}

func TestValidateShippedConfigs(t *testing.T) {
	for _, path := range []string{"../../examples/demo/sluice.yaml", "../../examples/docker/sluice.yaml", "../../examples/docker/cluster.yaml"} {
		code, stdout, stderr := runMain("validate", "-c", path)
		if code != exitOK || !strings.Contains(stdout, ": ok") {
			t.Errorf("%s: exit %d\n%s%s", path, code, stdout, stderr)
		}
	}
}

func TestVersionAndUsage(t *testing.T) {
	if code, out, _ := runMain("version"); code != 0 || !strings.HasPrefix(out, "sluice ") {
		t.Errorf("version: %d %q", code, out)
	}
	if code, _, errOut := runMain("frobnicate"); code != exitUsage || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %d %q", code, errOut)
	}
	if code, _, _ := runMain(); code != exitUsage {
		t.Errorf("no command: %d", code)
	}
	if code, _, _ := runMain("run", "-c", "/nonexistent/sluice.yaml"); code != exitUsage {
		t.Errorf("missing config: %d", code)
	}
}

// TestRunServesAndStopsCleanly runs `sluice run`, publishes through it, and
// stops it as a signal would: it must exit 0.
func TestRunServesAndStopsCleanly(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "rules.yaml", "rules:\n  - name: hot\n    alert:\n      when: t > 1\n")
	path := writeFile(t, dir, "sluice.yaml", `log: {level: info}
data_dir: `+filepath.Join(dir, "data")+`
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines:
  - name: p
    topics: ["sensors/#"]
    rules: [rules.yaml]
    sinks: [alerts]
sinks:
  - name: alerts
    mqtt: {topic: "alerts/{rule}"}
`)
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr testsvc.LogBuffer
	exited := make(chan int)
	go func() { exited <- Main(ctx, []string{"run", "-c", path}, &stdout, &stderr) }()

	addr := waitForListener(t, &stderr)
	sub := testsvc.MQTT(t, addr, "sub")
	sub.Subscribe(t, "alerts/#")
	pub := testsvc.MQTT(t, addr, "pub")
	if rc := pub.Publish(t, "sensors/a", 1, []byte(`{"t": 5}`)); rc != 0 {
		t.Fatalf("publish: reason %#x", rc)
	}
	// The message is acknowledged once in the journal; the alert follows.
	if got := sub.WaitFor(t, "alerts/hot", 30*time.Second); len(got) != 0 {
		t.Fatalf("received before the alert: %v", got)
	}

	cancel()
	select {
	case code := <-exited:
		if code != exitOK {
			t.Fatalf("exit code %d\n%s", code, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("sluice did not stop")
	}
	if !strings.Contains(stderr.String(), "sluice stopped") {
		t.Errorf("no stop message:\n%s", stderr.String())
	}
}

// TestDocsConfigurationExample validates the complete example of
// docs/configuration.md, so the documentation cannot drift from the code.
func TestDocsConfigurationExample(t *testing.T) {
	example := docBlock(t, "../../docs/configuration.md", "## A complete example", 0)
	t.Setenv("SLUICE_ADMIN_TOKEN", "example-token")
	dir := t.TempDir()
	writeFile(t, dir, "rules/boilers.yaml", "rules:\n  - name: boiler\n    match: plant/+site/+line/+device/telemetry\n")
	writeSecurityFiles(t, dir)
	path := writeFile(t, dir, "sluice.yaml", example)
	if code, stdout, stderr := runMain("validate", "-c", path); code != exitOK {
		t.Fatalf("the documented example does not validate (exit %d):\n%s%s", code, stdout, stderr)
	}
}

// TestDocsSourcesExample validates the complete example of docs/sources.md.
func TestDocsSourcesExample(t *testing.T) {
	example := docBlock(t, "../../docs/sources.md", "## A complete example", 0)
	t.Setenv("SLUICE_HTTP_TOKEN_MES", "a-token-for-the-mes-0001")
	t.Setenv("PLANT_BROKER_PASSWORD", "plant")
	t.Setenv("CLOUD_PASSWORD", "cloud")
	path := writeFile(t, t.TempDir(), "sluice.yaml", example)
	if code, stdout, stderr := runMain("validate", "-c", path); code != exitOK {
		t.Fatalf("the documented example does not validate (exit %d):\n%s%s", code, stdout, stderr)
	}
}

// TestDocsSecurityProductionConfig validates the production configuration
// of docs/security.md, with its ACL file, in a folder standing for /etc.
func TestDocsSecurityProductionConfig(t *testing.T) {
	config := docBlock(t, "../../docs/security.md", "## A production configuration", 0)
	acl := docBlock(t, "../../docs/security.md", "## A production configuration", 1)
	dir := t.TempDir()
	config = strings.ReplaceAll(config, "/etc/sluice/", dir+"/")
	config = strings.ReplaceAll(config, "/var/lib/sluice", filepath.Join(dir, "data"))
	config = strings.ReplaceAll(config, "/run/secrets/", dir+"/")
	writeFile(t, dir, "influx-token", "token\n")
	writeFile(t, dir, "rules/r.yaml", "rules:\n  - name: r\n    fields: {v: v}\n")
	writeSecurityFiles(t, dir)
	writeFile(t, dir, "acl.yaml", acl)
	ca := secrettest.NewCA(t, "internal")
	copyTo(t, ca.CertFile, filepath.Join(dir, "tls/internal-ca.pem"))
	path := writeFile(t, dir, "sluice.yaml", config)
	if code, stdout, stderr := runMain("validate", "-c", path); code != exitOK {
		t.Fatalf("the production configuration does not validate (exit %d):\n%s%s", code, stdout, stderr)
	}
}

// docBlock returns the n-th YAML block after heading in a doc.
func docBlock(t *testing.T, doc, heading string, n int) string {
	t.Helper()
	text, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(text), heading+"\n")
	if !ok {
		t.Fatalf("%s has no %q", doc, heading)
	}
	for i := 0; ; i++ {
		_, block, ok := strings.Cut(after, "```yaml\n")
		if !ok {
			t.Fatalf("%s: no YAML block %d after %q", doc, n, heading)
		}
		block, after, _ = strings.Cut(block, "```")
		if i == n {
			return block
		}
	}
}

// writeSecurityFiles writes the files the documented configurations name
// relative to their folder: a server certificate and key, a client CA, a
// password file, an ACL file and an encryption key.
func writeSecurityFiles(t *testing.T, dir string) {
	t.Helper()
	ca := secrettest.NewCA(t, "devices")
	server := ca.Server(t, "127.0.0.1")
	copyTo(t, server.CertFile, filepath.Join(dir, "tls/server.crt"))
	copyTo(t, server.KeyFile, filepath.Join(dir, "tls/server.key"))
	copyTo(t, ca.CertFile, filepath.Join(dir, "tls/devices-ca.pem"))
	if err := auth.SetPassword(filepath.Join(dir, "passwd"), "ops", []byte("ops-password"), 4); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "acl.yaml", "rules:\n  - users: ops\n    allow: all\n    topics: [\"#\"]\n")
	if err := keyfile.Generate(filepath.Join(dir, "sluice.key")); err != nil {
		t.Fatal(err)
	}
}

func copyTo(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Dir(to), filepath.Base(to), string(data))
}

func TestRulesLintReportsEveryError(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", "rules:\n  - name: a\n    where: t >\n  - name: b\n    fields:\n      x: avg_over(t)\n")
	writeFile(t, dir, "b.yaml", "rules:\n  - name: c\n    wher: t > 1\n")
	code, stdout, _ := runMain("rules", "lint", dir)
	if code != exitUsage {
		t.Errorf("exit %d, want %d", code, exitUsage)
	}
	for _, want := range []string{
		filepath.Join(dir, "a.yaml") + ":3:",
		filepath.Join(dir, "a.yaml") + ":6:",
		"avg_over takes 2 argument(s)",
		filepath.Join(dir, "b.yaml") + `:3:5: rules[0].wher: unknown key (did you mean "where"?)`,
		"3 problems in 2 rule files",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output\n%s\nlacks %q", stdout, want)
		}
	}
	if code, stdout, _ := runMain("rules", "lint", "../../examples/rules"); code != exitOK {
		t.Errorf("examples: exit %d\n%s", code, stdout)
	}
}

func TestRulesTest(t *testing.T) {
	code, stdout, stderr := runMain("rules", "test", "../../examples/rules")
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if code != exitOK || !regexp.MustCompile(`^\d+ passed, 0 failed$`).MatchString(lines[len(lines)-1]) {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	dir := t.TempDir()
	writeFile(t, dir, "r.yaml", "rules:\n  - name: hot\n    match: s/+device\n    alert: {when: t > 90}\n")
	writeFile(t, dir, "r_test.yaml", `tests:
  - name: passes
    steps:
      - publish: {topic: s/a, payload: {t: 95}}
        alerts: [{rule: hot, status: firing}]
  - name: fails
    steps:
      - publish: {topic: s/a, payload: {t: 50}}
        alerts: [{rule: hot, status: firing}]
`)
	code, stdout, _ = runMain("rules", "test", dir)
	if code != exitFailure || !strings.Contains(stdout, "PASS "+filepath.Join(dir, "r_test.yaml")+": passes") ||
		!strings.Contains(stdout, "FAIL "+filepath.Join(dir, "r_test.yaml")+": fails") ||
		!strings.Contains(stdout, "want alert {rule: hot, status: firing}") || !strings.HasSuffix(stdout, "1 passed, 1 failed\n") {
		t.Fatalf("exit %d\n%s", code, stdout)
	}
}

// TestValidatePartition: validate says why a pipeline runs on one worker,
// and refuses a partition_by that would split a rule's series at its line.
func TestValidatePartition(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "rules/a.yaml", `rules:
  - name: site_avg
    match: plant/+site/+line/+device/telemetry
    key: site
    fields:
      avg: avg_over(temperature, "5m")
  - name: by_serial
    match: plant/+site/+line/+device/telemetry
    key: serial
    fields:
      d: delta(temperature)
`)
	config := `pipelines:
  - name: p
    topics: ["#"]
    rules: [rules]
    sinks: [a]
%s
sinks:
  - name: a
    mqtt: {}
`
	path := writeFile(t, dir, "sluice.yaml", fmt.Sprintf(config, ""))
	code, stdout, stderr := runMain("validate", "-c", path)
	if code != exitOK || !strings.Contains(stdout, `note: pipeline "p": rule "by_serial"`) || !strings.Contains(stdout, "run on one worker") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s\nwant a note that by_serial keeps the pipeline on one worker", code, stdout, stderr)
	}

	writeFile(t, dir, "rules/a.yaml", `rules:
  - name: site_avg
    match: plant/+site/+line/+device/telemetry
    key: site
    fields:
      avg: avg_over(temperature, "5m")
`)
	path = writeFile(t, dir, "sluice.yaml", fmt.Sprintf(config, "    partition_by: device"))
	code, _, stderr = runMain("validate", "-c", path)
	want := `sluice.yaml:6:19: pipelines[0].partition_by: rule "site_avg"`
	if code != exitUsage || !strings.Contains(stderr, want) || !strings.Contains(stderr, "would split") {
		t.Fatalf("exit %d, stderr:\n%s\nwant %s ... would split", code, stderr, want)
	}
}
