package mqttclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/sluicehq/sluice"
)

// ackInterval is how often paho sends the acknowledgements the
// application has given, in order.
const ackInterval = 10 * time.Millisecond

// conn5 is an MQTT 5 connection (paho.golang). Its session state is the
// client's, kept across connections: packet identifiers still in use and
// QoS 2 exchanges carry over to the next connection.
type conn5 struct {
	c        *Client
	cli      *paho.Client
	maxQoS   byte
	maxBytes uint32 // the remote's maximum packet size; 0: no limit

	mu        sync.Mutex
	cause     error
	caused    chan struct{} // closed when cause is set
	hasFailed bool
}

func (c *Client) connect5(ctx context.Context, tlsCfg *tls.Config) (conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	raw, err := dial(ctx, c.url, tlsCfg)
	if err != nil {
		return nil, err
	}
	sniff := &sniffConn{Conn: raw}
	cn := &conn5{c: c, maxQoS: 2, caused: make(chan struct{})}
	cn.cli = paho.NewClient(paho.ClientConfig{
		ClientID:                   c.cfg.ClientID,
		Conn:                       packets.NewThreadSafeConn(sniff),
		Session:                    c.state,
		OnPublishReceived:          []func(paho.PublishReceived) (bool, error){cn.received},
		PacketTimeout:              c.cfg.AckTimeout,
		OnClientError:              cn.setCause,
		OnServerDisconnect:         func(d *paho.Disconnect) { cn.setCause(disconnectError(d)) },
		EnableManualAcknowledgment: true,
		SendAcksInterval:           ackInterval,
	})
	expiry := uint32(*c.cfg.SessionExpiry / time.Second)
	cp := &paho.Connect{
		ClientID:   c.cfg.ClientID,
		KeepAlive:  uint16(c.cfg.KeepAlive / time.Second),
		CleanStart: c.cfg.CleanStart,
		// Problem information: reason strings and user properties
		// (mochi, asked for none, drops user properties from PUBLISH too).
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry, RequestProblemInfo: true},
	}
	if c.o.ReceiveMaximum > 0 {
		cp.Properties.ReceiveMaximum = &c.o.ReceiveMaximum
	}
	if c.cfg.Username != "" {
		cp.Username, cp.UsernameFlag = c.cfg.Username, true
	}
	if c.cfg.Password.IsSet() {
		cp.Password, cp.PasswordFlag = []byte(c.cfg.Password.Reveal()), true
	}
	ca, err := cn.cli.Connect(ctx, cp)
	if err != nil {
		raw.Close()
		if ca != nil && ca.ReasonCode >= 0x80 {
			refused := &RefusedError{Code: ca.ReasonCode}
			if ca.Properties != nil {
				refused.Reason = ca.Properties.ReasonString
			}
			return nil, refused
		}
		if code, ok := sniff.v3Refusal(); ok {
			return nil, &RefusedError{Code: code, V3: true}
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("no CONNACK within %v: %w", c.cfg.ConnectTimeout, context.DeadlineExceeded)
		}
		return nil, err
	}
	if p := ca.Properties; p != nil {
		if p.MaximumQoS != nil {
			cn.maxQoS = *p.MaximumQoS
		}
		if p.MaximumPacketSize != nil {
			cn.maxBytes = *p.MaximumPacketSize
		}
	}
	return cn, nil
}

func (cn *conn5) protocol() string { return Protocol5 }

func (cn *conn5) done() <-chan struct{} { return cn.cli.Done() }

// err says why the connection ended. paho reports the cause just after
// the connection closes; it is waited for briefly.
func (cn *conn5) err() error {
	select {
	case <-cn.caused:
	case <-time.After(100 * time.Millisecond):
	}
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.cause
}

func (cn *conn5) setCause(err error) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.cause == nil && err != nil {
		cn.cause = err
		close(cn.caused)
	}
}

func (cn *conn5) fail(err error) {
	cn.mu.Lock()
	first := !cn.hasFailed
	cn.hasFailed = true
	cn.mu.Unlock()
	if !first {
		return
	}
	cn.setCause(fmt.Errorf("dropped: a message could not be taken: %w", err))
	// fail runs on paho's delivery goroutine, which Disconnect waits for.
	go cn.cli.Disconnect(&paho.Disconnect{ReasonCode: 0x83}) // implementation specific error
}

func (cn *conn5) failed() bool {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.hasFailed
}

func (cn *conn5) disconnect() {
	select {
	case <-cn.cli.Done():
		return
	default:
	}
	// Let the acknowledgements given last leave first.
	time.Sleep(3 * ackInterval)
	cn.setCause(errors.New("disconnected"))
	cn.cli.Disconnect(&paho.Disconnect{ReasonCode: 0})
	<-cn.cli.Done()
}

