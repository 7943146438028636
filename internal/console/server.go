package console

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options is what the console serves from.
type Options struct {
	Hub     *Hub
	Backend Backend
	// Gatherer is the metrics registry the overview's charts sample.
	Gatherer prometheus.Gatherer
	// WriteRules lets the playground save a rule file (admin.write_rules).
	WriteRules bool
	// SampleEvery is how often the overview samples the metrics (default
	// 5s); it keeps the last 10 minutes.
	SampleEvery time.Duration
	Logger      *slog.Logger
}

// Server serves the console's API and page. Mount it on the admin
// listener; Run samples the metrics for the overview.
type Server struct {
	o       Options
	log     *slog.Logger
	samples *samples
}

// New returns a console server; it does no I/O.
func New(o Options) *Server {
	if o.SampleEvery <= 0 {
		o.SampleEvery = 5 * time.Second
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{o: o, log: log, samples: newSamples(int(10*time.Minute/o.SampleEvery) + 1)}
}

// Mount adds the console's routes: the page on public (it asks for the
// token itself and shows nothing without it), the API on private (behind
// the admin token).
func (s *Server) Mount(public, private *http.ServeMux) {
	public.Handle("GET /console", http.RedirectHandler("/console/", http.StatusMovedPermanently))
	public.Handle("GET /console/", pageHandler())
	private.HandleFunc("GET /api/v1/alerts", s.alerts)
	private.HandleFunc("GET /api/v1/tail", s.tail)
	private.HandleFunc("GET /api/v1/deadletters", s.deadLetters)
	private.HandleFunc("POST /api/v1/deadletters/replay", s.replayDeadLetters)
	private.HandleFunc("GET /api/v1/journal/messages", s.journalMessages)
	private.HandleFunc("GET /api/v1/rules", s.rules)
	private.HandleFunc("PUT /api/v1/rules/file", s.saveRuleFile)
	private.HandleFunc("POST /api/v1/playground", s.playground)
	private.HandleFunc("GET /api/v1/overview", s.overview)
}

// Run samples the metrics for the overview's charts until ctx ends.
func (s *Server) Run(ctx context.Context) {
	if s.o.Gatherer == nil {
		return
	}
	t := time.NewTicker(s.o.SampleEvery)
	defer t.Stop()
	for {
		s.samples.take(s.o.Gatherer, time.Now())
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// apiError is how the API says no: {"error": "..."}.
func apiError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, map[string]string{"error": fmt.Sprintf(format, args...)})
}

// decodeBody reads a JSON request body of at most 8 MiB into v, strictly.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		apiError(w, http.StatusBadRequest, "request body: %v", err)
		return false
	}
	return true
}
