package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/console"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/rules"
)

// cmdReplay runs the messages a running sluice's journal holds for a
// window through candidate rules and through the rules of the config, both
// from no state on the same simulated clock, and prints the difference:
// records changed, alert transitions added or gone. The messages come over
// the admin API (the journal is the running process's: its data_dir is
// locked, and it may be encrypted or in memory). Nothing is written unless
// -o names a file for the candidate's output.
func cmdReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("replay", stderr)
	target := adminFlags(fs)
	fs.Lookup("c").Usage = "the configuration `file` of the running sluice (its pipelines, rules and admin listener; default sluice.yaml)"
	var candidate ruleArgs
	fs.Var(&candidate, "rules", "candidate rule `path`s: files, folders or globs (repeat, or separate with commas)")
	since := fs.Duration("since", time.Hour, "replay the messages received in this last `while`")
	pipeline := fs.String("pipeline", "", "the pipeline to replay (default: the config's only one)")
	out := fs.String("o", "", "write what the candidate rules produce (records, alert transitions, dead letters) to this `file`, as JSON lines")
	asJSON := fs.Bool("json", false, "print the difference as JSON")
	examples := fs.Int("examples", 5, "changes shown per rule")
	fs.Usage = commandUsage(fs, "replay [-c sluice.yaml] -rules PATH [-since 1h] [flags]",
		"Runs the messages of the last while, from a running sluice's journal (pipelines' journal.retention\n"+
			"keeps them), through candidate rules and through the config's rules, on a simulated clock, and prints\n"+
			"the difference: records changed, alert transitions added or gone. Writes nothing unless -o.")
	if code, ok := parseNoArgs(fs, args); !ok {
		return code
	}
	fail := func(code int, format string, args ...any) int {
		fmt.Fprintf(stderr, "sluice replay: "+format+"\n", args...)
		return code
	}
	if len(candidate) == 0 {
		return fail(exitUsage, "which rules? -rules PATH names the candidate rule files (see sluice replay -h)")
	}
	if *since <= 0 {
		return fail(exitUsage, "-since %v: want a duration such as 1h", *since)
	}
	path, _ := configPath(*target.config, nil)
	cfg, pc, running, cand, err := replayRules(path, *pipeline, candidate)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	c, err := target.clientOf(cfg, path)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	var sink *json.Encoder
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return fail(exitUsage, "%v", err)
		}
		defer f.Close()
		bw := bufio.NewWriter(f)
		defer bw.Flush()
		sink = json.NewEncoder(bw)
	}

	to := time.Now()
	from := to.Add(-*since)
	limits := rules.Limits{MaxSize: cfg.Decode.MaxSize, MaxRatio: cfg.Decode.MaxRatio}
	d := newReplayDiff(running.Simulate(limits), cand.Simulate(limits), *examples, sink)
	end, err := readJournal(ctx, c, pc.Name, from, d.message)
	if err != nil {
		return fail(exitFailure, "%v", err)
	}
	d.until(to)
	d.report.Pipeline, d.report.From, d.report.To = pc.Name, from, to
	d.report.Running, d.report.Candidate = strings.Join(cfg.RulePaths(pc), ", "), strings.Join(candidate, ", ")
	if !end.Oldest.IsZero() && end.Oldest.After(from) {
		d.report.Note = fmt.Sprintf("the journal's oldest record is from %s: nothing before it is replayed", end.Oldest.Local().Format(time.DateTime))
		if pc.Journal.Retention < *since {
			d.report.Note += fmt.Sprintf(" (pipeline %q keeps %v after the sinks are done: journal.retention keeps more)", pc.Name, pc.Journal.Retention)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(d.report)
		return exitOK
	}
	d.report.print(stdout)
	return exitOK
}

// replayRules loads the config at path, picks its pipeline, and compiles
// that pipeline's rules and the candidate ones. Problems in rule files are
// file:line:col.
func replayRules(path, pipeline string, candidate []string) (*pipelines.Config, *pipelines.PipelineConfig, *rules.Set, *rules.Set, error) {
	cfg, err := pipelines.Load(path)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	pc, err := pickPipeline(cfg, pipeline)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("sluice replay: %s: %w", path, err)
	}
	running, err := rules.Load(cfg.RulePaths(pc)...)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("sluice replay: the rules of %s, pipeline %q:\n%w", path, pc.Name, err)
	}
	cand, err := rules.Load(candidate...)
	if err != nil {
		var list conf.ErrorList
		if !errors.As(err, &list) {
			err = fmt.Errorf("sluice replay: %w", err)
		}
		return nil, nil, nil, nil, err
	}
	return cfg, pc, running, cand, nil
}

