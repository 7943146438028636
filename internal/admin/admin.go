// Package admin serves sluice's admin HTTP listener: /metrics (Prometheus,
// from the service's own registry), /healthz (the process is alive),
// /readyz (the broker listens and every sink is writing or buffering within
// its bounds), /api/v1/status (what `sluice status` shows, as JSON) and,
// when enabled, /debug/pprof/.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicehq/sluice/internal/secret"
)

// Options is what the admin listener serves.
type Options struct {
	Config Config
	// Gatherer is the service's metrics registry.
	Gatherer prometheus.Gatherer
	// Health reports the service's readiness (pipelines.Service.Health fills it in).
	Health  func(now time.Time) Health
	Version string
	Logger  *slog.Logger
	// Redactor takes the configured secrets out of what /readyz and
	// /api/v1/status say (a sink's last error may echo a credential).
	Redactor *secret.Redactor
	// Mount, when set, adds routes: to public (open) and to private
	// (behind the token). The console mounts its page and API so.
	Mount func(public, private *http.ServeMux)
}

// Server is a running admin listener.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Listen binds the configured address and serves until Close.
func Listen(o Options) (*Server, error) {
	ln, err := net.Listen("tcp", o.Config.Address)
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Requests that stream (the console's tail) end when Close begins.
	base, stop := context.WithCancel(context.Background())
	s := &Server{ln: ln, srv: &http.Server{
		Handler:           Handler(o),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return base },
	}}
	s.srv.RegisterOnShutdown(stop)
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin listener stopped", "error", err)
		}
	}()
	return s, nil
}

// Addr is the address the listener is bound to.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the listener, letting requests in flight finish until ctx ends.
func (s *Server) Close(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// Handler returns the admin endpoints.
func Handler(o Options) http.Handler {
	started := time.Now()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		h := o.Health(time.Now())
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !h.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, o.Redactor.Redact(strings.Join(h.Problems, "\n")+"\n"))
		} else {
			fmt.Fprintln(w, "ready")
		}
		for _, n := range h.Notes {
			io.WriteString(w, o.Redactor.Redact("note: "+n+"\n"))
		}
	})
	private := http.NewServeMux()
	private.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(o.loggerHandler(), slog.LevelWarn),
	}))
	private.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := BuildStatus(o, started, time.Now())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetIndent("", "  ")
		enc.Encode(st)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, o.Redactor.Redact(b.String()))
	})
	if o.Config.Pprof {
		private.HandleFunc("/debug/pprof/", pprof.Index)
		private.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		private.HandleFunc("/debug/pprof/profile", pprof.Profile)
		private.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		private.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	if o.Mount != nil {
		o.Mount(mux, private)
	}
	mux.Handle("/", requireToken(o.Config.Token.Reveal(), private))
	return mux
}

func (o Options) loggerHandler() slog.Handler {
	if o.Logger == nil {
		return slog.DiscardHandler
	}
	return o.Logger.Handler()
}

// requireToken lets a request through only with "Authorization: Bearer
// token", when a token is set.
func requireToken(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sluice admin"`)
			http.Error(w, "a bearer token is required (admin.token)", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// BaseURL turns an admin address as an operator may write it
// (host:port, http://host:port/) into a base URL.
func BaseURL(addr string) string {
	addr = strings.TrimSuffix(addr, "/")
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		return addr
	}
	return "http://" + addr
}
