package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/rpc"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/internal/devkafka"
)

// The load side is everything a run needs that is not the system under
// test: the device fleet, the Kafka stand-in with a consumer reading it,
// and the proxy that sees InfluxDB acknowledge writes (see the package doc).

// ChildEnv, set in a process's environment, makes it a load-side child:
// cmd/sluice's bench command (and this package's tests) then call
// ServeChild instead of running a benchmark.
const ChildEnv = "SLUICE_BENCH_CHILD"

// Args and replies of the load side's methods.
type (
	Empty        struct{}
	ServicesArgs struct {
		// InfluxURL is influxd's; the proxy forwards to it.
		InfluxURL string
		// RecordsTopic and AlertsTopic are created in the Kafka stand-in
		// and tailed; without them, no Kafka stand-in is started.
		RecordsTopic, AlertsTopic string
		Devices                   int
	}
	ServicesReply struct {
		KafkaBrokers []string
		InfluxURL    string // the proxy's
	}
	StartArgs struct {
		Addr string // the broker
		Load Load
	}
	// LoadProgress is the load side's state now.
	LoadProgress struct {
		Fleet        Progress
		Kafka        TailCounts
		InfluxPoints int64
	}
	// LoadReport is what the load side measured in a run.
	LoadReport struct {
		Fleet      FleetResult
		ConnectErr string
		Kafka      TailCounts
		// KafkaLost are acknowledged readings the Kafka consumer never saw.
		KafkaLost                  int64
		KafkaLatency               Hist
		InfluxPoints, InfluxAlerts int64
		InfluxLatency              Hist
		CPU                        time.Duration
		PeakRSS                    int64
		// TailErr is the Kafka consumer's error, if it stopped.
		TailErr string
	}
)

// LoadSide runs the fleet and the services; see the package's doc.
type LoadSide struct {
	ctx context.Context
	log *slog.Logger

	mu      sync.Mutex
	kafka   *devkafka.Cluster
	proxy   *influxProxy
	tail    *kafkaTail
	fleet   *fleet
	done    chan struct{}
	result  FleetResult
	cpu0    time.Duration
	devices int
}

// NewLoadSide returns a load side whose work ends when ctx does.
func NewLoadSide(ctx context.Context, log *slog.Logger) *LoadSide {
	return &LoadSide{ctx: ctx, log: log}
}

// Services starts the Kafka stand-in (with the two topics) and a consumer
// tailing them, when the job has Kafka sinks, and the InfluxDB proxy.
func (s *LoadSide) Services(a ServicesArgs, r *ServicesReply) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proxy != nil {
		return errors.New("services already running")
	}
	proxy, err := startInfluxProxy(a.InfluxURL)
	if err != nil {
		return err
	}
	s.proxy, s.devices = proxy, a.Devices
	r.InfluxURL = proxy.url()
	if a.RecordsTopic == "" {
		return nil
	}
	k, err := devkafka.Start(devkafka.Options{Topics: []string{a.RecordsTopic, a.AlertsTopic}})
	if err != nil {
		s.closeServices()
		return err
	}
	s.kafka = k
	tail, err := startKafkaTail(s.ctx, k.Addrs(), a.RecordsTopic, a.AlertsTopic, a.Devices)
	if err != nil {
		s.closeServices()
		return err
	}
	s.tail = tail
	r.KafkaBrokers = k.Addrs()
	return nil
}

// CloseServices stops what Services started.
func (s *LoadSide) CloseServices(Empty, *Empty) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeServices()
}

func (s *LoadSide) closeServices() error {
	var errs []error
	if s.tail != nil {
		errs = append(errs, s.tail.close())
	}
	if s.proxy != nil {
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		errs = append(errs, s.proxy.close(ctx))
		cancel()
	}
	if s.kafka != nil {
		s.kafka.Close()
	}
	s.kafka, s.tail, s.proxy = nil, nil, nil
	return errors.Join(errs...)
}

// StartLoad connects the fleet to a broker and starts publishing.
func (s *LoadSide) StartLoad(a StartArgs, _ *Empty) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fleet != nil {
		return errors.New("a load is running")
	}
	_ = resetPeak()
	s.cpu0 = cpuSelf()
	s.fleet = newFleet(a.Load, a.Addr)
	s.done = make(chan struct{})
	f, done := s.fleet, s.done
	go func() {
		res := f.run(s.ctx)
		s.mu.Lock()
		s.result = res
		s.mu.Unlock()
		close(done)
	}()
	return nil
}

// StopLoad ends publishing (an idle fleet waits for it).
func (s *LoadSide) StopLoad(Empty, *Empty) error {
	s.mu.Lock()
	f := s.fleet
	s.mu.Unlock()
	if f != nil {
		f.Stop()
	}
	return nil
}

// Progress returns the state of the load and of the services.
func (s *LoadSide) Progress(_ Empty, r *LoadProgress) error {
	s.mu.Lock()
	f, tail, proxy := s.fleet, s.tail, s.proxy
	s.mu.Unlock()
	if f != nil {
		r.Fleet = f.progress()
	}
	if tail != nil {
		r.Kafka = tail.counts()
	}
	if proxy != nil {
		r.InfluxPoints = proxy.points.Load()
	}
	return nil
}

