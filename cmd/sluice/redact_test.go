package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testsvc"
)

// TestEchoedSecretsAreRedacted runs `sluice run` against servers that
// refuse every write and echo the request's credentials in their error:
// an InfluxDB that answers 400 with the Authorization header (its token),
// and a webhook receiver that answers 500 with its Authorization (HTTP
// basic) and X-Api-Key headers. Their errors reach the log, the sinks'
// last error in /api/v1/status and /readyz, and the dead letters (a file):
// none of them may hold a secret, in any form the servers echoed. Before,
// each held them verbatim.
func TestEchoedSecretsAreRedacted(t *testing.T) {
	const (
		influxToken = "influx-token-3b9f1c2e"
		hookPass    = "hook-password-7d41"
		hookKey     = "hook-api-key-e85a90"
		adminToken  = "admin-token-51c0a7"
	)
	basic := base64.StdEncoding.EncodeToString([]byte("alice:" + hookPass))
	secrets := []string{influxToken, hookPass, hookKey, adminToken, basic}
	t.Setenv("SLUICE_TEST_HOOK_KEY", hookKey)

	influx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ping" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"code":"invalid","message":"refused request with Authorization: %s"}`, r.Header.Get("Authorization"))
	}))
	defer influx.Close()
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, "cannot take it; you sent Authorization=%s X-Api-Key=%s", r.Header.Get("Authorization"), r.Header.Get("X-Api-Key"))
	}))
	defer hook.Close()

	dir := t.TempDir()
	deadLetters := filepath.Join(dir, "dead-letters.jsonl")
	writeFile(t, dir, "rules.yaml", "rules:\n  - name: telemetry\n    match: plant/+site/+line/+device/telemetry\n")
	path := writeFile(t, dir, "sluice.yaml", fmt.Sprintf(`log: {level: info}
watch_rules: false
data_dir: %s
shutdown_timeout: 2s
admin: {address: "127.0.0.1:0", token: %s, sink_down_after: 1s}
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines:
  - name: p
    topics: ["plant/#"]
    rules: [rules.yaml]
    sinks: [influx, hook, dead-letters]
sinks:
  - name: influx
    influxdb: {url: %q, token: %s, bucket: db/autogen}
  - name: hook
    stream: records
    retry: {initial: 50ms, max: 200ms}
    webhook:
      url: %q
      username: alice
      password: %s
      headers: {X-Api-Key: {env: SLUICE_TEST_HOOK_KEY}}
  - name: dead-letters
    stream: dead_letters
    batch: {size: 1, interval: 10ms}
    file: {path: %s}
`, filepath.Join(dir, "data"), adminToken, influx.URL, influxToken, hook.URL+"/hook", hookPass, deadLetters))

	proc := startSluice(t, path)
	addr := proc.waitLog(t, regexp.MustCompile(`listening for MQTT.* address=(\S+)`), 60*time.Second)
	admin := "http://" + proc.waitLog(t, regexp.MustCompile(`admin listener.* address=(\S+)`), 60*time.Second)
	pub := testsvc.MQTT(t, addr, "pub")
	for i := range 3 {
		if rc := pub.Publish(t, "plant/north/l1/d1/telemetry", 1, fmt.Appendf(nil, `{"seq":%d}`, i)); rc != 0 {
			t.Fatalf("publish %d: reason %#x", i, rc)
		}
	}

	// Wait for every way out to have said something of the echoes.
	get := func(url string) string {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	texts := map[string]func() string{
		"log":            proc.log.String,
		"/api/v1/status": func() string { return get(admin + "/api/v1/status") },
		"/readyz":        func() string { return get(admin + "/readyz") },
		"dead letters": func() string {
			b, _ := os.ReadFile(deadLetters)
			return string(b)
		},
	}
	wants := map[string][]string{
		"log":            {"refused request with Authorization: Token [redacted]", "Authorization=Basic [redacted] X-Api-Key=[redacted]"},
		"/api/v1/status": {"Authorization=Basic [redacted] X-Api-Key=[redacted]"},
		"/readyz":        {"Authorization=Basic [redacted] X-Api-Key=[redacted]"},
		"dead letters":   {"refused request with Authorization: Token [redacted]"},
	}
	for name, text := range texts {
		end := time.Now().Add(60 * time.Second)
		for {
			got, missing := text(), ""
			for _, w := range wants[name] {
				if !strings.Contains(got, w) {
					missing = w
				}
			}
			if missing == "" {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("%s never said %q:\n%s", name, missing, got)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	noSecret := func(name, got string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(got, s) {
				t.Errorf("%s holds the secret %q:\n%s", name, s, got)
			}
		}
	}
	for name, text := range texts {
		noSecret(name, text())
	}
	if code := proc.stop(t, syscall.SIGTERM, 90*time.Second); code != exitOK {
		t.Errorf("exit code %d", code)
	}
	noSecret("log", proc.log.String())
	noSecret("dead letters", texts["dead letters"]())
}
