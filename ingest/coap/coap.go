// Package coap is the CoAP ingest (RFC 7252): devices POST or PUT a reading
// to coap://host/<prefix>/<topic> over UDP, or over DTLS (coaps), and it
// enters the pipelines as a message on <topic>, as if published over MQTT.
//
// A confirmable request is answered (a piggybacked 2.04 Changed) only once
// the pipelines have made the message durable, so a device that retransmits
// until it sees the answer loses nothing. While a journal is full the answer
// is 5.03 Service Unavailable with a Max-Age retry hint.
//
// It uses github.com/plgd-dev/go-coap/v3 (and pion/dtls through it); README.md
// beside this file is the operator's guide.
package coap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	dtlsserver "github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	udpserver "github.com/plgd-dev/go-coap/v3/udp/server"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/ratelog"
)

// ACL answers whether a client may publish to a topic: the broker's live
// ACL (ingest.Broker.CanPublish), so one ACL file governs MQTT and CoAP.
type ACL = ingest.PublishACL

// Options are what a Source is given rather than configured with (Name
// defaults to "coap").
type Options = ingest.SourceOptions

// Source is a running CoAP listener.
type Source struct {
	cfg     Config
	prefix  []string
	name    string
	handler ingest.Handler
	acl     ACL
	log     *slog.Logger
	rlog    *ratelog.Logger
	metrics *metrics.Metrics
	now     func() time.Time

	// ctx ends when requests still waiting in Handle must give up.
	ctx    context.Context
	cancel context.CancelFunc

	// mu guards closing against new requests entering the handler.
	mu       sync.RWMutex
	started  bool
	closing  bool
	inflight sync.WaitGroup

	stop     func()        // stops the go-coap server
	listener io.Closer     // the bound socket
	addr     string        // its address
	served   chan struct{} // closed when Serve has returned

	closeOnce sync.Once
	closeErr  error
}

// New returns a source for cfg. It does no I/O; Start reads the DTLS files
// and binds the socket.
func New(cfg Config, o Options) (*Source, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if o.Handler == nil {
		return nil, errors.New("coap: no handler")
	}
	if o.Name == "" {
		o.Name = "coap"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	prefix, _ := parsePrefix(cfg.Prefix) // checked by Validate
	log := o.Logger.With("source", o.Name)
	return &Source{
		cfg: cfg, prefix: prefix, name: o.Name, handler: o.Handler, acl: o.ACL,
		log: log, rlog: ratelog.New(log, 10*time.Second, nil), metrics: o.Metrics, now: time.Now,
	}, nil
}

// serverOption is an option both the UDP and the DTLS server take.
type serverOption interface {
	udpserver.Option
	dtlsserver.Option
}

// Start reads the DTLS files, binds the UDP socket and starts serving. It
// returns once the socket is bound. A file that does not load, or an
// address in use, fails Start.
func (s *Source) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closing:
		return errors.New("coap: closed")
	case s.started:
		return errors.New("coap: already started")
	}
	// The server outlives Start's ctx: Close stops it.
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	opts := []serverOption{
		options.WithContext(s.ctx),
		options.WithHandlerFunc(s.serve),
		options.WithErrors(s.onError),
		options.WithRequestMonitor(s.monitor),
		options.WithOnNewConn(s.onNewConn),
		// One datagram may hold the whole body; larger bodies come
		// block-wise (RFC 7959), reassembled by go-coap.
		options.WithMaxMessageSize(uint32(min(int64(s.cfg.MaxPayload)+1024, 65535))),
		options.WithBlockwise(true, blockwise.SZX1024, 30*time.Second),
	}
	served := make(chan struct{})
	if s.cfg.DTLS == nil {
		l, err := coapnet.NewListenUDP("udp", s.cfg.Address)
		if err != nil {
			s.cancel()
			return fmt.Errorf("coap: listen on %s: %w", s.cfg.Address, err)
		}
		srv := udpserver.New(udpOptions(opts)...)
		s.stop, s.listener, s.addr = srv.Stop, l, l.LocalAddr().String()
		go func() {
			defer close(served)
			if err := srv.Serve(l); err != nil {
				s.log.Error("CoAP listener stopped", "error", err)
			}
		}()
	} else {
		dcfg, err := s.cfg.DTLS.load()
		if err != nil {
			s.cancel()
			return fmt.Errorf("coap: dtls: %w", err)
		}
		l, err := coapnet.NewDTLSListener("udp", s.cfg.Address, dcfg)
		if err != nil {
			s.cancel()
			return fmt.Errorf("coap: listen on %s: %w", s.cfg.Address, err)
		}
		srv := dtlsserver.New(dtlsOptions(opts)...)
		s.stop, s.listener, s.addr = srv.Stop, l, l.Addr().String()
		go func() {
			defer close(served)
			if err := srv.Serve(l); err != nil {
				s.log.Error("CoAP listener stopped", "error", err)
			}
		}()
	}
	s.served, s.started = served, true
	scheme := "coap"
	if s.cfg.DTLS != nil {
		scheme = "coaps"
	}
	s.log.Info("listening for CoAP", "address", s.addr, "scheme", scheme, "prefix", "/"+joinPath(s.prefix))
	if s.cfg.AllowAnonymous {
		if !ingest.IsLoopback(s.addr) {
			s.log.Warn("anonymous CoAP requests are accepted on an address open to the network", "address", s.addr)
		}
	}
	return nil
}

