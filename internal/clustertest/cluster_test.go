package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/internal/influxd"
	"github.com/sluicehq/sluice/internal/testsvc"
)

var sluiceBin string

// TestMain builds the sluice binary the nodes run.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sluice-cluster-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if sluiceBin, err = testsvc.BuildSluice(dir, "../../cmd/sluice"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// The rules: a device alert with hysteresis, a site average over every
// device of a site (so the partition key is the site, and a site's devices
// publish through different nodes), and a deadman.
const rulesYAML = `
rules:
  - name: device_hot
    match: plant/+site/+line/+device/telemetry
    alert:
      when: temperature > 90
      clear: temperature < 80
      value: temperature
  - name: site_avg
    match: plant/+site/+line/+device/telemetry
    key: site
    fields:
      site_temp: avg_over(temperature, "5s")
    alert:
      when: avg_over(temperature, "5s") > 60
      clear: avg_over(temperature, "5s") < 57
  - name: quiet
    match: plant/+site/+line/+device/telemetry
    records: false
    alert:
      absent: 8s
`

const configYAML = `
log: {level: info}
data_dir: data
shutdown_timeout: 5s
broker:
  listeners:
    - {name: tcp, address: "127.0.0.1:0", allow_anonymous: true}
%[1]s
pipelines:
  - name: telemetry
    topics: ["plant/#"]
    rules: [rules.yaml]
    sinks: [influx, records, alerts, alert-topic]
sinks:
  - name: influx
    stream: records
    batch: {size: 500, interval: 50ms}
    influxdb: {url: "%[2]s", bucket: cluster/autogen, measurement: "{rule}"}
  - name: records
    stream: records
    batch: {size: 500, interval: 20ms}
    kafka: {brokers: [%[3]s], topic: records}
  - name: alerts
    stream: alerts
    kafka: {brokers: [%[3]s], topic: alerts}
  - name: alert-topic
    stream: alerts
    mqtt: {topic: "alerts/{rule}/{series}", qos: 1}
`

const clusterYAML = `
cluster:
  node: %s
  brokers: [%s]
  partitions: 8
  commit_interval: 50ms
  session_timeout: 6s
`

