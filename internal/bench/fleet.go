package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Load is what the simulated fleet does.
type Load struct {
	// Devices is how many devices connect, each with its own connection.
	Devices int
	// QoS of every publish: 0, 1 or 2.
	QoS byte
	// MQTT is the protocol: 3 (3.1.1) or 5.
	MQTT int
	// Shape is flat, nested, gzip, array or mixed (see payload.go); Size
	// the bytes of JSON per reading; Readings per message for arrays.
	Shape    string
	Size     int
	Readings int
	// Rate is the messages per second the whole fleet offers; 0 publishes
	// as fast as the broker acknowledges.
	Rate float64
	// Duration of the load, counted from when every device is connected;
	// or Messages, a total over the fleet (whichever is set).
	Duration time.Duration
	Messages int64
	// Ramp spreads the connections over this time (0: as fast as they go,
	// ConnectConcurrency at a time). Each device publishes once connected.
	Ramp               time.Duration
	ConnectConcurrency int
	// Inflight is how many QoS 1/2 messages a device may have
	// unacknowledged.
	Inflight int
	// Client is "lean" (the built-in publisher) or "paho" (paho.golang).
	Client string
	// Sources are local IP addresses the connections are made from, in
	// turn (each has its own ephemeral ports); empty: the system's choice.
	Sources []string
	// KeepAlive is the MQTT keep-alive; an idle device pings that often.
	KeepAlive time.Duration
	// Idle devices connect and publish nothing until told to stop.
	Idle bool
	// Series, when set, makes every message a series of its own: the
	// devices publish Series messages in all, each to the topic of a
	// device level never used before (see device.seriesTopic), so that
	// sluice sees Series series appear once each. Lean client only.
	Series int64
}

func (l *Load) spec() payloadSpec { return payloadSpec{size: l.Size, readings: l.Readings} }

func (l *Load) version() byte {
	if l.MQTT == 3 {
		return mqtt311
	}
	return mqtt5
}

// Progress is the fleet's state at one moment.
type Progress struct {
	Phase                 string // connecting, running, draining, done
	Elapsed               time.Duration
	Connected, ConnectErr int64
	Sent, Acked           int64 // messages
	SentReadings          int64
	AckedReadings         int64
	Refused               int64 // MQTT 5 acknowledgements with a failure reason code
	Errors                int64 // connections lost while publishing
}

// FleetResult is what the fleet did, once it is done.
type FleetResult struct {
	Progress
	// ConnectTime is from the first dial to the last CONNACK.
	ConnectTime time.Duration
	// Window is the steady part of the load: from when every device was
	// connected to when publishing stopped; WindowSent and WindowAcked are
	// the messages sent and acknowledged in it.
	Window                  time.Duration
	WindowSent, WindowAcked int64
	// AckLatency is from a message's publish to its PUBACK (QoS 1) or
	// PUBCOMP (QoS 2), as the device sees it.
	AckLatency Hist
}

// fleet runs the devices of a Load against one broker.
type fleet struct {
	cfg   Load
	addr  string
	start time.Time
	devs  []*device

	stop      chan struct{} // closed when devices must stop publishing
	stopOnce  sync.Once
	remaining atomic.Int64 // messages left, in Messages mode

	phase                                 atomic.Value // string
	connected, connectErr                 atomic.Int64
	sent, sentReadings                    atomic.Int64
	acked, ackedReadings, refused, errors atomic.Int64
	ackLat                                recorder

	mu    sync.Mutex
	acks  [][]uint64 // per device: the reading seqs acknowledged (bits)
	first error      // the first connect error, for the report
}

func newFleet(cfg Load, addr string) *fleet {
	f := &fleet{cfg: cfg, addr: addr, stop: make(chan struct{}), acks: make([][]uint64, cfg.Devices)}
	f.phase.Store("connecting")
	f.remaining.Store(math.MaxInt64)
	if cfg.Messages > 0 {
		f.remaining.Store(cfg.Messages)
	}
	if cfg.Series > 0 {
		f.remaining.Store(cfg.Series)
	}
	for i := range cfg.Devices {
		f.devs = append(f.devs, newDevice(i, cfg.Shape))
	}
	return f
}

