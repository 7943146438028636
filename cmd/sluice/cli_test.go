package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

// TestConfigPathArgument checks the config file may be given as the
// argument or with --config, and that a second one is refused rather than
// silently ignored (sluice validate broken.yaml validated ./sluice.yaml).
func TestConfigPathArgument(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", "pipelines:\n  - name: p\n    topics: [\"#\"]\n    sinks: [a]\nsinks:\n  - name: a\n    mqtt: {}\n")
	broken := writeFile(t, dir, "broken.yaml", "pipelines:\n  - name: p\n    topics: [\"#\"]\n    sinks: [nowhere]\n")
	cases := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"validate FILE", []string{"validate", broken}, exitUsage, "", broken + `:4:13: pipelines[0].sinks[0]: no sink is named "nowhere"`},
		{"validate FILE ok", []string{"validate", good}, exitOK, good + ": ok", ""},
		{"validate --config FILE", []string{"validate", "--config", good}, exitOK, good + ": ok", ""},
		{"validate -config FILE", []string{"validate", "-config", broken}, exitUsage, "", broken + ":4:13"},
		{"validate FILE with a flag after it", []string{"validate", good, "-c", broken}, exitUsage, "", "two config files: -c " + broken + " and " + good},
		{"validate two files", []string{"validate", good, broken}, exitUsage, "", "want one config file, got 2 arguments"},
		{"run FILE", []string{"run", broken}, exitUsage, "", broken + ":4:13"},
		{"run two files", []string{"run", good, broken}, exitUsage, "", "want one config file, got 2 arguments"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runMain(tc.args...)
			if code != tc.code || !strings.Contains(stdout, tc.stdout) || !strings.Contains(stderr, tc.stderr) {
				t.Errorf("sluice %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s\nwant stdout with %q, stderr with %q",
					strings.Join(tc.args, " "), code, tc.code, stdout, stderr, tc.stdout, tc.stderr)
			}
		})
	}
	// Without a path, sluice.yaml in the working directory.
	t.Chdir(dir)
	writeFile(t, dir, "sluice.yaml", "pipelines:\n  - name: p\n    topics: [\"#\"]\n    sinks: [a]\nsinks:\n  - name: a\n    mqtt: {}\n")
	if code, stdout, stderr := runMain("validate"); code != exitOK || !strings.Contains(stdout, "sluice.yaml: ok") {
		t.Errorf("validate without a path: exit %d\n%s%s", code, stdout, stderr)
	}
}

// TestHelpExitsZero checks that asking for help is not an error: every
// command and subcommand prints its usage for -h and exits 0 (Go's flag
// package made it exit 2; `sluice rules -h` was an unknown command and
// `sluice version -h` printed the version).
func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{
		{"-h"}, {"help"}, {"--help"},
		{"run", "-h"}, {"validate", "-h"}, {"validate", "--help"}, {"demo", "-h"}, {"simulate", "-h"},
		{"bench", "-h"}, {"status", "-h"}, {"passwd", "-h"}, {"keygen", "-h"}, {"version", "-h"},
		{"rules", "-h"}, {"rules", "help"}, {"rules", "lint", "-h"}, {"rules", "test", "-h"}, {"rules", "try", "-h"},
		{"alerts", "-h"}, {"tail", "-h"}, {"deadletters", "-h"}, {"replay", "-h"},
	} {
		code, stdout, stderr := runMain(args...)
		if code != exitOK || !strings.Contains(stdout+stderr, "Usage") {
			t.Errorf("sluice %s: exit %d, want 0 and the usage\n%s%s", strings.Join(args, " "), code, stdout, stderr)
		}
		if strings.HasPrefix(stdout, "sluice ") && args[0] == "version" {
			t.Errorf("sluice version -h printed the version: %s", stdout)
		}
	}
	// A wrong flag or argument is still bad usage.
	for _, args := range [][]string{{"run", "-nope"}, {"version", "extra"}, {"status", "extra"}, {"rules", "lint", "-nope"}} {
		if code, _, _ := runMain(args...); code != exitUsage {
			t.Errorf("sluice %s: exit %d, want %d", strings.Join(args, " "), code, exitUsage)
		}
	}
}

// TestValidateCountsInWords checks "1 pipeline", not "1 pipelines".
func TestValidateCountsInWords(t *testing.T) {
	path := writeFile(t, t.TempDir(), "sluice.yaml", "pipelines:\n  - name: p\n    topics: [\"#\"]\n    sinks: [a]\nsinks:\n  - name: a\n    mqtt: {}\n")
	if code, stdout, _ := runMain("validate", path); code != exitOK || !strings.HasSuffix(stdout, ": ok (1 pipeline, 1 sink)\n") {
		t.Errorf("exit %d: %q", code, stdout)
	}
}

