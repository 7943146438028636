// Package httpin is sluice's HTTP ingest: a listener of its own where web
// services and gateways that do not speak MQTT publish messages with
// `POST /v1/publish/{topic...}` (one message, the body its payload) or
// `POST /v1/publish` (a batch of JSON lines).
//
// It makes the promises the MQTT broker makes: a client is authenticated
// (bearer tokens mapped to usernames), each topic is checked against the
// same ACL as MQTT publishes, and 202 Accepted is sent only after the
// pipelines' Handler returned, so the message is in every matching
// pipeline's journal, durable as its durability says. A full journal is
// answered 429 with Retry-After at once rather than holding the request.
//
// Messages taken here go to the pipelines only: they are not delivered to
// the embedded broker's MQTT subscribers, and nothing is retained.
package httpin

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/ratelog"
)

// ACL decides publishes: ingest.Broker.CanPublish, so HTTP and MQTT answer
// to the same, live, ACL.
type ACL = ingest.PublishACL

// Options are what a Source is given rather than configured with (Name
// defaults to "http").
type Options = ingest.SourceOptions

// Source is a running HTTP ingest listener.
type Source struct {
	cfg     Config
	name    string
	handler ingest.Handler
	acl     ACL
	log     *slog.Logger
	rlog    *ratelog.Logger
	metrics *metrics.Metrics
	tokens  []tokenEntry
	slots   chan struct{} // requests being handled, up to max_inflight

	// base is every request's context; cancelled when Close gives up
	// waiting, so that requests still in the Handler give up too.
	base       context.Context
	cancelBase context.CancelFunc

	mu      sync.Mutex // guards srv, ln, started
	started bool
	srv     *http.Server
	ln      net.Listener
	served  chan struct{} // closed when Serve returns

	// gate guards closing against requests entering the handler, so that
	// Close can wait for every one in flight.
	gate      sync.RWMutex
	closing   bool
	inflight  sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// tokenEntry is a token's SHA-256 and its user: requests are matched by
// hash, in constant time, and the tokens themselves are not kept.
type tokenEntry struct {
	sum  [sha256.Size]byte
	user string
}

// New returns a source for cfg. It does no I/O: Start reads the TLS files
// and binds the address.
func New(cfg Config, o Options) (*Source, error) {
	if o.Name == "" {
		o.Name = "http"
	}
	if o.Handler == nil {
		return nil, fmt.Errorf("http ingest %q: no handler", o.Name)
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("http ingest %q: %w", o.Name, err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	log := o.Logger.With("source", o.Name)
	s := &Source{
		cfg: cfg, name: o.Name, handler: o.Handler, acl: o.ACL, log: log, metrics: o.Metrics,
		rlog:  ratelog.New(log, 10*time.Second, nil),
		slots: make(chan struct{}, cfg.MaxInflight),
	}
	for _, t := range cfg.Tokens {
		s.tokens = append(s.tokens, tokenEntry{sum: sha256.Sum256([]byte(t.Token.Reveal())), user: t.User})
	}
	s.base, s.cancelBase = context.WithCancel(context.Background())
	return s, nil
}

// Start reads the TLS files, binds the address and starts serving; it
// returns once the listener accepts connections. A certificate that does
// not load or an address in use fails it.
func (s *Source) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return fmt.Errorf("http ingest %q: already started", s.name)
	}
	if s.isClosing() {
		return fmt.Errorf("http ingest %q: closed", s.name)
	}
	var certs *ingest.TLSFiles
	if s.cfg.TLS != nil {
		var err error
		certs, err = ingest.NewTLSFiles(s.name, *s.cfg.TLS, s.log, func(leaf *x509.Certificate) {
			s.metrics.CertExpiry.WithLabelValues(s.name).Set(float64(leaf.NotAfter.Unix()))
		}, "h2", "http/1.1")
		if err != nil {
			return fmt.Errorf("http ingest %q: %w", s.name, err)
		}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Address)
	if err != nil {
		return fmt.Errorf("http ingest %q: listen on %s: %w", s.name, s.cfg.Address, err)
	}
	conns := s.metrics.Connections.WithLabelValues(s.name)
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(serverLog{s}, "", 0),
		BaseContext:       func(net.Listener) context.Context { return s.base },
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				conns.Inc()
			case http.StateClosed, http.StateHijacked:
				conns.Dec()
			}
		},
	}
	s.srv, s.ln, s.started, s.served = srv, ln, true, make(chan struct{})
	go func() {
		defer close(s.served)
		// Serve leaves the listener open when Close came first.
		defer ln.Close()
		var err error
		if certs != nil {
			srv.TLSConfig = certs.ServerConfig()
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("HTTP ingest stopped serving", "error", err)
		}
	}()
	s.logAccess(certs != nil)
	return nil
}

// logAccess says at start who can publish, so that an open listener is
// not a surprise.
func (s *Source) logAccess(tls bool) {
	addr := s.ln.Addr().String()
	s.log.Info("listening for HTTP publishes", "address", addr, "tls", tls, "tokens", len(s.tokens))
	if s.cfg.AllowAnonymous {
		if host, _, _ := net.SplitHostPort(addr); net.ParseIP(host).IsLoopback() {
			s.log.Warn("anonymous HTTP publishing is enabled (loopback only)", "address", addr)
		} else {
			s.log.Warn("anonymous HTTP publishing is enabled on a listener open to the network", "address", addr)
		}
	}
	if !tls && !ingest.IsLoopback(addr) && len(s.tokens) > 0 {
		s.log.Warn("bearer tokens travel in clear text: this listener has no TLS and is open to the network", "address", addr)
	}
	if s.acl == nil {
		s.log.Info("no ACL: authenticated HTTP clients may publish to any topic")
	}
}

// Addr returns the bound address (host:port), once started; before, the
// configured one.
func (s *Source) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.cfg.Address
}

// Close stops accepting connections and takes no new request (net/http
// closes a connection whose request arrives now; one that reached the
// handler is answered 503), then waits until the requests in flight have
// had their answer (their messages handed over), or ctx ends: then the
// requests still waiting are cancelled (their clients get no 202, and send
// again) and their connections closed. It is safe to call more than once.
func (s *Source) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.gate.Lock()
		s.closing = true
		s.gate.Unlock()
		s.mu.Lock()
		srv, served := s.srv, s.served
		s.mu.Unlock()
		if srv == nil {
			s.cancelBase()
			return
		}
		err := srv.Shutdown(ctx)
		if err != nil {
			s.cancelBase()
			err = errors.Join(fmt.Errorf("http ingest %q: requests still in flight were cancelled: %w", s.name, err), srv.Close())
		}
		<-served
		s.inflight.Wait()
		s.cancelBase()
		s.closeErr = err
	})
	return s.closeErr
}

// enter registers a request entering the handler; false once closing.
func (s *Source) enter() bool {
	s.gate.RLock()
	defer s.gate.RUnlock()
	if s.closing {
		return false
	}
	s.inflight.Add(1)
	return true
}

func (s *Source) isClosing() bool {
	s.gate.RLock()
	defer s.gate.RUnlock()
	return s.closing
}

// retryAfter is the Retry-After header value.
func (s *Source) retryAfter() string {
	return strconv.Itoa(int(s.cfg.RetryAfter / time.Second))
}

// serverLog takes net/http's own error lines (TLS handshake failures,
// malformed requests) into the logger, rate-limited: scanners must not
// flood the log.
type serverLog struct{ s *Source }

func (l serverLog) Write(p []byte) (int, error) {
	l.s.rlog.Warn("server", "HTTP ingest connection error", "error", strings.TrimSpace(string(p)))
	return len(p), nil
}
