// Package interop_test runs the MQTT clients users bring against a real
// sluice: Eclipse Paho for Python, MQTT.js, Eclipse Paho for C, and the
// mosquitto command-line clients. Each connects with a username and
// password, over TCP and over TLS, with MQTT 3.1.1 and MQTT 5; subscribes to
// an alert topic; publishes a reading at QoS 0, 1 and 2 into a pipeline
// whose rule raises an alert for each; and must receive the three alerts,
// published back by the pipeline's MQTT alert sink.
//
// The clients are installed by .ci/run (Debian's python3-paho-mqtt,
// libpaho-mqtt-dev and mosquitto-clients; MQTT.js with npm ci in
// testdata/node). A missing one skips its test, or fails it when CI=true.
//
//	go test ./internal/interop -run Interop -v
package interop_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ingest/auth"
	"github.com/sluicehq/sluice/internal/secret/secrettest"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

const (
	user     = "interop-device"
	password = "interop-Pa55-word"
)

// The rule raises an alert for every hot reading; each client publishes
// one at each QoS, each on a topic of its own (the series), so each publish
// is one alert.
const rulesYAML = `
rules:
  - name: hot
    match: plant/+run/+device/telemetry
    key: topic
    alert:
      when: temperature > 90
      severity: critical
      message: "{{ device }} at {{ temperature }} °C"
`

const configYAML = `
data_dir: %[1]s
broker:
  listeners:
    - name: tcp
      address: 127.0.0.1:0
    - name: tls
      type: tls
      address: 127.0.0.1:0
      tls: {cert_file: %[2]q, key_file: %[3]q}
  auth:
    password_file: %[4]q
pipelines:
  - name: telemetry
    topics: ["plant/#"]
    rules: [rules.yaml]
    sinks: [alert-topic]
sinks:
  - name: alert-topic
    stream: alerts
    mqtt:
      topic: "alerts/{run}/{device}/{rule}"
      qos: 1
`

// sluice is a running sluice service: broker, pipeline, alert sink.
type sluice struct {
	tcp, tls string // listener addresses
	caFile   string // the CA that signed the TLS listener's certificate
}

func startSluice(t *testing.T) *sluice {
	t.Helper()
	dir := t.TempDir()
	ca := secrettest.NewCA(t, "interop-ca")
	server := ca.Server(t, "127.0.0.1", "localhost")
	pwFile := filepath.Join(dir, "passwd")
	if err := auth.SetPassword(pwFile, user, []byte(password), 4); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "rules.yaml"), rulesYAML)
	cfgPath := filepath.Join(dir, "sluice.yaml")
	write(t, cfgPath, fmt.Sprintf(configYAML, filepath.Join(dir, "data"), server.CertFile, server.KeyFile, pwFile))
	cfg, err := pipelines.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := pipelines.New(cfg, pipelines.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close(context.Background()) })
	return &sluice{tcp: svc.Broker().Addr("tcp"), tls: svc.Broker().Addr("tls"), caFile: ca.CertFile}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// need returns the path of each program, or skips the test when one is
// missing (fails it under CI, where .ci/run installs them all).
func need(t *testing.T, install string, programs ...string) []string {
	t.Helper()
	var paths []string
	for _, p := range programs {
		path, err := exec.LookPath(p)
		if err != nil {
			missing(t, fmt.Sprintf("%s is not installed (%s)", p, install))
		}
		paths = append(paths, path)
	}
	return paths
}

func missing(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s; .ci/run installs it", why)
	}
	t.Skipf("%s; skipped (under CI=true this fails)", why)
}

// aCase is one client run: a protocol version over a transport.
type aCase struct {
	version   string // "3" (MQTT 3.1.1) or "5"
	transport string // "tcp" or "tls"
}

var cases = []aCase{{"3", "tcp"}, {"5", "tcp"}, {"3", "tls"}, {"5", "tls"}}

func (c aCase) name() string {
	v := "MQTT3.1.1"
	if c.version == "5" {
		v = "MQTT5"
	}
	return v + "/" + c.transport
}

// args are the scripts' arguments: HOST PORT VERSION USER PASSWORD CAFILE
// RUN, RUN naming this run's topics.
func (s *sluice) args(c aCase, run string) []string {
	addr, ca := s.tcp, ""
	if c.transport == "tls" {
		addr, ca = s.tls, s.caFile
	}
	i := strings.LastIndexByte(addr, ':')
	return []string{addr[:i], addr[i+1:], c.version, user, password, ca, run}
}

// runID is a topic level naming a client run.
func runID(tool string, c aCase) string {
	return fmt.Sprintf("%s-v%s-%s", tool, c.version, c.transport)
}

// runClient runs a client script to completion (bounded) and returns its
// standard output.
func runClient(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(name), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// checkAlerts checks that a client received the three alerts its publishes
// raised, one per QoS, each a firing alert of the rule.
func checkAlerts(t *testing.T, out, run string) {
	t.Helper()
	var topics []string
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(line, "ALERT ")
		if !ok {
			continue
		}
		topic, payload, _ := strings.Cut(rest, " ")
		if !strings.Contains(payload, `"status":"firing"`) || !strings.Contains(payload, `"rule":"hot"`) {
			t.Errorf("alert on %s: %s", topic, payload)
		}
		topics = append(topics, topic)
	}
	slices.Sort(topics)
	want := []string{"alerts/" + run + "/q0/hot", "alerts/" + run + "/q1/hot", "alerts/" + run + "/q2/hot"}
	if !slices.Equal(topics, want) {
		t.Errorf("the client received alerts %q, want %q\noutput:\n%s", topics, want, out)
	}
}