// Stop ends publishing (idle fleets wait for it).
func (f *fleet) Stop() { f.stopOnce.Do(func() { close(f.stop) }) }

func (f *fleet) stopped() bool {
	select {
	case <-f.stop:
		return true
	default:
		return false
	}
}

func (f *fleet) progress() Progress {
	return Progress{
		Phase: f.phase.Load().(string), Elapsed: time.Since(f.start),
		Connected: f.connected.Load(), ConnectErr: f.connectErr.Load(),
		Sent: f.sent.Load(), Acked: f.acked.Load(),
		SentReadings: f.sentReadings.Load(), AckedReadings: f.ackedReadings.Load(),
		Refused: f.refused.Load(), Errors: f.errors.Load(),
	}
}

// run connects the fleet, publishes until the load is done (or ctx ends),
// waits for the outstanding acknowledgements and disconnects.
func (f *fleet) run(ctx context.Context) FleetResult {
	f.start = time.Now()
	var connWG, wg sync.WaitGroup
	connWG.Add(len(f.devs))
	sem := make(chan struct{}, max(1, f.cfg.ConnectConcurrency))
	var lastConnack atomic.Int64
	for i, d := range f.devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if f.cfg.Ramp > 0 {
				at := f.start.Add(time.Duration(i) * f.cfg.Ramp / time.Duration(len(f.devs)))
				if !sleepUntil(ctx, f.stop, at) {
					connWG.Done()
					return
				}
			} else {
				sem <- struct{}{}
			}
			pub, err := f.connect(ctx, d)
			if f.cfg.Ramp == 0 {
				<-sem
			}
			if err != nil {
				f.connectErr.Add(1)
				f.mu.Lock()
				if f.first == nil {
					f.first = err
				}
				f.mu.Unlock()
				connWG.Done()
				return
			}
			f.connected.Add(1)
			lastConnack.Store(int64(time.Since(f.start)))
			connWG.Done()
			acks := pub.run(ctx)
			f.mu.Lock()
			f.acks[d.index] = acks
			f.mu.Unlock()
		}()
	}
	connWG.Wait()
	res := FleetResult{ConnectTime: time.Duration(lastConnack.Load())}
	f.phase.Store("running")
	steady := time.Now()
	before := f.progress()

	devicesDone := make(chan struct{})
	go func() { wg.Wait(); close(devicesDone) }()
	var timeout <-chan time.Time
	if f.cfg.Duration > 0 && !f.cfg.Idle {
		t := time.NewTimer(f.cfg.Duration)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-timeout:
	case <-f.stop:
	case <-ctx.Done():
	case <-devicesDone:
	}
	end := time.Now()
	after := f.progress()
	f.Stop()
	f.phase.Store("draining")
	<-devicesDone
	f.phase.Store("done")

	res.Progress = f.progress()
	res.Window = end.Sub(steady)
	res.WindowSent = after.Sent - before.Sent
	res.WindowAcked = after.Acked - before.Acked
	if f.cfg.Messages > 0 {
		// A counted load is over when its last message is acknowledged.
		res.Window = time.Since(steady)
		res.WindowSent, res.WindowAcked = res.Sent-before.Sent, res.Acked-before.Acked
	}
	res.AckLatency = f.ackLat.snapshot()
	return res
}

// firstError is the first connection error, if any.
func (f *fleet) firstError() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.first
}

// ackedSet returns the bits of the acknowledged reading seqs of device i.
func (f *fleet) ackedSet(i int) []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.acks[i]
}

func sleepUntil(ctx context.Context, stop <-chan struct{}, at time.Time) bool {
	d := time.Until(at)
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	case <-ctx.Done():
		return false
	}
}

// publisher is one connected device.
type publisher interface {
	// run publishes until the load is over, waits for the acknowledgements
	// and disconnects. It returns the acknowledged reading seqs (bits).
	run(ctx context.Context) []uint64
}

func (f *fleet) dialer(i int) *net.Dialer {
	d := &net.Dialer{Timeout: 20 * time.Second}
	if n := len(f.cfg.Sources); n > 0 {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(f.cfg.Sources[i%n])}
	}
	return d
}

