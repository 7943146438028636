package ingest

import (
	"os"
	"path/filepath"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// An encrypted state file written by an earlier sluice (testdata/compat,
// see its README) opens with its key and gives back what it held; what
// this sluice adds to it loads beside it.
func TestStateReadsEarlierEncryptedFile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "compat", "broker-encrypted.db"))
	must(t, err)
	path := filepath.Join(t.TempDir(), "broker.db")
	must(t, os.WriteFile(path, b, 0o600))

	check := func(h *stateStore, wantSubs string) {
		t.Helper()
		clients, subs, inflight := stored(t, h)
		if clients != "dev1" || subs != wantSubs || inflight != "dev1 7" {
			t.Fatalf("clients %q, subscriptions %q, in flight %q", clients, subs, inflight)
		}
		cs, err := h.StoredClients()
		must(t, err)
		if string(cs[0].Username) != "alice" || cs[0].Properties.SessionExpiryInterval != 3600 {
			t.Fatalf("client %+v", cs[0])
		}
		ret, err := h.StoredRetainedMessages()
		must(t, err)
		if len(ret) != 1 || ret[0].TopicName != "plant/north/status" || string(ret[0].Payload) != "online" {
			t.Fatalf("retained %+v", ret)
		}
	}
	h, err := openStore(t, path, stateKey(0x5a))
	must(t, err)
	check(h, "dev1 plant/+/alerts")
	h.OnSubscribed(client(mqtt.New(nil), "dev1", false), packets.Packet{Filters: packets.Subscriptions{{Filter: "plant/+/status"}}}, []byte{1})
	must(t, h.Stop())

	h, err = openStore(t, path, stateKey(0x5a))
	must(t, err)
	check(h, "dev1 plant/+/alerts dev1 plant/+/status")
}
