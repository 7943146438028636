package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/console"
)

// The console's commands: alerts, tail and deadletters read a running
// sluice's admin API (docs/console.md); replay is in replay.go.

// alertView is an alert as the API shows it.
type alertView struct {
	Pipeline     string            `json:"pipeline"`
	Rule         string            `json:"rule"`
	Severity     string            `json:"severity"`
	Status       string            `json:"status"`
	Device       string            `json:"device"`
	Series       string            `json:"series"`
	Value        any               `json:"value"`
	Message      string            `json:"message"`
	Time         time.Time         `json:"time"`
	Since        time.Time         `json:"since"`
	Notification int               `json:"notification"`
	Topic        string            `json:"topic"`
	Tags         map[string]string `json:"tags"`
}

type alertsView struct {
	Firing []alertView `json:"firing"`
	Recent []alertView `json:"recent"`
}

func cmdAlerts(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("alerts", stderr)
	target := adminFlags(fs)
	asJSON := fs.Bool("json", false, "print the API's JSON")
	recent := fs.Int("recent", 20, "how many of the recent transitions to show")
	fs.Usage = commandUsage(fs, "alerts [flags]", "Shows the series whose alert is firing now in a running sluice (rule, device, severity, since, value,\nmessage), and the recent alert transitions.")
	if code, ok := parseNoArgs(fs, args); !ok {
		return code
	}
	c, err := target.client()
	if err != nil {
		fmt.Fprintln(stderr, "sluice alerts:", err)
		return exitUsage
	}
	var raw json.RawMessage
	if err := c.call(ctx, http.MethodGet, "/api/v1/alerts", nil, &raw); err != nil {
		fmt.Fprintln(stderr, "sluice alerts:", err)
		return exitFailure
	}
	if *asJSON {
		stdout.Write(append(raw, '\n'))
		return exitOK
	}
	var v alertsView
	if err := json.Unmarshal(raw, &v); err != nil {
		fmt.Fprintln(stderr, "sluice alerts:", err)
		return exitFailure
	}
	now := time.Now()
	printFiring(stdout, v.Firing, now)
	if *recent > 0 && len(v.Recent) > 0 {
		fmt.Fprintf(stdout, "\nrecent transitions, newest first:\n")
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  TIME\tSTATUS\tRULE\tDEVICE\tSEVERITY\tVALUE\tMESSAGE")
		for i, a := range v.Recent {
			if i == *recent {
				break
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", clock(a.Time, now), a.Status, a.Rule, a.Device, a.Severity,
				sluice.FormatValue(a.Value), oneLine(a.Message, 70))
		}
		tw.Flush()
	}
	return exitOK
}

// printFiring prints the series firing now: what `sluice alerts` and
// `sluice status` show.
func printFiring(w io.Writer, firing []alertView, now time.Time) {
	if len(firing) == 0 {
		fmt.Fprintln(w, "firing: none")
		return
	}
	fmt.Fprintf(w, "firing: %d series\n", len(firing))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  RULE\tDEVICE\tSEVERITY\tSINCE\tFOR\tVALUE\tMESSAGE")
	for _, a := range firing {
		device := a.Device
		if a.Series != "" && a.Series != a.Device {
			device += " (" + a.Series + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Rule, device, a.Severity, clock(a.Since, now),
			now.Sub(a.Since).Round(time.Second), sluice.FormatValue(a.Value), oneLine(a.Message, 70))
	}
	tw.Flush()
}

// clock shows a time of day, with the date when it is not today.
func clock(t, now time.Time) string {
	t = t.Local()
	if y, m, d := t.Date(); y == now.Year() && m == now.Month() && d == now.Day() {
		return t.Format("15:04:05")
	}
	return t.Format("2006-01-02 15:04:05")
}

// oneLine shortens s to at most n runes on one line.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func cmdTail(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("tail", stderr)
	target := adminFlags(fs)
	device := fs.String("device", "", "only messages of this device (a topic level, or the device its records and alerts name)")
	pipeline := fs.String("pipeline", "", "only messages of this pipeline")
	asJSON := fs.Bool("json", false, "print each message as the API's JSON, one per line")
	fs.Usage = commandUsage(fs, "tail [flags] [TOPIC-FILTER]", "Shows each message a running sluice's rules evaluate, as it arrives: decoded, the rules it matched and\nwhat came out (records, alert transitions, dead letters with the reason). Ctrl-C stops.\nA slow terminal loses messages rather than slow sluice down: it says how many.")
	args, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	if len(args) > 1 {
		fmt.Fprintf(stderr, "sluice tail: one topic filter, got %d arguments: %s\n", len(args), strings.Join(args, " "))
		return exitUsage
	}
	c, err := target.client()
	if err != nil {
		fmt.Fprintln(stderr, "sluice tail:", err)
		return exitUsage
	}
	q := url.Values{}
	if len(args) == 1 {
		q.Set("topic", args[0])
	}
	if *device != "" {
		q.Set("device", *device)
	}
	if *pipeline != "" {
		q.Set("pipeline", *pipeline)
	}
	resp, err := c.do(ctx, http.MethodGet, "/api/v1/tail?"+q.Encode(), nil)
	if err != nil {
		fmt.Fprintln(stderr, "sluice tail:", err)
		return exitFailure
	}
	defer resp.Body.Close()
	err = readEvents(resp.Body, func(event, data string) {
		switch event {
		case "dropped":
			var d struct{ Dropped uint64 }
			json.Unmarshal([]byte(data), &d)
			fmt.Fprintf(stderr, "sluice tail: %d messages not shown so far: this terminal reads more slowly than they come\n", d.Dropped)
		case "message":
			if *asJSON {
				fmt.Fprintln(stdout, data)
				return
			}
			var v console.MessageView
			if json.Unmarshal([]byte(data), &v) == nil {
				printMessage(stdout, &v)
			}
		}
	})
	if ctx.Err() != nil {
		return exitOK
	}
	if err == nil {
		err = errors.New("the stream ended (sluice stopped?)")
	}
	fmt.Fprintln(stderr, "sluice tail:", err)
	return exitFailure
}

