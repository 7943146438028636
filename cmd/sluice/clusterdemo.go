package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/internal/admin"
	"github.com/sluicehq/sluice/internal/childproc"
	"github.com/sluicehq/sluice/internal/simulator"
)

// runClusterDemo runs o.nodes sluice nodes as a cluster on the Kafka
// stand-in, each its own `sluice run` process with the demo's config and a
// cluster section, and the simulated fleet spread over them. Every cycle it
// stops a node, or starts the stopped one again, and the live summary shows
// which node owns which partitions as they move.
func runClusterDemo(ctx context.Context, o demoOptions, stdout, stderr io.Writer) error {
	dataDir, err := filepath.Abs(o.data)
	if err != nil {
		return err
	}
	confDir := filepath.Join(dataDir, "config")
	services, err := startDemoServices(ctx, o, dataDir, confDir, stdout)
	if err != nil {
		return err
	}
	defer services.stop()
	base, err := os.ReadFile(filepath.Join(confDir, "demo", "sluice.yaml"))
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	var nodes []*demoNode
	for i := 1; i <= o.nodes; i++ {
		n, err := newDemoNode(i, string(base), confDir, dataDir, exe)
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
	}
	defer func() {
		fmt.Fprintln(stdout, "Stopping the nodes (each drains to the sinks) ...")
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Go(n.stop)
		}
		wg.Wait()
	}()
	var brokers []string
	for _, n := range nodes {
		fmt.Fprintf(stdout, "Starting node %s: MQTT %s, admin %s, log %s ...\n", n.name, n.mqtt, n.admin, n.logPath)
		if err := n.start(); err != nil {
			return err
		}
		brokers = append(brokers, n.mqtt)
	}

	sim := simulator.New(simulator.Config{Brokers: brokers, Devices: o.devices, Interval: o.interval,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan struct{})
	go func() { sim.Run(simCtx); close(simDone) }()
	defer func() {
		stopSim()
		<-simDone
	}()

	fmt.Fprintf(stdout, `
sluice cluster demo: %d nodes on the Kafka stand-in (127.0.0.1:%d), %d simulated devices spread over
their brokers (%s) as a TCP load balancer would. Each pipeline's messages go through the topic
sluice.telemetry.ingest (12 partitions, keyed by device); the nodes share the partitions in a consumer
group, and a partition's rule state moves with it (docs/scaling.md). Every %v a node is stopped, or
started again: watch its partitions move. Ctrl-C stops everything.

  alerts from any node:  mosquitto_sub -h 127.0.0.1 -p 1884 -t 'sluice/alerts/#' -v
  a node's status:       sluice status -admin %s

`, o.nodes, demoKafka, o.devices, strings.Join(brokers, ", "), o.cycle, nodes[0].admin)

	var cycle <-chan time.Time
	if o.cycle > 0 {
		t := time.NewTicker(o.cycle)
		defer t.Stop()
		cycle = t.C
	}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	victim := len(nodes) - 1
	owners := map[int32]string{}
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout)
			return nil
		case <-cycle:
			if n := nodes[victim]; n.running() {
				fmt.Fprintf(stdout, "\n>>> stopping %s: its partitions go to the other nodes, with their state\n\n", n.name)
				go n.stop()
			} else {
				fmt.Fprintf(stdout, "\n>>> starting %s again: the group gives it a share of the partitions\n\n", n.name)
				if err := n.start(); err != nil {
					fmt.Fprintln(stderr, "sluice demo:", err)
				}
				victim = (victim + len(nodes) - 1) % len(nodes)
			}
		case <-tick.C:
			fmt.Fprintln(stdout, clusterSummary(nodes, owners))
		}
	}
}

