package pipelines_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/sluicehq/sluice/internal/keyfile"
	"github.com/sluicehq/sluice/internal/testsvc"
	"github.com/sluicehq/sluice/pipelines"
)

// TestEncryptionAtRest runs sluice with an encryption key while its sink is
// down, so the journal holds the messages, and a subscriber is away, so the
// broker's state holds them too. Nothing in data_dir shows the payload or
// the topic; after a restart with the key the subscriber gets its messages;
// with another key sluice refuses to start.
func TestEncryptionAtRest(t *testing.T) {
	const (
		secretPayload = "TOP-SECRET-reading-4411"
		secretTopic   = "status/area-51"
	)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	must(t, keyfile.Generate(filepath.Join(dir, "sluice.key")))
	path := filepath.Join(dir, "sluice.yaml")
	must(t, os.WriteFile(path, []byte(fmt.Sprintf(`
data_dir: %s
shutdown_timeout: 100ms
encryption: {key_file: sluice.key}
broker:
  listeners: [{name: tcp, address: "127.0.0.1:0", allow_anonymous: true}]
pipelines: [{name: p, topics: ["status/#"], sinks: [down]}]
sinks:
  - name: down   # nothing listens there: the events wait in the journal
    kafka: {brokers: ["127.0.0.1:1"], topic: t, timeout: 1s}
`, data)), 0o644))
	start := func() (*pipelines.Service, error) {
		cfg, err := pipelines.Load(path)
		must(t, err)
		svc, err := pipelines.New(cfg, pipelines.Options{})
		if err != nil {
			return nil, err
		}
		return svc, svc.Start(context.Background())
	}

	svc, err := start()
	must(t, err)
	addr := svc.Broker().Addr("tcp")
	sub := persistentClient(t, addr, "dashboard", false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "status/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	sub.Disconnect(&paho.Disconnect{})
	pub := testsvc.MQTT(t, addr, "device")
	if code := pub.Publish(t, secretTopic, 1, []byte(secretPayload)); code != 0 {
		t.Fatalf("publish: %#x", code)
	}
	pub.Client.Publish(ctx, &paho.Publish{Topic: "status/retained", QoS: 1, Retain: true, Payload: []byte(secretPayload)})
	pub.Disconnect(&paho.Disconnect{})
	must(t, svc.Close(context.Background()))

	var files int
	err = filepath.WalkDir(data, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		for _, s := range []string{secretPayload, "area-51", base64.StdEncoding.EncodeToString([]byte(secretPayload)), "dashboard"} {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds %q in clear", strings.TrimPrefix(p, data), s)
			}
		}
		return nil
	})
	must(t, err)
	if files < 2 {
		t.Fatalf("found %d files in data_dir; want the journal and broker.db", files)
	}

	// With the key, the session and its queued message come back.
	svc, err = start()
	must(t, err)
	var mu sync.Mutex
	var got []string
	back := persistentClient(t, svc.Broker().Addr("tcp"), "dashboard", false, func(p *paho.Publish) {
		mu.Lock()
		got = append(got, p.Topic+"="+string(p.Payload))
		mu.Unlock()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the queued message did not come back after the restart")
		}
		time.Sleep(20 * time.Millisecond)
	}
	back.Disconnect(&paho.Disconnect{})
	mu.Lock()
	if got[0] != secretTopic+"="+secretPayload {
		t.Errorf("after the restart the subscriber got %q", got)
	}
	mu.Unlock()
	if st, _ := svc.JournalStats("p"); st.Last == 0 {
		t.Errorf("the journal lost its records: %+v", st)
	}
	must(t, svc.Close(context.Background()))

	// Another key: sluice refuses to start rather than read garbage.
	must(t, os.Remove(filepath.Join(dir, "sluice.key")))
	must(t, keyfile.Generate(filepath.Join(dir, "sluice.key")))
	svc, err = start()
	if err == nil {
		svc.Close(context.Background())
		t.Fatal("started with another key")
	}
	if !strings.Contains(err.Error(), "key") {
		t.Errorf("error with another key does not say so: %v", err)
	}
}
