package pipelines_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/sluicehq/sluice/internal/admin"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

// TestDiskFullAndBack runs sluice with data_dir on a small tmpfs and fills
// it. While the journal cannot write, an MQTT 5 QoS 1 publish is answered
// at once with 0x97 (quota exceeded), an MQTT 3.1.1 one (which cannot be
// told) by closing the connection, so that the client sends it again, and
// /readyz says not ready, and why. Once space is back, sluice takes
// messages again by itself: publishes are acknowledged, /readyz is ready,
// the 3.1.1 client's message sent again is acknowledged, and every
// acknowledged message is in the sink. (Before, nothing was accepted again
// until a restart, the MQTT 5 client got no answer and /readyz stayed 200.)
func TestDiskFullAndBack(t *testing.T) {
	data := testsvc.Tmpfs(t, 2<<20)
	dir := t.TempDir()
	out := filepath.Join(dir, "raw.jsonl")
	path := filepath.Join(dir, "sluice.yaml")
	must(t, os.WriteFile(path, []byte(fmt.Sprintf(`
data_dir: %s
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines: [{name: p, topics: ["#"], sinks: [raw]}]
sinks:
  - name: raw
    stream: raw
    batch: {size: 50, interval: 10ms}
    file: {path: %s}
`, data, out)), 0o644))
	cfg, err := pipelines.Load(path)
	must(t, err)
	m := metrics.New()
	svc, err := pipelines.New(cfg, pipelines.Options{Metrics: m})
	must(t, err)
	must(t, svc.Start(context.Background()))
	defer svc.Close(context.Background())
	adm, err := admin.Listen(admin.Options{Config: pipelines.AdminConfig{Address: "127.0.0.1:0"}, Gatherer: m.Registry, Health: svc.Health})
	must(t, err)
	defer adm.Close(context.Background())
	readyz := func() (int, string) {
		resp, err := http.Get("http://" + adm.Addr() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	addr := svc.Broker().Addr("tcp")
	v5 := testsvc.MQTT(t, addr, "v5")
	acked := map[string]bool{}
	n := 0
	publish5 := func() byte {
		n++
		body := fmt.Sprintf("v5-%d %s", n, strings.Repeat("x", 500))
		code := v5.Publish(t, "plant/v5", 1, []byte(body))
		if code == 0 {
			acked[fmt.Sprintf("v5-%d ", n)] = true
		}
		return code
	}
	for range 20 {
		if code := publish5(); code != 0 {
			t.Fatalf("publish before the disk is full: reason 0x%02x", code)
		}
	}

	free := testsvc.Fill(t, data)
	code := byte(0)
	for range 1000 {
		if code = publish5(); code != 0 {
			break
		}
	}
	if code != 0x97 {
		t.Fatalf("publishes on a full disk: reason 0x%02x, want 0x97 (quota exceeded)", code)
	}
	for range 3 {
		if code := publish5(); code != 0x97 {
			t.Fatalf("another publish on a full disk: reason 0x%02x, want 0x97", code)
		}
	}
	if status, body := readyz(); status != http.StatusServiceUnavailable || !strings.Contains(body, `pipeline "p": journal cannot write`) ||
		!strings.Contains(body, "no space left on device") {
		t.Fatalf("/readyz on a full disk: %d %q", status, body)
	}
	if got := counter(t, m, "sluice_messages_rejected_total"); got < 4 {
		t.Errorf("sluice_messages_rejected_total = %v, want at least 4", got)
	}

	// An MQTT 3.1.1 client is disconnected, without an acknowledgement.
	lost := make(chan struct{}, 16)
	v3 := mqtt3.NewClient(mqtt3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("v3").
		SetProtocolVersion(4).SetCleanSession(false).SetAutoReconnect(true).
		SetMaxReconnectInterval(200 * time.Millisecond).
		SetConnectionLostHandler(func(mqtt3.Client, error) { lost <- struct{}{} }))
	if tok := v3.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("3.1.1 connect: %v", tok.Error())
	}
	defer v3.Disconnect(100)
	tok := v3.Publish("plant/v3", 1, false, "v3-1 "+strings.Repeat("y", 500))
	select {
	case <-lost:
	case <-time.After(30 * time.Second):
		t.Fatal("the 3.1.1 client's publish on a full disk neither refused nor disconnected")
	}
	if tok.Error() != nil || isDone(tok) {
		t.Fatalf("the 3.1.1 publish was acknowledged on a full disk (error %v)", tok.Error())
	}

	free()
	deadline := time.Now().Add(30 * time.Second)
	for {
		status, body := readyz()
		if status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz once space is back: %d %q", status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for range 5 {
		if code := publish5(); code != 0 {
			t.Fatalf("publish once space is back: reason 0x%02x", code)
		}
	}
	// The 3.1.1 client reconnected and sent its message again.
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("the 3.1.1 client's message sent again: %v", tok.Error())
	}
	acked["v3-1 "] = true

	deadline = time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(out)
		missing := 0
		for id := range acked {
			if !strings.Contains(string(b), id) {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged messages are not in the sink", missing, len(acked))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func isDone(tok mqtt3.Token) bool {
	select {
	case <-tok.Done():
		return true
	default:
		return false
	}
}
