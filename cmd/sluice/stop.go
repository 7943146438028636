package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/pipelines"
)

type stopNowKey struct{}

// interruptible returns a context that ends at the first SIGINT or SIGTERM
// (stop cleanly: drain to the sinks) and carries, for stopNowContext, one
// that ends at the second (stop now: what is not written stays in the
// journal). A third is no longer caught: it kills the process.
func interruptible(parent context.Context) context.Context {
	now, stopNow := context.WithCancel(parent)
	ctx, stop := context.WithCancel(context.WithValue(parent, stopNowKey{}, now))
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		stop()
		<-sigs
		stopNow()
		signal.Stop(sigs)
	}()
	return ctx
}

// stopNowContext is the context that ends when the user asks a second time
// to stop; it never ends for a ctx not made by interruptible.
func stopNowContext(ctx context.Context) context.Context {
	if now, ok := ctx.Value(stopNowKey{}).(context.Context); ok {
		return now
	}
	return context.WithoutCancel(ctx)
}

// Shutdown progress: the first report after drainFirstReport, then every
// drainReportEvery, while the sinks catch up.
const (
	drainFirstReport = time.Second
	drainReportEvery = 5 * time.Second
)

// closeService stops svc: ingest stops, and the sinks write what the
// journals hold, for up to timeout (shutdown_timeout) or until stopNow
// ends. While it waits it says what for: which sink, how many records, the
// time left, and that a second Ctrl-C stops at once.
func closeService(svc *pipelines.Service, timeout time.Duration, stopNow context.Context, log *slog.Logger) error {
	done := make(chan error, 1)
	go func() { done <- svc.Close(stopNow) }()
	start := time.Now()
	report := time.NewTimer(drainFirstReport)
	defer report.Stop()
	now := stopNow.Done()
	for {
		select {
		case err := <-done:
			return err
		case <-now:
			now = nil
			log.Warn("second interrupt: stopping now; what the sinks have not written stays in the journal for the next start")
		case <-report.C:
			reportDrain(svc, timeout-time.Since(start), log)
			report.Reset(drainReportEvery)
		}
	}
}

// reportDrain says what a shutdown is waiting for.
func reportDrain(svc *pipelines.Service, left time.Duration, log *slog.Logger) {
	left = max(left, 0).Round(time.Second)
	hint := "press Ctrl-C again to stop now, the rest stays in the journal"
	waiting := false
	for _, p := range svc.Health(time.Now()).Pipelines {
		for _, s := range p.Sinks {
			if s.Backlog == 0 {
				continue
			}
			waiting = true
			attrs := []any{"pipeline", p.Name, "sink", s.Name}
			if s.FailingFor > 0 {
				attrs = append(attrs, "failing_for", s.FailingFor.Round(time.Second), "last_error", s.LastError)
			}
			log.Warn(fmt.Sprintf("shutdown: waiting for sink %s: %s, %s left; %s", s.Name, count(int(s.Backlog), "journal record"), left, hint), attrs...)
		}
	}
	if !waiting {
		log.Warn(fmt.Sprintf("shutdown: waiting for the rules to finish what the journals hold, %s left; %s", left, hint))
	}
}
