// Package kafka is the Kafka sink: it writes events to one Kafka topic with
// segmentio/kafka-go's synchronous Writer, one WriteMessages call per batch,
// so the result of every write drives the acknowledgement of its messages.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/tmpl"
)

// Config configures a Kafka sink.
type Config struct {
	// Brokers are the bootstrap brokers, host:port.
	Brokers []string `yaml:"brokers"`
	// Topic is the Kafka topic written to.
	Topic string `yaml:"topic"`
	// Key is a template for the message key, e.g. "{device}" (a tag or
	// field) or "{3}" (the 4th MQTT topic level). Empty: no key.
	Key string `yaml:"key"`
	// Acks is how many replicas must confirm a write: all (default), one, none.
	Acks string `yaml:"acks"`
	// Compression of record batches: none (default), gzip, snappy, lz4, zstd.
	Compression string `yaml:"compression"`
	// AutoCreateTopic lets the brokers create the topic on first write, if
	// they allow it. Off by default: production topics are created with
	// the partitions and retention they need.
	AutoCreateTopic bool `yaml:"auto_create_topic"`
	// Timeout bounds one batch write (default 10s).
	Timeout time.Duration `yaml:"timeout"`
}

var (
	acksValues        = map[string]kafkago.RequiredAcks{"all": kafkago.RequireAll, "one": kafkago.RequireOne, "none": kafkago.RequireNone}
	compressionValues = map[string]kafkago.Compression{"none": 0, "gzip": kafkago.Gzip, "snappy": kafkago.Snappy, "lz4": kafkago.Lz4, "zstd": kafkago.Zstd}
)

// SetDefaults fills in what the operator left out.
func (c *Config) SetDefaults() {
	if c.Acks == "" {
		c.Acks = "all"
	}
	if c.Compression == "" {
		c.Compression = "none"
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var p conf.Problems
	if len(c.Brokers) == 0 {
		p.Missing("brokers")
	}
	for i, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			p.Addf(fmt.Sprintf("brokers[%d]", i), "%q is not host:port", b)
		}
	}
	if c.Topic == "" {
		p.Missing("topic")
	}
	if c.Key != "" {
		if _, err := tmpl.Parse(c.Key); err != nil {
			p.Addf("key", "%v", err)
		}
	}
	if _, ok := acksValues[c.Acks]; !ok && c.Acks != "" {
		p.Addf("acks", "%q: want all, one or none", c.Acks)
	}
	if _, ok := compressionValues[c.Compression]; !ok && c.Compression != "" {
		p.Addf("compression", "%q: want none, gzip, snappy, lz4 or zstd", c.Compression)
	}
	if c.Timeout < 0 {
		p.Addf("timeout", "must not be negative")
	}
	return p.Err()
}

// Sink writes events to Kafka.
type Sink struct {
	cfg    Config
	key    *tmpl.Template
	writer *kafkago.Writer
}

// New returns a sink for cfg (validated) that is given batches of at most
// maxBatch events. It does no I/O.
func New(cfg Config, maxBatch int) *Sink {
	cfg.SetDefaults()
	s := &Sink{cfg: cfg}
	if cfg.Key != "" {
		s.key = tmpl.MustParse(cfg.Key)
	}
	s.writer = &kafkago.Writer{
		Addr:  kafkago.TCP(cfg.Brokers...),
		Topic: cfg.Topic,
		// The same partitioner as the Java client, so a key lands on the
		// same partition whoever produced it.
		Balancer:     &kafkago.Murmur2Balancer{},
		RequiredAcks: acksValues[cfg.Acks],
		Compression:  compressionValues[cfg.Compression],
		// sluice batches before calling WriteMessages; kafka-go must not wait
		// for more (it waits BatchTimeout for a partition batch that is not
		// full), nor retry behind our back: our retries are classified.
		// kafka-go allocates BatchSize messages for every batch: it must be
		// the size of ours, not "large".
		BatchSize:              max(maxBatch, 1),
		BatchBytes:             1 << 20, // Kafka's default message.max.bytes
		BatchTimeout:           time.Millisecond,
		MaxAttempts:            1,
		WriteTimeout:           cfg.Timeout,
		ReadTimeout:            cfg.Timeout,
		AllowAutoTopicCreation: cfg.AutoCreateTopic,
	}
	return s
}

