package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/sluicehq/sluice/internal/devkafka"
	"github.com/sluicehq/sluice/internal/influxd"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

// scale is the size of the suite: short in make test, long in make chaos.
type scale struct {
	messages int           // per case
	outage   time.Duration // how long a service stays down
}

func suiteScale() scale {
	if os.Getenv("SLUICE_CHAOS") == "long" {
		return scale{messages: 5000, outage: 10 * time.Second}
	}
	return scale{messages: 400, outage: 1500 * time.Millisecond}
}

var (
	sluiceBin string
	mu        sync.Mutex
	results   []string
	passed    int
	failed    int
)

// TestMain builds the sluice binary (the SIGKILL cases run it as a
// process), runs the suite and ends with a line "N passed, M failed".
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sluice-chaos-")
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
	if len(results) > 0 {
		fmt.Println()
		for _, r := range results {
			fmt.Println(r)
		}
		fmt.Printf("%d passed, %d failed\n", passed, failed)
	}
	os.Exit(code)
}

// report records a case's numbers and verdict.
func report(t *testing.T, line string) {
	t.Helper()
	t.Log(line)
	mu.Lock()
	defer mu.Unlock()
	verdict := "PASS"
	if t.Failed() {
		verdict = "FAIL"
		failed++
	} else {
		passed++
	}
	results = append(results, fmt.Sprintf("%s %s: %s", verdict, t.Name(), line))
}

// stream publishes numbered QoS 1 messages {"seq": i} and keeps count. It
// reconnects when the broker goes away (sluice killed) and sends the
// message in flight again.
type stream struct {
	topic func(seq int) string
	body  func(seq int) string

	mu        sync.Mutex
	addr      string
	published int
	acked     map[int]bool
	refused   int // MQTT 5 "quota exceeded"
}

func newStream(addr string) *stream {
	return &stream{
		addr:  addr,
		topic: func(seq int) string { return fmt.Sprintf("plant/north/l1/dev%d/telemetry", seq%8) },
		body:  func(seq int) string { return fmt.Sprintf(`{"seq":%d,"v":%d.5}`, seq, seq%100) },
		acked: map[int]bool{},
	}
}

func (s *stream) setAddr(a string) {
	s.mu.Lock()
	s.addr = a
	s.mu.Unlock()
}

func (s *stream) counts() (published, acked, refused int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.published, len(s.acked), s.refused
}

func (s *stream) isAcked(seq int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked[seq]
}

// run publishes seqs [from, to), calling at(seq) before each. A refused
// message (journal full) is not sent again: it was not accepted, and the
// suite checks that everything that was accepted arrives.
func (s *stream) run(t *testing.T, from, to int, at func(seq int)) {
	t.Helper()
	var c *paho.Client
	connect := func() {
		deadline := time.Now().Add(60 * time.Second)
		for {
			s.mu.Lock()
			addr := s.addr
			s.mu.Unlock()
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c = paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: "chaos-publisher"})
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err = c.Connect(ctx, &paho.Connect{ClientID: "chaos-publisher", KeepAlive: 30, CleanStart: true})
				cancel()
				if err == nil {
					return
				}
				conn.Close()
			}
			if time.Now().After(deadline) {
				t.Fatalf("cannot reach the broker at %s: %v", addr, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	connect()
	defer func() { c.Disconnect(&paho.Disconnect{}) }()
	for seq := from; seq < to; seq++ {
		if at != nil {
			at(seq)
		}
		for {
			s.mu.Lock()
			s.published++
			s.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			resp, err := c.Publish(ctx, &paho.Publish{Topic: s.topic(seq), QoS: 1, Payload: []byte(s.body(seq))})
			cancel()
			if resp != nil && resp.ReasonCode == 0x97 {
				s.mu.Lock()
				s.refused++
				s.mu.Unlock()
				break
			}
			if err == nil {
				s.mu.Lock()
				s.acked[seq] = true
				s.mu.Unlock()
				break
			}
			// The broker went away mid-publish: reconnect and send again
			// (at least once).
			c.Disconnect(&paho.Disconnect{})
			connect()
		}
	}
}

// missing returns the acknowledged seqs not in found.
func (s *stream) missing(found map[int]bool) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var m []int
	for seq := range s.acked {
		if !found[seq] {
			m = append(m, seq)
		}
	}
	sort.Ints(m)
	return m
}

