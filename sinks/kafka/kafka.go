// Package kafka is the Kafka sink: it writes events to one Kafka topic with
// segmentio/kafka-go's synchronous Writer, one WriteMessages call per batch,
// so the result of every write drives the acknowledgement of its messages.
// Connections may be TLS (mutual TLS with a client certificate) and
// authenticated with SASL PLAIN or SCRAM.
package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"reflect"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/secret"
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
	// TLS, when set, encrypts the connections to the brokers; omitted, they
	// are plaintext.
	TLS *secret.TLS `yaml:"tls"`
	// SASL, when set, authenticates sluice to the brokers.
	SASL *SASLConfig `yaml:"sasl"`
}

// SASLConfig authenticates sluice to the brokers.
type SASLConfig struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512. PLAIN sends the
	// password as it is: use it over TLS.
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	// Password is inline, {env: NAME} or {file: PATH}.
	Password secret.String `yaml:"password"`
}

// Validate checks the settings.
func (c *SASLConfig) Validate() error {
	var p conf.Problems
	switch c.Mechanism {
	case "":
		p.Missing("mechanism")
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
	default:
		p.Addf("mechanism", "%q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", c.Mechanism)
	}
	if c.Username == "" {
		p.Missing("username")
	}
	if !c.Password.IsSet() {
		p.Missing("password")
	} else if c.Mechanism == "SCRAM-SHA-256" || c.Mechanism == "SCRAM-SHA-512" {
		if _, err := c.mechanism(); err != nil {
			p.Addf("password", "%v", err)
		}
	}
	return p.Err()
}

// mechanism returns the kafka-go SASL mechanism. Its errors never carry the
// password (the SCRAM library's would).
func (c *SASLConfig) mechanism() (sasl.Mechanism, error) {
	algo := scram.SHA256
	switch c.Mechanism {
	case "PLAIN":
		return plain.Mechanism{Username: c.Username, Password: c.Password.Reveal()}, nil
	case "SCRAM-SHA-256":
	case "SCRAM-SHA-512":
		algo = scram.SHA512
	default:
		return nil, fmt.Errorf("unknown SASL mechanism %q", c.Mechanism)
	}
	m, err := scram.Mechanism(algo, c.Username, c.Password.Reveal())
	if err != nil {
		// SASLprep refused the username or the password (control
		// characters, unassigned code points); the library's message
		// quotes them.
		return nil, errors.New("the username or password holds characters SCRAM does not allow (SASLprep)")
	}
	return m, nil
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
	if c.TLS != nil {
		p.Nest("tls", c.TLS.Validate())
	}
	if c.SASL != nil {
		p.Nest("sasl", c.SASL.Validate())
	}
	return p.Err()
}

// batchBytes is the most a batch (and so a message) may hold: Kafka's
// default message.max.bytes.
const batchBytes = 1 << 20

// Sink writes events to Kafka.
type Sink struct {
	cfg      Config
	key      *tmpl.Template
	maxBatch int

	// arenas holds the encoders of batches written (arena).
	arenas sync.Pool

	mu        sync.Mutex
	closed    bool
	writer    *kafkago.Writer // nil until set up
	transport *kafkago.Transport
	dialer    *kafkago.Dialer
}

// New returns a sink for cfg (validated) that is given batches of at most
// maxBatch events. It does no I/O: the TLS files are read by Connect or the
// first Write.
func New(cfg Config, maxBatch int) *Sink {
	cfg.SetDefaults()
	s := &Sink{cfg: cfg, maxBatch: maxBatch}
	if cfg.Key != "" {
		s.key = tmpl.MustParse(cfg.Key)
	}
	return s
}

