package mosquitto_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sluicehq/sluice/internal/testsvc"
)

// sourceConfig is sluice as the rule tier of a mosquitto: no embedded
// broker, one mqtt source, one pipeline writing the raw payloads to a file.
// %[1]s is the mosquitto URL, %[2]s the rest of the source block.
const sourceConfig = `
data_dir: {data_dir}
broker: {enabled: false}
sources:
  - name: mosquitto
    mqtt:
      url: %[1]s
%[2]s
pipelines: [{name: telemetry, topics: ["plant/#"], sinks: [raw]}]
sinks:
  - name: raw
    stream: raw
    batch: {size: 100, interval: 5ms}
    file: {path: {out}}
`

// TestInteropMosquittoSource: devices publish to mosquitto, at QoS 1 and 2;
// sluice subscribes there (an mqtt source, QoS 2, MQTT 5 with manual
// acknowledgements) and its pipeline writes every message exactly once, in
// order per device.
func TestInteropMosquittoSource(t *testing.T) {
	m := startMosquitto(t, mosquittoOptions{})
	s := startSluice(t, "rule-tier", fmt.Sprintf(sourceConfig, m.URL, `
      client_id: sluice-interop-source
      subscriptions: [{filter: "plant/#", qos: 2}]`))

	st := stream{devices: devices(6), n: 100, qos: []byte{1, 2}}
	st.publish(t, m.Addr, "", "")
	s.WaitLines(t, st.total())
	s.WaitCaughtUp(t)
	got := s.Lines()
	st.checkExactlyOnce(t, "pipeline", got)
	t.Logf("mosquitto -> sluice: %d published (QoS 1 and 2), %d written by the pipeline", st.total(), len(got))
}

// TestInteropSharedSubscription runs two sluice instances (each its own
// client id and data_dir) on one $share group at mosquitto: each receives
// part of the stream, and together all of it, none twice.
func TestInteropSharedSubscription(t *testing.T) {
	m := startMosquitto(t, mosquittoOptions{})
	var instances []*Sluice
	for _, name := range []string{"a", "b"} {
		instances = append(instances, startSluice(t, name, fmt.Sprintf(sourceConfig, m.URL, `
      client_id: sluice-interop-share-`+name+`
      subscriptions: [{filter: "$share/sluice/plant/#", qos: 1}]`)))
	}

	st := stream{devices: devices(8), n: 50}
	st.publish(t, m.Addr, "", "")
	eventually(t, "the whole stream in the two pipelines", func() bool {
		return len(instances[0].Lines())+len(instances[1].Lines()) >= st.total()
	})
	for _, s := range instances {
		s.WaitCaughtUp(t)
	}
	a, b := instances[0].Lines(), instances[1].Lines()
	t.Logf("$share/sluice/plant/#: %d published; instance a took %d, b took %d", st.total(), len(a), len(b))
	if len(a) == 0 || len(b) == 0 {
		t.Errorf("one instance received nothing: a %d, b %d", len(a), len(b))
	}
	// Each instance sees its part of every device's stream in order.
	for name, lines := range map[string][]string{"a": a, "b": b} {
		last := map[string]int{}
		for _, l := range lines {
			r := parse(t, l)
			if prev, ok := last[r.Dev]; ok && r.Seq <= prev {
				t.Errorf("instance %s: %s seq %d after %d", name, r.Dev, r.Seq, prev)
			}
			last[r.Dev] = r.Seq
		}
	}
	// Together: every message, once.
	count := map[string]int{}
	for _, l := range append(slices.Clone(a), b...) {
		count[l]++
	}
	for _, dev := range st.devices {
		for seq := range st.n {
			if c := count[string(reading{dev, seq}.payload())]; c != 1 {
				t.Errorf("%s seq %d received %d times", dev, seq, c)
			}
		}
	}
	if n := len(a) + len(b); n != st.total() {
		t.Errorf("%d messages in all, want exactly %d", n, st.total())
	}
}