func (f *fleet) connect(ctx context.Context, d *device) (publisher, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ka := uint16(f.cfg.KeepAlive / time.Second)
	if f.cfg.Client == "paho" {
		return f.connectPaho(cctx, d, ka)
	}
	conn, rd, err := dialMQTT(cctx, f.dialer(d.index), f.addr, f.cfg.version(), d.id, ka)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", d.id, err)
	}
	w := max(1, f.cfg.Inflight)
	// A buffer for a window of messages, within bounds: an idle fleet of
	// tens of thousands must not hold megabytes each.
	size := min(max(4<<10, w*(f.cfg.Size*max(1, d.readingsPer(f.cfg.spec()))+64)), 64<<10)
	if f.cfg.Idle {
		size = 512
	}
	p := &leanPub{f: f, d: d, conn: conn, rd: rd, w: bufio.NewWriterSize(conn, size),
		free: make(chan uint16, w), slots: make([]slot, w+1), dead: make(chan struct{})}
	for id := 1; id <= w; id++ {
		p.free <- uint16(id)
	}
	return p, nil
}

// schedule paces one device at a fixed rate: the k-th message is due at
// start + k*interval, start being spread over the first interval (as a
// real fleet's devices are not in step). Behind schedule, messages go at
// once.
type schedule struct {
	interval time.Duration
	next     time.Time
}

func (f *fleet) schedule(d *device) schedule {
	if f.cfg.Rate <= 0 || f.cfg.Idle {
		return schedule{}
	}
	interval := time.Duration(float64(f.cfg.Devices) / f.cfg.Rate * float64(time.Second))
	next := time.Now().Add(time.Duration(d.rnd.Int64N(int64(interval) + 1)))
	return schedule{interval: interval, next: next}
}

// take reserves one message of the fleet's budget.
func (f *fleet) take() bool { return f.remaining.Add(-1) >= 0 }

// leanPub is a device on the lean client.
type leanPub struct {
	f    *fleet
	d    *device
	conn net.Conn
	rd   *reader

	wmu      sync.Mutex
	w        *bufio.Writer
	lastSend time.Time

	free    chan uint16 // packet ids not in flight
	slots   []slot      // by packet id
	dead    chan struct{}
	closing atomic.Bool // the device is disconnecting: the end of the connection is no error
	acks    []uint64    // owned by the read loop
	buf     []byte
	backoff atomic.Int64 // UnixNano until which the device holds off after a refusal
}

// refusedBackoff is how long a device told "quota exceeded" (or any other
// refusal) waits before it publishes again, as a well-behaved client does.
// Without it a fleet publishing as fast as it can answers a full journal
// with a storm of publishes that are refused, and the storm, not the load,
// takes the broker's CPU.
const refusedBackoff = 100 * time.Millisecond

type slot struct {
	sent atomic.Int64 // UnixNano
	seq  atomic.Uint64
	n    atomic.Int32
}

func (p *leanPub) run(ctx context.Context) []uint64 {
	readDone := make(chan struct{})
	go func() {
		p.readLoop()
		close(readDone)
	}()
	p.publish(ctx)
	p.drain()
	p.closing.Store(true)
	p.wmu.Lock()
	p.w.Write([]byte{pktDisconnect << 4, 0})
	p.w.Flush()
	p.wmu.Unlock()
	p.conn.Close()
	<-readDone
	return p.acks
}

func (p *leanPub) flush() {
	p.wmu.Lock()
	if p.w.Buffered() > 0 {
		p.w.Flush()
	}
	p.wmu.Unlock()
}

