package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/internal/admin"
)

// cmdStatus shows a running sluice's state, read from its admin listener:
// throughput, sinks and their backlogs, alerts firing, connections. It exits
// 0 when sluice is ready, 1 when it is not or cannot be reached.
func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status", stderr)
	target := adminFlags(fs)
	watch := fs.Bool("watch", false, "refresh every interval until Ctrl-C")
	every := fs.Duration("interval", 2*time.Second, "time over which rates are measured, and between refreshes")
	asJSON := fs.Bool("json", false, "print the status as JSON (no rates)")
	fs.Usage = commandUsage(fs, "status [flags]", "Shows a running sluice, read from its admin listener: rates, sinks and their backlogs, the series firing.\nExits 0 when sluice is ready, 1 when it is not or cannot be reached.")
	if code, ok := parseNoArgs(fs, args); !ok {
		return code
	}
	c, err := target.client()
	if err != nil {
		fmt.Fprintln(stderr, "sluice status:", err)
		return exitUsage
	}
	prev, err := c.status(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "sluice status:", err)
		return exitFailure
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(prev)
		return readyCode(prev)
	}
	for {
		select {
		case <-ctx.Done():
			return exitOK
		case <-time.After(*every):
		}
		cur, err := c.status(ctx)
		if err != nil {
			fmt.Fprintln(stderr, "sluice status:", err)
			return exitFailure
		}
		// The series firing, from the console's API (an older sluice has
		// none: the counts per rule stand alone).
		var alerts alertsView
		if err := c.call(ctx, http.MethodGet, "/api/v1/alerts", nil, &alerts); err != nil {
			alerts.Firing = nil
		}
		if *watch {
			fmt.Fprint(stdout, "\033[H\033[2J") // clear the terminal
		}
		printStatus(stdout, prev, cur)
		if len(alerts.Firing) > 0 {
			fmt.Fprintln(stdout)
			printFiring(stdout, alerts.Firing, time.Now())
		}
		if !*watch {
			return readyCode(cur)
		}
		prev = cur
	}
}

func readyCode(s *admin.Status) int {
	if s.Ready {
		return exitOK
	}
	return exitFailure
}

func (c adminClient) status(ctx context.Context) (*admin.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var s admin.Status
	if err := c.call(ctx, http.MethodGet, "/api/v1/status", nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// printStatus prints cur, with rates over the time since prev.
func printStatus(w io.Writer, prev, cur *admin.Status) {
	secs := cur.Uptime - prev.Uptime
	rate := func(now, before float64) float64 {
		if secs <= 0 || now < before {
			return 0
		}
		return (now - before) / secs
	}
	state := "READY"
	if !cur.Ready {
		state = "NOT READY"
	}
	fmt.Fprintf(w, "sluice %s, up %s: %s\n", cur.Version, (time.Duration(cur.Uptime) * time.Second).String(), state)
	for _, p := range cur.Problems {
		fmt.Fprintf(w, "  ! %s\n", p)
	}
	for _, n := range cur.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	fmt.Fprintf(w, "\nconnections %.0f   in %.0f msg/s   rejected %.0f msg/s\n",
		cur.Connections, rate(cur.Received, prev.Received), rate(cur.Rejected, prev.Rejected))

	old := map[string]admin.Sink{}
	oldPipe := map[string]admin.Pipeline{}
	for _, p := range prev.Pipelines {
		oldPipe[p.Name] = p
		for _, s := range p.Sinks {
			old[p.Name+"/"+s.Name] = s
		}
	}
	for _, p := range cur.Pipelines {
		op := oldPipe[p.Name]
		fmt.Fprintf(w, "\npipeline %s: %.0f msg/s, journal %s of %s, dead letters %.0f\n",
			p.Name, rate(p.Messages, op.Messages), bytesString(p.JournalBytes), bytesString(p.MaxBytes), p.DeadLetters)
		if c := p.Cluster; c != nil {
			state := "running"
			if !c.Ready {
				state = "waiting for Kafka"
				if c.LastError != "" {
					state += ": " + c.LastError
				}
			}
			fmt.Fprintf(w, "  cluster node %s (%s), %s: partitions %s; journal forwarded to seq %d of %d; sink lag %d\n",
				c.Node, strings.Join(c.Roles, ", "), state, joinInts(c.Partitions), c.Forwarded, c.Journal, c.Lag)
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  SINK\tSTATE\tWRITTEN/s\tBACKLOG\tOLDEST\tFAILURES\tLAST ERROR")
		for _, s := range p.Sinks {
			o := old[p.Name+"/"+s.Name]
			st := "ok"
			switch {
			case !s.Ready:
				st = "DOWN"
			case s.FailingFor > 0:
				st = "retrying"
			}
			lastErr := ""
			if s.FailingFor > 0 {
				lastErr = s.LastError
				if len(lastErr) > 60 {
					lastErr = lastErr[:57] + "..."
				}
			}
			fmt.Fprintf(tw, "  %s\t%s\t%.0f\t%d (%s)\t%s\t%.0f\t%s\n", s.Name, st, rate(s.Written, o.Written),
				s.Backlog, bytesString(s.BacklogBytes), (time.Duration(s.BacklogAge) * time.Second).String(), s.Failures, lastErr)
		}
		tw.Flush()
	}
	if len(cur.Firing) == 0 {
		fmt.Fprintln(w, "\nalerts firing: none")
		return
	}
	fmt.Fprintln(w, "\nalerts firing:")
	for _, a := range cur.Firing {
		fmt.Fprintf(w, "  %-30s %-10s %.0f series\n", a.Rule, a.Severity, a.Firing)
	}
}

func bytesString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
