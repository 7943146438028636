package pipelines_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/sluicehq/sluice/ingest/auth"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

const reloadRulesBefore = `
rules:
  - name: seen            # unchanged by the reload: its state must carry over
    match: load/+device
    fields:
      n: count_over("1h")
  - name: shape           # changed by the reload
    match: load/+device
`

const reloadRulesAfter = reloadRulesBefore + `    fields:
      doubled: seq * 2
`

// TestReloadUnderLoadLosesAndDuplicatesNothing publishes 10,000 QoS 1
// messages from 20 devices while a rule file is rewritten mid-stream (the
// last third waits until the new rules are in force). Every
// message must reach Kafka exactly once per rule, the changed rule must take
// effect, and the unchanged rule must keep its state (its per-device count
// runs 1..500 without a restart or a gap).
func TestReloadUnderLoadLosesAndDuplicatesNothing(t *testing.T) {
	const devices, perDevice = 20, 500
	kafka := testsvc.Kafka(t, "records")
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules", "load.yaml")
	must(t, os.MkdirAll(filepath.Dir(rulesPath), 0o755))
	must(t, os.WriteFile(rulesPath, []byte(reloadRulesBefore), 0o644))
	cfgPath := filepath.Join(dir, "sluice.yaml")
	must(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
data_dir: %s
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines:
  - name: load
    topics: ["load/#"]
    rules: [rules]
    sinks: [records]
sinks:
  - name: records
    batch: {size: 200, interval: 2ms}
    kafka: {brokers: ["%s"], topic: records}
`, filepath.Join(dir, "data"), kafka.Addrs()[0])), 0o644))
	cfg, err := pipelines.Load(cfgPath)
	must(t, err)
	m := metrics.New()
	svc, err := pipelines.New(cfg, pipelines.Options{Metrics: m})
	must(t, err)
	ctx := context.Background()
	must(t, svc.Start(ctx))
	t.Cleanup(func() { svc.Close(ctx) })
	addr := svc.Broker().Addr("tcp")

	var acked sync.WaitGroup
	half := make(chan struct{})
	reloaded := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	sent := 0
	for d := range devices {
		c := testsvc.MQTT(t, addr, fmt.Sprintf("dev-%d", d))
		acked.Add(1)
		go func() {
			defer acked.Done()
			for i := range perDevice {
				if i == 2*perDevice/3 {
					// Publishers acknowledged at the journal run ahead of the
					// rules; hold the last third until the new rules are in
					// force, so that the stream surely straddles the reload.
					<-reloaded
				}
				seq := d*perDevice + i
				if rc := c.Publish(t, fmt.Sprintf("load/dev-%d", d), 1, []byte(fmt.Sprintf(`{"seq":%d}`, seq))); rc != 0 {
					t.Errorf("publish %d: reason %#x", seq, rc)
					return
				}
				mu.Lock()
				sent++
				if sent == devices*perDevice/3 {
					once.Do(func() { close(half) })
				}
				mu.Unlock()
			}
		}()
	}

	// A third of the way through, an operator saves a changed rule file.
	<-half
	// Messages are acknowledged before the rules run: make sure some have
	// been through the old rules before the change.
	for counter(t, m, "sluice_records_total") < 1000 {
		time.Sleep(5 * time.Millisecond)
	}
	must(t, os.WriteFile(rulesPath, []byte(reloadRulesAfter), 0o644))
	deadline := time.Now().Add(30 * time.Second)
	for counter(t, m, "sluice_rule_reloads_total") < 1 {
		if time.Now().After(deadline) {
			close(reloaded)
			t.Fatal("the rule change was not picked up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(reloaded)
	acked.Wait()
	if t.Failed() {
		return
	}
	waitCaughtUp(t, svc)

	msgs := testsvc.ReadKafka(t, kafka.Addrs(), "records", 2*devices*perDevice, 60*time.Second)
	type rec struct {
		Rule   string
		Tags   map[string]string
		Fields struct {
			Seq     int
			N       *float64
			Doubled *float64
		}
	}
	seen := map[string]map[int]int{"seen": {}, "shape": {}}
	counts := map[string][]rec{}
	doubled := 0
	for _, km := range msgs {
		var r rec
		must(t, json.Unmarshal(km.Value, &r))
		seen[r.Rule][r.Fields.Seq]++
		if r.Rule == "seen" {
			counts[r.Tags["device"]] = append(counts[r.Tags["device"]], r)
		}
		if r.Fields.Doubled != nil {
			doubled++
			if *r.Fields.Doubled != float64(2*r.Fields.Seq) {
				t.Errorf("doubled %v for seq %d", *r.Fields.Doubled, r.Fields.Seq)
			}
		}
	}
	for rule, bySeq := range seen {
		for seq := range devices * perDevice {
			if n := bySeq[seq]; n != 1 {
				t.Errorf("rule %s: seq %d produced %d records, want exactly 1", rule, seq, n)
			}
		}
	}
	if doubled == 0 || doubled == devices*perDevice {
		t.Errorf("%d records carry the new field: the reload did not take effect mid-stream", doubled)
	}
	for device, recs := range counts {
		sort.Slice(recs, func(i, j int) bool { return recs[i].Fields.Seq < recs[j].Fields.Seq })
		for i, r := range recs {
			if r.Fields.N == nil || *r.Fields.N != float64(i+1) {
				t.Errorf("%s: the %dth message counted %v, want %d (state lost or a message evaluated twice)", device, i+1, r.Fields.N, i+1)
				break
			}
		}
	}
	t.Logf("%d messages, %d records, %d after the reload carried the new field", devices*perDevice, len(msgs), doubled)
}

// TestAuthFilesReloadWhenTheyChange edits the ACL file and the password
// file of a running sluice, as an operator would (sluice passwd replaces
// the file): the new ACL applies to a client already connected, the new
// password to the next login.
func TestAuthFilesReloadWhenTheyChange(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "passwd")
	must(t, auth.SetPassword(pwFile, "dev", []byte("first-password"), 4))
	aclFile := filepath.Join(dir, "acl.yaml")
	acl := "rules:\n  - users: \"*\"\n    allow: publish\n    topics: [\"telemetry/%u/#\"]\n"
	must(t, os.WriteFile(aclFile, []byte(acl), 0o644))
	cfgPath := filepath.Join(dir, "sluice.yaml")
	must(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
data_dir: %s
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0"}]
  auth: {password_file: passwd, acl_file: acl.yaml}
pipelines: [{name: p, topics: ["#"], sinks: [a]}]
sinks: [{name: a, file: {path: %s}}]
`, filepath.Join(dir, "data"), filepath.Join(dir, "out.jsonl"))), 0o644))
	cfg, err := pipelines.Load(cfgPath)
	must(t, err)
	svc, err := pipelines.New(cfg, pipelines.Options{})
	must(t, err)
	must(t, svc.Start(context.Background()))
	t.Cleanup(func() { svc.Close(context.Background()) })
	addr := svc.Broker().Addr("tcp")

	login := func(password string) (*testsvc.Client, byte) {
		c, ca, err := testsvc.Connect(testsvc.MQTTOptions{Addr: addr, ClientID: "dev-1", Username: "dev", Password: password})
		if ca == nil {
			t.Fatalf("connect: %v", err)
		}
		if ca.ReasonCode == 0 {
			t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
		}
		return c, ca.ReasonCode
	}
	c, code := login("first-password")
	if code != 0 {
		t.Fatalf("login: %#x", code)
	}
	if rc := c.Publish(t, "telemetry/dev/t", 1, nil); rc != 0 {
		t.Fatalf("publish before the edit: %#x", rc)
	}

	must(t, os.WriteFile(aclFile, []byte(strings.Replace(acl, "telemetry/%u/#", "telemetry/%u/allowed", 1)), 0o644))
	deadline := time.Now().Add(30 * time.Second)
	for c.Publish(t, "telemetry/dev/t", 1, nil) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the edited ACL file was not applied to the connected client")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if rc := c.Publish(t, "telemetry/dev/allowed", 1, nil); rc != 0 {
		t.Fatalf("publish the new ACL allows: %#x", rc)
	}

	must(t, auth.SetPassword(pwFile, "dev", []byte("second-password"), 4))
	for {
		if _, code := login("second-password"); code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the new password was not taken")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, code := login("first-password"); code != 0x86 {
		t.Errorf("the old password after the change: %#x, want 0x86", code)
	}
}