// bridgeConfig is an edge sluice: devices publish to its embedded broker,
// and its pipeline forwards everything to mosquitto under fwd/ (an mqtt
// sink in remote mode). %[1]s is the mosquitto URL, %[2]s the client id,
// %[3]s the protocol.
const bridgeConfig = `
data_dir: {data_dir}
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines: [{name: edge, topics: ["plant/#"], sinks: [cloud]}]
sinks:
  - name: cloud
    stream: raw
    batch: {size: 50, interval: 5ms}
    mqtt:
      topic: "fwd/{topic}"
      qos: 1
      remote:
        url: %[1]s
        client_id: %[2]s
        protocol: %[3]q
        connect_timeout: 2s
        reconnect: {initial: 50ms, max: 500ms}
`

// TestInteropBridgeOut: devices publish to sluice's embedded broker; the
// pipeline's remote mqtt sink forwards each message to mosquitto, where a
// subscriber receives every one, in order per topic, once.
func TestInteropBridgeOut(t *testing.T) {
	m := startMosquitto(t, mosquittoOptions{})
	sub := subscribe(t, m.Addr, "cloud-app", "fwd/#")
	s := startSluice(t, "edge", fmt.Sprintf(bridgeConfig, m.URL, "sluice-interop-bridge", "auto"))

	st := stream{devices: devices(4), n: 100}
	st.publish(t, s.Broker().Addr("tcp"), "", "")
	got := sub.waitFor(fmt.Sprintf("%d messages on fwd/#", st.total()), func(got []received) bool { return len(got) >= st.total() })
	eventually(t, "the journal drained", func() bool { return backlog(s) == 0 })
	got = sub.messages()
	for _, msg := range got {
		if msg.QoS != 1 {
			t.Errorf("%s arrived at QoS %d, want 1", msg.Topic, msg.QoS)
			break
		}
	}
	for _, dev := range st.devices {
		var want []string
		for seq := range st.n {
			want = append(want, string(reading{dev, seq}.payload()))
		}
		if p := payloads(got, "fwd/"+st.topic(dev)); !slices.Equal(p, want) {
			t.Errorf("fwd/%s: mosquitto's subscriber received %d messages, want %d in order:\n%q", st.topic(dev), len(p), len(want), p)
		}
	}
	if len(got) != st.total() {
		t.Errorf("the subscriber received %d messages, want exactly %d", len(got), st.total())
	}
	t.Logf("devices -> sluice -> mosquitto: %d published, %d received by mosquitto's subscriber", st.total(), len(got))
}

// backlog is what the first pipeline's first sink has not written yet.
func backlog(s *Sluice) uint64 { return s.Health(time.Now()).Pipelines[0].Sinks[0].Backlog }

// TestInteropLinkCut cuts the link mid-stream: while devices keep
// publishing to sluice, mosquitto is stopped (SIGTERM); sluice keeps
// acknowledging the devices, and what it cannot forward waits in the
// journal. Mosquitto is started again on the same port (its persistence
// keeps the subscriber's session); everything published arrives at
// mosquitto's subscriber, the first arrivals in order per topic. Copies
// sent again after the cut are counted, and allowed (at least once). The
// bridge speaks MQTT 5, then MQTT 3.1.1.
func TestInteropLinkCut(t *testing.T) {
	for _, protocol := range []string{"5", "3.1.1"} {
		t.Run("mqtt"+protocol, func(t *testing.T) { linkCut(t, protocol) })
	}
}