// TestStatusFindsTheAdminListenerInTheConfig runs sluice and asks `sluice
// status -c` about it: the address and the token come from the config.
func TestStatusFindsTheAdminListenerInTheConfig(t *testing.T) {
	dir := t.TempDir()
	config := func(admin string) string {
		return `data_dir: ` + filepath.Join(dir, "data") + `
log: {level: info}
admin: {address: "` + admin + `", token: admin-s3cret}
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines:
  - {name: p, topics: ["#"], sinks: [a]}
sinks:
  - {name: a, mqtt: {topic: "alerts/{rule}"}}
`
	}
	path := writeFile(t, dir, "sluice.yaml", config("127.0.0.1:0"))
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr testsvc.LogBuffer
	exited := make(chan int)
	go func() { exited <- Main(ctx, []string{"run", path}, &stdout, &stderr) }()
	defer func() { cancel(); <-exited }()
	addr := waitForLog(t, &stderr, regexp.MustCompile(`admin listener.* address=(\S+)`))
	// The config as the operator wrote it, with the port sluice got;
	// 0.0.0.0 is reached on loopback.
	_, port, _ := net.SplitHostPort(addr)
	written := writeFile(t, dir, "written.yaml", config("0.0.0.0:"+port))
	code, out, errOut := runMain("status", "-c", written, "-interval", "10ms")
	if code != exitOK || !strings.Contains(out, ": READY") || !strings.Contains(out, "pipeline p:") {
		t.Errorf("sluice status -c: exit %d\n%s%s", code, out, errOut)
	}
	none := writeFile(t, dir, "none.yaml", strings.Replace(config("x:1"), `admin: {address: "x:1", token: admin-s3cret}`, "", 1))
	if code, _, errOut := runMain("status", "--config", none); code != exitUsage || !strings.Contains(errOut, "has no admin.address") {
		t.Errorf("sluice status on a config without admin: exit %d: %s", code, errOut)
	}
}

// TestExitCodeScheme checks the one scheme (package comment,
// docs/operations.md): the same kind of problem exits the same way from
// validate and rules lint (they exited 2 and 1), a failing test exits 1.
func TestExitCodeScheme(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "bad/r.yaml", "rules:\n  - name: a\n    where: t >\n")
	writeFile(t, dir, "good/r.yaml", "rules:\n  - name: hot\n    match: s/+device\n    alert: {when: t > 90}\n")
	writeFile(t, dir, "good/r_test.yaml", "tests:\n  - name: fails\n    steps:\n      - publish: {topic: s/a, payload: {t: 50}}\n        alerts: [{rule: hot, status: firing}]\n")
	badConfig := writeFile(t, dir, "bad.yaml", "pipelines:\n  - name: p\n    topics: [\"#\"]\n    rules: [bad]\n    sinks: [a]\nsinks:\n  - name: a\n    mqtt: {}\n")
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"validate", badConfig}, exitUsage},
		{[]string{"rules", "lint", filepath.Join(dir, "bad")}, exitUsage},
		{[]string{"rules", "lint", filepath.Join(dir, "good")}, exitOK},
		{[]string{"rules", "test", filepath.Join(dir, "good")}, exitFailure},
		{[]string{"rules", "test", filepath.Join(dir, "bad")}, exitUsage},
		{[]string{"rules", "lint", filepath.Join(dir, "nothing-here")}, exitUsage},
	} {
		if code, stdout, stderr := runMain(tc.args...); code != tc.code {
			t.Errorf("sluice %s: exit %d, want %d\n%s%s", strings.Join(tc.args, " "), code, tc.code, stdout, stderr)
		}
	}
}

