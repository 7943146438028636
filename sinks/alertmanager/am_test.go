package alertmanager_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testsvc"
)

const wait = 60 * time.Second // generous: the machine is shared

// need returns the path of one of Debian's prometheus-alertmanager
// programs. A missing program skips the test, or fails it under CI (.ci/run
// installs the package).
func need(t *testing.T, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("%s is not installed: apt-get install -y prometheus-alertmanager (.ci/run installs it)", names[0])
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// amOptions say how an Alertmanager is started.
type amOptions struct {
	// Config is alertmanager.yml; default: one receiver that does nothing.
	Config string
	// WebConfig, when set, is its --web.config.file (TLS, basic auth).
	WebConfig string
	// Addr is where it listens (host:port); default a free port on
	// 127.0.0.1.
	Addr string
	// TLS is the client configuration to reach it over https.
	TLS *tls.Config
	// User and Password are what the test's own requests send, when its
	// web config asks for basic authentication.
	User, Password string
}

// Alertmanager is a real Alertmanager process of the test's own.
type Alertmanager struct {
	t *testing.T
	// Addr is 127.0.0.1:port; URL is its http(s):// address.
	Addr   string
	URL    string
	client *http.Client
	user   string
	pass   string
	log    *testsvc.LogBuffer
	cmd    *exec.Cmd
	exited chan struct{}
}

var listening = regexp.MustCompile(`msg="Listening on" address=(\S+)`)

// startAlertmanager starts Debian's prometheus-alertmanager (0.25) with a
// temporary configuration and storage, its clustering off, on a free port
// of 127.0.0.1 (read back from its log). It is stopped when the test ends,
// and its log shown if the test failed.
func startAlertmanager(t *testing.T, o amOptions) *Alertmanager {
	t.Helper()
	bin := need(t, "prometheus-alertmanager", "alertmanager")
	dir := t.TempDir()
	if o.Config == "" {
		o.Config = "route: {receiver: none}\nreceivers: [{name: none}]\n"
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	cfg := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfg, []byte(o.Config), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--config.file=" + cfg, "--storage.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + o.Addr, "--cluster.listen-address=", "--log.level=debug"}
	if o.WebConfig != "" {
		web := filepath.Join(dir, "web.yml")
		if err := os.WriteFile(web, []byte(o.WebConfig), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--web.config.file="+web)
	}
	am := &Alertmanager{t: t, log: &testsvc.LogBuffer{}, exited: make(chan struct{}), user: o.User, pass: o.Password,
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: o.TLS}}}
	am.cmd = exec.Command(bin, args...)
	stderr, err := am.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	am.cmd.Stdout = am.log
	if err := am.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			fmt.Fprintln(am.log, sc.Text())
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	go func() {
		am.cmd.Wait()
		close(am.exited)
	}()
	t.Cleanup(func() {
		am.Stop()
		if t.Failed() {
			t.Logf("alertmanager's log:\n%s", am.log)
		}
	})
	select {
	case am.Addr = <-addr:
	case <-am.exited:
		t.Fatalf("alertmanager exited at start:\n%s", am.log)
	case <-time.After(wait):
		t.Fatalf("alertmanager did not listen within %v:\n%s", wait, am.log)
	}
	scheme := "http"
	if o.TLS != nil {
		scheme = "https"
	}
	am.URL = scheme + "://" + am.Addr
	// Ready: it answers its readiness probe.
	deadline := time.Now().Add(wait)
	for {
		resp, err := am.client.Get(am.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return am
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("alertmanager not ready within %v: %v\n%s", wait, err, am.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops it (SIGTERM) and waits for it to exit.
func (am *Alertmanager) Stop() {
	select {
	case <-am.exited:
		return
	default:
	}
	am.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-am.exited:
	case <-time.After(wait):
		am.cmd.Process.Kill()
		<-am.exited
	}
}

// gettableAlert is an alert as GET /api/v2/alerts returns it.
type gettableAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	UpdatedAt    time.Time         `json:"updatedAt"`
	GeneratorURL string            `json:"generatorURL"`
	Status       struct {
		State string `json:"state"`
	} `json:"status"`
}

// Alerts returns what Alertmanager's own API lists: the alerts active now
// (it leaves out the resolved ones).
func (am *Alertmanager) Alerts() []gettableAlert {
	am.t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, am.URL+"/api/v2/alerts", nil)
	if am.user != "" {
		req.SetBasicAuth(am.user, am.pass)
	}
	resp, err := am.client.Do(req)
	if err != nil {
		am.t.Fatalf("GET /api/v2/alerts: %v", err)
	}
	defer resp.Body.Close()
	var out []gettableAlert
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		am.t.Fatalf("GET /api/v2/alerts: %s: %s", resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		am.t.Fatalf("GET /api/v2/alerts: %v", err)
	}
	return out
}

// Alert returns the active alert named alertname with the given series,
// once Alertmanager has it (and cond holds for it, when given).
func (am *Alertmanager) Alert(alertname, series string, cond func(gettableAlert) bool) gettableAlert {
	am.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		for _, a := range am.Alerts() {
			if a.Labels["alertname"] == alertname && a.Labels["series"] == series && (cond == nil || cond(a)) {
				return a
			}
		}
		if time.Now().After(deadline) {
			am.t.Fatalf("alertmanager has no such active alert %s{series=%q} within %v; it has %+v", alertname, series, wait, am.Alerts())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Gone waits until Alertmanager no longer lists the alert as active.
func (am *Alertmanager) Gone(alertname, series string) {
	am.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		found := false
		for _, a := range am.Alerts() {
			found = found || a.Labels["alertname"] == alertname && a.Labels["series"] == series
		}
		if !found {
			return
		}
		if time.Now().After(deadline) {
			am.t.Fatalf("alert %s{series=%q} still active after %v: %+v", alertname, series, wait, am.Alerts())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// notifications collects what Alertmanager's webhook receivers send: the
// people's side of it.
type notifications struct {
	*httptest.Server
	mu  sync.Mutex
	got []notification
}

// notification is Alertmanager's webhook payload (version 4), in part.
type notification struct {
	Receiver string `json:"receiver"`
	Status   string `json:"status"`
	Alerts   []struct {
		Status string            `json:"status"`
		Labels map[string]string `json:"labels"`
		EndsAt time.Time         `json:"endsAt"`
	} `json:"alerts"`
}

func newNotifications(t *testing.T) *notifications {
	n := &notifications{}
	n.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m notification
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			t.Errorf("alertmanager's notification: %v", err)
		}
		n.mu.Lock()
		n.got = append(n.got, m)
		n.mu.Unlock()
	}))
	t.Cleanup(n.Close)
	return n
}

// wait returns the first notification for which cond holds, once it came.
func (n *notifications) wait(t *testing.T, what string, cond func(notification) bool) notification {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		n.mu.Lock()
		got := append([]notification(nil), n.got...)
		n.mu.Unlock()
		for _, m := range got {
			if cond(m) {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no notification %s within %v; got %+v", what, wait, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