func linkCut(t *testing.T, protocol string) {
	m := startMosquitto(t, mosquittoOptions{Persist: true})
	sub := subscribe(t, m.Addr, "cloud-app", "fwd/#")
	s := startSluice(t, "edge", fmt.Sprintf(bridgeConfig, m.URL, "sluice-interop-linkcut", protocol))

	// Devices publish without pause (up to one message per 2ms each) until
	// told to stop; every publish must be acknowledged by sluice.
	devs := devices(3)
	st := stream{devices: devs}
	sent := make([]atomic.Int64, len(devs))
	total := func() int {
		n := 0
		for i := range sent {
			n += int(sent[i].Load())
		}
		return n
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	failed := make(chan error, len(devs))
	for i, dev := range devs {
		c := connect(t, testsvc.MQTTOptions{Addr: s.Broker().Addr("tcp"), ClientID: dev})
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(2 * time.Millisecond)
			defer tick.Stop()
			for seq := 0; ; seq++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				pctx, cancel := context.WithTimeout(context.Background(), wait)
				resp, err := c.Client.Publish(pctx, &paho.Publish{Topic: st.topic(dev), QoS: 1, Payload: reading{dev, seq}.payload()})
				cancel()
				if err == nil && resp != nil && resp.ReasonCode != 0 {
					err = fmt.Errorf("reason 0x%02x", resp.ReasonCode)
				}
				if err != nil {
					failed <- fmt.Errorf("%s: publish %d to sluice: %w", dev, seq, err)
					return
				}
				sent[i].Store(int64(seq + 1))
			}
		}()
	}
	stopPublishing := func() {
		stop()
		wg.Wait()
		select {
		case err := <-failed:
			t.Fatal(err)
		default:
		}
	}
	publishedMore := func(what string, n int) {
		t.Helper()
		from := total()
		eventually(t, what, func() bool {
			select {
			case err := <-failed:
				t.Fatal(err)
			default:
			}
			return total() >= from+n
		})
	}

	sub.waitFor("the stream flowing through the bridge", func(got []received) bool { return len(got) >= 150 })
	m.Stop()
	atCut := total()
	publishedMore("300 more messages published with mosquitto down", 300)
	eventually(t, "sluice holding the messages in its journal, its sink failing", func() bool {
		h := s.Health(time.Now()).Pipelines[0].Sinks[0]
		return h.Backlog > 0 && h.FailingFor > 0
	})
	h := s.Health(time.Now()).Pipelines[0].Sinks[0]
	t.Logf("mosquitto down: backlog %d in the journal; the sink says %q", h.Backlog, h.LastError)

	m.Start()
	atRestart := total()
	sub.reconnect()
	publishedMore("300 more messages published after the restart", 300)
	stopPublishing()

	want := map[string]int{}
	for i, dev := range devs {
		want[dev] = int(sent[i].Load())
	}
	sub.waitFor(fmt.Sprintf("all %d messages at mosquitto's subscriber", total()), func(got []received) bool {
		return distinct(payloads(got, "")) >= total()
	})
	eventually(t, "the journal drained", func() bool { return backlog(s) == 0 })
	got := sub.messages()
	for _, msg := range got {
		if !strings.HasPrefix(msg.Topic, "fwd/plant/") || parse(t, msg.Payload).Dev != strings.Split(msg.Topic, "/")[3] {
			t.Errorf("%q arrived on %s", msg.Payload, msg.Topic)
		}
	}
	dups, lost := accountFor(t, "mosquitto's subscriber", payloads(got, ""), want)
	t.Logf("link cut: %d published (%d before the cut, %d while mosquitto was down, %d after the restart); "+
		"%d received by mosquitto's subscriber: %d distinct, %d lost, %d duplicates",
		total(), atCut, atRestart-atCut, total()-atRestart, len(got), len(got)-dups, lost, dups)
	if strings.Contains(m.Log(), "Outgoing messages are being dropped") {
		t.Errorf("mosquitto dropped messages:\n%s", m.Log())
	}
}

// TestInteropSourceOutage takes sluice's source down mid-stream, and then
// mosquitto: sluice (a persistent session on mosquitto, QoS 1) is stopped
// while devices go on publishing to mosquitto, which keeps the messages for
// sluice's session, across its own restart (persistence). Sluice started
// again (same client id and data_dir) receives them; then mosquitto is
// restarted under the running sluice, which reconnects to its session.
// Every message is accounted for, first arrivals in order per device.
func TestInteropSourceOutage(t *testing.T) {
	m := startMosquitto(t, mosquittoOptions{Persist: true})
	dir := t.TempDir()
	config := fmt.Sprintf(sourceConfig, m.URL, `
      client_id: sluice-interop-outage
      reconnect: {initial: 50ms, max: 500ms}
      subscriptions: [{filter: "plant/#", qos: 1}]`)
	st := stream{devices: devices(4), n: 250}
	phase := func(k int) { st.publishRange(t, m.Addr, "", "", 50*k, 50*(k+1)) }
	written := func(s *Sluice, n int) {
		t.Helper()
		eventually(t, fmt.Sprintf("%d distinct messages in the file sink", n), func() bool { return distinct(s.Lines()) >= n })
	}

	s := startSluiceIn(t, dir, "rule-tier", config)
	phase(0)
	written(s, 200)
	s.Close(t)
	phase(1) // sluice down: mosquitto queues them for its session
	m.Stop()
	m.Start()
	phase(2) // and after mosquitto restarted
	s = startSluiceIn(t, dir, "rule-tier-again", config)
	written(s, 600)
	m.Stop() // under the running sluice
	m.Start()
	phase(3)
	written(s, 800)
	phase(4)
	written(s, 1000)
	s.WaitCaughtUp(t)

	got := s.Lines()
	want := map[string]int{}
	for _, dev := range st.devices {
		want[dev] = st.n
	}
	dups, lost := accountFor(t, "pipeline", got, want)
	t.Logf("source outage: %d published to mosquitto (200 with sluice down, 200 more after mosquitto restarted, 200 after it restarted under sluice); "+
		"%d written by the pipeline: %d lost, %d duplicates", st.total(), len(got), lost, dups)
}

