package cluster

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Producer writes single records to a topic, each acknowledged before
// Produce returns: for the few records written outside a Stream's
// transactions (a sink's dead letters).
type Producer struct {
	cl *kgo.Client
}

// NewProducer returns a Producer to topic; records go to the partition of
// their key.
func NewProducer(conn Conn, topic string) (*Producer, error) {
	cl, err := kgo.NewClient(conn.opts(
		kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	)...)
	if err != nil {
		return nil, err
	}
	return &Producer{cl: cl}, nil
}

// Produce writes one record and waits for Kafka to have it.
func (p *Producer) Produce(ctx context.Context, key, value []byte) error {
	return p.cl.ProduceSync(ctx, &kgo.Record{Key: key, Value: value}).FirstErr()
}

// Close closes the client.
func (p *Producer) Close() { p.cl.Close() }