// ruleArgs is -rules, repeatable and comma-separated.
type ruleArgs []string

func (r *ruleArgs) String() string { return strings.Join(*r, ",") }

func (r *ruleArgs) Set(s string) error {
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*r = append(*r, p)
		}
	}
	return nil
}

func pickPipeline(cfg *pipelines.Config, name string) (*pipelines.PipelineConfig, error) {
	var names []string
	for i := range cfg.Pipelines {
		p := &cfg.Pipelines[i]
		if p.Name == name || (name == "" && len(cfg.Pipelines) == 1) {
			return p, nil
		}
		names = append(names, p.Name)
	}
	if name == "" {
		return nil, fmt.Errorf("%d pipelines (%s): say which with -pipeline", len(names), strings.Join(names, ", "))
	}
	return nil, fmt.Errorf("no pipeline %q (there are %s)", name, strings.Join(names, ", "))
}

// readJournal calls each with the messages of a pipeline's journal
// received since from, read from the running sluice, and returns the
// answer's last line.
func readJournal(ctx context.Context, c adminClient, pipeline string, from time.Time, each func(*sluice.Message)) (console.JournalLine, error) {
	q := url.Values{"pipeline": {pipeline}, "since": {from.UTC().Format(time.RFC3339Nano)}}
	resp, err := c.do(ctx, http.MethodGet, "/api/v1/journal/messages?"+q.Encode(), nil)
	if err != nil {
		return console.JournalLine{}, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(bufio.NewReaderSize(resp.Body, 256<<10))
	for {
		var line console.JournalLine
		if err := dec.Decode(&line); err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("the answer ended early (sluice stopped?)")
			}
			return line, fmt.Errorf("reading the journal: %w", err)
		}
		switch {
		case line.Error != "":
			return line, fmt.Errorf("reading the journal: %s", line.Error)
		case line.End:
			return line, nil
		}
		msg, err := sluice.DecodeMessage(line.Message)
		if err != nil {
			return line, fmt.Errorf("journal record %d: %w", line.Seq, err)
		}
		each(msg)
	}
}

// replayReport is the difference between the running rules and the
// candidate ones over the same messages.
type replayReport struct {
	Pipeline  string    `json:"pipeline"`
	From      time.Time `json:"from"`
	To        time.Time `json:"to"`
	Running   string    `json:"running_rules"`
	Candidate string    `json:"candidate_rules"`
	Note      string    `json:"note,omitempty"`
	Messages  int       `json:"messages"`
	First     time.Time `json:"first_message,omitzero"`
	Last      time.Time `json:"last_message,omitzero"`
	Records   struct {
		Unchanged int                    `json:"unchanged"`
		Changed   int                    `json:"changed"`
		Added     int                    `json:"added"`
		Gone      int                    `json:"gone"`
		ByRule    map[string]*ruleChange `json:"by_rule,omitempty"`
	} `json:"records"`
	Alerts struct {
		Unchanged int          `json:"unchanged"`
		Added     []alertShort `json:"added"`
		Gone      []alertShort `json:"gone"`
	} `json:"alert_transitions"`
	DeadLetters struct {
		Running   int `json:"running"`
		Candidate int `json:"candidate"`
	} `json:"dead_letters"`
}

// ruleChange is what changed in one rule's records.
type ruleChange struct {
	Changed  int      `json:"changed"`
	Added    int      `json:"added"`
	Gone     int      `json:"gone"`
	Examples []string `json:"examples,omitempty"`
}

// alertShort is an alert transition, as the difference shows it.
type alertShort struct {
	Time     time.Time `json:"time"`
	Rule     string    `json:"rule"`
	Series   string    `json:"series"`
	Device   string    `json:"device"`
	Status   string    `json:"status"`
	Severity string    `json:"severity"`
	Value    any       `json:"value"`
	Message  string    `json:"message"`
}

func (a alertShort) key() string {
	return a.Rule + "\x00" + a.Series + "\x00" + a.Status + "\x00" + a.Time.UTC().Format(time.RFC3339Nano)
}

type replayDiff struct {
	running, candidate *rules.Simulation
	examples           int
	out                *json.Encoder
	report             replayReport
	alerts             [2][]alertShort // running, candidate
}

func newReplayDiff(running, candidate *rules.Simulation, examples int, out *json.Encoder) *replayDiff {
	d := &replayDiff{running: running, candidate: candidate, examples: examples, out: out}
	d.report.Records.ByRule = map[string]*ruleChange{}
	return d
}

