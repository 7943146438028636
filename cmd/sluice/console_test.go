package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/console"
	"github.com/sluicehq/sluice/internal/testsvc"
)

const consoleRules = `rules:
  - name: boiler
    match: plant/+site/+device/telemetry
    where: kind == "boiler"
    fields: {temp_f: temperature * 9 / 5 + 32}
    alert:
      when: temperature > 90
      severity: critical
      message: "{{ device }} at {{ temperature }}"
  - name: efficiency
    match: plant/+site/+device/telemetry
    where: kind == "pump"
    fields: {eff: flow / power}
  - name: raw
    match: plant/+site/+device/telemetry
`

// consoleSluice runs `sluice run` on a config with an admin listener (and
// a token), the rules above, a file sink of records and an hour of journal
// retention; it returns the config's path, the broker's and the admin
// listener's addresses.
func consoleSluice(t *testing.T, adminKeys ...string) (dir, cfgPath, mqttAddr, adminAddr string) {
	t.Helper()
	dir, cfgPath, mqttAddr, adminAddr, _ = startConsoleSluice(t, adminKeys...)
	return dir, cfgPath, mqttAddr, adminAddr
}

// startConsoleSluice is consoleSluice that also returns how to stop sluice
// (stop returns its exit code).
func startConsoleSluice(t *testing.T, adminKeys ...string) (dir, cfgPath, mqttAddr, adminAddr string, stop func() int) {
	t.Helper()
	dir = t.TempDir()
	writeFile(t, dir, "rules/rules.yaml", consoleRules)
	cfgPath = writeFile(t, dir, "sluice.yaml", `log: {level: info}
data_dir: `+filepath.Join(dir, "data")+`
admin:
  address: 127.0.0.1:0
  token: console-s3cret
`+strings.Join(adminKeys, "")+`broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines:
  - name: telemetry
    topics: ["plant/#"]
    rules: [rules]
    sinks: [records]
    journal: {retention: 1h}
sinks:
  - name: records
    stream: records
    batch: {size: 10, interval: 10ms}
    file: {path: `+filepath.Join(dir, "records.jsonl")+`}
`)
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr testsvc.LogBuffer
	exited := make(chan int)
	go func() { exited <- Main(ctx, []string{"run", "-c", cfgPath}, &stdout, &stderr) }()
	code := -1
	stop = func() int {
		if code >= 0 {
			return code
		}
		cancel()
		select {
		case code = <-exited:
		case <-time.After(60 * time.Second):
			t.Errorf("sluice run did not stop:\n%s", stderr.String())
		}
		return code
	}
	t.Cleanup(func() { stop() })
	mqttAddr = waitForListener(t, &stderr)
	adminAddr = waitForLog(t, &stderr, regexp.MustCompile(`admin listener.* address=(\S+)`))
	return dir, cfgPath, mqttAddr, adminAddr, stop
}

