package pipelines_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

const clusterConfig = `
log: {level: warn}
data_dir: %[1]s/data
broker:
  listeners:
    - {name: tcp, address: 127.0.0.1:0, allow_anonymous: true}
cluster:
  node: %[2]s
  brokers: [%[3]s]
  partitions: 6
  commit_interval: 20ms
  session_timeout: 6s
pipelines:
  - name: telemetry
    topics: ["plant/#"]
    rules: [rules.yaml]
    sinks: [records, alert-topic]
sinks:
  - name: records
    stream: records
    batch: {size: 200, interval: 10ms}
    kafka: {brokers: [%[3]s], topic: records}
  - name: alert-topic
    stream: alerts
    mqtt: {topic: "alerts/{site}/{rule}/{series}", qos: 1}
`

// TestClusterOfTwoNodes runs two nodes in one process on a three-broker
// Kafka: devices publish to either node; every record reaches the Kafka
// sink once, the site rule sees every device of its site whichever node
// took the message, and an MQTT subscriber on either node sees every alert.
func TestClusterOfTwoNodes(t *testing.T) {
	kc, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	brokers := `"` + strings.Join(kc.ListenAddrs(), `", "`) + `"`

	reg := map[string]*metrics.Metrics{}
	start := func(node string) *pipelines.Service {
		dir := filepath.Join(t.TempDir(), node)
		must(t, os.MkdirAll(dir, 0o755))
		must(t, os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(partitionRules), 0o644))
		cfgPath := filepath.Join(dir, "sluice.yaml")
		must(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(clusterConfig, dir, node, brokers)), 0o644))
		cfg, err := pipelines.Load(cfgPath)
		must(t, err)
		reg[node] = metrics.New()
		svc, err := pipelines.New(cfg, pipelines.Options{Metrics: reg[node]})
		must(t, err)
		must(t, svc.Start(context.Background()))
		t.Cleanup(func() { svc.Close(context.Background()) })
		return svc
	}
	a, b := start("a"), start("b")
	watchA := testsvc.MQTT(t, a.Broker().Addr("tcp"), "watch-a")
	watchA.Subscribe(t, "alerts/#")
	watchB := testsvc.MQTT(t, b.Broker().Addr("tcp"), "watch-b")
	watchB.Subscribe(t, "alerts/#")
	devA := testsvc.MQTT(t, a.Broker().Addr("tcp"), "gateway-a")
	devB := testsvc.MQTT(t, b.Broker().Addr("tcp"), "gateway-b")

	// The north site heats up through devices on both nodes.
	sent := 0
	for round := range 6 {
		for d := range 10 {
			temp := 40.0
			if round >= 2 {
				temp = 80
			}
			dev := devA
			if d%2 == 1 {
				dev = devB
			}
			payload := fmt.Sprintf(`{"temperature":%g,"seq":%d}`, temp, sent)
			if rc := dev.Publish(t, fmt.Sprintf("plant/north/l1/dev-%02d/telemetry", d), 1, []byte(payload)); rc != 0 {
				t.Fatalf("publish refused: %#x", rc)
			}
			sent++
		}
	}
	recs := testsvc.ReadKafka(t, kc.ListenAddrs(), "records", 2*sent, 90*time.Second)
	seen := map[string]int{}
	ids := map[string]bool{}
	for _, m := range recs {
		id := ""
		for _, h := range m.Headers {
			if h.Key == "sluice.id" {
				id = string(h.Value)
			}
		}
		if id == "" || ids[id] {
			t.Errorf("record %s: sluice.id %q is missing or repeated", m.Value, id)
		}
		ids[id] = true
		var r struct {
			Rule   string         `json:"rule"`
			Fields map[string]any `json:"fields"`
		}
		must(t, json.Unmarshal(m.Value, &r))
		seen[fmt.Sprintf("%s/%v", r.Rule, r.Fields["seq"])]++
	}
	for i := range sent {
		for _, rule := range []string{"site_avg", "device_hot"} {
			if n := seen[fmt.Sprintf("%s/%d", rule, i)]; n != 1 {
				t.Errorf("rule %s, message %d: %d records in Kafka, want 1", rule, i, n)
			}
		}
	}
	// The metrics say who does what: the two nodes own the 6 partitions
	// between them, and both committed transactions.
	waitFor(t, "the partitions gauges", func() bool {
		return gauge(t, reg["a"], "sluice_cluster_partitions")+gauge(t, reg["b"], "sluice_cluster_partitions") == 6
	})
	for node, m := range reg {
		waitFor(t, "node "+node+"'s first counted transaction", func() bool {
			return counter(t, m, "sluice_cluster_transactions_total") > 0
		})
	}
	// The site average crosses 60 once: one firing transition, on both
	// nodes' brokers.
	for _, w := range []*testsvc.Client{watchA, watchB} {
		deadline := time.Now().Add(60 * time.Second)
		for {
			n := 0
			for _, m := range w.Received() {
				if strings.HasPrefix(m.Topic, "alerts/north/site_avg/") {
					n++
				}
			}
			if n == 1 {
				break
			}
			if n > 1 || time.Now().After(deadline) {
				t.Fatalf("%d site_avg alerts on a node's alert topic, want 1", n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestClusterRolesSplit: one node takes the devices (ingest), another
// evaluates the rules, a third writes to the sinks; with ack: kafka a
// device's PUBACK means Kafka has the message. Every record arrives once.
func TestClusterRolesSplit(t *testing.T) {
	kc, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	brokers := `"` + strings.Join(kc.ListenAddrs(), `", "`) + `"`
	start := func(node, roles string) *pipelines.Service {
		dir := filepath.Join(t.TempDir(), node)
		must(t, os.MkdirAll(dir, 0o755))
		must(t, os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(partitionRules), 0o644))
		text := fmt.Sprintf(clusterConfig, dir, node, brokers)
		text = strings.Replace(text, "  partitions: 6\n", "  partitions: 6\n  ack: kafka\n  roles: "+roles+"\n", 1)
		cfgPath := filepath.Join(dir, "sluice.yaml")
		must(t, os.WriteFile(cfgPath, []byte(text), 0o644))
		cfg, err := pipelines.Load(cfgPath)
		must(t, err)
		svc, err := pipelines.New(cfg, pipelines.Options{})
		must(t, err)
		must(t, svc.Start(context.Background()))
		t.Cleanup(func() { svc.Close(context.Background()) })
		return svc
	}
	in := start("in", "[ingest]")
	rulesNode := start("rules", "[rules]")
	out := start("out", "[sinks]")
	if rulesNode.Broker().Addr("tcp") != "" || out.Broker().Addr("tcp") != "" {
		t.Fatal("a node without the ingest role listens for MQTT")
	}
	dev := testsvc.MQTT(t, in.Broker().Addr("tcp"), "gateway")
	const n = 50
	for i := range n {
		if rc := dev.Publish(t, fmt.Sprintf("plant/s%d/l1/dev-%d/telemetry", i%5, i), 1, []byte(fmt.Sprintf(`{"temperature":40,"seq":%d}`, i))); rc != 0 {
			t.Fatalf("publish refused: %#x", rc)
		}
		// ack: kafka: acknowledged means in Kafka, forwarded by the
		// ingest node.
		if f := in.Health(time.Now()).Pipelines[0].Cluster; f.Forwarded < uint64(i+1) {
			t.Fatalf("message %d acknowledged with only %d forwarded to Kafka", i, f.Forwarded)
		}
	}
	recs := testsvc.ReadKafka(t, kc.ListenAddrs(), "records", 2*n, 90*time.Second)
	if len(recs) != 2*n {
		t.Fatalf("%d records in Kafka, want %d", len(recs), 2*n)
	}
	if h := rulesNode.Health(time.Now()).Pipelines[0].Cluster; len(h.Partitions) != 6 {
		t.Errorf("the rules node evaluates partitions %v, want all 6", h.Partitions)
	}
}

func gauge(t *testing.T, m *metrics.Metrics, name string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, f := range families {
		if f.GetName() == name {
			for _, mt := range f.GetMetric() {
				total += mt.GetGauge().GetValue()
			}
		}
	}
	return total
}