// services are the real sinks a case writes to: a real influxd and the
// Kafka stand-in, both restartable on the same address with their data.
type services struct {
	t          *testing.T
	influxDir  string
	influxAddr string
	influx     *influxd.Server
	kafkaPort  int
	kafka      *devkafka.Cluster
}

func startServices(t *testing.T) *services {
	t.Helper()
	s := &services{t: t, influxDir: t.TempDir()}
	s.startInflux()
	if err := s.influx.CreateDatabase("chaos"); err != nil {
		t.Fatal(err)
	}
	s.startKafka()
	t.Cleanup(func() {
		if s.influx != nil {
			s.influx.Stop()
		}
		if s.kafka != nil {
			s.kafka.Close()
		}
	})
	return s
}

func (s *services) startInflux() {
	addr := s.influxAddr
	if addr == "" {
		addr = freeAddr(s.t)
	}
	srv, err := influxd.Start(context.Background(), influxd.Options{Dir: s.influxDir, Addr: addr})
	if err != nil {
		s.t.Fatal(err)
	}
	s.influx, s.influxAddr = srv, addr
}

func (s *services) stopInflux() {
	s.influx.Stop()
	s.influx = nil
}

func (s *services) startKafka() {
	c, err := devkafka.Start(devkafka.Options{Port: s.kafkaPort, Topics: []string{"chaos"}})
	if err != nil {
		s.t.Fatal(err)
	}
	s.kafka, s.kafkaPort = c, c.Port()
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// influxSeqs returns the seqs stored in InfluxDB.
func (s *services) influxSeqs() map[int]bool {
	found := map[int]bool{}
	body, err := s.influx.Query("chaos", `SELECT seq FROM telemetry`)
	if err != nil {
		return found
	}
	var resp struct {
		Results []struct{ Series []struct{ Values [][]any } }
	}
	if json.Unmarshal(body, &resp) != nil || len(resp.Results) == 0 {
		return found
	}
	for _, series := range resp.Results[0].Series {
		for _, row := range series.Values {
			if f, ok := row[1].(float64); ok {
				found[int(f)] = true
			}
		}
	}
	return found
}

// kafkaSeqs returns the seqs in the Kafka topic (records are the JSON of
// sluice records, with the seq among their fields).
func (s *services) kafkaSeqs(want int) map[int]bool {
	found := map[int]bool{}
	msgs := readKafka(s.t, s.kafka.Addrs(), "chaos", want)
	for _, m := range msgs {
		var r struct{ Fields struct{ Seq *float64 } }
		if json.Unmarshal(m, &r) == nil && r.Fields.Seq != nil {
			found[int(*r.Fields.Seq)] = true
		}
	}
	return found
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(deadline time.Duration, cond func() bool) bool {
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

// config writes a sluice.yaml for a case. extra is the pipeline's extra
// keys (durability, journal bounds); sinks lists the sinks it writes to.
func config(t *testing.T, svc *services, dir, extra string, sinks ...string) string {
	t.Helper()
	rules := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rules, []byte(`
rules:
  - name: telemetry
    match: plant/+site/+line/+device/telemetry
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`
log: {level: info}
watch_rules: false
data_dir: %s
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines:
  - name: chaos
    topics: ["plant/#"]
    rules: [rules.yaml]
    sinks: [%s]
%s
sinks:
  - name: influx
    batch: {size: 200, interval: 20ms}
    retry: {initial: 50ms, max: 500ms}
    influxdb: {url: "http://%s", bucket: chaos/autogen, measurement: telemetry, timeout: 2s}
  - name: kafka
    batch: {size: 200, interval: 20ms}
    retry: {initial: 50ms, max: 500ms}
    kafka: {brokers: ["127.0.0.1:%d"], topic: chaos, timeout: 2s}
  - name: dead-letters
    stream: dead_letters
    batch: {size: 50, interval: 20ms}
    file: {path: %s}
`, filepath.Join(dir, "data"), strings.Join(sinks, ", "), extra, svc.influxAddr, svc.kafkaPort, filepath.Join(dir, "dead-letters.jsonl"))
	path := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// inProcess runs sluice in the test process.
func inProcess(t *testing.T, path string) *pipelines.Service {
	t.Helper()
	cfg, err := pipelines.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := pipelines.New(cfg, pipelines.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close(context.Background()) })
	return svc
}
