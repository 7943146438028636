// Package mosquitto_test runs sluice's MQTT bridges and its MQTT source
// against a real Eclipse Mosquitto (Debian's mosquitto package), the broker
// plants most often already run:
//
//   - mosquitto as an external source, and a $share subscription split
//     between two sluice instances;
//   - bridge out (an mqtt sink in remote mode) to mosquitto, including the
//     link cut (mosquitto stopped) and restored mid-stream;
//   - bridge in (a source with inject) into sluice's embedded broker;
//   - MQTT 3.1.1 and MQTT 5, and passwords (mosquitto_passwd).
//
// Each test starts its own mosquitto on a free port of 127.0.0.1, with its
// configuration and state in the test's temporary folder, and stops it with
// SIGTERM; its log is shown when the test fails. Sluice runs from a YAML
// config, as an operator runs it. Mosquitto is installed by .ci/run; a
// machine without it skips these tests (and CI=true fails them).
//
//	go test ./internal/interop/mosquitto -run Interop -v
package mosquitto_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testsvc"
)

// wait bounds every wait for a condition: generous, the machine is shared.
const wait = 90 * time.Second

// mosquittoPaths are where Debian installs the broker (not always on a
// user's PATH: /usr/sbin) and its password tool.
const (
	debianMosquitto = "/usr/sbin/mosquitto"
	debianPasswd    = "/usr/bin/mosquitto_passwd"
)

// need returns the path of program, looking first at Debian's path. A
// missing program skips the test, or fails it under CI (.ci/run installs
// it).
func need(t *testing.T, debian, program string) string {
	t.Helper()
	if _, err := os.Stat(debian); err == nil {
		return debian
	}
	if p, err := exec.LookPath(program); err == nil {
		return p
	}
	msg := fmt.Sprintf("%s is not installed: apt-get install -y mosquitto (.ci/run installs it)", program)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// mosquittoOptions configure a mosquitto.
type mosquittoOptions struct {
	// Users, when set, are the only username/password pairs let in (a
	// password_file written with mosquitto_passwd); unset, anyone is.
	Users map[string]string
	// Persist keeps sessions and queued messages across a restart
	// (persistence, in the test's folder, saved at SIGTERM).
	Persist bool
}

// Mosquitto is a mosquitto process of the test's own.
type Mosquitto struct {
	t    *testing.T
	bin  string
	conf string
	// Addr is 127.0.0.1:port; URL is mqtt://Addr.
	Addr string
	URL  string
	log  *testsvc.LogBuffer

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	runs   int
}

// startMosquitto writes a mosquitto.conf for a free port and starts
// mosquitto with it; it is stopped (SIGTERM) when the test ends, and its
// log shown if the test failed.
func startMosquitto(t *testing.T, o mosquittoOptions) *Mosquitto {
	t.Helper()
	bin := need(t, debianMosquitto, "mosquitto")
	dir := t.TempDir()
	m := &Mosquitto{t: t, bin: bin, conf: filepath.Join(dir, "mosquitto.conf"), log: &testsvc.LogBuffer{}}
	m.Addr = freeAddr(t)
	m.URL = "mqtt://" + m.Addr
	_, port, _ := net.SplitHostPort(m.Addr)

	var c strings.Builder
	fmt.Fprintf(&c, "listener %s 127.0.0.1\n", port)
	if len(o.Users) > 0 {
		pw := filepath.Join(dir, "passwd")
		passwd := need(t, debianPasswd, "mosquitto_passwd")
		flags := []string{"-b", "-c"} // -c: create the file, for the first user
		for user, password := range o.Users {
			args := append(flags, pw, user, password)
			if out, err := exec.Command(passwd, args...).CombinedOutput(); err != nil {
				t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
			}
			flags = []string{"-b"}
		}
		fmt.Fprintf(&c, "allow_anonymous false\npassword_file %s\n", pw)
	} else {
		c.WriteString("allow_anonymous true\n")
	}
	if o.Persist {
		fmt.Fprintf(&c, "persistence true\npersistence_location %s/\n", dir)
	} else {
		c.WriteString("persistence false\n")
	}
	c.WriteString(`# Queue what a persistent session misses while away, however much.
max_queued_messages 1000000
# mosquitto guarantees in-order delivery only with one message in flight
# per client (mosquitto.conf(5), max_inflight_messages); with its default
# of 20 a QoS 2 stream can reach a subscriber out of order (seen in CI).
# The tests check sluice's order, so they take mosquitto's guarantee.
max_inflight_messages 1
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
log_timestamp_format %H:%M:%S
# Run as root (in CI): keep root, which owns the test's folder, rather
# than switching to the mosquitto user. Ignored when not root.
user root
`)
	if err := os.WriteFile(m.conf, []byte(c.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Stop()
		if t.Failed() {
			t.Logf("mosquitto %s log:\n%s", m.Addr, m.log)
		}
	})
	m.Start()
	return m
}

// freeAddr returns 127.0.0.1:port for a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Start starts mosquitto (again, on the same port and with the same
// state) and waits until it accepts connections.
func (m *Mosquitto) Start() {
	m.t.Helper()
	m.mu.Lock()
	if m.cmd != nil {
		m.mu.Unlock()
		m.t.Fatal("mosquitto is already running")
	}
	m.runs++
	fmt.Fprintf(m.log, "--- start %d ---\n", m.runs)
	cmd := exec.Command(m.bin, "-c", m.conf)
	cmd.Stdout, cmd.Stderr = m.log, m.log
	if err := cmd.Start(); err != nil {
		m.mu.Unlock()
		m.t.Fatalf("start mosquitto: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	m.cmd, m.exited = cmd, exited
	m.mu.Unlock()

	deadline := time.Now().Add(wait)
	for {
		c, err := net.DialTimeout("tcp", m.Addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			m.t.Fatalf("mosquitto exited (%v) before accepting connections on %s:\n%s", cmd.ProcessState, m.Addr, m.log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("mosquitto not accepting on %s within %v: %v\n%s", m.Addr, wait, err, m.log)
		}
	}
}

// Stop sends SIGTERM (mosquitto disconnects its clients and, with
// persistence, saves its state) and waits for it to exit. It does nothing
// when mosquitto is not running.
func (m *Mosquitto) Stop() {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		m.t.Errorf("SIGTERM to mosquitto: %v", err)
	}
	select {
	case <-exited:
	case <-time.After(wait):
		m.t.Errorf("mosquitto still running %v after SIGTERM; killed", wait)
		cmd.Process.Kill()
		<-exited
	}
}

// Log is what mosquitto has logged so far.
func (m *Mosquitto) Log() string { return m.log.String() }