// setup reads the TLS files and makes the writer, once it succeeds: until
// then every Connect and Write tries again, so a fixed file is picked up
// without a restart.
func (s *Sink) setup() (*kafkago.Writer, *kafkago.Dialer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, errors.New("sink closed")
	}
	if s.writer != nil {
		return s.writer, s.dialer, nil
	}
	var tlsCfg *tls.Config
	var mech sasl.Mechanism
	var err error
	if s.cfg.TLS != nil {
		if tlsCfg, err = s.cfg.TLS.Load(); err != nil {
			return nil, nil, err
		}
	}
	if s.cfg.SASL != nil {
		if mech, err = s.cfg.SASL.mechanism(); err != nil {
			return nil, nil, fmt.Errorf("sasl: %w", err)
		}
	}
	cfg := s.cfg
	s.transport = &kafkago.Transport{DialTimeout: cfg.Timeout, TLS: tlsCfg, SASL: mech}
	s.dialer = &kafkago.Dialer{Timeout: cfg.Timeout, DualStack: true, TLS: tlsCfg, SASLMechanism: mech}
	s.writer = &kafkago.Writer{
		Addr:      kafkago.TCP(cfg.Brokers...),
		Transport: s.transport,
		Topic:     cfg.Topic,
		// The same partitioner as the Java client, so a key lands on the
		// same partition whoever produced it.
		Balancer:     &kafkago.Murmur2Balancer{},
		RequiredAcks: acksValues[cfg.Acks],
		Compression:  compressionValues[cfg.Compression],
		// sluice batches before calling WriteMessages; kafka-go must not wait
		// for more (it waits BatchTimeout for a partition batch that is not
		// full), nor retry behind our back: our retries are classified.
		// kafka-go allocates BatchSize messages for the batch of every
		// partition a call writes to, however few it gets: with batches of
		// 5,000 and 3 partitions that was 2.3 MB per call, most of what
		// sluice allocated at 20,000 msg/s (more with more partitions). A
		// partition given more than partitionBatch messages in one call
		// gets several requests, written one after the other.
		BatchSize:              min(max(s.maxBatch, 1), partitionBatch),
		BatchBytes:             batchBytes,
		BatchTimeout:           time.Millisecond,
		MaxAttempts:            1,
		WriteTimeout:           cfg.Timeout,
		ReadTimeout:            cfg.Timeout,
		AllowAutoTopicCreation: cfg.AutoCreateTopic,
	}
	return s.writer, s.dialer, nil
}

// Connect checks that a broker answers (over TLS and authenticated, when
// configured) and the topic exists (or may be created), within the sink's
// timeout (or ctx, if sooner).
func (s *Sink) Connect(ctx context.Context) error {
	_, dialer, err := s.setup()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var errs []error
	for _, b := range s.cfg.Brokers {
		conn, err := dial(ctx, dialer, b)
		if err != nil {
			errs = append(errs, s.explain(err))
			continue
		}
		_, err = conn.ReadPartitions(s.cfg.Topic)
		conn.Close()
		if err == nil || s.cfg.AutoCreateTopic {
			return nil
		}
		if ctx.Err() != nil {
			errs = append(errs, fmt.Errorf("%s: no answer within %v: %w", b, s.cfg.Timeout, err))
			break
		}
		return fmt.Errorf("topic %q: %w", s.cfg.Topic, err)
	}
	return fmt.Errorf("no broker could be reached: %w", errors.Join(errs...))
}

// dial connects to a broker the way dialer does, and makes everything done
// on the connection end with ctx: kafka-go's Conn bounds only the TCP (and
// TLS) connect by the context, not the requests that follow (the
// ApiVersions and SASL exchanges of the dial, ReadPartitions), so a broker
// that takes the connection and never answers would hold them for ever.
// The connection is closed when ctx ends: the caller's ctx must end when it
// is done with the connection.
func dial(ctx context.Context, dialer *kafkago.Dialer, broker string) (*kafkago.Conn, error) {
	d := *dialer
	d.DialFunc = func(dctx context.Context, network, address string) (net.Conn, error) {
		conn, err := (&net.Dialer{DualStack: dialer.DualStack, KeepAlive: dialer.KeepAlive}).DialContext(dctx, network, address)
		if err != nil {
			return nil, err
		}
		context.AfterFunc(ctx, func() { conn.Close() })
		return conn, nil
	}
	conn, err := d.DialContext(ctx, "tcp", broker)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: no answer: %w", broker, err)
		}
		return nil, err
	}
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	return conn, nil
}

