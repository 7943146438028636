package ingest_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ingest"
)

// TestProtocolErrorsCounted: a client that breaks the protocol has its
// connection closed (as the specification says), and it is counted by
// reason and logged with the client id and listener. Raw TCP clients send
// the bytes.
func TestProtocolErrorsCounted(t *testing.T) {
	b, m, logs := startBrokerMetrics(t, ingest.Config{Listeners: anonListener(), Limits: ingest.Limits{MaxInflight: 1}})
	addr := b.Addr("tcp")
	publish := func(topic []byte, qos byte, id byte) []byte {
		body := append([]byte{byte(len(topic) >> 8), byte(len(topic))}, topic...)
		if qos > 0 {
			body = append(body, 0, id)
		}
		body = append(body, '{', '}')
		return append([]byte{0x30 | qos<<1, byte(len(body))}, body...)
	}
	cases := []struct {
		name, reason string
		packets      [][]byte
	}{
		{"an invalid UTF-8 topic", "malformed_packet", [][]byte{publish([]byte{'a', '/', 0xff, 0xfe}, 0, 0)}},
		{"a NUL in a topic", "malformed_packet", [][]byte{publish([]byte{'a', 0, 'b'}, 1, 1)}},
		{"a remaining length over four bytes", "malformed_packet", [][]byte{{0x30, 0xff, 0xff, 0xff, 0xff, 0x01}}},
		{"a reserved packet type", "protocol_error", [][]byte{{0x00, 0x00}}},
		{"a QoS 3 publish", "protocol_error", [][]byte{{0x36, 0x00}}},
		// MQTT 3.1.1 has no Receive Maximum; the broker holds it to
		// max_inflight all the same: two QoS 2 publishes without PUBREL.
		{"over the Receive Maximum", "receive_maximum_exceeded", [][]byte{publish([]byte("a/b"), 2, 1), publish([]byte("a/b"), 2, 2)}},
	}
	logged := map[string]bool{}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := "bad-device-" + string(rune('a'+i))
			conn := connect(t, addr, id)
			for _, p := range c.packets {
				write(t, conn, p)
			}
			expectClosed(t, conn)
			labels := map[string]string{"listener": "tcp", "reason": c.reason}
			eventually(t, 30*time.Second, "the protocol error counted", func() bool {
				return metricValue(t, m, "sluice_broker_protocol_errors_total", labels) >= 1
			})
			if logged[c.reason] {
				return // the log is rate-limited per listener and reason
			}
			logged[c.reason] = true
			eventually(t, 30*time.Second, "the protocol error logged", func() bool {
				return strings.Contains(logs.String(), "client="+id)
			})
		})
	}
	for reason, want := range map[string]float64{"malformed_packet": 3, "protocol_error": 2, "receive_maximum_exceeded": 1} {
		labels := map[string]string{"listener": "tcp", "reason": reason}
		if got := metricValue(t, m, "sluice_broker_protocol_errors_total", labels); got != want {
			t.Errorf("protocol errors %s: %v, want %v", reason, got, want)
		}
	}
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "client=bad-device-a") && strings.Contains(l, "reason=malformed_packet") {
			line = l
		}
	}
	if !strings.Contains(line, "listener=tcp") || !strings.Contains(line, "level=WARN") {
		t.Errorf("the invalid UTF-8 topic's line: %q, want a warning with the listener, client and reason", line)
	}

	// A CONNECT that does not decode is a refused connection.
	conn := dial(t, addr)
	write(t, conn, []byte{0x10, 0x03, 0x00, 0x04, 'M'}) // a protocol name cut short
	expectClosed(t, conn)
	eventually(t, 30*time.Second, "the malformed CONNECT counted", func() bool {
		return metricValue(t, m, "sluice_broker_connections_refused_total", map[string]string{"listener": "tcp", "reason": "protocol"}) >= 1
	})
}