// TestClusterSurvivesAKilledNode: three nodes take devices; one is killed
// with SIGKILL mid-load and restarted; a fourth joins. Every acknowledged
// reading reaches InfluxDB and Kafka, no alert transition is repeated on
// the alert topic, the site rule's transitions are those of one node, and a
// device that falls silent during the rebalance fires its deadman exactly
// once, at its last reading plus the absent time.
func TestClusterSurvivesAKilledNode(t *testing.T) {
	kc, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(4))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	brokers := `"` + strings.Join(kc.ListenAddrs(), `", "`) + `"`
	influx := testsvc.Influxd(t)
	if err := influx.CreateDatabase("cluster"); err != nil {
		t.Fatal(err)
	}

	base := t.TempDir()
	nodes := map[string]*node{}
	var nodesMu sync.Mutex
	start := func(name string) *node {
		n := startNode(t, base, name, fmt.Sprintf(configYAML, fmt.Sprintf(clusterYAML, name, brokers), influx.URL, brokers))
		nodesMu.Lock()
		nodes[name] = n
		nodesMu.Unlock()
		return n
	}
	n1, _, _ := start("n1"), start("n2"), start("n3")
	defer func() {
		if t.Failed() {
			for name, n := range nodes {
				t.Logf("--- log of %s ---\n%s", name, n.Logs())
			}
		}
	}()
	alive := func() []string {
		nodesMu.Lock()
		defer nodesMu.Unlock()
		var addrs []string
		for _, name := range []string{"n1", "n2", "n3", "n4"} {
			if n := nodes[name]; n != nil && n.Running() {
				addrs = append(addrs, n.Addr)
			}
		}
		return addrs
	}
	watcher := testsvc.MQTT(t, n1.Addr, "watcher")
	watcher.Subscribe(t, "alerts/#")

	fl := newFleet(alive)
	fl.start()
	defer fl.stop()

	// Phase 1: everything cool. The silent device sends a few readings
	// and stops; a node is killed soon after.
	time.Sleep(4 * time.Second)
	fl.silence()
	time.Sleep(1 * time.Second)
	owned := nodes["n2"].owned()
	if len(owned) == 0 {
		t.Fatalf("n2 owns no partition before it is killed: the kill would prove nothing\n%s", nodes["n2"].Logs())
	}
	t.Logf("SIGKILL n2, owner of partitions %v", owned)
	nodes["n2"].Stop(syscall.SIGKILL)
	waitFor(t, "n2's partitions to move to n1 and n3", 60*time.Second, func() bool {
		have := map[string]bool{}
		for _, p := range append(nodes["n1"].owned(), nodes["n3"].owned()...) {
			have[p] = true
		}
		for _, p := range owned {
			if !have[p] {
				return false
			}
		}
		return true
	})
	t.Log("restart n2, start n4")
	start("n2")
	start("n4")
	// Before the site heats up, everything acknowledged so far is in
	// Kafka: the restarted node's journal is forwarded (a backlog arriving
	// in the next phase would change the site averages).
	waitAcked(t, kc, fl, fl.acked(), 120*time.Second)
	waitFor(t, "the silent device's deadman", 60*time.Second, func() bool {
		return len(alertsOn(watcher, "quiet", "firing")) > 0
	})

	fl.setPhase(2) // hot
	time.Sleep(10 * time.Second)
	fl.setPhase(3) // cold
	time.Sleep(10 * time.Second)
	fl.stop()
	acked := fl.acked()
	t.Logf("%d readings acknowledged by the nodes (%d resent after the kill)", len(acked), fl.resent.Load())

	// Every acknowledged reading, in Kafka (both rules) and InfluxDB.
	recs := waitAcked(t, kc, fl, acked, 120*time.Second)
	dupes := 0
	ids := map[string]bool{}
	for _, r := range recs {
		if ids[r.id] {
			dupes++
		}
		ids[r.id] = true
	}
	t.Logf("Kafka records: %d, of which %d written twice with the same sluice.id (at least once)", len(recs), dupes)
	waitInflux(t, influx, acked, 120*time.Second)

	// Alert transitions: none repeated on the alert topic.
	want := map[string]int{}
	for site := range sites {
		want[fmt.Sprintf("site_avg/s%d/firing", site)] = 1
		want[fmt.Sprintf("site_avg/s%d/resolved", site)] = 1
		want[fmt.Sprintf("device_hot/s%d-d0/firing", site)] = 1
		want[fmt.Sprintf("device_hot/s%d-d0/resolved", site)] = 1
	}
	want["quiet/silent/firing"] = 1
	var got map[string]int
	waitFor(t, "every alert transition on the alert topic", 60*time.Second, func() bool {
		got = transitions(t, watcher)
		return len(got) >= len(want)
	})
	time.Sleep(2 * time.Second) // a repeat would show by now
	got = transitions(t, watcher)
	for k, n := range want {
		if got[k] != n {
			t.Errorf("alert %s: %d transitions on the alert topic, want %d", k, got[k], n)
		}
	}
	for k, n := range got {
		if want[k] == 0 {
			t.Errorf("alert %s: %d unexpected transitions", k, n)
		}
	}
	// The deadman fired on time: its last reading plus 8s.
	last := fl.lastSilent()
	for _, a := range alertsOn(watcher, "quiet", "firing") {
		var at time.Time
		for _, r := range recs {
			if r.device == "silent" && r.time.After(at) {
				at = r.time
			}
		}
		if !a.Time.Equal(at.Add(8 * time.Second)) {
			t.Errorf("deadman fired at %v; the last reading was received at %v (published at %v): want +8s", a.Time, at, last)
		}
	}

	// The same input on one node gives the same transitions.
	t.Run("one node gives the same transitions", func(t *testing.T) {
		one := startNode(t, t.TempDir(), "single", fmt.Sprintf(configYAML, "", influx.URL, brokers))
		w := testsvc.MQTT(t, one.Addr, "watcher-single")
		w.Subscribe(t, "alerts/#")
		f := newFleet(func() []string { return []string{one.Addr} })
		f.start()
		time.Sleep(4 * time.Second)
		f.silence()
		time.Sleep(12 * time.Second)
		f.setPhase(2)
		time.Sleep(10 * time.Second)
		f.setPhase(3)
		time.Sleep(10 * time.Second)
		f.stop()
		var single map[string]int
		waitFor(t, "the single node's transitions", 60*time.Second, func() bool {
			single = transitions(t, w)
			return len(single) >= len(want)
		})
		for k, n := range got {
			if single[k] != n {
				t.Errorf("alert %s: %d transitions in the cluster, %d on one node", k, n, single[k])
			}
		}
	})
}