// Write writes a batch in one synchronous call. Items Kafka rejects for good
// (too large, invalid) come back in a *sluice.BatchError as permanent; the
// others are written or retried.
func (s *Sink) Write(ctx context.Context, batch []sluice.Event) error {
	writer, dialer, err := s.setup()
	if err != nil {
		// A TLS file that is missing or bad: the events wait in the
		// journal while the operator fixes it.
		return sluice.Retryable(err, 0)
	}
	a, _ := s.arenas.Get().(*arena)
	if a == nil {
		a = new(arena)
	}
	defer func() {
		// kafka-go is done with the messages unless ctx ended the write.
		if ctx.Err() == nil {
			a.reset()
			s.arenas.Put(a)
		}
	}()
	bad := map[int]error{}
	for i := range batch {
		m, err := s.message(a, &batch[i])
		if err != nil {
			bad[i] = sluice.Permanent(err)
			continue
		}
		a.msgs = append(a.msgs, m)
		a.index = append(a.index, i)
	}
	msgs, index := a.msgs, a.index
	if len(msgs) > 0 {
		if err := writer.WriteMessages(ctx, msgs...); err != nil {
			var werrs kafkago.WriteErrors
			var tooLarge kafkago.MessageTooLargeError
			switch {
			case errors.As(err, &werrs):
				// kafka-go gives every message of a partition's request
				// the request's error, and Kafka does not say which
				// record made it refuse one: such messages share one
				// error value, which tells the writer to find the bad
				// one by writing halves, not to dead-letter them all.
				shared := map[error]error{}
				for i, e := range werrs {
					if e == nil {
						continue
					}
					if !reflect.TypeOf(e).Comparable() {
						bad[index[i]] = classify(s.explain(e))
						continue
					}
					if _, ok := shared[e]; !ok {
						shared[e] = classify(s.explain(e))
					}
					bad[index[i]] = shared[e]
				}
			case errors.As(err, &tooLarge):
				// kafka-go refuses the whole call; find the culprits and
				// let the rest be retried.
				for i := range msgs {
					if len(msgs[i].Key)+len(msgs[i].Value) > batchBytes {
						bad[index[i]] = sluice.Permanent(fmt.Errorf("message of %d bytes is larger than the batch limit", len(msgs[i].Value)))
					} else {
						bad[index[i]] = sluice.Retryable(err, 0)
					}
				}
			default:
				return classify(s.diagnose(ctx, dialer, err))
			}
		}
	}
	if len(bad) > 0 {
		return &sluice.BatchError{Errs: bad}
	}
	return nil
}

func (s *Sink) message(a *arena, e *sluice.Event) (kafkago.Message, error) {
	value, err := a.encode(e)
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
		m.Key = a.copy(k)
	}
	h := len(a.headers)
	a.header("mqtt.topic", e.Message.Topic)
	a.header("mqtt.client_id", e.Message.ClientID)
	a.header("sluice.stream", e.Stream.String())
	if e.ID != "" {
		// The same event written twice (after a crash, a failover) has the
		// same id: consumers that must not count twice drop repeats by it.
		a.header("sluice.id", e.ID)
	}
	if e.Message.ContentType != "" {
		a.header("content-type", e.Message.ContentType)
	}
	for _, p := range e.Message.UserProperties {
		a.header(p.Key, p.Value)
	}
	m.Headers = a.headersFrom(h)
	return m, nil
}

// Close flushes and closes the writer and its connections. It is idempotent.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.writer == nil {
		return nil
	}
	err := s.writer.Close()
	s.transport.CloseIdleConnections()
	return err
}

// partitionBatch bounds the messages of one produce request to a partition
// (see BatchSize above).
const partitionBatch = 256

// classify sorts a Kafka error: a message Kafka rejects as invalid or too
// large is permanent; anything else (network errors, leader elections,
// timeouts, failed authentication, unknown errors) is retried: credentials
// and certificates are fixed by the operator while the events wait.
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

// explain adds to a failure to authenticate, or to agree on TLS, what the
// operator has to check.
func (s *Sink) explain(err error) error {
	if e := s.securityFailure(err); e != nil {
		return e
	}
	return err
}

// securityFailure returns err with what to check when it is a failure to
// authenticate or to agree on TLS, and nil otherwise. It names the user and
// where the password came from, never the password.
func (s *Sink) securityFailure(err error) error {
	switch {
	case s.cfg.SASL != nil && (errors.Is(err, kafkago.SASLAuthenticationFailed) ||
		errors.Is(err, kafkago.UnsupportedSASLMechanism) || errors.Is(err, kafkago.IllegalSASLState)):
		c := s.cfg.SASL
		return fmt.Errorf("SASL %s authentication as %q (password from %s) failed; check sasl in the config and the user on the brokers: %w",
			c.Mechanism, c.Username, c.Password.Source(), err)
	case secret.IsTLSFailure(err):
		return fmt.Errorf("TLS with the brokers failed; check tls in the config (ca_file, cert_file, key_file, server_name): %w", err)
	}
	return nil
}

// diagnose explains a write that failed on the connection. A broker that
// refuses the SASL credentials may just hang up, and then the writer sees
// only a closed connection; so, with SASL configured, it dials a broker the
// way Connect does to find out whether the credentials are the cause.
func (s *Sink) diagnose(ctx context.Context, dialer *kafkago.Dialer, err error) error {
	if e := s.securityFailure(err); e != nil {
		return e
	}
	var kerr kafkago.Error
	if s.cfg.SASL == nil || ctx.Err() != nil || errors.As(err, &kerr) {
		return err // nothing to find out, or the broker answered
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	conn, derr := dial(ctx, dialer, s.cfg.Brokers[0])
	if derr != nil {
		if e := s.securityFailure(derr); e != nil {
			return fmt.Errorf("%w (the write failed with: %v)", e, err)
		}
		return err
	}
	conn.Close()
	return err
}
