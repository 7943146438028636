// Package devkafka runs an in-process Kafka-protocol cluster (franz-go's
// kfake) for tests and the demo. It is a stand-in, not Kafka: it speaks the
// protocol well enough for kafka-go's Writer and Reader, keeps data in
// memory (or a folder, to survive a restart), and has no replication or
// durability guarantees. Production uses a real Kafka (docker-compose.yml).
package devkafka

import (
	"fmt"
	"net"
	"strconv"
	"sync"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Cluster is a running stand-in Kafka.
type Cluster struct {
	c  *kfake.Cluster
	ln *gate
}

// Options for Start.
type Options struct {
	// Port to listen on (127.0.0.1); 0 picks a free one.
	Port int
	// Partitions per auto-created topic (default 3).
	Partitions int
	// Topics to create up front.
	Topics []string
	// DataDir, when set, persists the cluster's data there, so it can be
	// stopped and started again with its records.
	DataDir string
}

// Start starts a one-broker cluster that auto-creates topics.
func Start(opts Options) (*Cluster, error) {
	if opts.Partitions == 0 {
		opts.Partitions = 3
	}
	kopts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(opts.Port),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(opts.Partitions),
	}
	if len(opts.Topics) > 0 {
		kopts = append(kopts, kfake.SeedTopics(int32(opts.Partitions), opts.Topics...))
	}
	if opts.DataDir != "" {
		kopts = append(kopts, kfake.DataDir(opts.DataDir), kfake.SyncWrites())
	}
	cl := &Cluster{}
	kopts = append(kopts, kfake.ListenFn(func(network, address string) (net.Listener, error) {
		l, err := net.Listen(network, address)
		if err != nil {
			return nil, err
		}
		cl.ln = &gate{Listener: l, conns: map[net.Conn]bool{}}
		return cl.ln, nil
	}))
	c, err := kfake.NewCluster(kopts...)
	if err != nil {
		return nil, fmt.Errorf("start dev kafka: %w", err)
	}
	cl.c = c
	return cl, nil
}

// Cut takes the cluster off the network, as a broker that went down looks
// to its clients: open connections are closed and new ones are refused. Its
// data stays. Restore puts it back.
func (c *Cluster) Cut() { c.ln.setOpen(false) }

// Restore puts the cluster back on the network after Cut.
func (c *Cluster) Restore() { c.ln.setOpen(true) }

// gate is a listener that can refuse connections and cut the ones it gave.
type gate struct {
	net.Listener
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]bool
}

func (g *gate) setOpen(open bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = !open
	if !open {
		for c := range g.conns {
			c.Close()
		}
		clear(g.conns)
	}
}

func (g *gate) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		g.mu.Lock()
		if g.closed {
			g.mu.Unlock()
			c.Close()
			continue
		}
		g.conns[c] = true
		g.mu.Unlock()
		return c, nil
	}
}

// Addrs returns the brokers' host:port addresses.
func (c *Cluster) Addrs() []string { return c.c.ListenAddrs() }

// Port returns the first broker's port.
func (c *Cluster) Port() int {
	a := c.Addrs()[0]
	for i := len(a) - 1; i >= 0; i-- {
		if a[i] == ':' {
			p, _ := strconv.Atoi(a[i+1:])
			return p
		}
	}
	return 0
}

// Close stops the cluster.
func (c *Cluster) Close() { c.c.Close() }
