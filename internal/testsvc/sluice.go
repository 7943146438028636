package testsvc

import (
	"bufio"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BuildSluice builds the sluice command (cmd/sluice, from pkgDir: the
// test's path to it, such as "../../cmd/sluice") into dir, for tests that
// run it as a process, and returns the binary's path.
func BuildSluice(dir, pkgDir string) (string, error) {
	bin := filepath.Join(dir, "sluice")
	out, err := exec.Command("go", "build", "-o", bin, pkgDir).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build sluice: %v\n%s", err, out)
	}
	return bin, nil
}

// Sluice is `sluice run` as a child process, with its MQTT address read
// from its log.
type Sluice struct {
	Cmd  *exec.Cmd
	Addr string // the first listener's host:port

	mu   sync.Mutex
	log  strings.Builder
	done chan struct{}
}

var listening = regexp.MustCompile(`listening for MQTT.* address=(\S+)`)

// StartSluice runs bin with the config file config, in config's folder,
// and waits until it listens for MQTT (60s at most). It is killed when the
// test ends, if it still runs.
func StartSluice(t testing.TB, bin, config string) *Sluice {
	t.Helper()
	p := &Sluice{done: make(chan struct{})}
	p.Cmd = exec.Command(bin, "run", "-c", config)
	p.Cmd.Dir = filepath.Dir(config)
	out, err := p.Cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.Cmd.Stdout = p.Cmd.Stderr
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		p.Cmd.Wait()
	}()
	select {
	case p.Addr = <-addr:
	case <-p.done:
		t.Fatalf("sluice exited:\n%s", p.Logs())
	case <-time.After(60 * time.Second):
		t.Fatalf("sluice did not start:\n%s", p.Logs())
	}
	t.Cleanup(func() { p.Stop(syscall.SIGKILL) })
	return p
}

// Logs returns what the process has logged so far.
func (p *Sluice) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// Running reports whether the process still runs.
func (p *Sluice) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop sends sig (unless the process ended) and waits for it to end.
func (p *Sluice) Stop(sig syscall.Signal) {
	if p.Running() {
		p.Cmd.Process.Signal(sig)
	}
	<-p.done
}

// ExitCode is the process's exit code, once it ended.
func (p *Sluice) ExitCode() int {
	<-p.done
	return p.Cmd.ProcessState.ExitCode()
}
