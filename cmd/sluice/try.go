package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/rules"
)

const tryAbout = `Runs payloads through the rules of a config, as sluice would, without starting anything:
for each message, the pipelines whose topics take it, and what their rules make of it: the
records, the alert transitions and the dead letters with their reasons. Messages are received
-every apart on a simulated clock (timers run every simulated second, as in sluice), so windows,
for: durations and deadmen behave as they would.

  sluice rules try -topic plant/north/line1/boiler-01/telemetry '{"kind":"boiler","temperature":95}'
  sluice rules try -topic plant/north/line1/boiler-01/telemetry -file readings.jsonl
  mosquitto_sub -t 'plant/#' -v -C 20 > capture.txt; sluice rules try -file capture.txt

A file has one message a line (TOPIC PAYLOAD, as mosquitto_sub -v prints them, or the PAYLOAD
alone with -topic), or is a YAML list of messages as rule tests publish them (.yaml, .yml).
Exit codes: 0, 1 when a message became a dead letter, 2 for a wrong command line or config.`

// cmdRulesTry runs `sluice rules try`.
func cmdRulesTry(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlags("rules try", stderr)
	config := configFlag(fs)
	topic := fs.String("topic", "", "the `topic` the payloads are published on (or TOPIC PAYLOAD lines in -file)")
	file := fs.String("file", "", "a `file` of payloads (- for stdin)")
	only := fs.String("pipeline", "", "only this pipeline's rules (default: every pipeline whose topics take the message)")
	every := fs.Duration("every", time.Second, "simulated time between two messages")
	fs.Usage = commandUsage(fs, "rules try [-c sluice.yaml] -topic TOPIC PAYLOAD | -file FILE", tryAbout)
	args, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "sluice rules try: "+format+"\n", a...)
		return exitUsage
	}
	var msgs []rules.TestMessage
	switch {
	case *file != "" && len(args) > 0:
		return usage("give a payload or -file, not both")
	case *file != "":
		var err error
		if msgs, err = readPayloads(*file, *topic, stdin); err != nil {
			return usage("%v", err)
		}
	case len(args) == 1 && *topic != "":
		payload := args[0]
		if payload == "-" {
			b, err := io.ReadAll(stdin)
			if err != nil {
				return usage("%v", err)
			}
			payload = strings.TrimRight(string(b), "\r\n")
		}
		msgs = []rules.TestMessage{{Topic: *topic, Payload: payload}}
	case len(args) == 1:
		return usage("which topic is the payload published on? give -topic")
	case len(args) > 1:
		return usage("one payload at a time (quote it), or a -file of them")
	default:
		return usage("give a payload (with -topic), or -file FILE; see sluice rules try -h")
	}
	if *every <= 0 {
		return usage("-every must be positive")
	}
	path := *config
	if path == "" {
		path = "sluice.yaml"
	}
	cfg, sets, err := pipelines.Check(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	t, err := newTrial(cfg, sets, *only)
	if err != nil {
		return usage("%v", err)
	}
	for i := range msgs {
		if err := t.try(stdout, &msgs[i], *every); err != nil {
			return usage("%v", err)
		}
	}
	fmt.Fprintf(stdout, "\n%s: %s, %s, %s\n", count(len(msgs), "message"), count(t.records, "record"),
		count(t.alerts, "alert transition"), count(t.deadLetters, "dead letter"))
	if t.deadLetters > 0 {
		return exitFailure
	}
	return exitOK
}

// trial evaluates messages with the rules of a config's pipelines, each
// pipeline with an evaluator of its own that keeps its state from message
// to message, on a simulated clock.
type trial struct {
	pipelines []trialPipeline
	now       time.Time
	started   bool

	records, alerts, deadLetters int
}

type trialPipeline struct {
	name    string
	filters []*rules.Filter
	ev      *rules.Evaluator
}

