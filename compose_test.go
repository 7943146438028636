package sluice_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

// TestComposeStack checks docker-compose.yml without Docker (none runs
// here): it parses, every service builds from here or names an image, and
// every file or folder it mounts exists in the repository.
func TestComposeStack(t *testing.T) {
	data, err := os.ReadFile("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Build    any      `yaml:"build"`
			Image    string   `yaml:"image"`
			Volumes  []string `yaml:"volumes"`
			Profiles []string `yaml:"profiles"`
			Hostname string   `yaml:"hostname"`
			Command  []string `yaml:"command"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"sluice", "kafka", "influxdb", "prometheus", "grafana"} {
		if _, ok := compose.Services[want]; !ok {
			t.Errorf("no %s service", want)
		}
	}
	// The cluster profile: three nodes with one config, each its own host
	// name (its node name) and volume, behind a load balancer that knows
	// each of them.
	lb, err := os.ReadFile("examples/docker/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range []string{"sluice-1", "sluice-2", "sluice-3"} {
		svc, ok := compose.Services[node]
		if !ok || !slices.Contains(svc.Profiles, "cluster") || svc.Hostname != node ||
			!slices.Contains(svc.Command, "/etc/sluice/docker/cluster.yaml") {
			t.Errorf("cluster node %s: %+v", node, svc)
		}
		if !strings.Contains(string(lb), "server "+node+" "+node+":1883") {
			t.Errorf("haproxy.cfg does not balance over %s", node)
		}
	}
	if lbSvc := compose.Services["mqtt-lb"]; !slices.Contains(lbSvc.Profiles, "cluster") {
		t.Errorf("no load balancer in the cluster profile")
	}
	env, err := os.ReadFile(".env")
	if err != nil || !strings.Contains(string(env), "COMPOSE_PROFILES=single") {
		t.Errorf(".env must make the single-node stack the default: %v %s", err, env)
	}
	for name, svc := range compose.Services {
		if svc.Build == nil && svc.Image == "" {
			t.Errorf("service %s has neither build nor image", name)
		}
		if svc.Build != nil {
			if _, err := os.Stat("Dockerfile"); err != nil {
				t.Errorf("service %s builds from a missing Dockerfile", name)
			}
		}
		for _, v := range svc.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(src, ".") && !strings.HasPrefix(src, "/") {
				if _, ok := compose.Volumes[src]; !ok {
					t.Errorf("service %s mounts undeclared volume %q", name, src)
				}
				continue
			}
			if _, err := os.Stat(src); err != nil {
				t.Errorf("service %s mounts %s, which does not exist", name, src)
			}
		}
	}
}

// TestPrometheusScrapesTheAdminListener checks that the stack's Prometheus
// scrapes the port the stack's sluice serves its metrics on.
func TestPrometheusScrapesTheAdminListener(t *testing.T) {
	var prom struct {
		ScrapeConfigs []struct {
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	var cfg struct {
		Admin struct {
			Address string `yaml:"address"`
		} `yaml:"admin"`
	}
	for file, v := range map[string]any{"dashboards/prometheus.yml": &prom, "examples/docker/sluice.yaml": &cfg} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(data, v); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
	_, port, _ := strings.Cut(cfg.Admin.Address, ":")
	if len(prom.ScrapeConfigs) == 0 || len(prom.ScrapeConfigs[0].StaticConfigs) == 0 ||
		len(prom.ScrapeConfigs[0].StaticConfigs[0].Targets) == 0 ||
		prom.ScrapeConfigs[0].StaticConfigs[0].Targets[0] != "sluice:"+port {
		t.Errorf("Prometheus scrapes %+v; sluice's admin listener is %q", prom.ScrapeConfigs, cfg.Admin.Address)
	}
}

// TestDashboardsParse checks every dashboard is JSON Grafana can load.
func TestDashboardsParse(t *testing.T) {
	files, _ := filepath.Glob("dashboards/json/*.json")
	if len(files) == 0 {
		t.Fatal("no dashboards")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			UID    string
			Title  string
			Panels []json.RawMessage
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
			t.Errorf("%s: uid %q title %q, %d panels", f, d.UID, d.Title, len(d.Panels))
		}
	}
}
