package mqttclient

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/sluicehq/sluice/internal/mqttclient/mqtttest"
)

// TestV3ResendsInFlightInOrder: the publishes an MQTT 3.1.1 connection
// ended with unacknowledged stay in the session store, and the next
// connection sends them again first, in the order they were first sent
// (with packet identifiers that wrapped around), so that a remote sees a
// topic's messages in order across a lost connection. Found against
// mosquitto (internal/interop/mosquitto TestInteropLinkCut): a store that
// forgets the order resent them shuffled.
func TestV3ResendsInFlightInOrder(t *testing.T) {
	r := mqtttest.Start(t, mqtttest.Options{})
	cfg := Config{URL: r.URL, ClientID: "edge-resume", Protocol: Protocol311}
	cfg.SetDefaults()
	c, err := New(cfg, Options{Name: "resume"})
	if err != nil {
		t.Fatal(err)
	}
	// What paho.mqtt.golang keeps of a publish in flight: the packet, under
	// "o.<packet id>".
	c.store.Open()
	var want []string
	for i := range 30 {
		id := uint16(65521 + i) // 65521 to 65535, then 1 to 15 (paho skips 0)
		if id < 65521 {
			id++
		}
		p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
		p.TopicName, p.Qos, p.MessageID, p.Payload = "plant/a", 1, id, fmt.Appendf(nil, "m%d", i)
		c.store.Put(fmt.Sprintf("o.%d", id), p)
		want = append(want, fmt.Sprintf("m%d", i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var got []string
	for _, m := range r.WaitFor(t, len(want), func(m mqtttest.Message) bool { return m.Topic == "plant/a" }, time.Minute) {
		got = append(got, string(m.Payload))
	}
	if !slices.Equal(got, want) {
		t.Errorf("resent in the order\n%q\nwant\n%q", got, want)
	}
}

// TestV3AcknowledgedCountsAfterTheEnd: a publish the remote acknowledged
// is reported done even when the connection has ended (and the publish's
// context with it) by the time its result is read, so that the sink does
// not send it again.
func TestV3AcknowledgedCountsAfterTheEnd(t *testing.T) {
	c := &Client{cfg: Config{AckTimeout: time.Minute}}
	cn := &conn3{c: c, cli: ackingClient{}, ended: make(chan struct{})}
	close(cn.ended)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	msgs := make([]*Outgoing, 50)
	for i := range msgs {
		msgs[i] = &Outgoing{Topic: "plant/a", Payload: []byte{byte(i)}, QoS: 1}
	}
	errs := make([]error, len(msgs))
	cn.publish(ctx, msgs, errs)
	for i, err := range errs {
		if err != nil {
			t.Errorf("message %d, acknowledged: %v", i, err)
		}
	}
}

// ackingClient is a paho.mqtt.golang client whose publishes are all
// acknowledged at once.
type ackingClient struct{ mqtt3.Client }

func (ackingClient) Publish(string, byte, bool, any) mqtt3.Token { return doneToken{} }

type doneToken struct{}

var _ mqtt3.Token = doneToken{}

func (doneToken) Wait() bool                     { return true }
func (doneToken) WaitTimeout(time.Duration) bool { return true }
func (doneToken) Error() error                   { return nil }
func (doneToken) Done() <-chan struct{}          { return closed }

var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()
