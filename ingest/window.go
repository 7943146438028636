package ingest

import (
	"bytes"
	"errors"
	"io"
	"math"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// sendWindow keeps an MQTT 5 client's Receive Maximum on the broker's
// side of its connection (MQTT 5 3.3.4, 4.9): of the QoS 1 and 2 PUBLISH
// packets the broker writes, no more than the client's Receive Maximum go
// out unacknowledged; the others wait here, in order, and go out as the
// client acknowledges (PUBACK, PUBCOMP, or PUBREC with an error code).
//
// mochi counts the same quota itself but, when it is used up, sends the
// held messages once and forgets them (they are not sent again after a
// reconnect) and then stalls; sluice turns its count off (conformHook).
// Here every message stays in mochi's flight until acknowledged, so it is
// sent again after a reconnect, while the wire keeps the client's limit.
//
// mochi writes whole packets (several at once when it batches); write
// splits them. Everything but a QoS 1/2 PUBLISH passes at once.
//
// For an MQTT 3.1.1 client, which has no Receive Maximum, nothing is held;
// but a DISCONNECT, which mochi sends to any client it closes, is dropped:
// in 3.1.1 only the client sends one (3.1.1 §3.14).
//
// It also coalesces acknowledgements. mochi writes each PUBACK (PUBREC,
// PUBREL, PUBCOMP) as it handles the packet it answers: a system call per
// message, a tenth of sluice's CPU under load (sluice bench). While the
// connection's reader has another whole packet of the client's at hand
// (hold, set by clientConn.Read), acknowledgements wait in pending and go
// out together: when the reader hands over its last buffered packet,
// before it would wait for the client; with any other write; at
// maxPendingAcks bytes; and at the latest ackDelay after the first of
// them, should handling a packet block (a full journal).
type sendWindow struct {
	mu      sync.Mutex
	v3      bool
	quota   int
	max     int
	partial []byte   // the start of a packet whose end has not been written yet
	held    [][]byte // QoS 1/2 PUBLISH packets waiting for quota, in order

	hold    bool          // the reader has another whole packet at hand
	pending []byte        // acknowledgements waiting to go out together
	timer   *time.Timer   // sends pending delay after it began, made on first use
	delay   time.Duration // ackDelay; longer in tests of the other triggers
	err     error         // a failed write of pending, returned by the next write
}

const (
	maxPendingAcks = 4 << 10
	ackDelay       = 2 * time.Millisecond
)

func newSendWindow(c connectInfo) *sendWindow {
	if c.version < 5 {
		return &sendWindow{v3: true, quota: math.MaxInt, max: math.MaxInt, delay: ackDelay}
	}
	rm := c.receiveMax
	if rm == 0 {
		rm = 65535 // absent: 65535 [MQTT 5 3.1.2.11.3]
	}
	return &sendWindow{quota: int(rm), max: int(rm), delay: ackDelay}
}

// write passes p to dst, holding back the QoS 1/2 PUBLISH packets beyond
// the quota. It reports p written whether or not some of it is held.
func (w *sendWindow) write(dst io.Writer, p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	data := p
	if len(w.partial) > 0 {
		data = append(w.partial, p...)
		w.partial = nil
	}
	// Until a packet is held, what passes is data[:passed], as it is;
	// from then on, what passes is copied into out.
	passed, copying := 0, false
	var out []byte
	for off := 0; off < len(data); {
		n, ok := packetLen(data[off:])
		if !ok {
			w.partial = bytes.Clone(data[off:])
			break
		}
		pkt := data[off : off+n]
		off += n
		if w.v3 && pkt[0]>>4 == packets.Disconnect {
			if !copying {
				out, copying = append(make([]byte, 0, len(data)), data[:passed]...), true
			}
			continue
		}
		if isQoSPublish(pkt[0]) {
			if w.quota == 0 || len(w.held) > 0 {
				if !copying {
					out, copying = append(make([]byte, 0, len(data)), data[:passed]...), true
				}
				w.held = append(w.held, bytes.Clone(pkt))
				continue
			}
			w.quota--
		}
		if copying {
			out = append(out, pkt...)
		} else {
			passed = off
		}
	}
	if !copying {
		out = data[:passed]
	}
	if w.hold && onlyAcks(out) {
		first := len(w.pending) == 0
		w.pending = append(w.pending, out...)
		if len(w.pending) >= maxPendingAcks {
			return len(p), w.send(dst, nil)
		}
		if first {
			w.arm(dst)
		}
		return len(p), w.takeErr()
	}
	if err := w.send(dst, out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// send writes the pending acknowledgements and then out, in one write.
// Called with mu held.
func (w *sendWindow) send(dst io.Writer, out []byte) error {
	if err := w.takeErr(); err != nil {
		return err
	}
	if len(w.pending) > 0 {
		out = append(w.pending, out...)
		w.pending = w.pending[:0]
		if cap(w.pending) > 2*maxPendingAcks {
			w.pending = nil
		}
	}
	if len(out) == 0 {
		return nil
	}
	_, err := dst.Write(out)
	return err
}

func (w *sendWindow) takeErr() error {
	err := w.err
	w.err = nil
	return err
}

// arm makes sure pending goes out delay from now if nothing sends it
// sooner. Called with mu held.
func (w *sendWindow) arm(dst io.Writer) {
	if w.timer != nil {
		w.timer.Reset(w.delay)
		return
	}
	w.timer = time.AfterFunc(w.delay, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(w.pending) > 0 {
			w.err = w.send(dst, nil)
		}
	})
}

// setHold tells whether the reader has another whole packet at hand;
// without one, what is pending goes out now, before the reader may wait.
func (w *sendWindow) setHold(dst io.Writer, hold bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.hold = hold
	if hold || len(w.pending) == 0 {
		return nil
	}
	return w.send(dst, nil)
}

// stop ends the timer, when the connection closes.
func (w *sendWindow) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer != nil {
		w.timer.Stop()
	}
}

// onlyAcks reports whether b is one or more whole PUBACK, PUBREC, PUBREL
// or PUBCOMP packets.
func onlyAcks(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for len(b) > 0 {
		if t := b[0] >> 4; t < packets.Puback || t > packets.Pubcomp {
			return false
		}
		n, ok := packetLen(b)
		if !ok {
			return false
		}
		b = b[n:]
	}
	return true
}

// acked gives back one unit of quota for an acknowledgement read from the
// client, and sends what it lets out.
func (w *sendWindow) acked(dst io.Writer) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.quota < w.max {
		w.quota++
	}
	var out []byte
	for w.quota > 0 && len(w.held) > 0 {
		out = append(out, w.held[0]...)
		w.held[0] = nil
		w.held = w.held[1:]
		w.quota--
	}
	if len(out) == 0 {
		return nil
	}
	return w.send(dst, out)
}