func (d *replayDiff) message(msg *sluice.Message) {
	r := &d.report
	r.Messages++
	if r.First.IsZero() {
		r.First = msg.Received
	}
	r.Last = msg.Received
	rt, ro, _ := d.running.Eval(msg)
	d.note(0, rt)
	d.note(0, ro)
	ct, co, _ := d.candidate.Eval(msg)
	d.note(1, ct)
	d.note(1, co)
	d.compareRecords(msg, ro, co)
}

func (d *replayDiff) until(t time.Time) {
	d.note(0, d.running.Until(t))
	d.note(1, d.candidate.Until(t))
	d.compareAlerts()
}

// note keeps one side's alert transitions and dead letters, and writes the
// candidate's output to -o.
func (d *replayDiff) note(side int, events []sluice.Event) {
	for _, e := range events {
		switch {
		case e.Alert != nil:
			a := e.Alert
			d.alerts[side] = append(d.alerts[side], alertShort{Time: a.Time, Rule: a.Rule, Series: a.Series, Device: a.Device,
				Status: a.Status, Severity: a.Severity, Value: a.Value, Message: a.Message})
		case e.DeadLetter != nil:
			if side == 0 {
				d.report.DeadLetters.Running++
			} else {
				d.report.DeadLetters.Candidate++
			}
		}
		if side == 1 && d.out != nil {
			d.write(e)
		}
	}
}

func (d *replayDiff) write(e sluice.Event) {
	var line struct {
		Record     json.RawMessage         `json:"record,omitempty"`
		Alert      json.RawMessage         `json:"alert,omitempty"`
		DeadLetter *console.DeadLetterView `json:"dead_letter,omitempty"`
	}
	switch {
	case e.Record != nil:
		line.Record = e.Record.AppendJSON(nil)
	case e.Alert != nil:
		line.Alert = e.Alert.AppendJSON(nil)
	case e.DeadLetter != nil:
		m := e.Message
		line.DeadLetter = &console.DeadLetterView{Time: m.Received, DeadLetterBrief: console.DeadLetterBrief{Stage: e.DeadLetter.Stage,
			Rule: e.DeadLetter.Rule, Reason: e.DeadLetter.Reason}, Topic: m.Topic, ClientID: m.ClientID, QoS: m.QoS,
			Received: m.Received, Payload: console.ShowPayload(m.Payload)}
	default:
		return
	}
	d.out.Encode(line)
}

// compareRecords compares what each side's rules recorded of one message,
// rule by rule and reading by reading.
func (d *replayDiff) compareRecords(msg *sluice.Message, running, candidate []sluice.Event) {
	byRule := func(events []sluice.Event) map[string][]*sluice.Record {
		m := map[string][]*sluice.Record{}
		for _, e := range events {
			if e.Record != nil {
				m[e.Record.Rule] = append(m[e.Record.Rule], e.Record)
			}
		}
		return m
	}
	rr, cr := byRule(running), byRule(candidate)
	names := slices.Sorted(maps.Keys(rr))
	for name := range cr {
		if _, ok := rr[name]; !ok {
			names = append(names, name)
		}
	}
	r := &d.report.Records
	for _, name := range names {
		a, b := rr[name], cr[name]
		rc := r.ByRule[name]
		if rc == nil {
			rc = &ruleChange{}
		}
		changed := false
		for i := range max(len(a), len(b)) {
			switch {
			case i >= len(a):
				r.Added++
				rc.Added++
				changed = true
				d.example(rc, msg, fmt.Sprintf("new record %s", recordText(b[i])))
			case i >= len(b):
				r.Gone++
				rc.Gone++
				changed = true
				d.example(rc, msg, fmt.Sprintf("no record (was %s)", recordText(a[i])))
			default:
				if diff := recordDiff(a[i], b[i]); diff != "" {
					r.Changed++
					rc.Changed++
					changed = true
					d.example(rc, msg, diff)
				} else {
					r.Unchanged++
				}
			}
		}
		if changed {
			r.ByRule[name] = rc
		}
	}
}

func (d *replayDiff) example(rc *ruleChange, msg *sluice.Message, what string) {
	if len(rc.Examples) < d.examples {
		rc.Examples = append(rc.Examples, fmt.Sprintf("%s %s: %s", msg.Received.Local().Format("15:04:05.000"), msg.Topic, what))
	}
}

