package ingest

import (
	"bytes"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// encode returns the wire bytes of a PUBLISH (MQTT 5) on topic at qos.
func encodePublish(t *testing.T, topic string, qos byte, id uint16) []byte {
	t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, TopicName: topic, PacketID: id, ProtocolVersion: 5}
	var buf bytes.Buffer
	if err := pk.PublishEncode(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// topics decodes the PUBLISH topics in a byte stream (other packets show
// as their type name).
func topics(t *testing.T, b []byte) []string {
	t.Helper()
	var got []string
	for len(b) > 0 {
		n, ok := packetLen(b)
		if !ok {
			t.Fatalf("a partial packet was written: % x", b)
		}
		if b[0]>>4 != packets.Publish {
			got = append(got, packets.PacketNames[b[0]>>4])
		} else {
			_, hdr := remainingLen(b[:n])
			pk := packets.Packet{ProtocolVersion: 5}
			if err := pk.FixedHeader.Decode(b[0]); err != nil {
				t.Fatal(err)
			}
			if err := pk.PublishDecode(b[hdr:n]); err != nil {
				t.Fatal(err)
			}
			got = append(got, pk.TopicName)
		}
		b = b[n:]
	}
	return got
}

func TestSendWindow(t *testing.T) {
	q1 := func(topic string, id uint16) []byte { return encodePublish(t, topic, 1, id) }
	q0 := func(topic string) []byte { return encodePublish(t, topic, 0, 0) }
	pingresp := []byte{packets.Pingresp << 4, 0}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	var wire bytes.Buffer
	w := newSendWindow(connectInfo{version: 5, receiveMax: 2})
	write := func(p []byte) {
		t.Helper()
		if n, err := w.write(&wire, p); err != nil || n != len(p) {
			t.Fatalf("write: %d, %v", n, err)
		}
	}
	check := func(step string, want ...string) {
		t.Helper()
		if got := topics(t, wire.Bytes()); !slices.Equal(got, want) {
			t.Errorf("%s: the client got %q, want %q", step, got, want)
		}
		wire.Reset()
	}

	write(cat(q1("a", 1), q1("b", 2)))
	check("within the quota", "a", "b")
	// Over it: held, while QoS 0 and other packets pass, in one batch
	// that starts with a held packet.
	write(cat(q1("c", 3), q0("zero"), pingresp, q1("d", 4)))
	check("over the quota", "zero", "Pingresp")
	// A packet split over two writes.
	e := q1("e", 5)
	write(e[:3])
	write(cat(e[3:], q0("zero2")))
	check("split", "zero2")
	// Each acknowledgement lets one out, in order.
	for _, want := range []string{"c", "d", "e"} {
		if err := w.acked(&wire); err != nil {
			t.Fatal(err)
		}
		check("after an ack", want)
	}
	// Nothing is held now: acknowledgements refill the quota, to its max.
	for range 5 {
		w.acked(&wire)
	}
	write(cat(q1("f", 6), q1("g", 7), q1("h", 8)))
	check("refilled to the client's Receive Maximum", "f", "g")
}

func TestReleasesQuota(t *testing.T) {
	cases := []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"PUBACK", []byte{0x40, 2, 0, 1}, true},
		{"PUBACK with a reason", []byte{0x40, 3, 0, 1, 0x10}, true},
		{"PUBCOMP", []byte{0x70, 2, 0, 1}, true},
		{"PUBREC success", []byte{0x50, 2, 0, 1}, false},
		{"PUBREC 0x00", []byte{0x50, 3, 0, 1, 0}, false},
		{"PUBREC error", []byte{0x50, 3, 0, 1, 0x87}, true},
		{"PUBREL", []byte{0x62, 2, 0, 1}, false},
		{"PINGREQ", []byte{0xc0, 0}, false},
	}
	for _, c := range cases {
		if got := releasesQuota(c.pkt); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestSendWindowMQTT3(t *testing.T) {
	var wire bytes.Buffer
	w := newSendWindow(connectInfo{version: 4})
	var p []byte
	for i := range 100 {
		p = append(p, encodePublish(t, "a", 1, uint16(i+1))...)
	}
	p = append(p, packets.Disconnect<<4, 0)
	if _, err := w.write(&wire, p); err != nil {
		t.Fatal(err)
	}
	got := topics(t, wire.Bytes())
	if len(got) != 100 || slices.Contains(got, "Disconnect") {
		t.Errorf("an MQTT 3.1.1 client got %d packets (%q at the end): want every PUBLISH and no DISCONNECT", len(got), got[len(got)-1])
	}
}

// writeLog records each write a connection gets, safely for the timer's
// goroutine.
type writeLog struct {
	mu     sync.Mutex
	writes [][]byte
}

func (l *writeLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes = append(l.writes, bytes.Clone(p))
	return len(p), nil
}

// got returns the packets of each write so far, as topics.
func (l *writeLog) got(t *testing.T) [][]string {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out [][]string
	for _, w := range l.writes {
		out = append(out, topics(t, w))
	}
	return out
}

func TestSendWindowCoalescesAcks(t *testing.T) {
	puback := func(id byte) []byte { return []byte{packets.Puback << 4, 2, 0, id} }
	pubrec := []byte{packets.Pubrec << 4, 2, 0, 9}
	equal := func(a, b [][]string) bool { return slices.EqualFunc(a, b, slices.Equal[[]string]) }

	t.Run("held while another packet is at hand, sent before the reader waits", func(t *testing.T) {
		var wire writeLog
		w := newSendWindow(connectInfo{version: 5})
		w.delay = time.Hour // not the timer: what this case checks
		must(t, w.setHold(&wire, true))
		for i := range 3 {
			if _, err := w.write(&wire, puback(byte(i))); err != nil {
				t.Fatal(err)
			}
		}
		w.write(&wire, pubrec)
		if got := wire.got(t); len(got) != 0 {
			t.Fatalf("written while the reader had more: %q", got)
		}
		must(t, w.setHold(&wire, false))
		if got, want := wire.got(t), [][]string{{"Puback", "Puback", "Puback", "Pubrec"}}; !equal(got, want) {
			t.Fatalf("writes %q, want %q", got, want)
		}
		// Without more at hand, an acknowledgement goes out at once.
		w.write(&wire, puback(4))
		if got := wire.got(t); len(got) != 2 {
			t.Fatalf("writes %q, want the last acknowledgement on its own", got)
		}
	})

	t.Run("another write takes the pending acknowledgements first", func(t *testing.T) {
		var wire writeLog
		w := newSendWindow(connectInfo{version: 5})
		w.delay = time.Hour // not the timer: what this case checks
		w.setHold(&wire, true)
		w.write(&wire, puback(1))
		w.write(&wire, encodePublish(t, "alerts/x", 0, 0))
		if got, want := wire.got(t), [][]string{{"Puback", "alerts/x"}}; !equal(got, want) {
			t.Fatalf("writes %q, want %q", got, want)
		}
	})

	t.Run("sent when they fill the buffer", func(t *testing.T) {
		var wire writeLog
		w := newSendWindow(connectInfo{version: 5})
		w.delay = time.Hour // not the timer: what this case checks
		w.setHold(&wire, true)
		for i := range maxPendingAcks/4 + 10 {
			w.write(&wire, puback(byte(i)))
		}
		got := wire.got(t)
		if len(got) != 1 || len(got[0]) != maxPendingAcks/4 {
			t.Fatalf("%d writes (first of %d packets), want one of %d", len(got), len(got[0]), maxPendingAcks/4)
		}
	})

	t.Run("sent after ackDelay when handling a packet blocks", func(t *testing.T) {
		var wire writeLog
		w := newSendWindow(connectInfo{version: 5})
		w.setHold(&wire, true)
		w.write(&wire, puback(1))
		deadline := time.Now().Add(10 * time.Second)
		for len(wire.got(t)) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the pending acknowledgement was never sent")
			}
			time.Sleep(time.Millisecond)
		}
		if got, want := wire.got(t), [][]string{{"Puback"}}; !equal(got, want) {
			t.Fatalf("writes %q, want %q", got, want)
		}
	})
}