// Finish waits for the fleet to be done and reports the run; the next
// StartLoad starts afresh.
func (s *LoadSide) Finish(_ Empty, r *LoadReport) error {
	s.mu.Lock()
	f, done := s.fleet, s.done
	s.mu.Unlock()
	if f == nil {
		return errors.New("no load to finish")
	}
	select {
	case <-done:
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r.Fleet = s.result
	if err := f.firstError(); err != nil {
		r.ConnectErr = err.Error()
	}
	r.CPU = cpuSelf() - s.cpu0
	r.PeakRSS = memoryOf(0).Peak
	if s.tail != nil {
		r.Kafka = s.tail.counts()
		r.KafkaLost = s.tail.lost(f.ackedSet)
		r.KafkaLatency = s.tail.lat.snapshot()
		s.tail.errMu.Lock()
		if s.tail.err != nil {
			r.TailErr = s.tail.err.Error()
		}
		s.tail.errMu.Unlock()
	}
	if s.proxy != nil {
		r.InfluxPoints, r.InfluxAlerts = s.proxy.points.Load(), s.proxy.alerts.Load()
		r.InfluxLatency = s.proxy.lat.snapshot()
	}
	s.fleet = nil
	return nil
}

func (s *LoadSide) close() error {
	s.mu.Lock()
	f := s.fleet
	s.mu.Unlock()
	if f != nil {
		f.Stop()
		<-s.done
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeServices()
}

// loader is what the orchestrator needs of a load side, in process
// (*LoadSide) or in a child (*remoteSide).
type loader interface {
	Services(ServicesArgs, *ServicesReply) error
	CloseServices(Empty, *Empty) error
	StartLoad(StartArgs, *Empty) error
	StopLoad(Empty, *Empty) error
	Progress(Empty, *LoadProgress) error
	Finish(Empty, *LoadReport) error
}

var (
	_ loader = (*LoadSide)(nil)
	_ loader = (*remoteSide)(nil)
)

// ServeChild is a load-side child's whole life: it serves the load side's
// methods on stdin/stdout until the parent closes stdin (or ctx ends), then
// stops what it started. Logs go to stderr.
func ServeChild(ctx context.Context, stdin io.Reader, stdout io.Writer, stderr io.Writer) error {
	raiseNoFile()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("process", "bench-load")
	side := NewLoadSide(ctx, log)
	srv := rpc.NewServer()
	if err := srv.RegisterName("Load", side); err != nil {
		return err
	}
	srv.ServeConn(pipe{stdin, stdout})
	cancel()
	return side.close()
}

// pipe joins a reader and a writer into the connection net/rpc wants.
type pipe struct {
	io.Reader
	io.Writer
}

func (p pipe) Close() error {
	var errs []error
	if c, ok := p.Reader.(io.Closer); ok {
		errs = append(errs, c.Close())
	}
	if c, ok := p.Writer.(io.Closer); ok {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// remoteSide is a load side in a child process.
type remoteSide struct {
	cmd    *exec.Cmd
	client *rpc.Client
}

// spawnLoadSide starts cmd as a load-side child (ChildEnv is added to its
// environment) in its own process group, so that a Ctrl-C reaches only the
// orchestrator, which then stops the child in order. Should the
// orchestrator die, the child reads the end of its stdin and exits.
func spawnLoadSide(cmd *exec.Cmd, stderr io.Writer) (*remoteSide, error) {
	cmd.Env = append(os.Environ(), ChildEnv+"=1")
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the load side: %w", err)
	}
	return &remoteSide{cmd: cmd, client: rpc.NewClient(pipe{out, in})}, nil
}

func (r *remoteSide) call(method string, args, reply any) error {
	if err := r.client.Call("Load."+method, args, reply); err != nil {
		return fmt.Errorf("load side: %s: %w", method, err)
	}
	return nil
}

func (r *remoteSide) Services(a ServicesArgs, rep *ServicesReply) error {
	return r.call("Services", a, rep)
}
func (r *remoteSide) CloseServices(a Empty, rep *Empty) error { return r.call("CloseServices", a, rep) }
func (r *remoteSide) StartLoad(a StartArgs, rep *Empty) error { return r.call("StartLoad", a, rep) }
func (r *remoteSide) StopLoad(a Empty, rep *Empty) error      { return r.call("StopLoad", a, rep) }
func (r *remoteSide) Progress(a Empty, rep *LoadProgress) error {
	return r.call("Progress", a, rep)
}
func (r *remoteSide) Finish(a Empty, rep *LoadReport) error { return r.call("Finish", a, rep) }

// close ends the child: closing its stdin ends its server; it stops its
// services and exits. After 30s it is killed.
func (r *remoteSide) close() error {
	r.client.Close()
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		r.cmd.Process.Kill()
		return <-done
	}
}
