package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testsvc"
)

// processEnv marks the test binary run as sluice itself (see
// TestSluiceProcess).
const processEnv = "SLUICE_TEST_PROCESS"

// TestSluiceProcess is not a test: it is the sluice command, when a test
// runs this test binary as a child process (startSluice) to send it
// signals and read its exit code. It runs main, as the sluice binary does.
func TestSluiceProcess(t *testing.T) {
	if os.Getenv(processEnv) == "" {
		t.Skip("the sluice command, for tests that run it as a process")
	}
	for i, a := range os.Args {
		if a == "--" {
			os.Args = append([]string{"sluice"}, os.Args[i+1:]...)
			main()
		}
	}
	t.Fatal("no -- before sluice's arguments")
}

// sluiceProcess is `sluice run` as a child process.
type sluiceProcess struct {
	cmd  *exec.Cmd
	log  testsvc.LogBuffer
	done chan struct{}
	code int
}

// startSluice starts `sluice run -c path` as a process; it is killed when
// the test ends, if it is still running.
func startSluice(t *testing.T, path string) *sluiceProcess {
	t.Helper()
	p := &sluiceProcess{done: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], "-test.run=^TestSluiceProcess$", "--", "run", "-c", path)
	p.cmd.Env = append(os.Environ(), processEnv+"=1")
	out, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.log.Write([]byte(sc.Text() + "\n"))
		}
		p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitLog waits for a log line matching re and returns its first group.
func (p *sluiceProcess) waitLog(t *testing.T, re *regexp.Regexp, deadline time.Duration) string {
	t.Helper()
	end := time.After(deadline)
	for {
		if m := re.FindStringSubmatch(p.log.String()); m != nil {
			return m[1]
		}
		select {
		case <-p.done:
			t.Fatalf("sluice exited (code %d) before logging %q:\n%s", p.code, re, p.log.String())
		case <-end:
			t.Fatalf("sluice did not log %q within %v:\n%s", re, deadline, p.log.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// signal sends sig and waits for the process to exit, failing the test if
// it does not within deadline; it returns the exit code.
func (p *sluiceProcess) stop(t *testing.T, sig syscall.Signal, deadline time.Duration) int {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		return p.code
	case <-time.After(deadline):
		t.Fatalf("sluice did not exit within %v of %v:\n%s", deadline, sig, p.log.String())
	}
	return 0
}

// TestSilentSinksDoNotHoldUpStartOrStop runs `sluice run` with every kind
// of network sink pointed at an address that accepts TCP connections and
// never answers (Kafka brokers, InfluxDB, a remote MQTT broker): sluice
// starts anyway, takes publishes into its journal, and stops on SIGTERM.
// Before, the Kafka sink's connect check waited for ever for the broker's
// ApiVersions answer, so sluice never listened and ignored SIGTERM. When a
// real Kafka takes over the silent address, the backlog is written.
func TestSilentSinksDoNotHoldUpStartOrStop(t *testing.T) {
	kafka, influx, cloud := testsvc.Silent(t), testsvc.Silent(t), testsvc.Silent(t)
	dir := t.TempDir()
	writeFile(t, dir, "rules.yaml", "rules:\n  - name: telemetry\n    match: plant/+site/+line/+device/telemetry\n")
	path := writeFile(t, dir, "sluice.yaml", fmt.Sprintf(`log: {level: info}
watch_rules: false
data_dir: %s
shutdown_timeout: 3s
admin: {address: "127.0.0.1:0", sink_down_after: 10m}
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines:
  - name: p
    topics: ["plant/#"]
    rules: [rules.yaml]
    sinks: [kafka, influx, cloud]
sinks:
  - name: kafka
    retry: {initial: 50ms, max: 500ms}
    kafka: {brokers: [%q], topic: t, timeout: 2s}
  - name: influx
    influxdb: {url: "http://%s", bucket: db/autogen, timeout: 2s}
  - name: cloud
    mqtt: {remote: {url: "mqtt://%s", connect_timeout: 2s}}
`, filepath.Join(dir, "data"), kafka.Addr, influx.Addr, cloud.Addr))

	proc := startSluice(t, path)
	addr := proc.waitLog(t, regexp.MustCompile(`listening for MQTT.* address=(\S+)`), 60*time.Second)
	admin := proc.waitLog(t, regexp.MustCompile(`admin listener.* address=(\S+)`), 60*time.Second)
	waitReady(t, "http://"+admin+"/readyz", 60*time.Second)

	const n = 20
	pub := testsvc.MQTT(t, addr, "pub")
	for i := range n {
		if rc := pub.Publish(t, fmt.Sprintf("plant/north/l1/d%d/telemetry", i%4), 1, fmt.Appendf(nil, `{"seq":%d}`, i)); rc != 0 {
			t.Fatalf("publish %d: reason %#x", i, rc)
		}
	}
	// Each sink gives up its first connection attempt, and the Kafka sink
	// tries to write to the silent broker.
	for _, name := range []string{"kafka", "influx", "cloud"} {
		proc.waitLog(t, regexp.MustCompile(`(sink not reachable yet).* sink=`+name), 60*time.Second)
	}
	proc.waitLog(t, regexp.MustCompile(`(sink write failed; retrying).* sink=kafka`), 60*time.Second)

	// A real Kafka takes over the silent address: the backlog drains.
	kafka.Close()
	real := testsvc.KafkaOn(t, kafka.Port(), "t")
	if got := testsvc.ReadKafka(t, real.Addrs(), "t", n, 90*time.Second); len(got) != n {
		t.Fatalf("kafka has %d records, want %d", len(got), n)
	}

	// InfluxDB and the remote broker are still silent: a stop keeps their
	// backlog in the journal and does not wait for them beyond the
	// shutdown timeout.
	if code := proc.stop(t, syscall.SIGTERM, 90*time.Second); code != exitOK {
		t.Fatalf("exit code %d:\n%s", code, proc.log.String())
	}
}

// waitReady polls url until it answers 200.
func waitReady(t *testing.T, url string, deadline time.Duration) {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(end) {
			t.Fatalf("%s did not answer 200 within %v (last: %v %v)", url, deadline, resp, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