// Connect checks that a broker answers and the topic exists (or may be
// created).
func (s *Sink) Connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var errs []error
	for _, b := range s.cfg.Brokers {
		conn, err := kafkago.DialContext(ctx, "tcp", b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		_, err = conn.ReadPartitions(s.cfg.Topic)
		conn.Close()
		if err == nil || s.cfg.AutoCreateTopic {
			return nil
		}
		return fmt.Errorf("topic %q: %w", s.cfg.Topic, err)
	}
	return fmt.Errorf("no broker answered: %w", errors.Join(errs...))
}

// Write writes a batch in one synchronous call. Items Kafka rejects for good
// (too large, invalid) come back in a *sluice.BatchError as permanent; the
// others are written or retried.
func (s *Sink) Write(ctx context.Context, batch []sluice.Event) error {
	msgs := make([]kafkago.Message, 0, len(batch))
	index := make([]int, 0, len(batch)) // msgs[i] is batch[index[i]]
	bad := map[int]error{}
	for i := range batch {
		m, err := s.message(&batch[i])
		if err != nil {
			bad[i] = sluice.Permanent(err)
			continue
		}
		msgs = append(msgs, m)
		index = append(index, i)
	}
	if len(msgs) > 0 {
		if err := s.writer.WriteMessages(ctx, msgs...); err != nil {
			var werrs kafkago.WriteErrors
			var tooLarge kafkago.MessageTooLargeError
			switch {
			case errors.As(err, &werrs):
				for i, e := range werrs {
					if e != nil {
						bad[index[i]] = classify(e)
					}
				}
			case errors.As(err, &tooLarge):
				// kafka-go refuses the whole call; find the culprits and
				// let the rest be retried.
				for i := range msgs {
					if int64(len(msgs[i].Key)+len(msgs[i].Value)) > s.writer.BatchBytes {
						bad[index[i]] = sluice.Permanent(fmt.Errorf("message of %d bytes is larger than the batch limit", len(msgs[i].Value)))
					} else {
						bad[index[i]] = sluice.Retryable(err, 0)
					}
				}
			default:
				return classify(err)
			}
		}
	}
	if len(bad) > 0 {
		return &sluice.BatchError{Errs: bad}
	}
	return nil
}

func (s *Sink) message(e *sluice.Event) (kafkago.Message, error) {
	value, err := e.Encode()
	if err != nil {
		return kafkago.Message{}, err
	}
	m := kafkago.Message{Value: value, Time: e.Message.Received}
	if e.Record != nil {
		m.Time = e.Record.Time
	}
	if s.key != nil {
		k, err := s.key.Render(e)
		if err != nil {
			return kafkago.Message{}, err
		}
		m.Key = []byte(k)
	}
	m.Headers = append(make([]kafkago.Header, 0, 3+len(e.Message.UserProperties)),
		kafkago.Header{Key: "mqtt.topic", Value: []byte(e.Message.Topic)},
		kafkago.Header{Key: "mqtt.client_id", Value: []byte(e.Message.ClientID)},
		kafkago.Header{Key: "sluice.stream", Value: []byte(e.Stream.String())},
	)
	if e.Message.ContentType != "" {
		m.Headers = append(m.Headers, kafkago.Header{Key: "content-type", Value: []byte(e.Message.ContentType)})
	}
	for _, p := range e.Message.UserProperties {
		m.Headers = append(m.Headers, kafkago.Header{Key: p.Key, Value: []byte(p.Value)})
	}
	return m, nil
}

// Close flushes and closes the writer.
func (s *Sink) Close(ctx context.Context) error {
	return s.writer.Close()
}

// classify sorts a Kafka error: a message Kafka rejects as invalid or too
// large is permanent; anything else (network errors, leader elections,
// timeouts, unknown errors) is retried.
func classify(err error) error {
	var kerr kafkago.Error
	if errors.As(err, &kerr) {
		switch kerr {
		case kafkago.MessageSizeTooLarge, kafkago.InvalidMessage, kafkago.RecordListTooLarge,
			kafkago.InvalidMessageSize, kafkago.InvalidRecord, kafkago.InvalidTimestamp:
			return sluice.Permanent(err)
		}
	}
	return sluice.Retryable(err, 0)
}
