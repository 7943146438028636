package mqttclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	mqtt3 "github.com/eclipse/paho.mqtt.golang"
)

// conn3 is an MQTT 3.1.1 connection (paho.mqtt.golang), for remotes that
// refuse MQTT 5. Its store is the client's, kept across connections of a
// persistent session, so that unfinished QoS 1/2 exchanges carry over.
type conn3 struct {
	c   *Client
	cli mqtt3.Client

	mu        sync.Mutex
	cause     error
	ended     chan struct{}
	hasFailed bool
}

func (c *Client) connect3(ctx context.Context, tlsCfg *tls.Config) (conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	cn := &conn3{c: c, ended: make(chan struct{})}
	o := mqtt3.NewClientOptions().
		AddBroker(c.url.String()).
		SetClientID(c.cfg.ClientID).
		SetCleanSession(!c.cfg.Persistent()).
		SetProtocolVersion(4).
		SetKeepAlive(c.cfg.KeepAlive).
		SetPingTimeout(max(c.cfg.KeepAlive/2, time.Second)).
		SetConnectTimeout(c.cfg.ConnectTimeout).
		SetWriteTimeout(c.cfg.AckTimeout).
		SetAutoReconnect(false). // the Client reconnects, with its backoff
		SetConnectRetry(false).
		SetOrderMatters(true).
		SetAutoAckDisabled(true).
		SetResumeSubs(false).
		SetStore(c.store).
		SetCustomOpenConnectionFn(func(*url.URL, mqtt3.ClientOptions) (net.Conn, error) {
			return dial(ctx, c.url, tlsCfg)
		}).
		SetDefaultPublishHandler(cn.received).
		SetConnectionLostHandler(func(_ mqtt3.Client, err error) { cn.end(err) })
	if c.cfg.Username != "" {
		o.SetUsername(c.cfg.Username)
	}
	if c.cfg.Password.IsSet() {
		o.SetPassword(c.cfg.Password.Reveal())
	}
	cn.cli = mqtt3.NewClient(o)
	tok := cn.cli.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		cn.cli.Disconnect(0)
		return nil, fmt.Errorf("no CONNACK within %v: %w", c.cfg.ConnectTimeout, context.DeadlineExceeded)
	}
	if err := tok.Error(); err != nil {
		if ct, ok := tok.(*mqtt3.ConnectToken); ok && ct.ReturnCode() >= 1 && ct.ReturnCode() <= 5 {
			return nil, &RefusedError{Code: ct.ReturnCode(), V3: true}
		}
		return nil, err
	}
	return cn, nil
}

func (cn *conn3) protocol() string { return Protocol311 }

func (cn *conn3) done() <-chan struct{} { return cn.ended }

func (cn *conn3) err() error {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.cause
}

// end records that the connection ended, and why.
func (cn *conn3) end(err error) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	select {
	case <-cn.ended:
		return
	default:
	}
	if cn.cause == nil {
		cn.cause = err
	}
	close(cn.ended)
}

func (cn *conn3) fail(err error) {
	cn.mu.Lock()
	first := !cn.hasFailed
	cn.hasFailed = true
	cn.mu.Unlock()
	if first {
		// fail runs on paho's delivery goroutine, which Disconnect waits for.
		go cn.close(fmt.Errorf("dropped: a message could not be taken: %w", err), 0)
	}
}

func (cn *conn3) failed() bool {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.hasFailed
}

func (cn *conn3) disconnect() {
	// paho sends the acknowledgements already given, then DISCONNECT.
	cn.close(errors.New("disconnected"), 250)
}

func (cn *conn3) close(why error, quiesceMs uint) {
	select {
	case <-cn.ended:
		return
	default:
	}
	cn.cli.Disconnect(quiesceMs) // the lost handler is not called for it
	cn.end(why)
}

func (cn *conn3) received(_ mqtt3.Client, msg mqtt3.Message) {
	cn.c.deliver(&Message{
		Topic: msg.Topic(), Payload: msg.Payload(), QoS: msg.Qos(), Retain: msg.Retained(), Duplicate: msg.Duplicate(),
		conn: cn, ack: func() error { msg.Ack(); return nil },
	})
}

// publish pipelines the messages in order: paho.mqtt.golang writes them
// in the order given, so waiting comes after sending them all.
func (cn *conn3) publish(ctx context.Context, msgs []*Outgoing, errs []error) {
	toks := make([]mqtt3.Token, len(msgs))
	for i, m := range msgs {
		if err := ValidTopic(m.Topic); err != nil {
			errs[i] = fmt.Errorf("%w: %w", errInvalid, err)
			continue
		}
		toks[i] = cn.cli.Publish(m.Topic, m.QoS, m.Retain, m.Payload)
	}
	timeout := time.NewTimer(cn.c.cfg.AckTimeout)
	defer timeout.Stop()
	for i, tok := range toks {
		if tok == nil {
			continue
		}
		// A publish already settled keeps its result, even once the
		// connection has ended (select would pick among the ready cases
		// at random, and an acknowledged message would be sent again).
		select {
		case <-tok.Done():
		default:
			select {
			case <-tok.Done():
			case <-cn.ended:
				errs[i] = ErrConnectionLost
				continue
			case <-ctx.Done():
				errs[i] = ctx.Err()
				continue
			case <-timeout.C:
				errs[i] = fmt.Errorf("publish to %q: no acknowledgement within %v", msgs[i].Topic, cn.c.cfg.AckTimeout)
				// A remote that does not answer is dropped: its acks would
				// not come now either.
				go cn.close(errs[i], 0)
				continue
			}
		}
		if err := tok.Error(); err != nil {
			errs[i] = fmt.Errorf("publish to %q: %w", msgs[i].Topic, err)
		}
	}
}

func (cn *conn3) subscribe(ctx context.Context, subs []Subscription) error {
	filters := make(map[string]byte, len(subs))
	for _, s := range subs {
		filters[s.Filter] = s.QoS
	}
	tok := cn.cli.SubscribeMultiple(filters, nil) // messages go to the default handler
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return fmt.Errorf("no SUBACK: %w", ctx.Err())
	}
	if err := tok.Error(); err != nil {
		return err
	}
	refused := map[string]string{}
	if st, ok := tok.(*mqtt3.SubscribeToken); ok {
		for f, code := range st.Result() {
			if code >= 0x80 {
				refused[f] = fmt.Sprintf("failure (0x%02x)", code)
			}
		}
	}
	if len(refused) > 0 {
		return &SubscribeError{Filters: refused}
	}
	return nil
}
