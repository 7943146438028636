// Package cluster is the Kafka side of a sluice cluster: how nodes hand each
// other messages, outputs and rule state through Kafka topics, with
// franz-go's kgo client. It owns no cluster protocol of its own: consumer
// groups decide which node owns which partition, a compacted topic keeps the
// rules' state, record keys keep order. docs/scaling.md describes the whole.
//
// Per pipeline there are three topics, each with the same partitions:
//
//	<prefix>.<pipeline>.ingest   messages, keyed by partition key (Forwarder)
//	<prefix>.<pipeline>.events   what the rules derived, in the partition of their input (Stream)
//	<prefix>.<pipeline>.state    the rules' state per series, compacted (Stream)
//
// A Stream consumes the ingest topic in a consumer group, and writes the
// events, the state changes and its input offsets in one transaction: a
// node that dies mid-way leaves nothing half-done, and the next owner of a
// partition restores its state to exactly the offset it resumes from.
// Consumers read the events topic (read_committed) for the sinks.
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
)

// Conn says how to reach the Kafka cluster.
type Conn struct {
	Brokers []string
	TLS     *tls.Config    // nil: plaintext
	SASL    sasl.Mechanism // nil: no authentication
	// ClientID names this node to the brokers (in their logs and quotas).
	ClientID string
	Log      *slog.Logger
}

// opts returns the client options every client of the node shares.
func (c Conn) opts(extra ...kgo.Opt) []kgo.Opt {
	o := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(c.ClientID),
		kgo.DialTimeout(10 * time.Second),
		// A broker that accepts the connection and never answers must
		// not hold anything forever: requests time out and are retried.
		kgo.RequestTimeoutOverhead(10 * time.Second),
	}
	if c.TLS != nil {
		o = append(o, kgo.DialTLSConfig(c.TLS.Clone()))
	}
	if c.SASL != nil {
		o = append(o, kgo.SASL(c.SASL))
	}
	if c.Log != nil {
		o = append(o, kgo.WithLogger(logger{c.Log}))
	}
	return append(o, extra...)
}

// logger passes kgo's warnings and errors to slog; its info and debug
// lines are chatter at sluice's level.
type logger struct{ l *slog.Logger }

func (l logger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (l logger) Log(level kgo.LogLevel, msg string, kv ...any) {
	switch level {
	case kgo.LogLevelError:
		l.l.Error("kafka: "+msg, kv...)
	case kgo.LogLevelWarn:
		l.l.Warn("kafka: "+msg, kv...)
	}
}

// Topics names the topics of one pipeline.
type Topics struct {
	Ingest, Events, State string
}

// TopicsFor returns the topics of a pipeline under prefix.
func TopicsFor(prefix, pipeline string) Topics {
	base := prefix + "." + pipeline + "."
	return Topics{Ingest: base + "ingest", Events: base + "events", State: base + "state"}
}

// TopicSpec is how EnsureTopics creates missing topics.
type TopicSpec struct {
	Partitions        int32
	ReplicationFactor int16 // -1: the brokers' default
	// MaxMessageBytes is the largest record the topics must take (a
	// message of the broker's largest packet, with its headers).
	MaxMessageBytes int
	// Retention of the ingest and events topics (the state topic is
	// compacted and keeps each series' latest state).
	Retention time.Duration
}

// EnsureTopics creates the pipeline's topics that do not exist yet and
// returns their partition count. The three must have the same partitions
// (events and state are written to the partition of their input): topics
// that disagree, or that disagree with spec, are an error that says so.
func EnsureTopics(ctx context.Context, conn Conn, t Topics, spec TopicSpec) (int32, error) {
	cl, err := kgo.NewClient(conn.opts()...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	maxBytes := strconv.Itoa(spec.MaxMessageBytes)
	retention := strconv.FormatInt(spec.Retention.Milliseconds(), 10)
	configs := map[string]map[string]*string{
		t.Ingest: {"max.message.bytes": &maxBytes, "retention.ms": &retention},
		t.Events: {"max.message.bytes": &maxBytes, "retention.ms": &retention},
		t.State:  {"max.message.bytes": &maxBytes, "cleanup.policy": ptr("compact")},
	}
	for _, name := range []string{t.Ingest, t.Events, t.State} {
		resp, err := adm.CreateTopic(ctx, spec.Partitions, spec.ReplicationFactor, configs[name], name)
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return 0, fmt.Errorf("create topic %s: %w", name, err)
		}
		if resp.Err != nil && !errors.Is(resp.Err, kerr.TopicAlreadyExists) {
			return 0, fmt.Errorf("create topic %s: %w", name, resp.Err)
		}
	}
	details, err := adm.ListTopics(ctx, t.Ingest, t.Events, t.State)
	if err != nil {
		return 0, fmt.Errorf("describe topics: %w", err)
	}
	var n int32 = -1
	for _, name := range []string{t.Ingest, t.Events, t.State} {
		d, ok := details[name]
		if !ok || d.Err != nil {
			return 0, fmt.Errorf("topic %s: not found after creating it: %v", name, d.Err)
		}
		got := int32(len(d.Partitions))
		switch {
		case n < 0:
			n = got
		case got != n:
			return 0, fmt.Errorf("topics %s and %s have %d and %d partitions: a pipeline's topics must have the same", t.Ingest, name, n, got)
		}
	}
	if n != spec.Partitions {
		return 0, fmt.Errorf("topic %s has %d partitions, the config says %d: the state of a series lives in the partition of its key, so the count cannot change under a running cluster; set cluster.partitions to %d", t.Ingest, n, spec.Partitions, n)
	}
	return n, nil
}

func ptr[T any](v T) *T { return &v }
