// Package testsvc starts the real services tests run against, and stops them
// when the test ends: a real influxd, the in-process Kafka stand-in, and MQTT
// clients (paho.golang) over TCP. Everything binds 127.0.0.1 on a free port.
package testsvc

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/sluicehq/sluice/internal/devkafka"
	"github.com/sluicehq/sluice/internal/influxd"
)

// Influxd starts a real influxd for the test. It fails the test, with the
// command to run, when the binary has not been built.
func Influxd(t testing.TB) *influxd.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := influxd.Start(ctx, influxd.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("start influxd: %v", err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

// Kafka starts the in-process Kafka stand-in for the test.
func Kafka(t testing.TB, topics ...string) *devkafka.Cluster {
	t.Helper()
	c, err := devkafka.Start(devkafka.Options{Topics: topics})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// KafkaOn starts the Kafka stand-in on a given port of 127.0.0.1 (one a
// SilentServer gave up, say).
func KafkaOn(t testing.TB, port int, topics ...string) *devkafka.Cluster {
	t.Helper()
	c, err := devkafka.Start(devkafka.Options{Port: port, Topics: topics})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// ReadKafka reads want records from the start of topic, failing the test if
// they do not all arrive within the deadline.
func ReadKafka(t testing.TB, brokers []string, topic string, want int, deadline time.Duration) []kafkago.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	conn, err := kafkago.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		t.Fatalf("kafka: partitions of %q: %v", topic, err)
	}
	var mu sync.Mutex
	var got []kafkago.Message
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p.ID, MaxWait: 100 * time.Millisecond})
			defer r.Close()
			for {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					return
				}
				mu.Lock()
				got = append(got, m)
				n := len(got)
				mu.Unlock()
				if n >= want {
					cancel()
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(got) < want {
		t.Fatalf("kafka topic %q: got %d records within %v, want %d", topic, len(got), deadline, want)
	}
	return got
}

// Client is a paho.golang MQTT 5 client connected over TCP, collecting what
// it receives.
type Client struct {
	*paho.Client
	mu       sync.Mutex
	received []*paho.Publish
	notify   chan struct{}
}

// MQTT connects an MQTT 5 client to addr, anonymously.
func MQTT(t testing.TB, addr, clientID string) *Client {
	t.Helper()
	c, ca, err := Connect(MQTTOptions{Addr: addr, ClientID: clientID})
	if err != nil {
		t.Fatalf("mqtt: connect: %v", err)
	}
	if ca.ReasonCode != 0 {
		t.Fatalf("mqtt: connect refused: reason %d", ca.ReasonCode)
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	return c
}

// MQTTOptions says how Connect connects.
type MQTTOptions struct {
	Addr     string
	ClientID string
	Username string
	Password string
	// TLS, when set, connects over TLS.
	TLS *tls.Config
	// Conn, when set, is used instead of dialling Addr (a WebSocket).
	Conn net.Conn
	// KeepAlive in seconds: 0 means 30, -1 asks for none (0 on the wire).
	KeepAlive int
	// SessionExpiry is the requested session expiry interval in seconds.
	SessionExpiry uint32
}

// Connect connects an MQTT 5 client and returns it with the CONNACK. A
// refused CONNECT returns the CONNACK with its reason code (and paho's
// error); a failure to connect at all returns only the error. The caller
// disconnects.
func Connect(o MQTTOptions) (*Client, *paho.Connack, error) {
	conn := o.Conn
	if conn == nil {
		var err error
		d := &net.Dialer{Timeout: 10 * time.Second}
		if o.TLS != nil {
			conn, err = tls.DialWithDialer(d, "tcp", o.Addr, o.TLS)
		} else {
			conn, err = d.Dial("tcp", o.Addr)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("dial %s: %w", o.Addr, err)
		}
	}
	c := &Client{notify: make(chan struct{}, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn:        conn,
		ClientID:    o.ClientID,
		PingHandler: Pinger(),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.mu.Lock()
			c.received = append(c.received, pr.Packet)
			c.mu.Unlock()
			select {
			case c.notify <- struct{}{}:
			default:
			}
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cp := &paho.Connect{ClientID: o.ClientID, KeepAlive: 30, CleanStart: true}
	if o.KeepAlive != 0 {
		cp.KeepAlive = uint16(max(o.KeepAlive, 0))
	}
	if o.Username != "" {
		cp.Username, cp.UsernameFlag = o.Username, true
	}
	if o.Password != "" {
		cp.Password, cp.PasswordFlag = []byte(o.Password), true
	}
	if o.SessionExpiry > 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &o.SessionExpiry}
	}
	ca, err := c.Connect(ctx, cp)
	if err != nil && ca == nil {
		conn.Close()
		return nil, nil, err
	}
	return c, ca, err
}

// Pinger is paho.golang's keep-alive pinger, but for its first PINGREQ,
// which it sends at once after CONNACK: a client to use over TLS or
// WebSocket. paho writes a packet in several writes where the connection
// has no writev (tls.Conn, a WebSocket), and its pinger writes from its own
// goroutine: a PINGREQ sent while the test subscribes or publishes lands
// inside that packet, and the broker rightly closes the connection as
// malformed (paho.golang issue 81). This one sends its first after half the
// keep-alive, when a test has long finished with the packets it sends
// right after connecting.
func Pinger() paho.Pinger { return &latePinger{DefaultPinger: paho.NewDefaultPinger()} }

type latePinger struct{ *paho.DefaultPinger }

func (p *latePinger) Run(ctx context.Context, conn net.Conn, keepAlive uint16) error {
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(time.Duration(keepAlive) * time.Second / 2):
	}
	return p.DefaultPinger.Run(ctx, conn, keepAlive)
}

// Subscribe subscribes to filter at QoS 1.
func (c *Client) Subscribe(t testing.TB, filter string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := c.Client.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if err != nil {
		t.Fatalf("mqtt: subscribe %q: %v", filter, err)
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] > 2 {
		t.Fatalf("mqtt: subscribe %q refused: %v", filter, sa.Reasons)
	}
}

// Publish publishes at qos and, for QoS 1 and 2, waits for the broker's
// acknowledgement. It returns the reason code of the acknowledgement.
func (c *Client) Publish(t testing.TB, topic string, qos byte, payload []byte) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.Client.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: payload})
	if resp != nil {
		return resp.ReasonCode // paho also returns an error for codes >= 0x80
	}
	if err != nil {
		t.Fatalf("mqtt: publish to %q: %v", topic, err)
	}
	return 0
}