// received hands a PUBLISH to the client's OnMessage.
func (cn *conn5) received(pr paho.PublishReceived) (bool, error) {
	p, cli := pr.Packet, pr.Client
	m := &Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, conn: cn,
		ack: func() error { return cli.Ack(p) }}
	if pp := p.Properties; pp != nil {
		m.ContentType = pp.ContentType
		if len(pp.User) > 0 {
			m.UserProperties = make([]sluice.Property, len(pp.User))
			for i, u := range pp.User {
				m.UserProperties[i] = sluice.Property{Key: u.Key, Value: u.Value}
			}
		}
	}
	cn.c.deliver(m)
	return true, nil
}

// parallelTopics bounds the topics published to at once.
const parallelTopics = 64

// publish sends the messages of each topic one after the other, each once
// the one before it is acknowledged, and different topics in parallel, up
// to parallelTopics. (paho.golang gives no way to pipeline publishes and
// keep their order on the wire.)
func (cn *conn5) publish(ctx context.Context, msgs []*Outgoing, errs []error) {
	var topics []string
	byTopic := map[string][]int{}
	for i, m := range msgs {
		if _, ok := byTopic[m.Topic]; !ok {
			topics = append(topics, m.Topic)
		}
		byTopic[m.Topic] = append(byTopic[m.Topic], i)
	}
	sem := make(chan struct{}, parallelTopics)
	var wg sync.WaitGroup
	for _, t := range topics {
		idx := byTopic[t]
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			for _, i := range idx {
				errs[i] = ctx.Err()
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for k, i := range idx {
				errs[i] = cn.publishOne(ctx, msgs[i])
				if errs[i] != nil && !IsPermanent(errs[i]) {
					for _, j := range idx[k+1:] {
						errs[j] = fmt.Errorf("%w: %w", ErrEarlierFailed, errs[i])
					}
					return
				}
			}
		}()
	}
	wg.Wait()
}

func (cn *conn5) publishOne(ctx context.Context, m *Outgoing) error {
	if err := ValidTopic(m.Topic); err != nil {
		return fmt.Errorf("%w: %w", errInvalid, err)
	}
	p := &paho.Publish{Topic: m.Topic, QoS: min(m.QoS, cn.maxQoS), Retain: m.Retain, Payload: m.Payload}
	size := 5 + 2 + len(m.Topic) + 2 + len(m.Payload) + 5
	if m.ContentType != "" || len(m.UserProperties) > 0 {
		p.Properties = &paho.PublishProperties{ContentType: m.ContentType}
		size += 3 + len(m.ContentType)
		for _, u := range m.UserProperties {
			p.Properties.User = append(p.Properties.User, paho.UserProperty{Key: u.Key, Value: u.Value})
			size += 5 + len(u.Key) + len(u.Value)
		}
	}
	if cn.maxBytes > 0 && size > int(cn.maxBytes) {
		return &PublishError{Topic: m.Topic, Code: 0x95, Reason: fmt.Sprintf("about %d bytes; the remote takes at most %d", size, cn.maxBytes)}
	}
	pr, err := cn.cli.Publish(ctx, p)
	if pr != nil && pr.ReasonCode >= 0x80 {
		pe := &PublishError{Topic: m.Topic, Code: pr.ReasonCode}
		if pr.Properties != nil {
			pe.Reason = pr.Properties.ReasonString
		}
		return pe
	}
	if err != nil {
		if errors.Is(err, paho.ErrInvalidArguments) {
			return fmt.Errorf("%w: %w", errInvalid, err)
		}
		return fmt.Errorf("publish to %q: %w", m.Topic, err)
	}
	return nil
}

func (cn *conn5) subscribe(ctx context.Context, subs []Subscription) error {
	s := &paho.Subscribe{}
	for _, sub := range subs {
		// Retained messages only for a new subscription, not again at each
		// reconnect of a persistent session.
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: sub.Filter, QoS: sub.QoS, RetainHandling: 1})
	}
	sa, err := cn.cli.Subscribe(ctx, s)
	if sa != nil {
		refused := map[string]string{}
		for i, code := range sa.Reasons {
			if code >= 0x80 && i < len(subs) {
				refused[subs[i].Filter] = fmt.Sprintf("%s (0x%02x)", Reason(code), code)
			}
		}
		if len(refused) > 0 {
			return &SubscribeError{Filters: refused}
		}
	}
	return err
}

func disconnectError(d *paho.Disconnect) error {
	err := fmt.Errorf("the remote broker disconnected: %s (0x%02x)", Reason(d.ReasonCode), d.ReasonCode)
	if d.Properties != nil && d.Properties.ReasonString != "" {
		err = fmt.Errorf("%w: %s", err, d.Properties.ReasonString)
	}
	return err
}
