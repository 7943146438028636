package ingest

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/sluicehq/sluice/internal/ratelog"
)

// TestBrokerLogHandler: mochi's records are rate-limited per message and
// listener, with the count of those suppressed, and lose every payload.
func TestBrokerLogHandler(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(0, 0)
	rl := ratelog.New(slog.New(slog.DiscardHandler), 10*time.Second, func() time.Time { return now })
	log := slog.New(newBrokerLog(slog.NewTextHandler(&buf, nil), rl))
	secret := []byte("SECRET-PAYLOAD")
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 7,
		TopicName: "devices/a/temp", Payload: secret}

	for range 5 {
		log.Warn("error processing packet", "listener", "tcp", "pk", pk)
	}
	log.Warn("error processing packet", "listener", "ws", "pk", &pk) // another listener: its own line
	log.With("listener", "tcp").Warn("other message", "will", mqtt.Will{TopicName: "w", Payload: secret},
		"raw", secret, slog.Group("in", "packet", pk), "error", errors.New("boom"),
		"thing", struct{ B []byte }{secret})
	log.Info("mochi's info lines are not passed")
	now = now.Add(11 * time.Second)
	log.Warn("error processing packet", "listener", "tcp", "pk", pk)

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[3], "suppressed=4") {
		t.Errorf("the line after the interval does not count the 4 suppressed: %s", lines[3])
	}
	for _, want := range []string{"pk.type=Publish pk.id=7 pk.qos=1 pk.topic=devices/a/temp pk.payload_bytes=14"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("%q not in %s", want, lines[0])
		}
	}
	for _, want := range []string{"will.topic=w", "will.payload_bytes=14", "raw_bytes=14", "in.packet.payload_bytes=14",
		"error=boom", `thing="struct`} {
		if !strings.Contains(lines[2], want) {
			t.Errorf("%q not in %s", want, lines[2])
		}
	}
	if strings.Contains(buf.String(), string(secret)) || strings.Contains(buf.String(), "83 69 67") {
		t.Errorf("a payload is in the log:\n%s", buf.String())
	}
}