// clusterSummary is one line per node: running or not, its rate of
// messages in, the partitions it evaluates; and the partitions that moved
// since the last summary.
func clusterSummary(nodes []*demoNode, owners map[int32]string) string {
	var b strings.Builder
	now := time.Now()
	b.WriteString(now.Format("15:04:05"))
	var moved []string
	for _, n := range nodes {
		st := n.status()
		if st == nil {
			fmt.Fprintf(&b, " | %s %-8s %25s", n.name, n.state(), "")
			continue
		}
		rate := 0.0
		if !n.lastAt.IsZero() && st.Received >= n.lastIn {
			rate = (st.Received - n.lastIn) / now.Sub(n.lastAt).Seconds()
		}
		n.lastIn, n.lastAt = st.Received, now
		var parts []int32
		for _, p := range st.Pipelines {
			if p.Cluster != nil {
				parts = p.Cluster.Partitions
			}
		}
		for _, p := range parts {
			if owners[p] != n.name {
				if owners[p] != "" {
					moved = append(moved, fmt.Sprintf("%d %s→%s", p, owners[p], n.name))
				}
				owners[p] = n.name
			}
		}
		fmt.Fprintf(&b, " | %s %4.0f msg/s, partitions %-14s", n.name, rate, joinInts(parts))
	}
	if len(moved) > 0 {
		slices.Sort(moved)
		fmt.Fprintf(&b, "\n          partitions moved: %s", strings.Join(moved, ", "))
	}
	return b.String()
}

func joinInts(ps []int32) string {
	if len(ps) == 0 {
		return "-"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ",")
}

// demoNode is one `sluice run` of the cluster demo.
type demoNode struct {
	name, mqtt, admin, cfgPath, logPath, exe string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	lastIn float64
	lastAt time.Time
}

// newDemoNode writes node i's config: the demo's, on its own ports and data
// folder, with a cluster section.
func newDemoNode(i int, base, confDir, dataDir, exe string) (*demoNode, error) {
	n := &demoNode{
		name: fmt.Sprintf("n%d", i), exe: exe,
		mqtt:  fmt.Sprintf("127.0.0.1:%d", 1882+i),
		admin: fmt.Sprintf("127.0.0.1:%d", 9879+i),
	}
	dir := filepath.Join(dataDir, "node-"+n.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	text := strings.NewReplacer(
		"address: 127.0.0.1:9880", "address: "+n.admin,
		"address: 127.0.0.1:1883", "address: "+n.mqtt,
		"rules: [../rules]", "rules: ["+filepath.Join(confDir, "rules")+"]",
	).Replace(base)
	text += fmt.Sprintf(`
data_dir: %s
cluster:
  node: %s
  brokers: ["127.0.0.1:%d"]
  partitions: 12
`, filepath.Join(dir, "data"), n.name, demoKafka)
	n.cfgPath, n.logPath = filepath.Join(dir, "sluice.yaml"), filepath.Join(dir, "sluice.log")
	return n, os.WriteFile(n.cfgPath, []byte(text), 0o644)
}

func (n *demoNode) start() error {
	log, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(n.exe, "run", "-c", n.cfgPath)
	cmd.Stdout, cmd.Stderr = log, log
	// The node dies with the demo, however the demo ends.
	waited, err := childproc.Start(cmd, syscall.SIGKILL)
	if err != nil {
		log.Close()
		return fmt.Errorf("node %s: %w", n.name, err)
	}
	done := make(chan struct{})
	go func() {
		<-waited
		log.Close()
		close(done)
	}()
	n.mu.Lock()
	n.cmd, n.done, n.lastAt = cmd, done, time.Time{}
	n.mu.Unlock()
	return nil
}

func (n *demoNode) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

func (n *demoNode) state() string {
	if n.running() {
		return "starting"
	}
	return "stopped"
}

// stop stops the node as an operator does (SIGTERM: it hands its
// partitions over and drains), and kills it if it takes too long.
func (n *demoNode) stop() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(40 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// status asks the node's admin listener; nil while it does not answer.
func (n *demoNode) status() *admin.Status {
	if !n.running() {
		return nil
	}
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + n.admin + "/api/v1/status")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var st admin.Status
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return nil
	}
	return &st
}
