package httpin_test

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeCurlExamples runs the plain-HTTP curl examples of README.md
// with the real curl against a real HTTP source: each is answered 202, and
// what they publish reaches the pipeline's sink. (TLS is covered in Go by
// tls_test.go.)
func TestReadmeCurlExamples(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("curl is not installed")
		}
		t.Skip("curl is not installed")
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, envOptions{})
	dir := t.TempDir()
	// The files the examples send: the batch is the README's own.
	json := codeBlocks(string(readme), "json")
	if len(json) == 0 {
		t.Fatal("README.md shows no batch")
	}
	writeFile(t, dir, "readings.ndjson", strings.ReplaceAll(json[0], "plant/north/line3/", "devices/alice/"))
	writeFile(t, dir, "reading.json", `{"kind": "boiler", "temperature": 70.5}`)

	host := regexp.MustCompile(`http://sluice\.plant:8080`)
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	n := 0
	for _, block := range codeBlocks(string(readme), "sh") {
		if !host.MatchString(block) {
			continue // the TLS example
		}
		block = host.ReplaceAllString(block, e.base)
		// alice may publish under devices/alice/ (the tests' tokens).
		block = strings.ReplaceAll(block, "/v1/publish/plant/north/line3/", "/v1/publish/devices/alice/")
		block = regexp.MustCompile(`(?m)^export SLUICE_TOKEN=.*$`).ReplaceAllString(block, "")
		n += strings.Count(block, "curl ")
		script.WriteString(block + "\necho\n")
	}
	if n < 4 {
		t.Fatalf("found %d curl examples in README.md, want at least 4", n)
	}
	cmd := exec.Command("bash", "-c", strings.ReplaceAll(script.String(), "curl ", curl+" "))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SLUICE_TOKEN="+aliceToken)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's examples failed: %v\n%s\nscript:\n%s", err, out, script.String())
	}
	if got := strings.Count(string(out), `"accepted":`); got != n {
		t.Fatalf("%d of %d curl examples accepted:\n%s", got, n, out)
	}
	for _, topic := range []string{"devices/alice/boiler-7/telemetry", "devices/alice/press-2/telemetry",
		"devices/alice/b7/telemetry", "devices/alice/p2/telemetry", "devices/alice/c1/telemetry"} {
		e.waitRecord(t, topic)
	}
}

// codeBlocks returns the bodies of a Markdown text's fenced blocks of lang.
func codeBlocks(md, lang string) []string {
	var out []string
	for _, part := range strings.Split(md, "```"+lang+"\n")[1:] {
		body, _, _ := strings.Cut(part, "```")
		out = append(out, body)
	}
	return out
}
