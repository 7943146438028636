package ingest_test

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/sluicehq/sluice/ingest"
)

// TestDisconnectReachesAClientStillWriting: a client the broker
// disconnects while it is still sending (here: over the Receive Maximum,
// 0x93) reads the DISCONNECT and its reason, then the end of the
// connection: not a reset, which would have thrown away what it had not
// read yet.
func TestDisconnectReachesAClientStillWriting(t *testing.T) {
	b, _, _ := startBroker(t, ingest.Config{Listeners: anonListener(), Limits: ingest.Limits{MaxInflight: 2}})
	for round := range 5 {
		c, _ := dialWire(t, b.Addr("tcp"), wireConnect{version: v5, clientID: "writer", clean: true})
		payload := make([]byte, 1024)
		wrote := make(chan error, 1)
		go func() {
			// Two QoS 2 publishes use the Receive Maximum up (no PUBREL
			// follows); the third is one too many. The client goes on.
			for i := 1; ; i++ {
				pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "a/b", Payload: payload}
				if i <= 3 {
					pk.FixedHeader.Qos, pk.PacketID = 2, uint16(i)
				}
				if err := c.trySend(pk); err != nil {
					wrote <- err
					return
				}
			}
		}()
		for {
			pk, err := c.read(30 * time.Second)
			if err != nil {
				t.Fatalf("round %d: %v, before a DISCONNECT", round, err)
			}
			if pk.FixedHeader.Type == packets.Disconnect {
				if pk.ReasonCode != packets.ErrReceiveMaximum.Code {
					t.Fatalf("round %d: DISCONNECT %#x, want 0x93", round, pk.ReasonCode)
				}
				break
			}
		}
		if _, err := c.read(30 * time.Second); !errors.Is(err, io.EOF) {
			t.Errorf("round %d: after the DISCONNECT: %v, want the end of the connection (EOF)", round, err)
		}
		c.conn.Close()
		<-wrote
	}
}
