package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/testsvc"
)

// The broker faces devices, and anything that can open a TCP connection to
// it. These tests attack the real broker over raw TCP and check that it
// survives: it still serves a well-behaved client, it does not allocate
// what a client merely announces, and it keeps no goroutine once the
// attacking connections are gone.

// ackHandler accepts every message at once, and remembers the topics.
type ackHandler struct{ topics sync.Map }

var _ ingest.Handler = (*ackHandler)(nil)

func (h *ackHandler) Handle(_ context.Context, msg *sluice.Message, _ bool) error {
	h.topics.Store(msg.Topic, true)
	return nil
}

// maxVarint is the largest remaining length MQTT can encode (4 bytes):
// 268435455, 256 MiB.
var maxVarint = []byte{0xff, 0xff, 0xff, 0x7f}

// attackHeap is how much the heap may grow while an attack is under way.
const attackHeap = 8 << 20

// connectTimeout is the broker's connect_timeout in these tests: short, so
// that the broker dropping stalled connections is seen quickly.
const connectTimeout = 500 * time.Millisecond

func TestHostileClients(t *testing.T) {
	h := &ackHandler{}
	b := ingest.New(ingest.Config{
		Listeners: []ingest.ListenerConfig{{Name: "tcp", Address: "127.0.0.1:0", AllowAnonymous: true}},
		Limits:    ingest.Limits{ConnectTimeout: connectTimeout}, // and the default max_packet_size
	}, h, slog.New(slog.DiscardHandler), metrics.New())
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	addr := b.Addr("tcp")
	serves(t, addr, h, "warm-up") // start what a first client starts, before counting
	rnd := rand.New(rand.NewPCG(1, 2))

	cases := []struct {
		name string
		// attack opens connections and does its worst; the connections
		// it returns stay open while a well-behaved client publishes.
		attack func(t *testing.T) []net.Conn
	}{
		{"garbage", func(t *testing.T) []net.Conn {
			var conns []net.Conn
			for range 16 {
				c := dial(t, addr)
				junk := make([]byte, 1+rnd.IntN(4096))
				for i := range junk {
					junk[i] = byte(rnd.Uint32())
				}
				junk[0] &^= 0x10 // not a CONNECT: every first packet but CONNECT is refused
				write(t, c, junk)
				conns = append(conns, c)
			}
			for _, c := range conns {
				expectClosed(t, c)
			}
			return conns
		}},
		{"CONNECT then garbage", func(t *testing.T) []net.Conn {
			var conns []net.Conn
			for i := range 16 {
				c := connect(t, addr, "garbage-"+string(rune('a'+i)))
				junk := make([]byte, 1+rnd.IntN(4096))
				for i := range junk {
					junk[i] = byte(rnd.Uint32())
				}
				if len(junk) > 1 {
					junk[1] &= 0x7f // a remaining length of one byte: the broker reads on
				}
				write(t, c, junk)
				conns = append(conns, c)
			}
			return conns
		}},
		{"truncated PUBLISH then closed", func(t *testing.T) []net.Conn {
			c := connect(t, addr, "truncated-closed")
			write(t, c, truncatedPublish())
			c.Close()
			return nil
		}},
		{"truncated PUBLISH left open", func(t *testing.T) []net.Conn {
			c := connect(t, addr, "truncated-open")
			write(t, c, truncatedPublish())
			return []net.Conn{c}
		}},
		{"malformed CONNECT", func(t *testing.T) []net.Conn {
			for _, pk := range [][]byte{
				connectPacket("MQTX", 4, 0x02, "bad-name"),
				connectPacket("MQTT", 0, 0x02, "version-0"),
				connectPacket("MQTT", 3, 0x02, "version-3"),
				connectPacket("MQTT", 6, 0x02, "version-6"),
				connectPacket("MQIsdp", 4, 0x02, "mqisdp-4"),
				connectPacket("MQTT", 4, 0x03, "reserved-flag"),
				connectPacket("MQTT", 4, 0x80|0x02, "username-flag-no-name"),
				{0x10, 0x06, 0xff, 0xff, 'M', 'Q', 'T', 'T'}, // protocol name longer than the packet
				{0x10, 0x00},                         // empty CONNECT
				{0x11, 0x02, 0x00, 0x00},             // CONNECT with reserved header flags
				{0x10, 0xff, 0xff, 0xff, 0xff, 0x7f}, // a five-byte remaining length
			} {
				c := dial(t, addr)
				write(t, c, pk)
				if got := expectClosed(t, c); len(got) >= 4 && got[0] == 0x20 && got[3] == 0 {
					t.Errorf("CONNECT % x accepted: CONNACK % x", pk, got)
				}
				c.Close()
			}
			return nil
		}},
		{"100 clients announcing big PUBLISHes and sending nothing", func(t *testing.T) []net.Conn {
			// Each announces a packet just under max_packet_size (1 MiB)
			// after a valid CONNECT. mochi would allocate the announced
			// size at once; the listener's framing holds only what arrives.
			heap := heapAlloc()
			header := []byte{0x30, 0xf0, 0xff, 0x3f} // remaining length 1,048,560
			var conns []net.Conn
			for i := range 100 {
				c := connect(t, addr, fmt.Sprintf("announcer-%d", i))
				write(t, c, header)
				conns = append(conns, c)
			}
			// Nothing to wait for but allocations that should not happen:
			// watch the heap for a while (mochi would allocate within
			// milliseconds of reading each header).
			watch := time.Now().Add(time.Second)
			for time.Now().Before(watch) {
				if grew := int64(heapAlloc()) - int64(heap); grew > attackHeap {
					t.Fatalf("100 announced PUBLISHes grew the heap by %d MiB before a byte of them arrived", grew>>20)
				}
				time.Sleep(20 * time.Millisecond)
			}
			return conns
		}},
		{"200 stalled half CONNECTs", func(t *testing.T) []net.Conn {
			before, heap := runtime.NumGoroutine(), heapAlloc()
			half := connectPacket("MQTT", 4, 0x02, "stalled-client")
			half = half[:len(half)/2]
			var conns []net.Conn
			for range 200 {
				c := dial(t, addr)
				write(t, c, half)
				conns = append(conns, c)
			}
			// The broker serves each connection on a goroutine from the
			// accept, and has read its bytes at the latest when the
			// connect timeout closes it.
			eventually(t, 10*time.Second, "the broker to take the stalled connections", func() bool {
				return runtime.NumGoroutine() >= before+len(conns)
			})
			grew := int64(heapAlloc()) - int64(heap)
			t.Logf("%d stalled half CONNECTs hold %d goroutines and %d KiB of heap each",
				len(conns), runtime.NumGoroutine()-before, grew/int64(len(conns))>>10)
			if grew > attackHeap {
				t.Errorf("%d stalled half CONNECTs hold %d MiB of heap", len(conns), grew>>20)
			}
			for _, c := range conns {
				expectClosed(t, c) // by the connect timeout
			}
			return conns
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			goroutines, heap := runtime.NumGoroutine(), heapAlloc()
			conns := tc.attack(t)
			if grew := int64(heapAlloc()) - int64(heap); grew > attackHeap {
				t.Errorf("heap grew by %d MiB during the attack", grew>>20)
			}
			serves(t, addr, h, tc.name)
			for _, c := range conns {
				c.Close()
			}
			noLeak(t, goroutines)
		})
	}

	// An announced size is not a size the broker should allocate before
	// the bytes arrive: mochi makes a buffer of the remaining length a
	// client announces, so the broker must refuse one over max_packet_size
	// at once (mochi has no limit unless configured).
	for _, tc := range []struct {
		name  string
		first []byte // after a valid CONNECT, when not nil
	}{
		{"oversized CONNECT", nil},
		{"oversized PUBLISH", append([]byte{0x30}, maxVarint...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			goroutines, heap := runtime.NumGoroutine(), heapAlloc()
			var c net.Conn
			if tc.first == nil {
				c = dial(t, addr)
				write(t, c, append([]byte{0x10}, maxVarint...))
			} else {
				c = connect(t, addr, "oversized")
				write(t, c, tc.first)
			}
			// With a limit the broker closes the connection at once;
			// without, its heap grows by the announced size.
			closed := make(chan struct{})
			go func() {
				io.Copy(io.Discard, c)
				close(closed)
			}()
			refused := false
			eventually(t, 10*time.Second, "the broker to refuse the packet or allocate it", func() bool {
				select {
				case <-closed:
					refused = true
					return true
				default:
					return heapAlloc() > heap+attackHeap
				}
			})
			grew := int64(heapAlloc()) - int64(heap)
			switch {
			case !refused:
				t.Errorf("a remaining length of 268435455 made the broker allocate it (heap +%d MiB for one connection) "+
					"and wait for the bytes: no maximum packet size (mochi's Capabilities.MaximumPacketSize 0 is no limit)", grew>>20)
			case grew > attackHeap:
				t.Errorf("heap grew by %d MiB while refusing a 256 MiB packet", grew>>20)
			}
			c.Close()
			<-closed
			eventually(t, 10*time.Second, "the heap to shrink back once the client is gone", func() bool {
				return heapAlloc() < heap+attackHeap
			})
			serves(t, addr, h, tc.name)
			noLeak(t, goroutines)
		})
	}
}

