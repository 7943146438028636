package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pipelines"
)

// TestClusterDemoConfigs: the configs `sluice demo -nodes 3` writes are the
// shipped demo config on each node's own ports and folder, with a cluster
// section, and they load and compile.
func TestClusterDemoConfigs(t *testing.T) {
	dir := t.TempDir()
	confDir := filepath.Join(dir, "config")
	if err := writeExamples(confDir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(confDir, "demo", "sluice.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	base := string(b)
	seen := map[string]bool{}
	for i := 1; i <= 3; i++ {
		n, err := newDemoNode(i, base, confDir, dir, "sluice")
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := pipelines.Load(n.cfgPath)
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		if _, err := cfg.CompileRules(); err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		if cfg.Cluster == nil || cfg.Cluster.Node != n.name || cfg.Admin.Address != n.admin ||
			cfg.Broker.Listeners[0].Address != n.mqtt || !strings.HasPrefix(cfg.DataDir, dir) {
			t.Fatalf("node %d: cluster %+v, admin %s, listener %s, data_dir %s", i, cfg.Cluster, cfg.Admin.Address, cfg.Broker.Listeners[0].Address, cfg.DataDir)
		}
		for _, a := range []string{n.mqtt, n.admin, cfg.DataDir} {
			if seen[a] {
				t.Fatalf("node %d shares %s with another node", i, a)
			}
			seen[a] = true
		}
	}
}