// TestConsoleWithRealTraffic sends telemetry through a real pipeline over
// MQTT and checks what an operator sees through the console's API and
// commands: the tail streams each decoded message with what the rules made
// of it (its alert too); sluice alerts and status name the firing device;
// a dead letter is kept with its reason, and once the rule is fixed a
// replay writes its record (once: not the other rules' records again);
// sluice replay reports the alert transition a lower threshold adds.
func TestConsoleWithRealTraffic(t *testing.T) {
	dir, cfgPath, mqttAddr, adminAddr := consoleSluice(t)
	base := "http://" + adminAddr
	// The config names port 0: the commands find the token in it, and are
	// told the address.
	cli := func(args ...string) (int, string, string) {
		return runMain(append(args, "-c", cfgPath, "-admin", adminAddr)...)
	}
	dev := testsvc.MQTT(t, mqttAddr, "gateway")
	publish := func(topic, payload string) {
		t.Helper()
		if rc := dev.Publish(t, topic, 1, []byte(payload)); rc != 0 {
			t.Fatalf("publish %s: reason code %#x", payload, rc)
		}
	}

	// The tail, as the console page reads it: server-sent events.
	if resp, err := http.Get(base + "/api/v1/tail"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the tail without the token: %v %v", resp.Status, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/tail?device=b7", nil)
	req.Header.Set("Authorization", "Bearer console-s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("tail: %v %v", resp, err)
	}
	defer resp.Body.Close()
	events := make(chan console.MessageView, 16)
	stream := bufio.NewReader(resp.Body)
	if line, err := stream.ReadString('\n'); err != nil || !strings.Contains(line, "watching device b7") {
		t.Fatalf("tail: first line %q, %v", line, err)
	}
	go readEvents(stream, func(event, data string) {
		var v console.MessageView
		if event == "message" && json.Unmarshal([]byte(data), &v) == nil {
			events <- v
		}
	})

	publish("plant/north/b8/telemetry", `{"kind":"boiler","temperature":70}`) // another device: not shown
	publish("plant/north/b7/telemetry", `{"kind":"boiler","temperature":85}`)
	publish("plant/north/b7/telemetry", `{"kind":"boiler","temperature":95}`)
	next := func() console.MessageView {
		t.Helper()
		select {
		case v := <-events:
			return v
		case <-time.After(30 * time.Second):
			t.Fatal("the tail showed nothing")
		}
		panic("unreachable")
	}
	first, second := next(), next()
	if first.Topic != "plant/north/b7/telemetry" || first.Pipeline != "telemetry" || first.Text == nil || !strings.Contains(*first.Text, "85") {
		t.Fatalf("tail: first message %+v", first)
	}
	if len(first.Decoded) != 1 || string(first.Decoded[0]) != `{"kind":"boiler","temperature":85}` {
		t.Errorf("tail: decoded %s", first.Decoded)
	}
	want := []console.RuleOutcome{{Rule: "boiler", Result: "record"}, {Rule: "efficiency", Result: "nothing"}, {Rule: "raw", Result: "record"}}
	if !sameOutcomes(first.Rules, want) || len(first.Alerts) != 0 {
		t.Errorf("tail: rules %+v, alerts %s", first.Rules, first.Alerts)
	}
	if len(second.Alerts) != 1 || !strings.Contains(string(second.Alerts[0]), `"status":"firing"`) ||
		!strings.Contains(string(second.Alerts[0]), `"message":"b7 at 95"`) || second.Rules[0].Result != "record, alert firing" {
		t.Fatalf("tail: the alerting message: rules %+v alerts %s", second.Rules, second.Alerts)
	}
	if !strings.Contains(string(second.Records[0]), `"temp_f":203`) {
		t.Errorf("tail: records %s", second.Records)
	}

	// sluice alerts and sluice status name the firing device.
	waitUntil(t, 30*time.Second, func() bool {
		code, out, _ := cli("alerts")
		return code == exitOK && regexp.MustCompile(`firing: 1 series\n.*\n\s+boiler\s+b7\s+critical\s.*\s95\s+b7 at 95`).MatchString(out)
	}, func() string { _, out, errOut := cli("alerts"); return "sluice alerts:\n" + out + errOut })
	if code, out, errOut := cli("status", "-interval", "10ms"); code != exitOK || !regexp.MustCompile(`firing: 1 series\n.*\n\s+boiler\s+b7\s+critical`).MatchString(out) {
		t.Errorf("sluice status: exit %d\n%s%s", code, out, errOut)
	}

	// A pump without "power": a dead letter of rule efficiency, kept with
	// the reason, while rule raw records the message.
	publish("plant/south/p1/telemetry", `{"kind":"pump","flow":12}`)
	var dlOut string
	waitUntil(t, 30*time.Second, func() bool {
		_, dlOut, _ = cli("deadletters")
		return strings.Contains(dlOut, "rule efficiency failed")
	}, func() string { return "sluice deadletters:\n" + dlOut })
	if !strings.Contains(dlOut, "power") || !strings.Contains(dlOut, `payload: {"kind":"pump","flow":12}`) || !strings.Contains(dlOut, "plant/south/p1/telemetry qos1") {
		t.Errorf("sluice deadletters:\n%s", dlOut)
	}
	// Before the fix, a replay fails again and sends nothing.
	if code, out, _ := cli("deadletters", "-replay"); code != exitFailure || !strings.Contains(out, "fails again") {
		t.Errorf("replay before the fix: exit %d\n%s", code, out)
	}
	writeFile(t, dir, "rules/rules.yaml", strings.Replace(consoleRules, "eff: flow / power", "eff: flow * 2", 1))
	var replayOut string
	waitUntil(t, 30*time.Second, func() bool { // the rules reload when the file changes
		var code int
		code, replayOut, _ = cli("deadletters", "-replay")
		return code == exitOK
	}, func() string { return "sluice deadletters -replay:\n" + replayOut })
	if !strings.Contains(replayOut, "sent 1 record") {
		t.Errorf("replay: %s", replayOut)
	}
	records := func() []string {
		b, _ := os.ReadFile(filepath.Join(dir, "records.jsonl"))
		var pump []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "p1") {
				pump = append(pump, l)
			}
		}
		return pump
	}
	waitUntil(t, 30*time.Second, func() bool { return len(records()) >= 2 }, func() string { return strings.Join(records(), "\n") })
	got := records()
	if len(got) != 2 || !strings.Contains(strings.Join(got, ""), `"rule":"efficiency"`) || !strings.Contains(strings.Join(got, ""), `"eff":24`) {
		t.Errorf("the pump's records: want raw's (from the first run) and efficiency's (from the replay), once each:\n%s", strings.Join(got, "\n"))
	}
	if code, out, _ := cli("deadletters", "-replay"); code != exitOK || !strings.Contains(out, "no dead letter to replay") {
		t.Errorf("a second replay: exit %d\n%s", code, out)
	}
	if code, out, _ := cli("deadletters", "-replay", "-id", "1"); code != exitFailure || !strings.Contains(out, "twice") {
		t.Errorf("replaying one already sent: exit %d\n%s", code, out)
	}

	// The playground: a rule tried over the journal's last messages, a
	// broken one, and no rule file written.
	playground := func(req console.PlaygroundRequest) (console.PlaygroundResult, int) {
		t.Helper()
		var res console.PlaygroundResult
		resp, err := adminClient{base: base, token: "console-s3cret"}.do(context.Background(), http.MethodPost, "/api/v1/playground", req)
		if err != nil {
			t.Fatalf("playground: %v", err)
		}
		defer resp.Body.Close()
		json.NewDecoder(resp.Body).Decode(&res)
		return res, resp.StatusCode
	}
	res, _ := playground(console.PlaygroundRequest{Pipeline: "telemetry", Topic: "plant/+/b7/#", Last: 10, Rules: `rules:
  - name: warm
    match: plant/+site/+device/telemetry
    alert:
      when: temperature > 80
      message: "{{ device }} warm at {{ temperature }}"
`})
	var warm alertView
	if len(res.Firing) == 1 {
		json.Unmarshal(res.Firing[0], &warm)
	}
	if len(res.Errors) != 0 || res.Summary.Messages != 2 || res.Summary.Alerts != 1 || warm.Message != "b7 warm at 85" {
		t.Errorf("playground over b7's messages: %+v, firing %+v", res.Summary, warm)
	}
	res, _ = playground(console.PlaygroundRequest{Pipeline: "telemetry", File: "try.yaml", Rules: "rules:\n  - name: x\n    alert:\n      when: temperature >\n"})
	if len(res.Errors) == 0 || res.Errors[0].File != "try.yaml" || res.Errors[0].Line != 4 || res.Errors[0].Column == 0 {
		t.Errorf("a broken rule: %+v", res.Errors)
	}
	if _, err := (adminClient{base: base, token: "console-s3cret"}).do(context.Background(), http.MethodPut, "/api/v1/rules/file",
		console.SaveRuleFile{Pipeline: "telemetry", Path: filepath.Join(dir, "rules/rules.yaml"), Content: consoleRules}); err == nil || !strings.Contains(err.Error(), "admin.write_rules") {
		t.Errorf("saving a rule file without admin.write_rules: %v", err)
	}

	// sluice replay: the journal's messages through a lower threshold.
	fixed, _ := os.ReadFile(filepath.Join(dir, "rules/rules.yaml"))
	cand := writeFile(t, dir, "candidate/rules.yaml", strings.Replace(string(fixed), "temperature > 90", "temperature > 80", 1))
	code, out, errOut := cli("replay", "-rules", filepath.Dir(cand), "-since", "1h")
	if code != exitOK {
		t.Fatalf("sluice replay: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"alert transitions: 0 unchanged, 1 new, 1 gone",
		`+ `, "boiler b7 firing critical value=85: b7 at 85",
		`- `, "boiler b7 firing critical value=95: b7 at 95",
		"records: ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("sluice replay: no %q in\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`records: \d+ unchanged, 0 changed, 0 new, 0 gone`).MatchString(out) {
		t.Errorf("sluice replay: the records are the same\n%s", out)
	}
}

