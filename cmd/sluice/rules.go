package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

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
	var run func(paths []string, stdout, stderr io.Writer) int
	switch sub {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, rulesUsage)
		return exitOK
	case "lint":
		run = rulesLint
	case "test":
		run = rulesTest
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
  sluice rules lint [PATH...]   compile rule files (files, folders, globs); print every error as file:line:col
  sluice rules test [PATH...]   run the rule tests (*_test.yaml) found in PATHs on a simulated clock

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

// rulesLint compiles every rule file and checks every test file's format,
// printing all problems.
func rulesLint(paths []string, stdout, stderr io.Writer) int {
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
	var problems conf.ErrorList
	if len(files) > 0 {
		if _, err := rules.Load(files...); err != nil {
			if !errors.As(err, &problems) {
				fmt.Fprintln(stderr, err)
				return exitUsage
			}
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
	fmt.Fprintf(stdout, "%s, %s: ok\n", count(len(files), "rule file"), count(len(tests), "test file"))
	return exitOK
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