// TestInteropBridgeIn: an mqtt source with inject subscribes to mosquitto
// and publishes what arrives into sluice's embedded broker, renamed under
// cloud/: a local subscriber of sluice receives every message in order, and
// the pipeline takes each once (the injected copy is not taken again).
func TestInteropBridgeIn(t *testing.T) {
	m := startMosquitto(t, mosquittoOptions{})
	s := startSluice(t, "edge", fmt.Sprintf(`
data_dir: {data_dir}
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
sources:
  - name: cloud
    mqtt:
      url: %s
      client_id: sluice-interop-bridge-in
      subscriptions: [{filter: "plant/#", qos: 1}]
      topic: "cloud/{topic}"
      inject: true
pipelines: [{name: in, topics: ["cloud/#"], sinks: [raw]}]
sinks:
  - name: raw
    stream: raw
    batch: {size: 100, interval: 5ms}
    file: {path: {out}}
`, m.URL))
	local := connect(t, testsvc.MQTTOptions{Addr: s.Broker().Addr("tcp"), ClientID: "local-app"})
	local.Subscribe(t, "cloud/#")

	st := stream{devices: devices(3), n: 50}
	st.publish(t, m.Addr, "", "")
	s.WaitLines(t, st.total())
	eventually(t, "every message at the local subscriber", func() bool { return len(local.Received()) >= st.total() })
	s.WaitCaughtUp(t)
	st.checkExactlyOnce(t, "pipeline", s.Lines())
	var got []received
	for _, p := range local.Received() {
		got = append(got, received{p.Topic, string(p.Payload), p.QoS})
	}
	for _, dev := range st.devices {
		var want []string
		for seq := range st.n {
			want = append(want, string(reading{dev, seq}.payload()))
		}
		if p := payloads(got, "cloud/"+st.topic(dev)); !slices.Equal(p, want) {
			t.Errorf("cloud/%s: the local subscriber received %q, want %d in order", st.topic(dev), p, len(want))
		}
	}
	if len(got) != st.total() {
		t.Errorf("the local subscriber received %d messages, want exactly %d", len(got), st.total())
	}
	t.Logf("mosquitto -> sluice (inject): %d published, %d at the local subscriber, %d in the pipeline", st.total(), len(got), len(s.Lines()))
}

