package main

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/sluicehq/sluice/ingest/auth"
	"github.com/sluicehq/sluice/internal/testsvc"
)

func TestPasswdCommand(t *testing.T) {
	file := filepath.Join(t.TempDir(), "passwd")
	passwd := func(input string, args ...string) (int, string, string) {
		stdin = strings.NewReader(input)
		t.Cleanup(func() { stdin = nil })
		return runMain(append([]string{"passwd"}, args...)...)
	}
	if code, out, errs := passwd("s3cret-one\n", "-cost", "4", file, "device-1"); code != exitOK {
		t.Fatalf("exit %d: %s%s", code, out, errs)
	}
	if code, _, errs := passwd("s3cret-two\r\n", "-cost", "4", file, "device-2"); code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	p, err := auth.LoadPasswords(file)
	if err != nil {
		t.Fatal(err)
	}
	v := auth.NewVerifier(p)
	if !v.Verify("device-1", []byte("s3cret-one")) || !v.Verify("device-2", []byte("s3cret-two")) {
		t.Error("the passwords set do not verify")
	}

	if code, _, _ := passwd("", "-D", file, "device-1"); code != exitOK {
		t.Errorf("delete: exit %d", code)
	}
	if p, _ := auth.LoadPasswords(file); p.Has("device-1") || !p.Has("device-2") {
		t.Error("delete removed the wrong user")
	}

	cases := []struct {
		name, input string
		args        []string
		code        int
		msg         string
	}{
		{"no password on stdin", "", []string{file, "x"}, exitUsage, "no password on stdin"},
		{"a bad user name", "pw\n", []string{file, "a:b"}, exitUsage, "colon"},
		// Names the file cannot hold, or no client can send: a user who
		// could never log in.
		{"a name the file reads as a comment", "pw\n", []string{file, "#"}, exitUsage, "starts with #"},
		{"another", "pw\n", []string{file, "#device-3"}, exitUsage, "comment"},
		{"a NUL", "pw\n", []string{file, "a\x00b"}, exitUsage, "NUL"},
		{"not UTF-8", "pw\n", []string{file, "dev\xff"}, exitUsage, "not UTF-8"},
		{"white space around", "pw\n", []string{file, " device-4"}, exitUsage, "white space"},
		{"a missing user to delete", "", []string{"-D", file, "nobody"}, exitFailure, `no user "nobody"`},
		{"missing arguments", "", []string{file}, exitUsage, "Usage: sluice passwd"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, errs := passwd(c.input, c.args...)
			if code != c.code || !strings.Contains(errs, c.msg) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errs, c.code, c.msg)
			}
		})
	}
	// Only device-2 is in the file, and it still loads.
	p, err = auth.LoadPasswords(file)
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != 1 || !p.Has("device-2") {
		t.Errorf("the file after the refusals has %d users, want device-2 only", p.Len())
	}
}

// TestRunNeverLogsSecrets runs sluice at debug level with every kind of
// secret configured and used, rightly and wrongly: device passwords (good
// and bad), a Kafka SASL password the brokers do not take, an InfluxDB
// token the server refuses. Then it reads every line sluice logged.
func TestRunNeverLogsSecrets(t *testing.T) {
	const (
		devicePassword = "dev1ce-PASSWORD-7731"
		wrongPassword  = "wr0ng-PASSWORD-1189"
		kafkaPassword  = "kafka-SASL-PASSWORD-5521"
		influxToken    = "influx-TOKEN-8843"
	)
	dir := t.TempDir()
	kafka := testsvc.Kafka(t, "records")
	t.Setenv("INFLUXDB_HTTP_AUTH_ENABLED", "true") // influxd then refuses the token
	influx := testsvc.Influxd(t)
	t.Setenv("SLUICE_TEST_KAFKA_PASSWORD", kafkaPassword)
	writeFile(t, dir, "influx-token", influxToken+"\n")
	pwFile := filepath.Join(dir, "passwd")
	if err := auth.SetPassword(pwFile, "device-1", []byte(devicePassword), 4); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "rules.yaml", "rules:\n  - name: r\n    fields: {v: v}\n")
	path := writeFile(t, dir, "sluice.yaml", `log: {level: debug}
data_dir: `+filepath.Join(dir, "data")+`
shutdown_timeout: 1s
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0"}]
  auth: {password_file: passwd}
pipelines:
  - name: p
    topics: ["devices/#"]
    rules: [rules.yaml]
    sinks: [kafka, influx]
sinks:
  - name: kafka
    retry: {initial: 50ms, max: 200ms}
    kafka:
      brokers: [`+kafka.Addrs()[0]+`]
      topic: records
      timeout: 2s
      sasl: {mechanism: SCRAM-SHA-512, username: sluice, password: {env: SLUICE_TEST_KAFKA_PASSWORD}}
  - name: influx
    retry: {initial: 50ms, max: 200ms}
    influxdb:
      url: `+influx.URL+`
      bucket: db/autogen
      token: {file: influx-token}
`)
	// The token file is relative to the working directory.
	t.Chdir(dir)

	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr testsvc.LogBuffer
	exited := make(chan int)
	go func() { exited <- Main(ctx, []string{"run", "-c", path}, &stdout, &stderr) }()
	addr := waitForListener(t, &stderr)

	dev, ca, err := testsvc.Connect(testsvc.MQTTOptions{Addr: addr, ClientID: "dev-1", Username: "device-1", Password: devicePassword})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("device login: %v", err)
	}
	defer dev.Disconnect(&paho.Disconnect{})
	if code := dev.Publish(t, "devices/1", 1, []byte(`{"v": 1}`)); code != 0 {
		t.Fatalf("publish: %#x", code)
	}
	if _, ca, _ := testsvc.Connect(testsvc.MQTTOptions{Addr: addr, ClientID: "dev-x", Username: "device-1", Password: wrongPassword}); ca == nil || ca.ReasonCode != 0x86 {
		t.Errorf("a wrong password: CONNACK %v, want 0x86", ca)
	}

	// Both sinks fail, and say so.
	deadline := time.Now().Add(60 * time.Second)
	for !(strings.Contains(stderr.String(), "sink=kafka") && strings.Contains(stderr.String(), "sink=influx") &&
		strings.Contains(stderr.String(), "connection refused")) {
		if time.Now().After(deadline) {
			t.Fatalf("the sink failures were not logged:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case <-exited:
	case <-time.After(90 * time.Second):
		t.Fatal("sluice did not stop")
	}

	logs := stderr.String() + stdout.String()
	lines := strings.Count(logs, "\n")
	for name, secret := range map[string]string{
		"device password": devicePassword, "wrong device password": wrongPassword,
		"Kafka SASL password": kafkaPassword, "InfluxDB token": influxToken,
	} {
		for _, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, secret) {
				t.Errorf("the %s is in the log: %s", name, line)
			}
		}
	}
	t.Logf("read %d log lines", lines)
}

func waitForListener(t *testing.T, stderr *testsvc.LogBuffer) string {
	t.Helper()
	addrRE := regexp.MustCompile(`listening for MQTT" listener=tcp address=(\S+)`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := addrRE.FindStringSubmatch(stderr.String()); m != nil {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("sluice did not start:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
