package main

import (
	"strings"
	"testing"
)

// TestConfigPathArgument checks the config file may be given as the
// argument or with --config, and that a second one is refused rather than
// silently ignored (sluice validate broken.yaml validated ./sluice.yaml).
func TestConfigPathArgument(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", "pipelines:\n  - name: p\n    topics: [\"#\"]\n    sinks: [a]\nsinks:\n  - name: a\n    mqtt: {}\n")
	broken := writeFile(t, dir, "broken.yaml", "pipelines:\n  - name: p\n    topics: [\"#\"]\n    sinks: [nowhere]\n")
	cases := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"validate FILE", []string{"validate", broken}, exitUsage, "", broken + `:4:13: pipelines[0].sinks[0]: no sink is named "nowhere"`},
		{"validate FILE ok", []string{"validate", good}, exitOK, good + ": ok", ""},
		{"validate --config FILE", []string{"validate", "--config", good}, exitOK, good + ": ok", ""},
		{"validate -config FILE", []string{"validate", "-config", broken}, exitUsage, "", broken + ":4:13"},
		{"validate FILE with a flag after it", []string{"validate", good, "-c", broken}, exitUsage, "", "two config files: -c " + broken + " and " + good},
		{"validate two files", []string{"validate", good, broken}, exitUsage, "", "want one config file, got 2 arguments"},
		{"run FILE", []string{"run", broken}, exitUsage, "", broken + ":4:13"},
		{"run two files", []string{"run", good, broken}, exitUsage, "", "want one config file, got 2 arguments"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runMain(tc.args...)
			if code != tc.code || !strings.Contains(stdout, tc.stdout) || !strings.Contains(stderr, tc.stderr) {
				t.Errorf("sluice %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s\nwant stdout with %q, stderr with %q",
					strings.Join(tc.args, " "), code, tc.code, stdout, stderr, tc.stdout, tc.stderr)
			}
		})
	}
	// Without a path, sluice.yaml in the working directory.
	t.Chdir(dir)
	writeFile(t, dir, "sluice.yaml", "pipelines:\n  - name: p\n    topics: [\"#\"]\n    sinks: [a]\nsinks:\n  - name: a\n    mqtt: {}\n")
	if code, stdout, stderr := runMain("validate"); code != exitOK || !strings.Contains(stdout, "sluice.yaml: ok") {
		t.Errorf("validate without a path: exit %d\n%s%s", code, stdout, stderr)
	}
}