func udpOptions(in []serverOption) []udpserver.Option {
	out := make([]udpserver.Option, len(in))
	for i, o := range in {
		out[i] = o
	}
	return out
}

func dtlsOptions(in []serverOption) []dtlsserver.Option {
	out := make([]dtlsserver.Option, len(in))
	for i, o := range in {
		out[i] = o
	}
	return out
}

// Addr returns the bound address ("" before Start), so a source configured
// on port 0 can be found.
func (s *Source) Addr() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.addr
}

// Close stops accepting requests (those arriving now are answered 5.03),
// waits for the requests being handled to finish their journal append, or
// for ctx to end (then they give up, answered 5.03), and closes the socket.
// It is safe to call more than once.
func (s *Source) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { s.closeErr = s.shutdown(ctx) })
	return s.closeErr
}

func (s *Source) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	started := s.started
	s.mu.Unlock()
	if !started {
		return nil
	}
	var err error
	done := make(chan struct{})
	go func() {
		s.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("coap: close: requests still in the pipelines: %w", ctx.Err())
		s.cancel()
		<-done
	}
	s.cancel()
	s.stop()
	<-s.served
	// Serve closes the socket, unless it was stopped before it began.
	s.listener.Close()
	return err
}

// enter admits a request unless the source is closing.
func (s *Source) enter() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closing {
		return false
	}
	s.inflight.Add(1)
	return true
}

type identityKey struct{}

// onNewConn notes the DTLS identity of a new peer (after its handshake).
func (s *Source) onNewConn(cc *udpclient.Conn) {
	if id := peerIdentity(cc.NetConn()); id != "" {
		cc.SetContextValue(identityKey{}, id)
	}
}

// identity is the peer's username for the ACL: its PSK identity or its
// certificate's common name; "" when anonymous.
func identity(cc *udpclient.Conn) string {
	id, _ := cc.Context().Value(identityKey{}).(string)
	return id
}

var qosLabel = [...]string{"0", "1"}