func sameOutcomes(got, want []console.RuleOutcome) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// TestPlaygroundSavesOnlyWhatItMay: with admin.write_rules, the playground
// saves a rule file the pipeline loads, and the rules reload; it refuses a
// file that does not compile, and any other path. And a tail still
// watching when sluice stops ends, without holding the stop up.
func TestPlaygroundSavesOnlyWhatItMay(t *testing.T) {
	dir, cfgPath, mqttAddr, adminAddr, stop := startConsoleSluice(t, "  write_rules: true\n")
	c := adminClient{base: "http://" + adminAddr, token: "console-s3cret"}
	ruleFile := filepath.Join(dir, "rules", "rules.yaml")
	save := func(path, content string) (int, string) {
		t.Helper()
		resp, err := c.do(context.Background(), http.MethodPut, "/api/v1/rules/file", console.SaveRuleFile{Pipeline: "telemetry", Path: path, Content: content})
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		var b strings.Builder
		io.Copy(&b, resp.Body)
		return resp.StatusCode, b.String()
	}
	if code, out := save(ruleFile, consoleRules+"  - name: hot\n    alert: {when: temperature > 100}\n"); code != http.StatusOK || !strings.Contains(out, `"hot"`) {
		t.Fatalf("save: %d %s", code, out)
	}
	if b, _ := os.ReadFile(ruleFile); !strings.Contains(string(b), "name: hot") {
		t.Fatalf("the file was not written:\n%s", b)
	}
	var rules console.RulesView
	if err := c.call(context.Background(), http.MethodGet, "/api/v1/rules", nil, &rules); err != nil || !slices.Contains(rules.Pipelines[0].Rules, "hot") {
		t.Fatalf("the rules did not reload: %+v %v", rules, err)
	}
	if _, out := save(ruleFile, "rules:\n  - name: broken\n    alert: {when: temperature >}\n"); !strings.Contains(out, "rules.yaml:3:") {
		t.Errorf("a broken file: %s", out)
	}
	if b, _ := os.ReadFile(ruleFile); !strings.Contains(string(b), "name: hot") {
		t.Errorf("a broken file was written:\n%s", b)
	}
	if _, out := save(filepath.Join(dir, "sluice.yaml"), consoleRules); !strings.Contains(out, "not a rule file of pipeline") {
		t.Errorf("another path: %s", out)
	}

	var tailOut, tailErr testsvc.LogBuffer
	tailDone := make(chan int)
	go func() {
		tailDone <- Main(context.Background(), []string{"tail", "-c", cfgPath, "-admin", adminAddr}, &tailOut, &tailErr)
	}()
	dev := testsvc.MQTT(t, mqttAddr, "gateway")
	waitUntil(t, 30*time.Second, func() bool {
		dev.Publish(t, "plant/north/b1/telemetry", 1, []byte(`{"kind":"boiler","temperature":20}`))
		return strings.Contains(tailOut.String(), "plant/north/b1/telemetry")
	}, func() string { return "sluice tail showed nothing: " + tailErr.String() })
	if code := stop(); code != exitOK {
		t.Errorf("sluice run exited %d with a tail watching", code)
	}
	select {
	case code := <-tailDone:
		if code != exitFailure || !strings.Contains(tailErr.String(), "the stream ended") {
			t.Errorf("sluice tail when sluice stopped: exit %d, %s", code, tailErr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("sluice tail did not end when sluice stopped")
	}
}

// TestReplayRefusesBadInput: replay checks what it is given before it asks
// sluice anything: exit code 2 and where the problem is.
func TestReplayRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "rules/rules.yaml", consoleRules)
	cfg := writeFile(t, dir, "sluice.yaml", "admin: {address: 127.0.0.1:1}\npipelines:\n  - name: telemetry\n    topics: [\"plant/#\"]\n    rules: [rules]\n    sinks: [out]\nsinks:\n  - {name: out, file: {path: out.jsonl}}\n")
	broken := writeFile(t, dir, "candidate/rules.yaml", "rules:\n  - name: hot\n    alert: {when: temperature >}\n")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-c", cfg}, "-rules PATH"},
		{[]string{"-c", cfg, "-rules", filepath.Dir(broken)}, "rules.yaml:3:"},
		{[]string{"-c", cfg, "-rules", filepath.Dir(broken), "-pipeline", "other"}, `no pipeline "other"`},
		{[]string{"-c", cfg, "-rules", filepath.Join(dir, "rules"), "-since", "-1h"}, "want a duration"},
	} {
		code, out, errOut := runMain(append([]string{"replay"}, c.args...)...)
		if code != exitUsage || !strings.Contains(errOut, c.want) {
			t.Errorf("sluice replay %s: exit %d, want 2 and %q:\n%s%s", strings.Join(c.args, " "), code, c.want, out, errOut)
		}
	}
}
