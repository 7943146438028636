// Package influxd starts and stops a real InfluxDB 1.8 server (influxd) for
// tests and the demo: on a free loopback port, with a data folder of its own
// and Flux enabled, so both the v2 write/query API and InfluxQL work.
//
// The binary is built by `make tools` into .tools/bin (git-ignored); see
// Binary for how it is found.
package influxd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/internal/childproc"
)

// Server is a running influxd.
type Server struct {
	// URL is the HTTP API, e.g. http://127.0.0.1:39211.
	URL string
	// Dir holds the config, data and log.
	Dir string

	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error
	mu      sync.Mutex
	logTail []string
	stopped bool
}

// Options for Start.
type Options struct {
	// Binary is the influxd executable; default Binary().
	Binary string
	// Dir is where data and logs go; it is created. Required.
	Dir string
	// Addr is host:port for the HTTP API; default 127.0.0.1:0 (a free port).
	Addr string
	// Log receives influxd's log lines (default: kept only for errors).
	Log io.Writer
	// UnlimitedTags lifts influxd's bounds on the values of one tag
	// (100,000) and the series of a database (1,000,000), for a fleet of
	// more devices than that (sluice bench -scale -series).
	UnlimitedTags bool
}

// Binary finds influxd: $SLUICE_INFLUXD, else .tools/bin/influxd in the
// module root (found by walking up from the working directory), else PATH.
func Binary() (string, error) {
	if p := os.Getenv("SLUICE_INFLUXD"); p != "" {
		return p, nil
	}
	if dir, err := os.Getwd(); err == nil {
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				p := filepath.Join(dir, ".tools", "bin", "influxd")
				if _, err := os.Stat(p); err == nil {
					return p, nil
				}
				break
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	if p, err := exec.LookPath("influxd"); err == nil {
		return p, nil
	}
	return "", errors.New("influxd not found: run `make tools` to build it into .tools/bin, or set SLUICE_INFLUXD")
}

const configTemplate = `reporting-disabled = true
bind-address = "127.0.0.1:0"
[meta]
  dir = %[1]q
[data]
  dir = %[2]q
  wal-dir = %[3]q
  query-log-enabled = false
[http]
  enabled = true
  bind-address = %[4]q
  flux-enabled = true
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[logging]
  level = "info"
`

var listening = regexp.MustCompile(`msg="Listening on HTTP".* addr=([^ ]+)`)

// Start starts influxd and waits until it answers /ping.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Binary == "" {
		b, err := Binary()
		if err != nil {
			return nil, err
		}
		opts.Binary = b
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(opts.Dir, "influxdb.conf")
	text := fmt.Sprintf(configTemplate, filepath.Join(opts.Dir, "meta"), filepath.Join(opts.Dir, "data"),
		filepath.Join(opts.Dir, "wal"), opts.Addr)
	if opts.UnlimitedTags {
		text = strings.Replace(text, "  query-log-enabled = false\n",
			"  query-log-enabled = false\n  max-values-per-tag = 0\n  max-series-per-database = 0\n", 1)
	}
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		return nil, err
	}
	s := &Server{Dir: opts.Dir, exited: make(chan struct{})}
	s.cmd = exec.Command(opts.Binary, "run", "-config", cfg)
	s.cmd.Env = append(os.Environ(), "INFLUXDB_DATA_QUERY_LOG_ENABLED=false")
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	s.cmd.Stderr = s.cmd.Stdout
	// Its own process group, so a Ctrl-C in the terminal reaches sluice,
	// which then stops influxd in order; and SIGTERM (a clean stop) if
	// sluice dies first, however it dies.
	exited, err := childproc.Start(s.cmd, syscall.SIGTERM)
	if err != nil {
		return nil, fmt.Errorf("start influxd: %w", err)
	}
	addr := make(chan string, 1)
	go s.readLog(out, opts.Log, addr)
	go func() {
		s.exitErr = <-exited
		close(s.exited)
	}()

	deadline := time.NewTimer(90 * time.Second)
	defer deadline.Stop()
	select {
	case a := <-addr:
		s.URL = "http://" + a
	case <-s.exited:
		return nil, fmt.Errorf("influxd exited before listening: %v\n%s", s.exitErr, s.tail())
	case <-deadline.C:
		s.Stop()
		return nil, fmt.Errorf("influxd did not listen within 90s\n%s", s.tail())
	case <-ctx.Done():
		s.Stop()
		return nil, ctx.Err()
	}
	for {
		resp, err := http.Get(s.URL + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return s, nil
			}
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("influxd exited: %v\n%s", s.exitErr, s.tail())
		case <-deadline.C:
			s.Stop()
			return nil, fmt.Errorf("influxd did not answer /ping within 90s\n%s", s.tail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Server) readLog(r io.Reader, w io.Writer, addr chan<- string) {
	sc := bufio.NewScanner(r)
	sent := false
	for sc.Scan() {
		line := sc.Text()
		if w != nil {
			fmt.Fprintln(w, line)
		}
		s.mu.Lock()
		s.logTail = append(s.logTail, line)
		if len(s.logTail) > 40 {
			s.logTail = s.logTail[1:]
		}
		s.mu.Unlock()
		if !sent {
			if m := listening.FindStringSubmatch(line); m != nil {
				addr <- m[1]
				sent = true
			}
		}
	}
}

func (s *Server) tail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.logTail, "\n")
}

// PID is influxd's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Stop stops influxd (SIGTERM, then SIGKILL after 10s) and waits for it.
func (s *Server) Stop() error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		<-s.exited
		return nil
	}
	s.stopped = true
	s.mu.Unlock()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	return nil
}

// Query runs an InfluxQL statement and returns the raw JSON response.
func (s *Server) Query(db, q string) ([]byte, error) {
	v := url.Values{"q": {q}}
	if db != "" {
		v.Set("db", db)
	}
	resp, err := http.PostForm(s.URL+"/query", v)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("influxql %q: %s: %s", q, resp.Status, body)
	}
	if strings.Contains(string(body), `"error"`) {
		return body, fmt.Errorf("influxql %q: %s", q, body)
	}
	return body, nil
}

// CreateDatabase creates a database (InfluxQL CREATE DATABASE).
func (s *Server) CreateDatabase(name string) error {
	_, err := s.Query("", fmt.Sprintf("CREATE DATABASE %q", name))
	return err
}
