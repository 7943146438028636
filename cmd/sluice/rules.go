package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/rules"
)

// cmdRules runs `sluice rules lint|test PATH...`.
func cmdRules(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, rulesUsage)
		return exitUsage
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, rulesUsage)
		return exitOK
	}
	fs := newFlags("rules "+sub, stderr)
	fs.Usage = func() { fmt.Fprint(stderr, rulesUsage) }
	if err := fs.Parse(rest); err != nil {
		return usageExit(err)
	}
	paths := fs.Args()
	if len(paths) == 0 {
		paths = []string{"."}
	}
	switch sub {
	case "lint":
		return rulesLint(paths, stdout, stderr)
	case "test":
		return rulesTest(paths, stdout, stderr)
	}
	fmt.Fprintf(stderr, "sluice rules: unknown command %q\n\n%s", sub, rulesUsage)
	return exitUsage
}

const rulesUsage = `Usage:
  sluice rules lint PATH...   compile rule files (files, folders, globs); print every error as file:line:col
  sluice rules test PATH...   run the rule tests (*_test.yaml) found in PATHs on a simulated clock
`

// rulesLint compiles every rule file and checks every test file's format,
// printing all problems.
func rulesLint(paths []string, stdout, stderr io.Writer) int {
	files, err := rules.Expand(paths...)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	var problems conf.ErrorList
	if len(files) > 0 {
		if _, err := rules.Load(files...); err != nil {
			if !errors.As(err, &problems) {
				fmt.Fprintln(stderr, err)
				return exitFailure
			}
		}
	}
	tests, _ := rules.ExpandTests(paths...)
	for _, f := range tests {
		var tf rules.TestFile
		if _, err := conf.DecodeFile(f, &tf); err != nil {
			var list conf.ErrorList
			if errors.As(err, &list) {
				problems = append(problems, list...)
			} else {
				fmt.Fprintln(stderr, err)
				return exitFailure
			}
		}
	}
	for _, p := range problems {
		fmt.Fprintln(stdout, p)
	}
	if len(problems) > 0 {
		fmt.Fprintf(stdout, "%d problem%s in %d rule file%s\n", len(problems), plural(len(problems)), len(files), plural(len(files)))
		return exitFailure
	}
	fmt.Fprintf(stdout, "%d rule file%s, %d test file%s: ok\n", len(files), plural(len(files)), len(tests), plural(len(tests)))
	return exitOK
}

// rulesTest runs rule tests and prints a line per case, the differences of
// failing ones, and a summary.
func rulesTest(paths []string, stdout, stderr io.Writer) int {
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
	case err != nil && len(results) == 0:
		return exitUsage
	case failed > 0 || err != nil:
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