// Received returns a copy of what has been received so far.
func (c *Client) Received() []*paho.Publish {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*paho.Publish(nil), c.received...)
}

// WaitFor waits until a message on topic has been received and returns
// everything received before it (not including it).
func (c *Client) WaitFor(t testing.TB, topic string, deadline time.Duration) []*paho.Publish {
	t.Helper()
	timeout := time.After(deadline)
	for {
		c.mu.Lock()
		for i, p := range c.received {
			if p.Topic == topic {
				before := append([]*paho.Publish(nil), c.received[:i]...)
				c.mu.Unlock()
				return before
			}
		}
		c.mu.Unlock()
		select {
		case <-c.notify:
		case <-time.After(50 * time.Millisecond):
		case <-timeout:
			t.Fatalf("mqtt: nothing on %q within %v", topic, deadline)
		}
	}
}

// LogBuffer collects what a logger (or a command's stdout and stderr)
// writes, for a test to read while it is still being written.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// SilentServer accepts TCP connections and never answers on them: a host
// whose service hangs (a Kafka broker stuck in a GC pause, a firewall that
// lets the handshake through and drops the rest). It holds every connection
// open until Close.
type SilentServer struct {
	Addr  string
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	done  chan struct{}
}

// Silent starts a SilentServer on a free port of 127.0.0.1; it is closed
// when the test ends.
func Silent(t testing.TB) *SilentServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &SilentServer{Addr: ln.Addr().String(), ln: ln, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(s.Close)
	return s
}

// Port returns the port it listens on.
func (s *SilentServer) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Accepted returns how many connections it has accepted.
func (s *SilentServer) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Close stops listening and closes the connections it holds, so its port
// can be taken by a real service. It is idempotent.
func (s *SilentServer) Close() {
	s.ln.Close()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}