// readEvents reads a text/event-stream and calls each with every event.
func readEvents(r io.Reader, each func(event, data string)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	event, data := "message", []string{}
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if len(data) > 0 {
				each(event, strings.Join(data, "\n"))
			}
			event, data = "message", data[:0]
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(line[len("event:"):])
		case strings.HasPrefix(line, "data:"):
			data = append(data, strings.TrimPrefix(line[len("data:"):], " "))
		}
	}
	return sc.Err()
}

// printMessage prints one message of the tail: the message, then what
// each rule made of it.
func printMessage(w io.Writer, v *console.MessageView) {
	payload := "hex " + v.Hex
	if v.Text != nil {
		payload = *v.Text
	}
	if v.Timer {
		fmt.Fprintf(w, "%s %s %s (timer: no message)\n", v.Time.Local().Format("15:04:05.000"), v.Pipeline, v.Topic)
	} else {
		fmt.Fprintf(w, "%s %s %s qos%d %s\n", v.Time.Local().Format("15:04:05.000"), v.Pipeline, v.Topic, v.QoS, oneLine(payload, 200))
	}
	if len(v.Decoded) > 0 && v.Text == nil {
		for _, d := range v.Decoded {
			fmt.Fprintf(w, "  decoded %s\n", d)
		}
	}
	if v.DecodeError != "" && len(v.DeadLetters) == 0 {
		fmt.Fprintf(w, "  decode: %s\n", v.DecodeError)
	}
	if len(v.Rules) == 0 && !v.Timer {
		fmt.Fprintln(w, "  no rule matched the topic")
	}
	var nothing []string
	for _, r := range v.Rules {
		if r.Result == "nothing" {
			nothing = append(nothing, r.Rule)
		}
	}
	if len(nothing) > 0 {
		fmt.Fprintf(w, "  nothing from %s\n", strings.Join(nothing, ", "))
	}
	for _, raw := range v.Records {
		var rec struct {
			Rule   string
			Tags   map[string]string
			Fields map[string]any
		}
		json.Unmarshal(raw, &rec)
		fmt.Fprintf(w, "  %s: record %s %s\n", rec.Rule, pairs(rec.Tags), pairs(rec.Fields))
	}
	for _, raw := range v.Alerts {
		var a alertView
		json.Unmarshal(raw, &a)
		fmt.Fprintf(w, "  %s: ALERT %s %s %s value=%s: %s\n", a.Rule, strings.ToUpper(a.Status), a.Device, a.Severity, sluice.FormatValue(a.Value), a.Message)
	}
	for _, d := range v.DeadLetters {
		where := d.Stage
		if d.Rule != "" {
			where = d.Rule + " (" + d.Stage + ")"
		}
		fmt.Fprintf(w, "  %s: DEAD LETTER %s\n", where, d.Reason)
	}
}