// TestRulesTestWithoutTestsSaysWhy checks a folder without tests is not
// "0 passed, 0 failed": it says there is nothing to test and how tests are
// found.
func TestRulesTestWithoutTestsSaysWhy(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "r.yaml", "rules:\n  - name: hot\n    alert: {when: t > 90}\n")
	code, stdout, stderr := runMain("rules", "test", dir)
	if code != exitUsage || strings.Contains(stdout, "0 passed") ||
		!strings.Contains(stderr, "no rule tests in "+dir) || !strings.Contains(stderr, "boilers_test.yaml") {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

// TestRulesLintWithoutAPath checks `sluice rules lint` with no path lints
// the rules the config lists, not every YAML file of the working folder
// (the config and the ACL file were reported as broken rules), and says
// what to do where there is no config.
func TestRulesLintWithoutAPath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if code, _, stderr := runMain("rules", "lint"); code != exitUsage || !strings.Contains(stderr, "no sluice.yaml here") {
		t.Errorf("no config: exit %d: %s", code, stderr)
	}
	writeFile(t, dir, "rules/r.yaml", "rules:\n  - name: hot\n    alert: {when: t > 90}\n")
	writeFile(t, dir, "rules/r_test.yaml", "tests:\n  - name: fires\n    steps:\n      - publish: {topic: s/a, payload: {t: 95}}\n        alerts: [{rule: hot, status: firing}]\n")
	writeFile(t, dir, "acl.yaml", "rules:\n  - users: ops\n    allow: all\n    topics: [\"#\"]\n")
	writeFile(t, dir, "sluice.yaml", "pipelines:\n  - name: p\n    topics: [\"#\"]\n    rules: [rules]\n    sinks: [a]\nsinks:\n  - name: a\n    mqtt: {}\n")
	code, stdout, stderr := runMain("rules", "lint")
	if code != exitOK || stdout != "1 rule file, 1 test file: ok\n" {
		t.Errorf("rules lint in a config's folder: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = runMain("rules", "test")
	if code != exitOK || !strings.HasSuffix(stdout, "1 passed, 0 failed\n") {
		t.Errorf("rules test in a config's folder: exit %d\n%s%s", code, stdout, stderr)
	}
	other := t.TempDir()
	t.Chdir(other)
	if code, stdout, stderr := runMain("rules", "lint", "-c", filepath.Join(dir, "sluice.yaml")); code != exitOK {
		t.Errorf("rules lint -c: exit %d\n%s%s", code, stdout, stderr)
	}
}

// TestValidateReportsEveryProblemInFileOrder checks one run reports every
// problem, the config file's in line order and then the rule files': a file
// with four mistakes took four runs, in no particular order.
func TestValidateReportsEveryProblemInFileOrder(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "rules/r.yaml", "rules:\n  - name: hot\n    where: t >\n")
	path := writeFile(t, dir, "sluice.yaml", `log:
  level: info
  formt: text
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0"}]
pipelines:
  - name: p
    topics: ["plant/#"]
    workers: four
    rules: [rules]
    sinks: [influx, nowhere]
sinks:
  - name: influx
    influxdb:
      url: http://localhost:8086
      bucket: db/rp
      timeout: 5 parsecs
  - name: k
    kafka: {brokrs: [a:1], topic: t}
`)
	code, _, stderr := runMain("validate", path)
	want := []string{
		path + `:3:3: log.formt: unknown key (did you mean "format"?)`,
		path + `:9:14: pipelines[0].workers: want a whole number, got a string "four"`,
		path + `:11:21: pipelines[0].sinks[1]: no sink is named "nowhere"`,
		path + `:17:16: sinks[0].influxdb.timeout: `,
		path + `:19:13: sinks[1].kafka.brokrs: unknown key (did you mean "brokers"?)`,
		filepath.Join(dir, "rules/r.yaml") + `:3:`,
		"6 problems",
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if code != exitUsage || len(lines) != len(want) {
		t.Fatalf("exit %d, %d lines, want %d:\n%s", code, len(lines), len(want), stderr)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d: %s\nwant %s...", i+1, lines[i], w)
		}
	}
	// The same in a file with nothing else wrong: no problem invented by
	// leaving a bad key out (kafka.brokers is not also "missing").
	path = writeFile(t, dir, "one.yaml", "pipelines:\n  - {name: p, topics: [\"#\"], sinks: [k]}\nsinks:\n  - name: k\n    kafka: {brokrs: [a:1], topic: t}\n")
	if code, _, stderr := runMain("validate", path); code != exitUsage || strings.Count(stderr, "\n") != 1 {
		t.Errorf("exit %d, want one problem:\n%s", code, stderr)
	}
}

// TestStartupErrorsSayWhatToDo checks the mistakes that stop a start say
// where they are and what to do, from validate and from run: a missing
// password file names the command that makes one, a missing rule path the
// config line that lists it, a duration is wanted one way everywhere, and
// an address in use names the listener and its line.
func TestStartupErrorsSayWhatToDo(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "rules/r.yaml", "rules:\n  - name: hot\n    alert: {when: t > 90}\n")
	config := func(listen, admin, extra string) string {
		return `data_dir: ` + filepath.Join(dir, "data") + `
admin: {address: "` + admin + `"}
broker:
  listeners:
    - {name: tcp, address: "` + listen + `", allow_anonymous: true}
` + extra + `pipelines:
  - name: p
    topics: ["#"]
    rules: [rules, more-rules.yaml]
    sinks: [a]
sinks:
  - name: a
    batch: {interval: 10 msec}
    mqtt: {}
`
	}
	path := writeFile(t, dir, "sluice.yaml", config("127.0.0.1:0", "127.0.0.1:0", "  auth: {password_file: passwd}\n"))
	want := []string{
		path + `:6:25: broker.auth.password_file: no such file: ` + filepath.Join(dir, "passwd") +
			`; create it with a first user: sluice passwd ` + filepath.Join(dir, "passwd") + ` USER`,
		path + `:10:20: pipelines[0].rules[1]: no such file or folder: ` + filepath.Join(dir, "more-rules.yaml"),
		path + `:14:23: sinks[0].batch.interval: want a duration such as 5s or 250ms, got "10 msec"`,
	}
	for _, cmd := range []string{"validate", "run"} {
		code, _, stderr := runMain(cmd, path)
		for _, w := range want {
			if !strings.Contains(stderr, w) {
				t.Errorf("sluice %s: stderr lacks\n%s\n%s", cmd, w, stderr)
			}
		}
		if code != exitUsage {
			t.Errorf("sluice %s: exit %d, want %d", cmd, code, exitUsage)
		}
	}

	// An address in use: the listener, its line, and what to do.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	writeFile(t, dir, "more-rules.yaml", "rules: []\n")
	for _, tc := range []struct{ listen, admin, want string }{
		{addr, "127.0.0.1:0", `:5:29: broker.listeners[0].address: ` + addr + ` is in use by another program (listener "tcp")`},
		{"127.0.0.1:0", addr, `:2:19: admin.address: ` + addr + ` is in use by another program (the admin listener)`},
	} {
		path := writeFile(t, dir, "sluice.yaml", strings.ReplaceAll(config(tc.listen, tc.admin, ""), "10 msec", "10ms"))
		code, _, stderr := runMain("run", path)
		if code != exitFailure || !strings.Contains(stderr, path+tc.want) {
			t.Errorf("sluice run with %s in use: exit %d, want %d and\n%s%s\n%s", addr, code, exitFailure, path, tc.want, stderr)
		}
	}
}