// publish sends messages until the load is over or the connection fails.
func (p *leanPub) publish(ctx context.Context) {
	f := p.f
	qos := f.cfg.QoS
	sched := f.schedule(p.d)
	ka := f.cfg.KeepAlive
	p.lastSend = time.Now()
	for {
		if f.cfg.Idle || sched.interval > 0 {
			due := sched.next
			if f.cfg.Idle {
				due = time.Time{}
			}
			if !p.waitUntil(ctx, due, ka) {
				return
			}
			sched.next = sched.next.Add(sched.interval)
		}
		if until := p.backoff.Load(); until > 0 && time.Now().UnixNano() < until {
			if !p.waitUntil(ctx, time.Unix(0, until), ka) {
				return
			}
		}
		if f.stopped() || ctx.Err() != nil || !f.take() {
			return
		}
		var id uint16
		if qos > 0 {
			select {
			case id = <-p.free:
			default:
				p.flush()
				select {
				case id = <-p.free:
				case <-p.dead:
					return
				case <-f.stop:
					return
				}
			}
		}
		now := time.Now()
		var first uint64
		var n int
		p.buf, first, n = p.d.message(p.buf[:0], now, now.Sub(f.start), f.cfg.spec())
		if qos > 0 {
			s := &p.slots[id]
			s.sent.Store(now.UnixNano())
			s.seq.Store(first)
			s.n.Store(int32(n))
		}
		topic := p.d.topic
		if f.cfg.Series > 0 {
			topic = p.d.seriesTopic(f.cfg.Devices)
		}
		p.wmu.Lock()
		pkt := appendPublish(p.w.AvailableBuffer(), f.cfg.version(), qos, id, topic, p.buf)
		_, err := p.w.Write(pkt)
		if err == nil && sched.interval > 0 {
			err = p.w.Flush() // paced: each message goes when it is due
		}
		p.lastSend = now
		p.wmu.Unlock()
		if err != nil {
			f.errors.Add(1)
			return
		}
		f.sent.Add(1)
		f.sentReadings.Add(int64(n))
	}
}

// waitUntil waits until due (forever when zero), sending PINGREQs every
// keep-alive meanwhile. False when the load is over or the connection
// failed.
func (p *leanPub) waitUntil(ctx context.Context, due time.Time, ka time.Duration) bool {
	p.flush()
	for {
		wake := due
		if ka > 0 {
			if ping := p.lastSend.Add(ka * 3 / 4); wake.IsZero() || ping.Before(wake) {
				wake = ping
			}
		}
		var timer *time.Timer
		var fired <-chan time.Time
		if !wake.IsZero() {
			d := time.Until(wake)
			if d <= 0 && wake.Equal(due) {
				return true
			}
			timer = time.NewTimer(max(d, 0))
			fired = timer.C
		}
		stop := func() {
			if timer != nil {
				timer.Stop()
			}
		}
		select {
		case <-fired:
			if !due.IsZero() && !time.Now().Before(due) {
				return true
			}
			p.wmu.Lock()
			p.w.Write([]byte{pktPingreq << 4, 0})
			err := p.w.Flush()
			p.lastSend = time.Now()
			p.wmu.Unlock()
			if err != nil {
				p.f.errors.Add(1)
				return false
			}
		case <-p.dead:
			stop()
			return false
		case <-p.f.stop:
			stop()
			return false
		case <-ctx.Done():
			stop()
			return false
		}
	}
}

// drain waits for the messages in flight to be acknowledged (for up to
// 30s, or until the connection fails).
func (p *leanPub) drain() {
	p.flush()
	if p.f.cfg.QoS == 0 {
		return
	}
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	for range cap(p.free) {
		select {
		case <-p.free:
		case <-p.dead:
			return
		case <-t.C:
			return
		}
	}
}

// readLoop reads the broker's acknowledgements until the connection
// closes.
func (p *leanPub) readLoop() {
	f := p.f
	defer close(p.dead)
	unflushed := false // PUBRELs written and not yet sent
	for {
		if unflushed && p.rd.r.Buffered() == 0 {
			// Nothing more to read at once: send the PUBRELs, batched.
			p.flush()
			unflushed = false
		}
		pk, err := p.rd.next()
		if err != nil {
			if !p.closing.Load() {
				f.errors.Add(1)
			}
			return
		}
		switch pk.kind {
		case pktPuback, pktPubcomp:
			p.complete(pk.id(), pk.reason())
		case pktPubrec:
			if r := pk.reason(); r >= 0x80 {
				p.complete(pk.id(), r)
				continue
			}
			id := pk.id()
			p.wmu.Lock()
			p.w.Write(append(p.w.AvailableBuffer(), pktPubrel<<4|0x02, 2, byte(id>>8), byte(id)))
			p.wmu.Unlock()
			unflushed = true
		case pktDisconnect:
			if !p.closing.Load() {
				f.errors.Add(1)
			}
			return
		}
	}
}