// node is a `sluice run` process of the cluster.
type node struct {
	*testsvc.Sluice
	name string
}

// startNode runs a node in its own folder under base (the same folder when
// it is started again).
func startNode(t *testing.T, base, name, config string) *node {
	t.Helper()
	dir := filepath.Join(base, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for file, text := range map[string]string{"sluice.yaml": config, "rules.yaml": rulesYAML} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	n := &node{Sluice: testsvc.StartSluice(t, sluiceBin, filepath.Join(dir, "sluice.yaml")), name: name}
	// Stopped as an operator would at the end (the kill of StartSluice's
	// cleanup comes after, for one that does not stop).
	t.Cleanup(func() { n.stop() })
	return n
}

var ownership = regexp.MustCompile(`cluster: partitions (taken over|handed over).* partitions="?\[([0-9 ]*)\]`)

// owned returns the partitions the node evaluates, as its log says.
func (n *node) owned() []string {
	own := map[string]bool{}
	for _, line := range strings.Split(n.Logs(), "\n") {
		m := ownership.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		for _, p := range strings.Fields(m[2]) {
			own[p] = m[1] == "taken over"
		}
	}
	var out []string
	for p, ok := range own {
		if ok {
			out = append(out, p)
		}
	}
	return out
}

// stop stops the node with SIGTERM, and kills it if it takes too long.
func (n *node) stop() {
	if !n.Running() {
		return
	}
	stopped := make(chan struct{})
	go func() { n.Stop(syscall.SIGTERM); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		n.Stop(syscall.SIGKILL)
	}
}

const (
	sites      = 8
	perSite    = 3
	publishGap = 100 * time.Millisecond
)

// fleet is the devices: perSite per site, each publishing a numbered
// reading every publishGap at QoS 1 to one of the nodes (a load balancer's
// job), moving to another node when its own goes away and sending the
// reading in flight again. Device 0 of each site runs hot in phase 2.
type fleet struct {
	nodes  func() []string
	phase  atomic.Int32
	quiet  atomic.Bool
	resent atomic.Int64
	stopCh chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex
	ack     map[reading]bool
	silentT time.Time // when the silent device's last reading was acknowledged
}

type reading struct {
	device string
	seq    int
}

func newFleet(nodes func() []string) *fleet {
	f := &fleet{nodes: nodes, stopCh: make(chan struct{}), ack: map[reading]bool{}}
	f.phase.Store(1)
	return f
}

func (f *fleet) setPhase(p int32) { f.phase.Store(p) }
func (f *fleet) silence()         { f.quiet.Store(true) }

func (f *fleet) start() {
	for site := range sites {
		for d := range perSite {
			i := site*perSite + d
			f.wg.Go(func() { f.device(i, fmt.Sprintf("s%d", site), fmt.Sprintf("s%d-d%d", site, d), d == 0) })
		}
	}
	f.wg.Go(func() { f.device(sites*perSite, "s0", "silent", false) })
}

func (f *fleet) stop() {
	select {
	case <-f.stopCh:
	default:
		close(f.stopCh)
	}
	f.wg.Wait()
}

func (f *fleet) acked() map[reading]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[reading]bool, len(f.ack))
	for k := range f.ack {
		out[k] = true
	}
	return out
}

func (f *fleet) lastSilent() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.silentT
}