// pairs shows a map as k=v in key order.
func pairs[V any](m map[string]V) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + sluice.FormatValue(m[k])
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func cmdDeadLetters(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("deadletters", stderr)
	target := adminFlags(fs)
	asJSON := fs.Bool("json", false, "print the API's JSON")
	replay := fs.Bool("replay", false, "send the dead letters held (or those of -id) through the current rules, after a fix: each\nthrough the rule that failed on it alone; its records go to the sinks (docs/console.md)")
	again := fs.Bool("again", false, "with -replay: also those already replayed (their records are written again)")
	var ids idList
	fs.Var(&ids, "id", "with -replay: only this dead letter (repeat for more)")
	fs.Usage = commandUsage(fs, "deadletters [flags]", "Shows the recent dead letters of a running sluice (kept in memory, no sink needed): when, the\nreason, the stage and rule (or sink), the message and its payload (text, or hex). -replay sends\nthem through the current rules.")
	if code, ok := parseNoArgs(fs, args); !ok {
		return code
	}
	if (len(ids) > 0 || *again) && !*replay {
		fmt.Fprintln(stderr, "sluice deadletters: -id and -again go with -replay")
		return exitUsage
	}
	c, err := target.client()
	if err != nil {
		fmt.Fprintln(stderr, "sluice deadletters:", err)
		return exitUsage
	}
	if *replay {
		return replayDeadLetters(ctx, c, console.ReplayRequest{IDs: ids, All: len(ids) == 0, Again: *again}, *asJSON, stdout, stderr)
	}
	var raw json.RawMessage
	if err := c.call(ctx, http.MethodGet, "/api/v1/deadletters", nil, &raw); err != nil {
		fmt.Fprintln(stderr, "sluice deadletters:", err)
		return exitFailure
	}
	if *asJSON {
		stdout.Write(append(raw, '\n'))
		return exitOK
	}
	var v console.DeadLettersView
	if err := json.Unmarshal(raw, &v); err != nil {
		fmt.Fprintln(stderr, "sluice deadletters:", err)
		return exitFailure
	}
	now := time.Now()
	fmt.Fprintf(stdout, "dead letters: %d held, %d since start (newest first)\n", v.Held, v.Total)
	// A message several rules failed on the same way is shown once.
	for list := v.DeadLetters; len(list) > 0; {
		n := 1
		for n < len(list) && sameFailure(&list[0], &list[n]) {
			n++
		}
		printDeadLetters(stdout, list[:n], now)
		list = list[n:]
	}
	return exitOK
}

func sameFailure(a, b *console.DeadLetterView) bool {
	return a.Pipeline == b.Pipeline && a.Topic == b.Topic && a.Received.Equal(b.Received) && a.Stage == b.Stage &&
		a.Reason == b.Reason && a.Sink == b.Sink && (a.Replay == nil) == (b.Replay == nil)
}

// printDeadLetters prints dead letters of one message that failed the same
// way (in one rule, or in several).
func printDeadLetters(w io.Writer, group []console.DeadLetterView, now time.Time) {
	d := &group[0]
	var ids, rules []string
	for _, g := range group {
		ids = append(ids, fmt.Sprintf("#%d", g.ID))
		rules = append(rules, g.Rule)
	}
	what := "rule " + strings.Join(rules, ", ")
	if len(rules) > 1 {
		what = "rules " + strings.Join(rules, ", ")
	}
	switch d.Stage {
	case "decode":
		what += " could not decode it"
	case "rule":
		what += " failed"
	case "sink":
		what = "sink " + d.Sink + " refused what the rules made of it"
	}
	fmt.Fprintf(w, "\n%s %s %s: %s\n", strings.Join(ids, " "), clock(d.Time, now), d.Pipeline, what)
	for line := range strings.SplitSeq(d.Reason, "\n") {
		fmt.Fprintf(w, "  %s\n", line)
	}
	fmt.Fprintf(w, "  message: %s qos%d from %s, received %s\n", d.Topic, d.QoS, d.ClientID, clock(d.Received, now))
	switch {
	case d.Text != nil:
		fmt.Fprintf(w, "  payload: %s\n", oneLine(*d.Text, 300))
	default:
		fmt.Fprintf(w, "  payload (hex): %s\n", oneLine(d.Hex, 300))
	}
	if d.Truncated {
		fmt.Fprintln(w, "  (a payload too large to keep whole: its first MiB is shown)")
	}
	if r := d.Replay; r != nil {
		fmt.Fprintf(w, "  replayed %s: %s\n", clock(r.Time, now), describeReplay(*r))
	}
}

func replayDeadLetters(ctx context.Context, c adminClient, req console.ReplayRequest, asJSON bool, stdout, stderr io.Writer) int {
	var res struct {
		Results []console.ReplayResult `json:"results"`
	}
	if err := c.call(ctx, http.MethodPost, "/api/v1/deadletters/replay", req, &res); err != nil {
		fmt.Fprintln(stderr, "sluice deadletters:", err)
		return exitFailure
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res)
		return exitOK
	}
	if len(res.Results) == 0 {
		fmt.Fprintln(stdout, "no dead letter to replay")
		return exitOK
	}
	sent := 0
	for _, r := range res.Results {
		if r.Sent {
			sent++
		}
		fmt.Fprintf(stdout, "#%d %s %s: %s\n", r.ID, r.Pipeline, r.Rule, describeReplay(r.ReplayOutcome))
	}
	fmt.Fprintf(stdout, "%d of %d replayed\n", sent, len(res.Results))
	if sent < len(res.Results) {
		return exitFailure
	}
	return exitOK
}

func describeReplay(r console.ReplayOutcome) string {
	if !r.Sent {
		return "not replayed: " + r.Error
	}
	s := "sent " + count(r.Records, "record")
	if r.Alerts > 0 {
		s += fmt.Sprintf(" (%s raised, not sent)", count(r.Alerts, "alert"))
	}
	return s
}

// idList is a flag that may be repeated.
type idList []uint64

func (l *idList) String() string { return fmt.Sprint(*l) }

func (l *idList) Set(s string) error {
	n, err := strconv.ParseUint(strings.TrimPrefix(s, "#"), 10, 64)
	if err != nil {
		return fmt.Errorf("want a dead letter's number, such as 12")
	}
	*l = append(*l, n)
	return nil
}