func (p *leanPub) complete(id uint16, reason byte) {
	if int(id) >= len(p.slots) || id == 0 {
		return
	}
	s := &p.slots[id]
	f := p.f
	if reason >= 0x80 {
		f.refused.Add(1)
		p.backoff.Store(time.Now().Add(refusedBackoff).UnixNano())
	} else {
		n := int(s.n.Load())
		f.ackLat.record(time.Duration(time.Now().UnixNano() - s.sent.Load()))
		p.acks = markSeqs(p.acks, s.seq.Load(), n)
		f.acked.Add(1)
		f.ackedReadings.Add(int64(n))
	}
	p.free <- id
}

// markSeqs sets bits [first, first+n) of set.
func markSeqs(set []uint64, first uint64, n int) []uint64 {
	for s := first; s < first+uint64(n); s++ {
		w := int(s / 64)
		for len(set) <= w {
			set = append(set, 0)
		}
		set[w] |= 1 << (s % 64)
	}
	return set
}

// hasSeq reports whether bit s of set is set.
func hasSeq(set []uint64, s uint64) bool {
	w := int(s / 64)
	return w < len(set) && set[w]&(1<<(s%64)) != 0
}

// pahoPub is a device on paho.golang: Inflight goroutines share one
// client, each publishing and waiting for its acknowledgement in turn.
type pahoPub struct {
	f    *fleet
	d    *device
	c    *paho.Client
	mu   sync.Mutex
	acks []uint64
}

func (f *fleet) connectPaho(ctx context.Context, d *device, ka uint16) (publisher, error) {
	conn, err := f.dialer(d.index).DialContext(ctx, "tcp", f.addr)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", d.id, err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: d.id})
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: d.id, KeepAlive: ka, CleanStart: true})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("device %s: connect: %w", d.id, err)
	}
	if ca.ReasonCode != 0 {
		conn.Close()
		return nil, fmt.Errorf("device %s: connect refused: reason %#x", d.id, ca.ReasonCode)
	}
	return &pahoPub{f: f, d: d, c: c}, nil
}

func (p *pahoPub) run(ctx context.Context) []uint64 {
	f := p.f
	sched := f.schedule(p.d)
	var wg sync.WaitGroup
	for range max(1, f.cfg.Inflight) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for {
				if f.cfg.Idle {
					select {
					case <-f.stop:
					case <-ctx.Done():
					case <-p.c.Done():
					}
					return
				}
				p.mu.Lock()
				due := sched.next
				sched.next = sched.next.Add(sched.interval)
				p.mu.Unlock()
				if sched.interval > 0 && !sleepUntil(ctx, f.stop, due) {
					return
				}
				if f.stopped() || ctx.Err() != nil || !f.take() {
					return
				}
				p.mu.Lock()
				now := time.Now()
				var first uint64
				var n int
				buf, first, n = p.d.message(buf[:0], now, now.Sub(f.start), f.cfg.spec())
				p.mu.Unlock()
				// A publish under way finishes even when the load is over.
				pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
				resp, err := p.c.Publish(pctx, &paho.Publish{Topic: p.d.topic, QoS: f.cfg.QoS, Payload: buf})
				cancel()
				f.sent.Add(1)
				f.sentReadings.Add(int64(n))
				switch {
				case resp != nil && resp.ReasonCode >= 0x80:
					f.refused.Add(1)
					if !sleepUntil(ctx, f.stop, time.Now().Add(refusedBackoff)) {
						return
					}
				case err != nil:
					if !f.stopped() && !errors.Is(err, context.Canceled) {
						f.errors.Add(1)
					}
					return
				case f.cfg.QoS > 0:
					f.ackLat.record(time.Since(now))
					p.mu.Lock()
					p.acks = markSeqs(p.acks, first, n)
					p.mu.Unlock()
					f.acked.Add(1)
					f.ackedReadings.Add(int64(n))
				}
				buf = nil // paho may still hold the payload
			}
		}()
	}
	wg.Wait()
	p.c.Disconnect(&paho.Disconnect{})
	return p.acks
}