// serves checks that a well-behaved MQTT 5 client can connect, publish at
// QoS 1 and get its PUBACK, then disconnects it.
func serves(t *testing.T, addr string, h *ackHandler, name string) {
	t.Helper()
	topic := "plant/after/" + name
	c := testsvc.MQTT(t, addr, "well-behaved")
	if code := c.Publish(t, topic, 1, []byte(`{"ok":true}`)); code != 0 {
		t.Fatalf("after %s: PUBACK reason %#x", name, code)
	}
	if _, ok := h.topics.Load(topic); !ok {
		t.Fatalf("after %s: the message did not reach the handler", name)
	}
	c.Disconnect(&paho.Disconnect{})
}

// noLeak waits until the goroutine count is back within a small margin of
// what it was before the attack.
func noLeak(t *testing.T, before int) {
	t.Helper()
	const margin = 4
	eventually(t, 10*time.Second, "goroutines to return to the baseline", func() bool {
		return runtime.NumGoroutine() <= before+margin
	})
}

// eventually polls cond until it holds, failing the test at the deadline.
func eventually(t *testing.T, deadline time.Duration, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(deadline)
	for !cond() {
		select {
		case <-tick.C:
		case <-timeout:
			buf := make([]byte, 64<<10)
			t.Fatalf("waited %v for %s (%d goroutines):\n%s", deadline, what, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
	}
}

func heapAlloc() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func write(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write % x: %v", b[:min(len(b), 16)], err)
	}
}

// expectClosed reads until the broker closes the connection and returns
// what it sent.
func expectClosed(t *testing.T, c net.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the broker kept the connection open (it sent % x)", got)
	}
	return got
}

