package bench

import (
	"fmt"
	"log/slog"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The baseline is the broker sluice embeds (mochi-mqtt), bare: no rules, no
// journal, no sinks, just a hook that counts every PUBLISH where sluice's
// would hand it on. What it ingests on this machine, at this moment, is the
// ceiling sluice's throughput is measured against. (This is the one package
// besides ingest that imports mochi: the baseline must be mochi without
// sluice's ingest in front.)

// baseline is a running bare broker.
type baseline struct {
	server *mqtt.Server
	hook   *countHook
	addr   string
}

// countHook admits every client and counts publishes before the broker
// acknowledges them, where sluice's ingest hook would take them.
type countHook struct {
	mqtt.HookBase
	n atomic.Int64
}

func (h *countHook) ID() string { return "bench-count" }

func (h *countHook) Provides(b byte) bool {
	return b == mqtt.OnPublish || b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *countHook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (h *countHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

func (h *countHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	h.n.Add(1)
	return pk, nil
}

// startBaseline starts a bare broker on a free loopback port, with the
// capabilities sluice gives its own (ingest.New): receive maximum 1024 and
// acknowledgements without inherited properties.
func startBaseline(log *slog.Logger) (*baseline, error) {
	caps := mqtt.NewDefaultServerCapabilities()
	caps.ReceiveMaximum = 1024
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	s := mqtt.New(&mqtt.Options{Capabilities: caps, Logger: log.With("component", "baseline-broker")})
	b := &baseline{server: s, hook: &countHook{}}
	if err := s.AddHook(b.hook, nil); err != nil {
		return nil, err
	}
	l := listeners.NewTCP(listeners.Config{ID: "tcp", Address: "127.0.0.1:0"})
	if err := s.AddListener(l); err != nil {
		return nil, fmt.Errorf("baseline broker: %w", err)
	}
	if err := s.Serve(); err != nil {
		return nil, fmt.Errorf("baseline broker: %w", err)
	}
	b.addr = l.Address()
	return b, nil
}

func (b *baseline) received() int64 { return b.hook.n.Load() }

func (b *baseline) close() error { return b.server.Close() }