// serve handles one request (a whole body, block-wise transfers already
// reassembled). Whatever happens, a confirmable request gets an answer: an
// empty ACK would tell the device its reading was taken.
func (s *Source) serve(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
	if !s.enter() {
		s.metrics.Rejected.WithLabelValues("shutting_down").Inc()
		s.unavailable(w, "shutting down")
		return
	}
	defer s.inflight.Done()

	if c := r.Code(); c != codes.POST && c != codes.PUT {
		respond(w, codes.MethodNotAllowed, "publish with POST or PUT")
		return
	}
	topic, err := topicFromPath(s.prefix, uriPath(r))
	switch {
	case errors.Is(err, errNotUnderPrefix):
		respond(w, codes.NotFound, fmt.Sprintf("publish to /%s/<topic>", joinPath(s.prefix)))
		return
	case err != nil:
		respond(w, codes.BadRequest, err.Error())
		return
	}
	cc := w.Conn()
	user := identity(cc)
	if user == "" && !s.cfg.AllowAnonymous {
		respond(w, codes.Unauthorized, "this listener accepts DTLS clients with an identity only")
		return
	}
	clientID := user
	if clientID == "" {
		clientID = cc.RemoteAddr().String()
	}
	if s.acl != nil && !s.acl.CanPublish(user, clientID, topic) {
		s.metrics.Denied.WithLabelValues("publish", "acl").Inc()
		s.rlog.Warn("acl:publish", "CoAP publish denied by the ACL", "client", clientID, "user", user, "topic", topic)
		respond(w, codes.Forbidden, "the ACL does not let this client publish to "+topic)
		return
	}
	payload, err := readBody(r, int64(s.cfg.MaxPayload))
	if err != nil {
		if errors.Is(err, errTooLarge) {
			s.tooLarge(w)
			return
		}
		respond(w, codes.BadRequest, "read body: "+err.Error())
		return
	}

	var qos byte
	if r.Type() == message.Confirmable {
		qos = 1
	}
	s.metrics.MessagesIn.WithLabelValues(s.name, qosLabel[qos]).Inc()
	s.metrics.BytesIn.WithLabelValues(s.name).Add(float64(len(payload)))
	msg := &sluice.Message{
		Topic:       topic,
		Payload:     payload,
		QoS:         qos,
		ClientID:    clientID,
		Username:    user,
		ContentType: contentType(r),
		Received:    s.now(),
	}
	// refuse: a CoAP client cannot be slowed the way a TCP one can (its
	// retransmissions would pile up behind the wait); it is told 5.03.
	err = s.handler.Handle(s.ctx, msg, true)
	switch {
	case err == nil:
		respond(w, codes.Changed, "")
	case errors.Is(err, sluice.ErrBusy):
		s.metrics.Rejected.WithLabelValues("journal_full").Inc()
		s.rlog.Warn("journal_full", "CoAP publish refused: a journal is full", "topic", topic)
		s.unavailable(w, "journal full")
	case errors.Is(err, sluice.ErrStorage):
		s.metrics.Rejected.WithLabelValues("journal_write_error").Inc()
		s.rlog.Error("journal_write_error", "CoAP publish refused: a pipeline's journal cannot write", "topic", topic, "error", err)
		s.unavailable(w, "journal cannot write")
	case s.ctx.Err() != nil:
		s.metrics.Rejected.WithLabelValues("shutting_down").Inc()
		s.unavailable(w, "shutting down")
	default:
		s.metrics.Rejected.WithLabelValues("error").Inc()
		s.rlog.Error("error", "CoAP publish not accepted", "topic", topic, "error", err)
		respond(w, codes.InternalServerError, "not accepted")
	}
}

// respond sets the response code and, when diag is set, a diagnostic
// payload. A client that asked for no response (No-Response option, RFC
// 7967) gets none.
func respond(w *responsewriter.ResponseWriter[*udpclient.Conn], code codes.Code, diag string) bool {
	var body io.ReadSeeker
	if diag != "" {
		body = bytes.NewReader([]byte(diag))
	}
	return w.SetResponse(code, message.TextPlain, body) == nil
}

// unavailable answers 5.03 with Max-Age: when to try again.
func (s *Source) unavailable(w *responsewriter.ResponseWriter[*udpclient.Conn], why string) {
	if respond(w, codes.ServiceUnavailable, why) {
		w.Message().SetOptionUint32(message.MaxAge, uint32(s.cfg.RetryAfter/time.Second))
	}
}