// connect opens a connection with a valid MQTT 3.1.1 CONNECT and waits for
// a successful CONNACK.
func connect(t *testing.T, addr, clientID string) net.Conn {
	t.Helper()
	c := dial(t, addr)
	write(t, c, connectPacket("MQTT", 4, 0x02, clientID))
	ack := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK % x: %v", ack, err)
	}
	c.SetReadDeadline(time.Time{})
	return c
}

// connectPacket builds a CONNECT (keepalive 60 s) with the given protocol
// name, level and flags; level 5 gets an empty property list.
func connectPacket(name string, level, flags byte, clientID string) []byte {
	var body []byte
	body = appendString(body, name)
	body = append(body, level, flags, 0, 60)
	if level == 5 {
		body = append(body, 0)
	}
	body = appendString(body, clientID)
	return append([]byte{0x10, byte(len(body))}, body...)
}

// truncatedPublish is a QoS 1 PUBLISH announcing 1000 bytes and sending 12.
func truncatedPublish() []byte {
	pk := []byte{0x32, 0xe8, 0x07} // 1000
	pk = appendString(pk, "plant/x")
	return append(pk, 0, 1, '{', '"')
}

func appendString(b []byte, s string) []byte {
	return append(append(b, byte(len(s)>>8), byte(len(s))), s...)
}