func (f *fleet) device(i int, site, name string, hot bool) {
	var c *paho.Client
	defer func() {
		if c != nil {
			c.Disconnect(&paho.Disconnect{})
		}
	}()
	pick := i
	connect := func() bool {
		for {
			select {
			case <-f.stopCh:
				return false
			default:
			}
			addrs := f.nodes()
			if len(addrs) > 0 {
				pick++
				cl, ca, err := testsvc.Connect(testsvc.MQTTOptions{Addr: addrs[pick%len(addrs)], ClientID: name})
				if err == nil && ca.ReasonCode == 0 {
					c = cl.Client
					return true
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if !connect() {
		return
	}
	tick := time.NewTicker(publishGap)
	defer tick.Stop()
	for seq := 1; ; seq++ {
		select {
		case <-f.stopCh:
			return
		case <-tick.C:
		}
		if name == "silent" && f.quiet.Load() {
			continue
		}
		temp := 40.0
		switch f.phase.Load() {
		case 2:
			temp = 80
			if hot {
				temp = 95
			}
		case 3:
			temp = 20
		}
		payload := []byte(fmt.Sprintf(`{"temperature":%g,"seq":%d}`, temp, seq))
		topic := fmt.Sprintf("plant/%s/l1/%s/telemetry", site, name)
		for attempt := 0; ; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
			cancel()
			if err == nil && resp != nil && resp.ReasonCode == 0 {
				f.mu.Lock()
				f.ack[reading{name, seq}] = true
				if name == "silent" {
					f.silentT = time.Now()
				}
				f.mu.Unlock()
				break
			}
			if attempt == 0 {
				f.resent.Add(1)
			}
			c.Disconnect(&paho.Disconnect{})
			if !connect() {
				return
			}
		}
	}
}

// record is a record read back from Kafka.
type record struct {
	id, rule, device string
	seq              int
	time             time.Time
}

// waitAcked reads the records topic until every acknowledged reading is
// there for both keyed rules, and returns what it read.
func waitAcked(t *testing.T, kc *kfake.Cluster, f *fleet, acked map[reading]bool, deadline time.Duration) []record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.ConsumeTopics("records"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []record
	have := map[string]bool{}
	missing := func() int {
		n := 0
		for r := range acked {
			for _, rule := range []string{"device_hot", "site_avg"} {
				if !have[fmt.Sprintf("%s/%s/%d", rule, r.device, r.seq)] {
					n++
				}
			}
		}
		return n
	}
	end := time.Now().Add(deadline)
	for missing() > 0 {
		if time.Now().After(end) {
			t.Fatalf("after %v, %d acknowledged readings are missing from Kafka (of %d)", deadline, missing(), 2*len(acked))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(m *kgo.Record) {
			var v struct {
				Rule   string            `json:"rule"`
				Time   time.Time         `json:"time"`
				Tags   map[string]string `json:"tags"`
				Fields struct {
					Seq int `json:"seq"`
				} `json:"fields"`
			}
			if json.Unmarshal(m.Value, &v) != nil {
				return
			}
			r := record{rule: v.Rule, device: v.Tags["device"], seq: v.Fields.Seq, time: v.Time}
			for _, h := range m.Headers {
				if h.Key == "sluice.id" {
					r.id = string(h.Value)
				}
			}
			recs = append(recs, r)
			have[fmt.Sprintf("%s/%s/%d", r.rule, r.device, r.seq)] = true
		})
	}
	return recs
}

// waitInflux waits until InfluxDB holds every acknowledged reading.
func waitInflux(t *testing.T, influx *influxd.Server, acked map[reading]bool, deadline time.Duration) {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		body, err := influx.Query("cluster", `SELECT "seq","device" FROM "device_hot"`)
		if err != nil {
			t.Fatal(err)
		}
		var resp struct {
			Results []struct {
				Series []struct {
					Values [][]any `json:"values"`
				} `json:"series"`
			} `json:"results"`
		}
		if err := json.Unmarshal(body, &resp); err != nil {
			t.Fatalf("influx: %v: %s", err, body)
		}
		have := map[reading]bool{}
		for _, r := range resp.Results {
			for _, s := range r.Series {
				for _, v := range s.Values {
					if len(v) == 3 {
						seq, _ := v[1].(float64)
						dev, _ := v[2].(string)
						have[reading{dev, int(seq)}] = true
					}
				}
			}
		}
		missing := 0
		for r := range acked {
			if !have[r] {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("after %v, %d acknowledged readings are missing from InfluxDB (of %d)", deadline, missing, len(acked))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

type alert struct {
	Rule, Series, Status, Episode string
	Notification                  int
	Time                          time.Time
}

func alertsOn(c *testsvc.Client, rule, status string) []alert {
	var out []alert
	for _, m := range c.Received() {
		var a alert
		if json.Unmarshal(m.Payload, &a) == nil && a.Rule == rule && a.Status == status {
			out = append(out, a)
		}
	}
	return out
}

// transitions counts what the alert topic carried, by rule/series/status.
// A transition seen twice (the same episode, status and notification) is
// counted twice: the test wants each once.
func transitions(t *testing.T, c *testsvc.Client) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, m := range c.Received() {
		var a alert
		if err := json.Unmarshal(m.Payload, &a); err != nil {
			t.Fatalf("alert %s: %v", m.Payload, err)
		}
		out[a.Rule+"/"+a.Series+"/"+a.Status]++
	}
	return out
}

func waitFor(t *testing.T, what string, deadline time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("waited %v for %s", deadline, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
