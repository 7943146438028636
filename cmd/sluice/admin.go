package main

import (
	"context"
	"errors"
	"log/slog"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/internal/admin"
	"github.com/sluicehq/sluice/internal/console"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/pipelines"
)

// startAdmin starts the admin listener of a started service, if the config
// has one; the returned stop closes it (a no-op without one).
func startAdmin(cfg *pipelines.Config, svc *pipelines.Service, m *metrics.Metrics, log *slog.Logger) (addr string, stop func(), err error) {
	if cfg.Admin.Address == "" {
		return "", func() {}, nil
	}
	con := console.New(console.Options{Hub: svc.Console(), Backend: svc, Gatherer: m.Registry,
		WriteRules: cfg.Admin.WriteRules, Logger: log.With("component", "console")})
	srv, err := admin.Listen(admin.Options{
		Config: cfg.Admin, Gatherer: m.Registry, Health: svc.Health, Version: version, Logger: log, Redactor: svc.Redactor(),
		Mount: con.Mount,
	})
	if errors.Is(err, syscall.EADDRINUSE) {
		return "", nil, cfg.Problem("admin.address", "%s is in use by another program (the admin listener): stop that program, or give admin.address another port", cfg.Admin.Address)
	}
	if err != nil {
		return "", nil, err
	}
	log.Info("admin listener: /metrics /healthz /readyz /api/v1/status /console", "address", srv.Addr(),
		"pprof", cfg.Admin.Pprof, "token", cfg.Admin.Token.IsSet(), "write_rules", cfg.Admin.WriteRules)
	sampling, stopSampling := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		con.Run(sampling)
	}()
	return srv.Addr(), func() {
		stopSampling()
		<-done
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Close(ctx)
	}, nil
}
