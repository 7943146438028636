package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/influxd"
	"github.com/sluicehq/sluice/internal/testsvc"
)

// demoArgs runs the demo on free ports, in a temporary folder, with a small
// fleet.
func demoArgs(t *testing.T) []string {
	t.Helper()
	bin, err := influxd.Binary()
	if err != nil {
		t.Fatal(err)
	}
	return []string{"demo", "-influxd", bin, "-data", t.TempDir(), "-devices", "2",
		"-mqtt", "127.0.0.1:0", "-influx", "127.0.0.1:0", "-kafka", "0", "-admin", "127.0.0.1:0"}
}

var influxdPID = regexp.MustCompile(`influxd is process (\d+)`)

// alive reports whether process pid is running (a zombie is not: nothing
// reaps orphans in some containers).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// waitGone waits for process pid to end, and kills it (so that no test
// leaves it behind) if it does not.
func waitGone(t *testing.T, pid int, why string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("influxd (process %d) outlived the demo: %s", pid, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFileMatch waits for re in the file at path and returns its first
// group.
func waitFileMatch(t *testing.T, path string, re *regexp.Regexp, done <-chan struct{}) string {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		b, _ := os.ReadFile(path)
		if m := re.FindSubmatch(b); m != nil {
			return string(m[1])
		}
		select {
		case <-done:
			t.Fatalf("the demo ended before %q:\n%s", re, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q within 3 minutes:\n%s", re, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDemoChildrenEndWithIt runs `sluice demo 2>&1 | tee demo.log` in a
// process group of its own, as a shell runs it in a terminal, and presses
// Ctrl-C (SIGINT to the group: tee goes at once). The demo must still stop
// influxd: it died of SIGPIPE writing "Stopping ..." to the closed pipe, and
// influxd, in its own process group, kept running, holding its port. Then
// the same with SIGKILL to the demo alone: influxd goes with it.
func TestDemoChildrenEndWithIt(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo with influxd")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	demo := self + " -test.run=^TestSluiceProcess$ -- " + strings.Join(demoArgs(t), " ")

	t.Run("make demo | tee, Ctrl-C", func(t *testing.T) {
		logPath := filepath.Join(t.TempDir(), "demo.log")
		sh := exec.Command("sh", "-c", demo+" 2>&1 | tee "+logPath+" >/dev/null")
		sh.Env = append(os.Environ(), processEnv+"=1")
		sh.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := sh.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { sh.Wait(); close(done) }()
		defer func() { syscall.Kill(-sh.Process.Pid, syscall.SIGKILL); <-done }()
		pid, _ := strconv.Atoi(waitFileMatch(t, logPath, influxdPID, done))
		waitFileMatch(t, logPath, regexp.MustCompile(`(in +\d+ msg/s)`), done)
		syscall.Kill(-sh.Process.Pid, syscall.SIGINT) // Ctrl-C: the whole foreground group
		waitGone(t, pid, "Ctrl-C on `sluice demo 2>&1 | tee`")
	})

	t.Run("SIGKILL", func(t *testing.T) {
		var out testsvc.LogBuffer
		cmd := exec.Command(self, append([]string{"-test.run=^TestSluiceProcess$", "--"}, demoArgs(t)...)...)
		cmd.Env = append(os.Environ(), processEnv+"=1")
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		defer func() { cmd.Process.Kill(); <-done }()
		var pid int
		deadline := time.Now().Add(3 * time.Minute)
		for pid == 0 {
			if m := influxdPID.FindStringSubmatch(out.String()); m != nil {
				pid, _ = strconv.Atoi(m[1])
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no influxd:\n%s", out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		cmd.Process.Kill()
		<-done
		waitGone(t, pid, "SIGKILL of the demo")
	})
}

// TestSecondSignalStopsAProcess sends a running `sluice run` SIGINT and,
// while it waits for a sink that is down, SIGTERM: it stops at once with
// exit code 0 (the signals as a terminal or systemd sends them).
func TestSecondSignalStopsAProcess(t *testing.T) {
	kafka := testsvc.Kafka(t, "records")
	kafka.Cut()
	dir := t.TempDir()
	writeFile(t, dir, "rules.yaml", "rules:\n  - name: r\n    fields: {v: v}\n")
	path := writeFile(t, dir, "sluice.yaml", `log: {level: info}
shutdown_timeout: 10m
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines:
  - {name: p, topics: ["#"], rules: [rules.yaml], sinks: [events]}
sinks:
  - name: events
    kafka: {brokers: ["`+kafka.Addrs()[0]+`"], topic: records, timeout: 1s}
`)
	p := startSluice(t, path)
	addr := p.waitLog(t, regexp.MustCompile(`listening for MQTT" listener=tcp address=(\S+)`), time.Minute)
	pub := testsvc.MQTT(t, addr, "pub")
	if rc := pub.Publish(t, "s/a", 1, []byte(`{"v": 1}`)); rc != 0 {
		t.Fatalf("publish: reason %#x", rc)
	}
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, regexp.MustCompile(`(shutdown: waiting for sink events)`), time.Minute)
	if code := p.stop(t, syscall.SIGTERM, time.Minute); code != exitOK {
		t.Errorf("exit %d after a second signal\n%s", code, p.log.String())
	}
}