func newTrial(cfg *pipelines.Config, sets map[string]*rules.Set, only string) (*trial, error) {
	t := &trial{now: time.Now().Truncate(time.Second)}
	limits := rules.Limits{MaxSize: cfg.Decode.MaxSize, MaxRatio: cfg.Decode.MaxRatio}
	var names []string
	for _, pc := range cfg.Pipelines {
		names = append(names, pc.Name)
		if only != "" && pc.Name != only {
			continue
		}
		p := trialPipeline{name: pc.Name, ev: sets[pc.Name].NewEvaluator(nil, limits)}
		for _, f := range pc.Topics {
			p.filters = append(p.filters, rules.MustFilter(f))
		}
		t.pipelines = append(t.pipelines, p)
	}
	if len(t.pipelines) == 0 {
		return nil, fmt.Errorf("no pipeline is named %q (the config has %s)", only, strings.Join(names, ", "))
	}
	return t, nil
}

func (p *trialPipeline) takes(topic string) bool {
	for _, f := range p.filters {
		if f.Match(topic, make([]string, len(f.Names()))) {
			return true
		}
	}
	return false
}

// try advances the clock (running the timers) and evaluates one message,
// printing what came of it.
func (t *trial) try(w io.Writer, m *rules.TestMessage, every time.Duration) error {
	if t.started {
		end := t.now.Add(every)
		for t.now.Before(end) {
			t.now = t.now.Add(min(time.Second, end.Sub(t.now)))
			for _, p := range t.pipelines {
				if events := p.ev.Tick(t.now, nil); len(events) > 0 {
					fmt.Fprintf(w, "%s %s (timer)\n", t.now.Format("15:04:05"), p.name)
					t.print(w, events)
				}
			}
		}
	}
	t.started = true
	msg, err := m.Message(t.now)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s %s %s\n", t.now.Format("15:04:05"), msg.Topic, oneLine(payloadText(msg.Payload), 200))
	taken := false
	for _, p := range t.pipelines {
		if !p.takes(msg.Topic) {
			continue
		}
		taken = true
		events, o := p.ev.Eval(msg, nil)
		if len(t.pipelines) > 1 {
			fmt.Fprintf(w, "  pipeline %s:\n", p.name)
		}
		switch {
		case o.Matched == 0:
			fmt.Fprintln(w, "  no rule matched the topic")
		case len(events) == 0:
			fmt.Fprintf(w, "  nothing: %s matched the topic, and %s\n", count(o.Matched, "rule"), filteredOut(o.Filtered))
		}
		t.print(w, events)
	}
	if !taken {
		fmt.Fprintln(w, "  no pipeline takes this topic")
	}
	return nil
}

func filteredOut(n int) string {
	if n == 1 {
		return "its where was false"
	}
	return "their where was false"
}

func (t *trial) print(w io.Writer, events []sluice.Event) {
	for _, e := range events {
		switch {
		case e.Record != nil:
			t.records++
			tags := map[string]string{}
			for _, tg := range e.Record.Tags {
				tags[tg.Key] = tg.Value
			}
			fields := map[string]any{}
			for _, f := range e.Record.Fields {
				fields[f.Name] = f.Value
			}
			fmt.Fprintf(w, "  %s: record %s %s\n", e.Record.Rule, pairs(tags), pairs(fields))
		case e.Alert != nil:
			t.alerts++
			a := e.Alert
			fmt.Fprintf(w, "  %s: ALERT %s %s %s value=%s since %s: %s\n", a.Rule, strings.ToUpper(a.Status), a.Device, a.Severity,
				sluice.FormatValue(a.Value), a.Since.Format("15:04:05"), a.Message)
		case e.DeadLetter != nil:
			t.deadLetters++
			d := e.DeadLetter
			where := d.Stage
			if d.Rule != "" {
				where = d.Rule + " (" + d.Stage + ")"
			}
			fmt.Fprintf(w, "  %s: DEAD LETTER %s\n", where, strings.ReplaceAll(d.Reason, "\n", "\n    "))
		}
	}
}

// payloadText is a payload to print: as is when it is text, else hex.
func payloadText(b []byte) string {
	for _, c := range b {
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' || c == 0x7f {
			return fmt.Sprintf("hex %x", b)
		}
	}
	return string(b)
}
