// Command sluice takes device telemetry over MQTT and turns it into
// analytics: an embedded broker, rules operators edit as files, and sinks to
// Kafka, InfluxDB and MQTT alert topics.
//
//	sluice run [sluice.yaml]         run the pipelines of a config
//	sluice validate [sluice.yaml]    check a config and its rule files
//	sluice rules lint|test PATH...   compile rule files; run their tests
//	sluice demo                      run the demo on embedded defaults
//	sluice simulate -broker h:1883   publish simulated device telemetry
//	sluice status [-watch]           show a running sluice from its admin listener
//	sluice alerts                    the series firing now, and recent transitions
//	sluice tail [FILTER]             each message as the rules see it, live
//	sluice deadletters [-replay]     the recent dead letters; send them through the rules again
//	sluice replay -rules DIR -since 1h  the journal's last hour through other rules: the difference
//	sluice passwd [-D] FILE USER     set (or delete) a user's broker password
//	sluice keygen FILE               write a new key for encryption at rest
//	sluice version                   print the version
//
// Exit codes, one scheme for every command (docs/operations.md):
//
//	0  success
//	1  a failure: while running, a rule test that failed, sluice status
//	   not ready or not reachable
//	2  wrong input, nothing started: the command line, or a config, rule,
//	   test or sample file it names (missing, unreadable or with problems)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/secret"
	"github.com/sluicehq/sluice/pipelines"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	// A write to a closed stdout or stderr (the tee of `sluice demo | tee`
	// gone at Ctrl-C) fails instead of killing sluice before it has
	// stopped what it started.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	os.Exit(Main(interruptible(context.Background()), os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes (see the package comment).
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2 // the command line or a file it names is wrong
)

// Main runs the sluice command line and returns its exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(ctx, rest, stdout, stderr)
	case "validate":
		return cmdValidate(rest, stdout, stderr)
	case "demo":
		return cmdDemo(ctx, rest, stdout, stderr)
	case "simulate":
		return cmdSimulate(ctx, rest, stdout, stderr)
	case "bench":
		return cmdBench(ctx, rest, stdout, stderr)
	case "rules":
		return cmdRules(ctx, rest, stdout, stderr)
	case "status":
		return cmdStatus(ctx, rest, stdout, stderr)
	case "alerts":
		return cmdAlerts(ctx, rest, stdout, stderr)
	case "tail":
		return cmdTail(ctx, rest, stdout, stderr)
	case "deadletters":
		return cmdDeadLetters(ctx, rest, stdout, stderr)
	case "replay":
		return cmdReplay(ctx, rest, stdout, stderr)
	case "passwd":
		return cmdPasswd(rest, stdout, stderr)
	case "keygen":
		return cmdKeygen(rest, stdout, stderr)
	case "version", "--version", "-v":
		return cmdVersion(rest, stdout, stderr)
	case "help", "-h", "--help":
		usage(stdout)
		return exitOK
	}
	fmt.Fprintf(stderr, "sluice: unknown command %q\n\n", cmd)
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, `sluice: MQTT telemetry to Kafka, InfluxDB and alerts, with rules in between.

Usage:
  sluice run      [sluice.yaml]    run the broker, pipelines and sinks of a config
  sluice validate [sluice.yaml]    check a config and its rule files, start nothing
  sluice rules lint PATH...        compile rule files, print every error as file:line:col
  sluice rules test PATH...        run rule tests (*_test.yaml) on a simulated clock
  sluice demo                      run the demo (broker, rules, sinks, simulated devices)
  sluice simulate -broker host:port  publish simulated plant telemetry to any MQTT broker
  sluice bench                     measure throughput, loss, latency, CPU and memory (docs/performance.md)
  sluice status [-watch]           show a running sluice (admin listener): rates, sinks, alerts
  sluice alerts                    the series firing now (rule, device, since, value), recent transitions
  sluice tail [TOPIC-FILTER]       each message as it arrives: decoded, the rules it met, what came out
  sluice deadletters [-replay]     the recent dead letters with the reason; send them through the rules again
  sluice replay -rules DIR -since 1h  run the journal's last hour through candidate rules: what changes
  sluice passwd [-D] FILE USER     set a broker user's password (prompted, or stdin), or delete it
  sluice keygen FILE               write a new key (mode 0600) for encryption at rest
  sluice version                   print the version

Run "sluice <command> -h" for a command's flags. Docs: docs/configuration.md;
the console (/console/ on the admin listener, and tail, alerts, deadletters,
replay): docs/console.md.
Exit codes: 0 success; 1 a failure (while running, a failing rule test, sluice
status not ready); 2 wrong input (the command line, or a config, rule or test
file that is missing or has problems), nothing started.
`)
}

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("version", stderr)
	fs.Usage = commandUsage(fs, "version", "Prints sluice's version, the commit it was built from, and the Go it was built with.")
	if code, ok := parseNoArgs(fs, args); !ok {
		return code
	}
	fmt.Fprintln(stdout, versionString())
	return exitOK
}