func recordText(r *sluice.Record) string {
	var parts []string
	for _, t := range r.Tags {
		parts = append(parts, t.Key+"="+t.Value)
	}
	for _, f := range r.Fields {
		parts = append(parts, f.Name+"="+sluice.FormatValue(f.Value))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// recordDiff says how b differs from a ("" if it does not): fields and
// tags changed, added or gone.
func recordDiff(a, b *sluice.Record) string {
	var parts []string
	diff := func(kind string, av, bv map[string]string, order []string) {
		for _, k := range order {
			x, inA := av[k]
			y, inB := bv[k]
			switch {
			case inA && !inB:
				parts = append(parts, fmt.Sprintf("%s %s gone (was %s)", kind, k, x))
			case !inA && inB:
				parts = append(parts, fmt.Sprintf("new %s %s=%s", kind, k, y))
			case x != y:
				parts = append(parts, fmt.Sprintf("%s %s → %s", k, x, y))
			}
		}
	}
	tags := func(r *sluice.Record) (map[string]string, []string) {
		m := map[string]string{}
		var order []string
		for _, t := range r.Tags {
			m[t.Key] = t.Value
			order = append(order, t.Key)
		}
		return m, order
	}
	fields := func(r *sluice.Record) (map[string]string, []string) {
		m := map[string]string{}
		var order []string
		for _, f := range r.Fields {
			m[f.Name] = string(sluice.AppendJSONValue(nil, f.Value))
			order = append(order, f.Name)
		}
		return m, order
	}
	at, ao := tags(a)
	bt, bo := tags(b)
	diff("tag", at, bt, union(ao, bo))
	af, afo := fields(a)
	bf, bfo := fields(b)
	diff("field", af, bf, union(afo, bfo))
	return strings.Join(parts, ", ")
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// compareAlerts sorts the alert transitions into those both sides made
// and those only one did.
func (d *replayDiff) compareAlerts() {
	left := map[string]int{}
	for _, a := range d.alerts[0] {
		left[a.key()]++
	}
	r := &d.report.Alerts
	r.Added, r.Gone = []alertShort{}, []alertShort{}
	for _, a := range d.alerts[1] {
		if left[a.key()] > 0 {
			left[a.key()]--
			r.Unchanged++
			continue
		}
		r.Added = append(r.Added, a)
	}
	for _, a := range d.alerts[0] {
		if left[a.key()] > 0 {
			left[a.key()]--
			r.Gone = append(r.Gone, a)
		}
	}
}

func (r *replayReport) print(w io.Writer) {
	fmt.Fprintf(w, "replay of pipeline %s, %s to %s: %d messages, on a simulated clock, both rule sets from no state\n",
		r.Pipeline, r.From.Local().Format(time.DateTime), r.To.Local().Format(time.DateTime), r.Messages)
	fmt.Fprintf(w, "  running rules:   %s\n  candidate rules: %s\n", r.Running, r.Candidate)
	if r.Note != "" {
		fmt.Fprintf(w, "  note: %s\n", r.Note)
	}
	rec := r.Records
	fmt.Fprintf(w, "\nrecords: %d unchanged, %d changed, %d new, %d gone\n", rec.Unchanged, rec.Changed, rec.Added, rec.Gone)
	for _, name := range slices.Sorted(maps.Keys(rec.ByRule)) {
		c := rec.ByRule[name]
		fmt.Fprintf(w, "  %s: %d changed, %d new, %d gone\n", name, c.Changed, c.Added, c.Gone)
		for _, e := range c.Examples {
			fmt.Fprintf(w, "    %s\n", e)
		}
	}
	al := r.Alerts
	fmt.Fprintf(w, "\nalert transitions: %d unchanged, %d new, %d gone\n", al.Unchanged, len(al.Added), len(al.Gone))
	show := func(sign string, list []alertShort) {
		for _, a := range list {
			fmt.Fprintf(w, "  %s %s %s %s %s %s value=%s: %s\n", sign, a.Time.Local().Format("15:04:05"), a.Rule, a.Device,
				a.Status, a.Severity, sluice.FormatValue(a.Value), oneLine(a.Message, 80))
		}
	}
	show("+", al.Added)
	show("-", al.Gone)
	fmt.Fprintf(w, "\ndead letters: %d with the running rules, %d with the candidate rules\n", r.DeadLetters.Running, r.DeadLetters.Candidate)
	if rec.Changed+rec.Added+rec.Gone+len(al.Added)+len(al.Gone) == 0 && r.DeadLetters.Running == r.DeadLetters.Candidate {
		fmt.Fprintln(w, "\nno difference")
	}
}