// tooLarge answers 4.13 with Size1: the largest body accepted (RFC 7959 4).
func (s *Source) tooLarge(w *responsewriter.ResponseWriter[*udpclient.Conn]) {
	if respond(w, codes.RequestEntityTooLarge, fmt.Sprintf("the body is larger than max_payload (%d bytes)", s.cfg.MaxPayload)) {
		w.Message().SetOptionUint32(message.Size1, uint32(s.cfg.MaxPayload))
	}
}

// monitor sees every datagram before go-coap handles it. It refuses a
// block-wise upload (Block1) as soon as it passes max_payload, or announces
// (Size1) that it will, rather than letting go-coap reassemble it in memory
// first: go-coap's UDP server sets no limit of its own.
func (s *Source) monitor(cc *udpclient.Conn, r *pool.Message) (drop bool, err error) {
	if c := r.Code(); c != codes.POST && c != codes.PUT {
		return false, nil
	}
	v, err := r.GetOptionUint32(message.Block1)
	if err != nil {
		return false, nil
	}
	szx, num, _, err := blockwise.DecodeBlockOption(v)
	if err != nil {
		return false, nil // go-coap answers a broken option
	}
	size := num * szx.Size()
	if n, err := r.BodySize(); err == nil {
		size += n
	}
	if s1, err := r.GetOptionUint32(message.Size1); err == nil {
		size = max(size, int64(s1))
	}
	if size <= int64(s.cfg.MaxPayload) {
		return false, nil
	}
	resp := cc.AcquireMessage(cc.Context())
	defer cc.ReleaseMessage(resp)
	resp.SetCode(codes.RequestEntityTooLarge)
	resp.SetToken(r.Token())
	if r.Type() == message.Confirmable {
		resp.SetType(message.Acknowledgement)
		resp.SetMessageID(r.MessageID())
	} else {
		resp.SetType(message.NonConfirmable)
		resp.SetMessageID(cc.GetMessageID())
	}
	resp.SetOptionUint32(message.Size1, uint32(s.cfg.MaxPayload))
	resp.SetContentFormat(message.TextPlain)
	resp.SetBody(bytes.NewReader(fmt.Appendf(nil, "the body is larger than max_payload (%d bytes)", s.cfg.MaxPayload)))
	if err := cc.Session().WriteMessage(resp); err != nil {
		s.rlog.Log(slog.LevelDebug, "write", "CoAP: 4.13 not sent", "client", cc.RemoteAddr().String(), "error", err)
	}
	return true, nil
}

// onError receives go-coap's errors: malformed datagrams, failed
// handshakes, peers gone. They come from the network, so they are logged
// at debug level and rate-limited.
func (s *Source) onError(err error) {
	s.rlog.Log(slog.LevelDebug, "coap", "CoAP", "error", err)
}

var errTooLarge = errors.New("body too large")

// readBody copies the request's body (go-coap reuses the message).
func readBody(r *pool.Message, limit int64) ([]byte, error) {
	body := r.Body()
	if body == nil {
		return []byte{}, nil
	}
	if n, err := r.BodySize(); err == nil && n > limit {
		return nil, errTooLarge
	}
	if _, err := body.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, errTooLarge
	}
	return data, nil
}

// uriPath returns the request's Uri-Path options, one per path segment.
func uriPath(r *pool.Message) []string {
	var segs []string
	for _, o := range r.Options() {
		if o.ID == message.URIPath {
			segs = append(segs, string(o.Value))
		}
	}
	return segs
}

// contentType maps the Content-Format option to a media type: 50
// application/json, 60 application/cbor, 0 text/plain; charset=utf-8, 42
// application/octet-stream, and the rest of CoAP's registry that go-coap
// knows. No option, or a number it does not know, gives "" (the decoder
// then looks at the payload).
func contentType(r *pool.Message) string {
	mt, err := r.ContentFormat()
	if err != nil {
		return ""
	}
	name := mt.String()
	if len(name) > 9 && name[:9] == "MediaType" {
		return ""
	}
	return name
}

func joinPath(segs []string) string {
	var b bytes.Buffer
	for i, s := range segs {
		if i > 0 {
			b.WriteByte('/')
		}
		b.WriteString(s)
	}
	return b.String()
}
