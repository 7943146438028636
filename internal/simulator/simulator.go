// Package simulator simulates a fleet of plant devices for the demo: each
// device is its own MQTT 5 client (paho.golang) publishing JSON telemetry at
// QoS 1 to plant/<site>/<line>/<device>/telemetry. Readings follow a slow
// wave with noise; some devices drift into alert range and back, so alerts
// fire and resolve while you watch.
package simulator

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Config for a simulated fleet.
type Config struct {
	// Broker is host:port.
	Broker string
	// Brokers, when set, are several: device i connects to Brokers[i mod
	// n], and to the next one when its own goes away (what a TCP load
	// balancer in front of a cluster does).
	Brokers []string
	// Devices is how many devices to simulate (default 36).
	Devices int
	// Interval between two readings of one device (default 1s).
	Interval time.Duration
	Logger   *slog.Logger
}

// Simulator runs the fleet.
type Simulator struct {
	cfg       Config
	devices   []*device
	published atomic.Int64
	failed    atomic.Int64
}

// Device kinds, each with its own telemetry.
const (
	Boiler    = "boiler"
	Pump      = "pump"
	ColdChain = "coldchain"
	Motor     = "motor"
)

type device struct {
	index                int
	site, line, id, kind string
	phase                float64 // where in the wave it starts
	drifts               bool    // swings into alert range
	period               time.Duration
}

func (d *device) topic() string {
	return fmt.Sprintf("plant/%s/%s/%s/telemetry", d.site, d.line, d.id)
}

// New lays out the fleet: sites, lines and a mix of kinds.
func New(cfg Config) *Simulator {
	if cfg.Devices <= 0 {
		cfg.Devices = 36
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Simulator{cfg: cfg}
	sites := []string{"north", "south", "east"}
	kinds := []string{Boiler, Pump, ColdChain, Motor}
	for i := range cfg.Devices {
		kind := kinds[i%len(kinds)]
		d := &device{
			index:  i,
			site:   sites[(i/len(kinds))%len(sites)],
			line:   fmt.Sprintf("line%d", 1+i%2),
			id:     fmt.Sprintf("%s-%02d", kind, i+1),
			kind:   kind,
			drifts: i%4 == 0,
			period: time.Duration(40+i%20) * time.Second,
		}
		// Drifting devices start just below their alert threshold, so the
		// first alerts fire within seconds of the demo starting.
		d.phase = 2 * math.Pi * float64(i) / float64(cfg.Devices)
		if d.drifts {
			d.phase = math.Pi / 3
		}
		s.devices = append(s.devices, d)
	}
	return s
}

// Published is how many readings were acknowledged by the broker.
func (s *Simulator) Published() int64 { return s.published.Load() }

// Failed is how many publishes failed.
func (s *Simulator) Failed() int64 { return s.failed.Load() }

// Run connects every device and publishes until ctx ends.
func (s *Simulator) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	start := time.Now()
	for i, d := range s.devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Spread the devices over the interval, as a real fleet is.
			offset := time.Duration(i) * s.cfg.Interval / time.Duration(len(s.devices))
			select {
			case <-time.After(offset):
			case <-ctx.Done():
				return
			}
			s.runDevice(ctx, d, start)
		}()
	}
	wg.Wait()
	return nil
}

func (s *Simulator) runDevice(ctx context.Context, d *device, start time.Time) {
	log := s.cfg.Logger.With("device", d.id)
	for attempt := 0; ctx.Err() == nil; attempt++ {
		c, err := s.connect(ctx, d, attempt)
		if err != nil {
			log.Debug("connect failed; retrying", "error", err)
			select {
			case <-time.After(time.Second):
				continue
			case <-ctx.Done():
				return
			}
		}
		s.publishLoop(ctx, c, d, start)
		c.Disconnect(&paho.Disconnect{})
	}
}

func (s *Simulator) connect(ctx context.Context, d *device, attempt int) (*paho.Client, error) {
	addr := s.cfg.Broker
	if n := len(s.cfg.Brokers); n > 0 {
		addr = s.cfg.Brokers[(d.index+attempt)%n]
	}
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: d.id})
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ca, err := c.Connect(cctx, &paho.Connect{ClientID: d.id, KeepAlive: 30, CleanStart: true})
	if err != nil {
		conn.Close()
		return nil, err
	}
	if ca.ReasonCode != 0 {
		conn.Close()
		return nil, fmt.Errorf("connect refused: reason %#x", ca.ReasonCode)
	}
	return c, nil
}

func (s *Simulator) publishLoop(ctx context.Context, c *paho.Client, d *device, start time.Time) {
	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	for {
		now := time.Now()
		payload, _ := json.Marshal(d.reading(now.Sub(start), now))
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := c.Publish(pctx, &paho.Publish{Topic: d.topic(), QoS: 1, Payload: payload})
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				s.failed.Add(1)
			}
			return
		}
		s.published.Add(1)
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// reading is one JSON telemetry message. Values follow a wave over the
// device's period; drifting devices swing past their alert threshold.
func (d *device) reading(elapsed time.Duration, now time.Time) map[string]any {
	w := math.Sin(d.phase + 2*math.Pi*elapsed.Seconds()/d.period.Seconds())
	noise := func(scale float64) float64 { return (rand.Float64() - 0.5) * scale }
	r := map[string]any{"kind": d.kind, "ts": now.UnixMilli()}
	switch d.kind {
	case Boiler:
		amp := 8.0
		if d.drifts {
			amp = 22 // threshold 90 °C
		}
		r["temperature"] = round(74+amp*w+noise(1), 2)
		r["pressure"] = round(2.1+0.15*w+noise(0.05), 3)
	case Pump:
		amp := 1.0
		if d.drifts {
			amp = 4.5 // threshold 7.1 mm/s
		}
		r["vibration"] = round(3.2+amp*w+noise(0.3), 2)
		r["rpm"] = round(1450+20*w+noise(5), 0)
		r["flow"] = round(42+3*w+noise(1), 1)
	case ColdChain:
		amp := 1.0
		if d.drifts {
			amp = 5.5 // threshold 8 °C
		}
		r["temperature"] = round(4+amp*w+noise(0.3), 2)
		r["door_open"] = d.drifts && w > 0.6
	case Motor:
		// A US-made sensor: in/s and °F (the rules convert to SI).
		amp := 0.02
		if d.drifts {
			amp = 0.12 // the p95 crosses 4.5 mm/s (0.177 in/s)
		}
		r["vibration_rms"] = round(0.09+amp*w+noise(0.01), 4)
		r["winding_temp"] = round(160+15*w+noise(2), 1)
		r["current"] = round(12+2*w+noise(0.5), 2)
	}
	return r
}

func round(v float64, places int) float64 {
	p := math.Pow(10, float64(places))
	return math.Round(v*p) / p
}