// TestInteropProtocols connects the source to mosquitto (which speaks both)
// in MQTT 3.1.1, in MQTT 5, and in auto mode, which must settle on MQTT 5;
// both sides say which they speak.
func TestInteropProtocols(t *testing.T) {
	for _, tc := range []struct {
		protocol string
		want     string // the protocol sluice logs
		mosq     string // mosquitto's protocol number: p2 is 3.1.1, p5 is 5
	}{
		{"3.1.1", "3.1.1", "p2"},
		{"5", "5", "p5"},
		{"auto", "5", "p5"},
	} {
		t.Run(tc.protocol, func(t *testing.T) {
			m := startMosquitto(t, mosquittoOptions{})
			id := "sluice-interop-protocol-" + strings.ReplaceAll(tc.protocol, ".", "")
			s := startSluice(t, "proto", fmt.Sprintf(sourceConfig, m.URL, fmt.Sprintf(`
      client_id: %s
      protocol: %q
      subscriptions: [{filter: "plant/#", qos: 1}]`, id, tc.protocol)))

			st := stream{devices: devices(2), n: 50}
			st.publish(t, m.Addr, "", "")
			s.WaitLines(t, st.total())
			s.WaitCaughtUp(t)
			st.checkExactlyOnce(t, "pipeline", s.Lines())

			connected := regexp.MustCompile(`msg="connected to the remote broker" .*protocol=` + regexp.QuoteMeta(tc.want) + `( |$)`)
			if !connected.MatchString(s.Logs()) {
				t.Errorf("sluice does not log a connection in MQTT %s:\n%s", tc.want, s.Logs())
			}
			if strings.Contains(s.Logs(), "refused MQTT 5") {
				t.Errorf("sluice fell back to MQTT 3.1.1 with mosquitto, which speaks 5:\n%s", s.Logs())
			}
			if !strings.Contains(m.Log(), " as "+id+" ("+tc.mosq+",") {
				t.Errorf("mosquitto does not log %s connecting with %s", id, tc.mosq)
			}
		})
	}
}

// TestInteropPassword runs mosquitto with a password file made by
// mosquitto_passwd: the source with the right password receives the
// stream; one with a wrong password is refused, retried, and logged with
// a line that says why and names the user, but holds no password.
func TestInteropPassword(t *testing.T) {
	const (
		sluicePassword = "Sluice-R1ght-pw"
		wrongPassword  = "Wr0ng-Password-x"
		devicePassword = "Dev1ce-pw-42"
	)
	m := startMosquitto(t, mosquittoOptions{Users: map[string]string{"sluice": sluicePassword, "device": devicePassword}})
	pwFile := filepath.Join(t.TempDir(), "remote-password")
	if err := os.WriteFile(pwFile, []byte(sluicePassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startSluice(t, "auth", fmt.Sprintf(`
data_dir: {data_dir}
broker: {enabled: false}
sources:
  - name: right
    mqtt:
      url: %[1]s
      client_id: sluice-interop-right
      username: sluice
      password: {file: %[2]s}
      subscriptions: [{filter: "plant/#", qos: 1}]
  - name: wrong
    mqtt:
      url: %[1]s
      client_id: sluice-interop-wrong
      username: sluice
      password: %[3]s
      subscriptions: [{filter: "other/#", qos: 1}]
      reconnect: {initial: 50ms, max: 200ms}
pipelines: [{name: telemetry, topics: ["plant/#"], sinks: [raw]}]
sinks:
  - name: raw
    stream: raw
    batch: {size: 100, interval: 5ms}
    file: {path: {out}}
`, m.URL, pwFile, wrongPassword))

	st := stream{devices: devices(2), n: 50}
	st.publish(t, m.Addr, "device", devicePassword)
	s.WaitLines(t, st.total())
	s.WaitCaughtUp(t)
	st.checkExactlyOnce(t, "pipeline", s.Lines())

	eventually(t, "the wrong password refused (auth) twice", func() bool {
		return value(s.Metrics.Refused.WithLabelValues("wrong", "auth")) >= 2
	})
	if n := value(s.Metrics.Refused.WithLabelValues("right", "auth")); n != 0 {
		t.Errorf("the right password was refused %v times", n)
	}
	// The line an operator reads: which source, that the remote refused,
	// why, and which user with which password source.
	line := regexp.MustCompile(`(?m)^.*source=wrong.*refused the connection: not authorized \(0x87\); check username \\"sluice\\" \(password from config\).*$`)
	if l := line.FindString(s.Logs()); l == "" {
		t.Errorf("no clear log line for the refused password:\n%s", s.Logs())
	} else {
		t.Logf("the refusal, as logged: %s", l)
	}
	for _, pw := range []string{sluicePassword, wrongPassword, devicePassword} {
		if strings.Contains(s.Logs(), pw) {
			t.Errorf("a password is in sluice's log:\n%s", s.Logs())
		}
	}
	if !strings.Contains(m.Log(), "disconnected, not authorised") {
		t.Errorf("mosquitto did not refuse the wrong password")
	}
}

func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