// TestPathsAreRelativeToTheConfigFile runs sluice from another folder than
// its config's: data_dir, a file sink's path and a secret's file are found
// next to the config, as rule paths always were (data/ and out.jsonl were
// made in the working directory).
func TestPathsAreRelativeToTheConfigFile(t *testing.T) {
	root := t.TempDir()
	cfgDir := filepath.Join(root, "cfg")
	writeFile(t, cfgDir, "rules/r.yaml", "rules:\n  - name: r\n    fields: {v: v}\n")
	writeFile(t, cfgDir, "secrets/kafka-password", "s3cret\n")
	writeFile(t, cfgDir, "sluice.yaml", `log: {level: info}
data_dir: data
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines:
  - name: p
    topics: ["#"]
    rules: [rules]
    sinks: [out]
sinks:
  - name: out
    file: {path: out/records.jsonl}
  - name: unused
    kafka:
      brokers: ["127.0.0.1:1"]
      topic: t
      sasl: {mechanism: PLAIN, username: u, password: {file: secrets/kafka-password}}
`)
	work := filepath.Join(root, "elsewhere")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(work)
	rel := filepath.Join("..", "cfg", "sluice.yaml")
	if code, stdout, stderr := runMain("validate", rel); code != exitOK {
		t.Fatalf("validate from another folder: exit %d\n%s%s", code, stdout, stderr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr testsvc.LogBuffer
	exited := make(chan int)
	go func() { exited <- Main(ctx, []string{"run", rel}, &stdout, &stderr) }()
	addr := waitForListener(t, &stderr)
	pub := testsvc.MQTT(t, addr, "pub")
	if rc := pub.Publish(t, "s/a", 1, []byte(`{"v": 1}`)); rc != 0 {
		t.Fatalf("publish: reason %#x", rc)
	}
	out := filepath.Join(cfgDir, "out", "records.jsonl")
	waitUntil(t, 30*time.Second, func() bool {
		b, _ := os.ReadFile(out)
		return strings.Contains(string(b), `"rule":"r"`)
	}, func() string { return out + " has no record\n" + stderr.String() })
	cancel()
	if code := <-exited; code != exitOK {
		t.Fatalf("exit %d\n%s", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(cfgDir, "data", "journal")); err != nil {
		t.Errorf("no journal next to the config: %v", err)
	}
	if entries, _ := os.ReadDir(work); len(entries) != 0 {
		t.Errorf("sluice wrote into the working directory: %v", entries)
	}
}

// TestEveryFileKeyIsRelativeToTheConfigFile checks, after loading, that
// every path a config can hold is absolute: each key ending in _file
// (whatever section it is in, including sinks added later), data_dir and a
// file sink's path.
func TestEveryFileKeyIsRelativeToTheConfigFile(t *testing.T) {
	dir := t.TempDir()
	writeSecurityFiles(t, dir)
	writeFile(t, dir, "ca.pem", "")
	writeFile(t, dir, "rules/boilers.yaml", "rules:\n  - name: boiler\n    match: plant/+site/+line/+device/telemetry\n")
	t.Setenv("SLUICE_ADMIN_TOKEN", "example-token")
	example := docBlock(t, "../../docs/configuration.md", "## A complete example", 0)
	example += `  - name: tls-everywhere
    kafka: {brokers: ["k:9093"], topic: t, tls: {ca_file: ca.pem, cert_file: tls/server.crt, key_file: tls/server.key}}
  - name: dead
    stream: dead_letters
    file: {path: dead/letters.jsonl}
`
	path := writeFile(t, dir, "sluice.yaml", example)
	cfg, err := pipelines.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var relative []string
	check := func(key, value string) {
		if value != "" && !filepath.IsAbs(value) {
			relative = append(relative, key+": "+value)
		}
	}
	var walk func(v reflect.Value, key string)
	walk = func(v reflect.Value, key string) {
		switch v.Kind() {
		case reflect.Pointer:
			if !v.IsNil() {
				walk(v.Elem(), key)
			}
		case reflect.Slice:
			for i := range v.Len() {
				walk(v.Index(i), fmt.Sprintf("%s[%d]", key, i))
			}
		case reflect.Struct:
			for i := range v.NumField() {
				f := v.Type().Field(i)
				name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				if !f.IsExported() || name == "-" {
					continue
				}
				if v.Field(i).Kind() == reflect.String && strings.HasSuffix(name, "_file") {
					check(key+"."+name, v.Field(i).String())
				}
				walk(v.Field(i), key+"."+name)
			}
		}
	}
	walk(reflect.ValueOf(cfg).Elem(), "")
	check("data_dir", cfg.DataDir)
	for _, s := range cfg.Sinks {
		if s.File != nil {
			check("file.path", s.File.Path)
		}
	}
	if len(relative) > 0 || len(cfg.Sinks) < 3 {
		t.Errorf("paths left relative (to the working directory): %v", relative)
	}
}

// TestDocsValidateExample runs the example at the top of
// docs/configuration.md and compares what validate prints with the doc.
func TestDocsValidateExample(t *testing.T) {
	const marker = "and `validate` reports every problem at once:"
	config := docBlock(t, "../../docs/configuration.md", marker, 0)
	text, _ := os.ReadFile("../../docs/configuration.md")
	_, after, _ := strings.Cut(string(text), marker)
	_, after, _ = strings.Cut(after, "```\n$ sluice validate sluice.yaml\n")
	want, _, _ := strings.Cut(after, "```")
	dir := t.TempDir()
	writeFile(t, dir, "sluice.yaml", config)
	t.Chdir(dir)
	code, _, stderr := runMain("validate", "sluice.yaml")
	if code != exitUsage || stderr != want {
		t.Errorf("exit %d; sluice validate printed\n%s\ndocs/configuration.md says\n%s", code, stderr, want)
	}
}

// TestDocsListenerNames checks configuration.md names listeners as the
// code does: the default listener `tcp` (the doc said `tcp-0`), a listener
// without a name its type and place in the list.
func TestDocsListenerNames(t *testing.T) {
	text, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct{ config, name, doc string }{
		{"", "tcp", "| `listeners` | one TCP listener named `tcp`, on `127.0.0.1:1883` |"},
		{"broker:\n  listeners: [{address: \"127.0.0.1:0\"}, {address: \"127.0.0.1:0\", type: ws}]\n", "ws-1", "| `listeners[].name` | its type and place in the list: `tcp-0`, `tls-1`, ... |"},
	} {
		path := writeFile(t, dir, "sluice.yaml", tc.config+"pipelines:\n  - {name: p, topics: [\"#\"], sinks: [a]}\nsinks:\n  - {name: a, mqtt: {}}\n")
		cfg, err := pipelines.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		last := cfg.Broker.Listeners[len(cfg.Broker.Listeners)-1].Name
		if last != tc.name || !strings.Contains(string(text), tc.doc) {
			t.Errorf("listener named %q, want %q; configuration.md should say %q", last, tc.name, tc.doc)
		}
	}
}