func TestInteropPahoPython(t *testing.T) {
	python := "/usr/bin/python3" // Debian's, with python3-paho-mqtt (not a pyenv one)
	if _, err := os.Stat(python); err != nil {
		missing(t, "/usr/bin/python3 is not installed (apt-get install python3-paho-mqtt)")
	}
	if err := exec.Command(python, "-c", "import paho.mqtt.client").Run(); err != nil {
		missing(t, "Paho Python is not installed (apt-get install python3-paho-mqtt)")
	}
	s := startSluice(t)
	script, _ := filepath.Abs("testdata/paho_client.py")
	for _, c := range cases {
		t.Run(c.name(), func(t *testing.T) {
			run := runID("pahopy", c)
			checkAlerts(t, runClient(t, "", python, append([]string{script}, s.args(c, run)...)...), run)
		})
	}
}

func TestInteropMQTTJS(t *testing.T) {
	paths := need(t, "Node.js and npm", "node", "npm")
	node, npm := paths[0], paths[1]
	dir, _ := filepath.Abs("testdata/node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "mqtt")); err != nil {
		// The versions are pinned by package-lock.json.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			missing(t, fmt.Sprintf("MQTT.js could not be installed (npm ci in %s: %v)\n%s", dir, err, out))
		}
	}
	s := startSluice(t)
	for _, c := range cases {
		t.Run(c.name(), func(t *testing.T) {
			run := runID("mqttjs", c)
			checkAlerts(t, runClient(t, dir, node, append([]string{"client.mjs"}, s.args(c, run)...)...), run)
		})
	}
}

func TestInteropPahoC(t *testing.T) {
	cc := need(t, "apt-get install gcc", "gcc")[0]
	bin := filepath.Join(t.TempDir(), "paho_client")
	src, _ := filepath.Abs("testdata/paho_client.c")
	if out, err := exec.Command(cc, "-Wall", "-o", bin, src, "-lpaho-mqtt3cs").CombinedOutput(); err != nil {
		missing(t, fmt.Sprintf("the Paho C client does not build (apt-get install libpaho-mqtt-dev): %v\n%s", err, out))
	}
	s := startSluice(t)
	for _, c := range cases {
		t.Run(c.name(), func(t *testing.T) {
			run := runID("pahoc", c)
			checkAlerts(t, runClient(t, "", bin, s.args(c, run)...), run)
		})
	}
}

func TestInteropMosquitto(t *testing.T) {
	paths := need(t, "apt-get install mosquitto-clients", "mosquitto_sub", "mosquitto_pub")
	sub, pub := paths[0], paths[1]
	stdbuf := need(t, "coreutils", "stdbuf")[0]
	s := startSluice(t)
	for _, c := range cases {
		t.Run(c.name(), func(t *testing.T) {
			run := runID("mosquitto", c)
			a := s.args(c, run)
			common := []string{"-h", a[0], "-p", a[1], "-V", map[string]string{"3": "mqttv311", "5": "mqttv5"}[c.version],
				"-u", user, "-P", password}
			if a[5] != "" {
				common = append(common, "--cafile", a[5])
			}
			// mosquitto_sub -d reports its SUBACK; the publishes wait for it.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			// stdbuf: line-buffered, as on a terminal, so the SUBACK line
			// shows when it happens.
			cmd := exec.CommandContext(ctx, stdbuf, append([]string{"-oL", sub}, append(common, "-i", "mosquitto-sub-"+run,
				"-t", "alerts/"+run+"/#", "-q", "1", "-C", "3", "-W", "60", "-v", "-d")...)...)
			out := &testsvc.LogBuffer{}
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = out, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			deadline := time.After(60 * time.Second)
			for !strings.Contains(out.String(), "received SUBACK") {
				select {
				case err := <-done:
					t.Fatalf("mosquitto_sub ended before subscribing: %v\n%s\n%s", err, out.String(), stderr.String())
				case <-deadline:
					t.Fatalf("mosquitto_sub did not subscribe within 60s\n%s\n%s", out.String(), stderr.String())
				case <-time.After(20 * time.Millisecond):
				}
			}
			for qos := range 3 {
				args := append(slices.Clone(common), "-i", fmt.Sprintf("mosquitto-pub-%s-%d", run, qos),
					"-t", fmt.Sprintf("plant/%s/q%d/telemetry", run, qos), "-q", fmt.Sprint(qos), "-m", `{"temperature": 95}`)
				runClient(t, "", pub, args...)
			}
			if err := <-done; err != nil {
				t.Fatalf("mosquitto_sub: %v\n%s\n%s", err, out.String(), stderr.String())
			}
			// -v prints "topic payload"; -d adds lines of its own.
			var alerts strings.Builder
			for _, line := range strings.Split(out.String(), "\n") {
				if strings.HasPrefix(line, "alerts/") {
					alerts.WriteString("ALERT " + line + "\n")
				}
			}
			checkAlerts(t, alerts.String(), run)
		})
	}
}
