package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/internal/admin"
	"github.com/sluicehq/sluice/pipelines"
)

// cmdStatus shows a running sluice's state, read from its admin listener:
// throughput, sinks and their backlogs, alerts firing, connections. It exits
// 0 when sluice is ready, 1 when it is not or cannot be reached.
func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status", stderr)
	addr := fs.String("admin", "127.0.0.1:9880", "the admin listener's `address` (admin.address in the config)")
	token := fs.String("token", os.Getenv("SLUICE_ADMIN_TOKEN"), "bearer `token` if admin.token is set (default $SLUICE_ADMIN_TOKEN)")
	watch := fs.Bool("watch", false, "refresh every interval until Ctrl-C")
	every := fs.Duration("interval", 2*time.Second, "time over which rates are measured, and between refreshes")
	asJSON := fs.Bool("json", false, "print the status as JSON (no rates)")
	configFile := configFlag(fs)
	fs.Lookup("c").Usage = "find the admin listener (admin.address, admin.token) in this configuration `file`"
	fs.Usage = commandUsage(fs, "status [flags]", "Shows a running sluice, read from its admin listener: rates, sinks and their backlogs, alerts firing.\nExits 0 when sluice is ready, 1 when it is not or cannot be reached.")
	if code, ok := parseNoArgs(fs, args); !ok {
		return code
	}
	if *configFile != "" {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		fromAddr, fromToken, err := adminFromConfig(*configFile)
		if err != nil {
			fmt.Fprintln(stderr, "sluice status:", err)
			return exitUsage
		}
		if !set["admin"] {
			*addr = fromAddr
		}
		if !set["token"] && fromToken != "" {
			*token = fromToken
		}
	}
	c := statusClient{url: admin.BaseURL(*addr) + "/api/v1/status", token: *token}
	prev, err := c.get(ctx)
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
		cur, err := c.get(ctx)
		if err != nil {
			fmt.Fprintln(stderr, "sluice status:", err)
			return exitFailure
		}
		if *watch {
			fmt.Fprint(stdout, "\033[H\033[2J") // clear the terminal
		}
		printStatus(stdout, prev, cur)
		if !*watch {
			return readyCode(cur)
		}
		prev = cur
	}
}

// adminFromConfig returns the address (a wildcard host made loopback) and
// token of a config's admin listener.
func adminFromConfig(path string) (addr, token string, err error) {
	cfg, err := pipelines.Load(path)
	if err != nil {
		return "", "", err
	}
	if cfg.Admin.Address == "" {
		return "", "", fmt.Errorf("%s has no admin.address: sluice status reads the admin listener; set one (docs/operations.md#the-admin-listener)", path)
	}
	host, port, err := net.SplitHostPort(cfg.Admin.Address)
	if err != nil {
		return "", "", err
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	if cfg.Admin.Token.IsSet() {
		token = cfg.Admin.Token.Reveal()
	}
	return net.JoinHostPort(host, port), token, nil
}

func readyCode(s *admin.Status) int {
	if s.Ready {
		return exitOK
	}
	return exitFailure
}

type statusClient struct{ url, token string }

func (c statusClient) get(ctx context.Context) (*admin.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w (is sluice running with admin.address set?)", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("%s: %s: %s", c.url, resp.Status, strings.TrimSpace(string(body)))
	}
	var s admin.Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, fmt.Errorf("%s: %w", c.url, err)
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