// writeNow writes p (whole packets) at once, between other writes.
func (w *sendWindow) writeNow(dst io.Writer, p []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.send(dst, p)
}

// isQoSPublish reports whether a fixed header's first byte is a PUBLISH at
// QoS 1 or 2.
func isQoSPublish(first byte) bool {
	return first>>4 == packets.Publish && (first>>1)&3 > 0
}

// packetLen returns the length of the whole packet at the start of b,
// false when b does not hold all of it yet.
func packetLen(b []byte) (int, bool) {
	remaining := 0
	for i, shift := 1, 0; i < len(b) && i <= 4; i, shift = i+1, shift+7 {
		remaining |= int(b[i]&0x7f) << shift
		if b[i]&0x80 == 0 {
			n := i + 1 + remaining
			return n, n <= len(b)
		}
	}
	return 0, false
}

// releasesQuota reports whether a whole packet from an MQTT 5 client ends
// one of the broker's QoS 1/2 sends: PUBACK, PUBCOMP, or a PUBREC whose
// reason code is an error [MQTT 5 4.9].
func releasesQuota(pkt []byte) bool {
	switch pkt[0] >> 4 {
	case packets.Puback, packets.Pubcomp:
		return true
	case packets.Pubrec:
		// fixed header, packet id, then the reason code if present
		_, hdr := remainingLen(pkt)
		return len(pkt) > hdr+2 && pkt[hdr+2] >= packets.ErrUnspecifiedError.Code
	}
	return false
}

// remainingLen decodes the fixed header of a whole packet: its remaining
// length and the header's size.
func remainingLen(pkt []byte) (int, int) {
	remaining := 0
	for i, shift := 1, 0; i < len(pkt) && i <= 4; i, shift = i+1, shift+7 {
		remaining |= int(pkt[i]&0x7f) << shift
		if pkt[i]&0x80 == 0 {
			return remaining, i + 1
		}
	}
	return remaining, len(pkt)
}

// connectInfo is what the listener needs of a client's CONNECT.
type connectInfo struct {
	version    byte
	receiveMax uint16 // 0: not given
}

// parseConnect decodes a whole CONNECT packet.
func parseConnect(pkt []byte) (connectInfo, error) {
	remaining, hdr := remainingLen(pkt)
	if hdr+remaining != len(pkt) {
		return connectInfo{}, errors.New("incomplete CONNECT")
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect, Remaining: remaining}}
	if err := pk.ConnectDecode(pkt[hdr:]); err != nil {
		return connectInfo{}, err
	}
	return connectInfo{version: pk.ProtocolVersion, receiveMax: pk.Properties.ReceiveMaximum}, nil
}

// disconnectTooLarge is an MQTT 5 DISCONNECT with reason 0x95, packet too
// large, and no properties.
var disconnectTooLarge = []byte{packets.Disconnect << 4, 2, packets.ErrPacketTooLarge.Code, 0}
