// Package pipelines wires sluice together: it loads the configuration,
// builds the broker, the rule sets and the sinks, routes each message from
// ingest to the pipelines whose topics match, and owns the order in which
// everything starts and stops. It is composition only: decoding and rules
// live in rules, destinations in sinks, the broker in ingest.
package pipelines

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/rules"
	"github.com/sluicehq/sluice/sinks/influxdb"
	"github.com/sluicehq/sluice/sinks/kafka"
	"github.com/sluicehq/sluice/sinks/mqtt"
)

// Options are what a Service is given rather than configured with.
type Options struct {
	Logger  *slog.Logger
	Metrics *metrics.Metrics
	// DrainTimeout bounds how long Close waits for queued messages to reach
	// their sinks (default 30s).
	DrainTimeout time.Duration
}

// Service is a running sluice: broker, pipelines and sinks.
type Service struct {
	cfg       *Config
	log       *slog.Logger
	metrics   *metrics.Metrics
	broker    *ingest.Broker
	pipelines []*pipeline
	writers   []*writer // in configuration order
	drain     time.Duration

	// ctx ends when shutdown has run out of time; cancel ends it.
	ctx    context.Context
	cancel context.CancelFunc
	// watchCtx ends when shutdown begins.
	watchCtx  context.Context
	stopWatch context.CancelFunc
	wg        sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// New builds a Service from a validated config: it compiles the rules and
// creates the sinks and the broker. It does no network I/O.
func New(cfg *Config, opts Options) (*Service, error) {
	sets, err := cfg.CompileRules()
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 30 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{cfg: cfg, log: opts.Logger, metrics: opts.Metrics, drain: opts.DrainTimeout, ctx: ctx, cancel: cancel}
	s.watchCtx, s.stopWatch = context.WithCancel(context.Background())
	s.broker = ingest.New(cfg.Broker, s, opts.Logger, opts.Metrics)

	byName := map[string]*writer{}
	for _, sc := range cfg.Sinks {
		stream, _ := sluice.ParseStream(sc.Stream)
		var sink Sink
		switch {
		case sc.Kafka != nil:
			sink = kafka.New(*sc.Kafka, sc.Batch.Size)
		case sc.InfluxDB != nil:
			sink = influxdb.New(*sc.InfluxDB, stream)
		case sc.MQTT != nil:
			sink = mqtt.New(*sc.MQTT, stream, s.broker)
		}
		w := newWriter(sc, sink, opts.Logger, opts.Metrics)
		byName[sc.Name] = w
		s.writers = append(s.writers, w)
	}
	limits := rules.Limits{MaxSize: cfg.Decode.MaxSize, MaxRatio: cfg.Decode.MaxRatio}
	for _, pc := range cfg.Pipelines {
		p := newPipeline(ctx, pc, sets[pc.Name], byName, opts.Logger, opts.Metrics)
		p.limits = limits
		s.pipelines = append(s.pipelines, p)
	}
	return s, nil
}

// Broker returns the embedded broker (to find a listener's address).
func (s *Service) Broker() *ingest.Broker { return s.broker }

// Start connects the sinks, starts the writers and pipelines, and then the
// broker: nothing is accepted before there is somewhere to put it. A sink
// that cannot be reached does not stop the start: its writes are retried
// (and publishers slowed) until it comes back.
func (s *Service) Start(ctx context.Context) error {
	for _, w := range s.writers {
		if err := w.sink.Connect(ctx); err != nil {
			w.log.Warn("sink not reachable yet; its writes will be retried", "error", err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			w.run(s.ctx)
		}()
	}
	for _, p := range s.pipelines {
		p.start()
	}
	if s.cfg.WatchRules == nil || *s.cfg.WatchRules {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.watchRules(s.watchCtx)
		}()
	}
	if err := s.broker.Start(ctx); err != nil {
		s.Close(ctx)
		return err
	}
	for _, name := range s.broker.Listeners() {
		s.log.Info("listening for MQTT", "listener", name, "address", s.broker.Addr(name))
	}
	return nil
}

// Run starts the service and blocks until ctx ends, then shuts it down.
func (s *Service) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return s.Close(context.Background())
}

// Handle routes a message from ingest to every pipeline whose topics match.
func (s *Service) Handle(ctx context.Context, msg *sluice.Message, ack *sluice.Ack) error {
	routed := false
	for _, p := range s.pipelines {
		if !p.matches(msg.Topic) {
			continue
		}
		routed = true
		ack.Add(1)
		if err := p.enqueue(ctx, msg, ack); err != nil {
			ack.Done(err)
			return fmt.Errorf("pipeline %q: %w", p.name, err)
		}
	}
	if !routed {
		s.metrics.Unrouted.Inc()
	}
	return nil
}

// Close shuts down in order: ingest stops accepting and waits for the
// publishes it holds to be acknowledged; the pipelines hand on what is
// queued; the sinks write it; then clients are disconnected and sinks closed.
// If draining takes longer than the drain timeout, what is left is not
// acknowledged (clients resend it). Close is safe to call more than once.
func (s *Service) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.closeErr = s.shutdown(ctx)
	})
	return s.closeErr
}

func (s *Service) shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.drain)
	defer cancel()
	stop := context.AfterFunc(ctx, s.cancel) // out of time: give up waiting writes
	defer stop()

	s.stopWatch()
	var errs []error
	if err := s.broker.StopIngest(ctx); err != nil {
		errs = append(errs, err)
	}
	for _, p := range s.pipelines {
		p.stop()
	}
	// Sinks that may dead-letter go first; the dead-letter sinks last.
	for _, dl := range []bool{false, true} {
		for _, w := range s.writers {
			if (w.stream == sluice.StreamDeadLetters) == dl {
				w.close()
			}
		}
		for _, w := range s.writers {
			if (w.stream == sluice.StreamDeadLetters) == dl {
				<-w.done
			}
		}
	}
	s.wg.Wait()
	if err := s.broker.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	for _, w := range s.writers {
		if err := w.sink.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("sink %q: close: %w", w.name, err))
		}
	}
	s.cancel()
	return errors.Join(errs...)
}

// Rules returns the compiled rule set in force in a pipeline (nil if unknown).
func (s *Service) Rules(pipeline string) *rules.Set {
	for _, p := range s.pipelines {
		if p.name == pipeline {
			return p.set.Load()
		}
	}
	return nil
}
