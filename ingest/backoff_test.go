package ingest_test

import (
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/ingest/auth"
)

// dialFrom connects from the loopback address from (127.0.0.0/8 is all
// loopback on Linux), so that a test can be several client addresses.
func dialFrom(t *testing.T, addr, from string) *wire {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Skipf("cannot connect from %s: %v", from, err)
	}
	t.Cleanup(func() { conn.Close() })
	return newWire(t, conn, v5)
}

// TestAuthFailureBackoff: after repeated failed logins from one address,
// or for one user from many, the refusal of the next one waits; a login
// that succeeds from that address, or as that user, is answered at once
// meanwhile, and so are other addresses.
func TestAuthFailureBackoff(t *testing.T) {
	pwFile := filepath.Join(t.TempDir(), "passwd")
	for user, pw := range passwords {
		if err := auth.SetPassword(pwFile, user, []byte(pw), 4); err != nil {
			t.Fatal(err)
		}
	}
	// A delay no test outlives: a refusal that waits is seen waiting.
	b, m, _ := startBrokerMetrics(t, ingest.Config{
		Listeners: []ingest.ListenerConfig{{Name: "tcp", Address: "127.0.0.1:0"}},
		Auth: ingest.AuthConfig{PasswordFile: pwFile,
			FailureBackoff: ingest.FailureBackoff{After: 2, Initial: time.Hour, Max: time.Hour}},
	})
	addr := b.Addr("tcp")
	waiting := func() float64 { return metricValue(t, m, "sluice_broker_auth_delaying", nil) }
	login := func(from, user, password string) *wire {
		c := dialFrom(t, addr, from)
		c.send(wireConnectPacket(wireConnect{version: v5, clientID: "c-" + from + "-" + user, user: user, password: password, clean: true}))
		return c
	}
	refusedNow := func(from, user, password string) {
		t.Helper()
		if ack := login(from, user, password).expect(packets.Connack); ack.ReasonCode != 0x86 {
			t.Fatalf("from %s as %s: CONNACK %#x, want 0x86", from, user, ack.ReasonCode)
		}
	}
	acceptedNow := func(from, user string) {
		t.Helper()
		if ack := login(from, user, passwords[user]).expect(packets.Connack); ack.ReasonCode != 0 {
			t.Fatalf("from %s as %s: CONNACK %#x, want 0", from, user, ack.ReasonCode)
		}
	}
	held := 0.0
	heldBack := func(from, user, password string) {
		t.Helper()
		login(from, user, password)
		held++
		eventually(t, 30*time.Second, "the refusal to wait", func() bool { return waiting() == held })
	}

	t.Run("per address", func(t *testing.T) {
		// Unknown user names: they count against the address.
		refusedNow("127.0.0.2", "guess-1", "x")
		refusedNow("127.0.0.2", "guess-2", "x")
		heldBack("127.0.0.2", "guess-3", "x")
		acceptedNow("127.0.0.2", "alice")       // the right password is not slowed
		refusedNow("127.0.0.3", "guess-4", "x") // nor another address
		if got := waiting(); got != held {
			t.Errorf("%v refusals waiting, want %v", got, held)
		}
	})
	t.Run("per user", func(t *testing.T) {
		refusedNow("127.0.0.4", "bob", "wrong")
		refusedNow("127.0.0.5", "bob", "wrong")
		heldBack("127.0.0.6", "bob", "wrong")
		acceptedNow("127.0.0.7", "bob")
	})
	if got := metricValue(t, m, "sluice_broker_auth_delayed_total", map[string]string{"listener": "tcp"}); got != held {
		t.Errorf("sluice_broker_auth_delayed_total %v, want %v", got, held)
	}
}