func versionString() string {
	v := version
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
		return fmt.Sprintf("sluice %s %s", v, info.GoVersion)
	}
	return "sluice " + v
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("sluice "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// commandUsage returns a usage function for fs: the synopsis, what the
// command does, and its flags.
func commandUsage(fs *flag.FlagSet, synopsis, about string) func() {
	return func() {
		fmt.Fprintf(fs.Output(), "Usage: sluice %s\n\n%s\n\n", synopsis, about)
		fs.PrintDefaults()
	}
}

// parseFlags parses args and returns the positional arguments; flags may
// come after them (sluice validate sluice.yaml -c other.yaml is an error,
// not an argument silently dropped). When parsing stops, code is the exit
// code: 0 after -h (the usage is printed), 2 for a bad flag.
func parseFlags(fs *flag.FlagSet, args []string) (positional []string, code int, ok bool) {
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageExit(err), false
		}
		if fs.NArg() == 0 {
			return positional, exitOK, true
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// parseNoArgs parses the flags of a command that takes no arguments.
func parseNoArgs(fs *flag.FlagSet, args []string) (code int, ok bool) {
	args, code, ok = parseFlags(fs, args)
	if ok && len(args) > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q (see %s -h)\n", fs.Name(), args[0], fs.Name())
		return exitUsage, false
	}
	return code, ok
}

// usageExit is the exit code for an error of flag.FlagSet.Parse: 0 for -h.
func usageExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}

// configFlag adds -c and --config, the config file, to fs.
func configFlag(fs *flag.FlagSet) *string {
	path := new(string)
	fs.StringVar(path, "c", "", "configuration `file` (default sluice.yaml; it may also be given as the argument)")
	fs.StringVar(path, "config", "", "the same as -c")
	return path
}

// configPath is the config file a command was given: -c or --config, or
// its one argument, or sluice.yaml.
func configPath(flagPath string, args []string) (string, error) {
	switch {
	case len(args) > 1:
		return "", fmt.Errorf("want one config file, got %d arguments: %s", len(args), strings.Join(args, " "))
	case len(args) == 1 && flagPath != "" && flagPath != args[0]:
		return "", fmt.Errorf("two config files: -c %s and %s; give one", flagPath, args[0])
	case len(args) == 1:
		return args[0], nil
	case flagPath != "":
		return flagPath, nil
	}
	return "sluice.yaml", nil
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("run", stderr)
	fs.Usage = commandUsage(fs, "run [-c] [FILE]", "Runs the broker, the pipelines and the sinks of the config FILE (default sluice.yaml).")
	flagPath := configFlag(fs)
	args, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	path, err := configPath(*flagPath, args)
	if err != nil {
		fmt.Fprintf(stderr, "sluice run: %v\n", err)
		return exitUsage
	}
	// Everything validate checks, so that a mistake is reported, all of
	// it, before anything starts.
	cfg, _, err := pipelines.Check(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	log := newLogger(cfg, stderr)
	m := metrics.New()
	m.BuildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	svc, err := pipelines.New(cfg, pipelines.Options{Logger: log, Metrics: m})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	log.Info("sluice starting", "version", version, "config", path)
	// SIGHUP reloads the rules, the password file and the ACL file (they
	// are also watched).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-hup:
				log.Info("SIGHUP: reloading rules, passwords and ACLs")
				svc.Reload()
			case <-ctx.Done():
				return
			}
		}
	}()
	if err := svc.Start(ctx); err != nil {
		// As plain text, as a config problem is: the operator reads it.
		// (A source's remote may have echoed a secret.)
		fmt.Fprintln(stderr, "sluice could not start:", svc.Redactor().Redact(err.Error()))
		return exitFailure
	}
	_, stopAdmin, err := startAdmin(cfg, svc, m, log)
	if err != nil {
		// Closed first: its goroutines (a sink connecting) log to stderr
		// too, and are done once Close returns.
		svc.Close(context.Background())
		fmt.Fprintln(stderr, "sluice could not start:", svc.Redactor().Redact(err.Error()))
		return exitFailure
	}
	// The admin listener outlives the shutdown, so /readyz says "not
	// ready" while the sinks drain.
	defer stopAdmin()
	<-ctx.Done()
	log.Info("stopping: ingest stops, the sinks write what the journals hold", "shutdown_timeout", cfg.ShutdownTimeout)
	if err := closeService(svc, cfg.ShutdownTimeout, stopNowContext(ctx), log); err != nil {
		log.Error("sluice stopped with an error", "error", err)
		return exitFailure
	}
	log.Info("sluice stopped")
	return exitOK
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("validate", stderr)
	fs.Usage = commandUsage(fs, "validate [-c] [FILE]", "Checks the config FILE (default sluice.yaml) and its rule files without starting anything.")
	flagPath := configFlag(fs)
	args, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	path, err := configPath(*flagPath, args)
	if err != nil {
		fmt.Fprintf(stderr, "sluice validate: %v\n", err)
		return exitUsage
	}
	cfg, sets, err := pipelines.Check(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		var list conf.ErrorList
		if errors.As(err, &list) && len(list) > 1 {
			fmt.Fprintf(stderr, "%s\n", count(len(list), "problem"))
		}
		return exitUsage
	}
	for i := range cfg.Pipelines {
		p := &cfg.Pipelines[i]
		_, notes, _ := cfg.Partition(p, sets[p.Name])
		for _, n := range notes {
			fmt.Fprintf(stdout, "note: %s\n", n)
		}
	}
	fmt.Fprintf(stdout, "%s: ok (%s, %s)\n", path, count(len(cfg.Pipelines), "pipeline"), count(len(cfg.Sinks), "sink"))
	return exitOK
}

// newLogger returns the logger of a config: its level and format, and no
// secret of the config in any line (a server may echo one in an error).
func newLogger(cfg *pipelines.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if cfg.Log.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(secret.NewRedactor(cfg).Handler(h))
}
