package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/rules"
)

// cmdRules runs `sluice rules lint|test [PATH...]`.
func cmdRules(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, rulesUsage)
		return exitUsage
	}
	sub, rest := args[0], args[1:]
	var samples fileList
	var run func(paths []string, stdout, stderr io.Writer) int
	switch sub {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, rulesUsage)
		return exitOK
	case "lint":
		run = func(paths []string, stdout, stderr io.Writer) int { return rulesLint(paths, samples, stdout, stderr) }
	case "test":
		run = rulesTest
	case "try":
		return cmdRulesTry(rest, os.Stdin, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "sluice rules: unknown command %q\n\n%s", sub, rulesUsage)
		return exitUsage
	}
	fs := newFlags("rules "+sub, stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, rulesUsage+"\n")
		fs.PrintDefaults()
	}
	config := configFlag(fs)
	fs.Lookup("c").Usage = "without a PATH, take the rule paths of this configuration `file` (default sluice.yaml)"
	if sub == "lint" {
		fs.Var(&samples, "sample", "check the payload names the rules read against sample payloads in this `file`\n(TOPIC PAYLOAD lines, as mosquitto_sub -v prints them, or a YAML list of messages; repeatable)")
	}
	paths, code, ok := parseFlags(fs, rest)
	if !ok {
		return code
	}
	if len(paths) == 0 {
		var err error
		if paths, err = configRulePaths(*config); err != nil {
			fmt.Fprintf(stderr, "sluice rules %s: %v\n", sub, err)
			return exitUsage
		}
	} else if *config != "" {
		fmt.Fprintf(stderr, "sluice rules %s: give rule paths or -c CONFIG, not both\n", sub)
		return exitUsage
	}
	return run(paths, stdout, stderr)
}

const rulesUsage = `Usage:
  sluice rules lint [-sample FILE] [PATH...]
                                compile rule files (files, folders, globs); print every error as file:line:col;
                                with -sample, also each payload name a rule reads that no sample has
  sluice rules test [PATH...]   run the rule tests (*_test.yaml) found in PATHs on a simulated clock
  sluice rules try -topic TOPIC PAYLOAD | -file FILE
                                run payloads through a config's rules: records, alerts, dead letters

Without a PATH, the rule paths of the pipelines in sluice.yaml (or -c FILE).
Exit codes: 0 ok, 1 a rule test failed, 2 a file is missing or has problems.
`

// configRulePaths returns the rule paths of every pipeline of a config, for
// rules lint and test run without a path.
func configRulePaths(path string) ([]string, error) {
	explicit := path != ""
	if !explicit {
		path = "sluice.yaml"
	}
	if _, err := os.Stat(path); !explicit && errors.Is(err, fs.ErrNotExist) {
		return nil, errors.New("no PATH given, and no sluice.yaml here to take the rule paths from: give rule files or folders, or -c CONFIG")
	}
	cfg, err := pipelines.Load(path)
	if err != nil {
		return nil, err
	}
	var paths []string
	seen := map[string]bool{}
	for i := range cfg.Pipelines {
		for _, p := range cfg.RulePaths(&cfg.Pipelines[i]) {
			if !seen[p] {
				seen[p] = true
				paths = append(paths, p)
			}
		}
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("%s: no pipeline has rules", path)
	}
	return paths, nil
}

// fileList is a repeatable flag of file names.
type fileList []string

func (l *fileList) String() string     { return strings.Join(*l, ",") }
func (l *fileList) Set(s string) error { *l = append(*l, s); return nil }

// rulesLint compiles every rule file and checks every test file's format,
// and with samples, the payload names the rules read; it prints all
// problems.
func rulesLint(paths, sampleFiles []string, stdout, stderr io.Writer) int {
	files, err := rules.Expand(paths...)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	tests, _ := rules.ExpandTests(paths...)
	if len(files) == 0 && len(tests) == 0 {
		fmt.Fprintf(stderr, "sluice rules lint: no rule files (*.yaml) in %s\n", strings.Join(paths, ", "))
		return exitUsage
	}
	samples, err := readSamples(sampleFiles)
	if err != nil {
		fmt.Fprintln(stderr, "sluice rules lint:", err)
		return exitUsage
	}
	var problems conf.ErrorList
	if len(files) > 0 {
		set, err := rules.Load(files...)
		if err != nil && !errors.As(err, &problems) {
			fmt.Fprintln(stderr, err)
			return exitUsage
		}
		if err == nil && len(samples) > 0 {
			problems = append(problems, set.CheckSamples(samples)...)
		}
	}
	for _, f := range tests {
		var tf rules.TestFile
		if _, err := conf.DecodeFile(f, &tf); err != nil {
			var list conf.ErrorList
			if errors.As(err, &list) {
				problems = append(problems, list...)
			} else {
				fmt.Fprintln(stderr, err)
				return exitUsage
			}
		}
	}
	for _, p := range problems {
		fmt.Fprintln(stdout, p)
	}
	if len(problems) > 0 {
		fmt.Fprintf(stdout, "%s in %s\n", count(len(problems), "problem"), count(len(files), "rule file"))
		return exitUsage
	}
	fmt.Fprintf(stdout, "%s, %s", count(len(files), "rule file"), count(len(tests), "test file"))
	if len(samples) > 0 {
		fmt.Fprintf(stdout, ", %s", count(len(samples), "sample"))
	}
	fmt.Fprintln(stdout, ": ok")
	return exitOK
}

// readSamples reads the sample payloads of lint --sample files.
func readSamples(files []string) ([]rules.Sample, error) {
	var samples []rules.Sample
	for _, f := range files {
		msgs, err := readPayloads(f, "", os.Stdin)
		if err != nil {
			return nil, err
		}
		for i := range msgs {
			msg, err := msgs[i].Message(time.Now())
			if err != nil {
				return nil, fmt.Errorf("%s: message %d: %w", f, i+1, err)
			}
			samples = append(samples, rules.Sample{Topic: msg.Topic, Payload: msg.Payload, ContentType: msg.ContentType})
		}
	}
	return samples, nil
}

// rulesTest runs rule tests and prints a line per case, the differences of
// failing ones, and a summary.
func rulesTest(paths []string, stdout, stderr io.Writer) int {
	if tests, err := rules.ExpandTests(paths...); err == nil && len(tests) == 0 {
		fmt.Fprintf(stderr, `sluice rules test: no rule tests in %s: nothing was tested.
A test file sits next to the rules it tests, named after them: boilers_test.yaml
tests boilers.yaml (docs/rules.md, "Testing rules"; examples/rules has some).
`, strings.Join(paths, ", "))
		return exitUsage
	}
	results, err := rules.RunTests(paths...)
	passed, failed := 0, 0
	for _, r := range results {
		if r.Passed() {
			passed++
			fmt.Fprintf(stdout, "PASS %s: %s\n", r.File, r.Name)
			continue
		}
		failed++
		fmt.Fprintf(stdout, "FAIL %s: %s\n", r.File, r.Name)
		for _, f := range r.Failures {
			fmt.Fprintln(stdout, "  "+strings.ReplaceAll(f, "\n", "\n  "))
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
	}
	fmt.Fprintf(stdout, "%d passed, %d failed\n", passed, failed)
	switch {
	case err != nil: // a test file or the rules it tests could not be loaded
		return exitUsage
	case failed > 0:
		return exitFailure
	}
	return exitOK
}

// count says n things: "1 pipeline", "2 pipelines".
func count(n int, thing string) string {
	return fmt.Sprintf("%d %s%s", n, thing, plural(n))
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
