package kafka_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/secret"
	"github.com/sluicehq/sluice/internal/secret/secrettest"
	"github.com/sluicehq/sluice/sinks/kafka"
)

const (
	password      = "kafka-Pw-7rX2"
	wrongPassword = "not-the-Pw-9qK"
)

// cluster starts the in-process Kafka stand-in with one broker, topic
// "events" (one partition) and opts.
func cluster(t *testing.T, opts ...kfake.Opt) []string {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(1, "events")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// sink decodes a kafka sink config the way the config loader does, so
// secrets come from where the YAML says.
func sink(t *testing.T, brokers []string, yaml string) *kafka.Sink {
	t.Helper()
	var cfg kafka.Config
	text := fmt.Sprintf("brokers: [%s]\ntopic: events\nkey: \"{3}\"\n%s", strings.Join(brokers, ", "), yaml)
	if !strings.Contains(yaml, "timeout:") {
		text += "timeout: 5s\n"
	}
	if _, err := conf.Decode("sluice.yaml", []byte(text), &cfg); err != nil {
		t.Fatalf("config:\n%s\n%v", text, err)
	}
	s := kafka.New(cfg, 10)
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// readEvents reads want records from partition 0 of "events" as a consumer
// with dialer's TLS and SASL would.
func readEvents(t *testing.T, brokers []string, dialer *kafkago.Dialer, want int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: brokers, Topic: "events", Partition: 0, Dialer: dialer, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	var got []string
	for len(got) < want {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read %d of %d records: %v", len(got), want, err)
		}
		got = append(got, string(m.Key))
	}
	return got
}

func batch() []sluice.Event {
	return []sluice.Event{event(sluice.StreamRaw, "b1", `{"t":1}`), event(sluice.StreamRaw, "b2", `{"t":2}`)}
}

// wantRetryable checks that err is a retryable failure whose text says what
// to look at and shows no password.
func wantRetryable(t *testing.T, err error, says ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	t.Logf("error: %v", err)
	if sluice.IsPermanent(err) {
		t.Errorf("permanent, want retryable: %v", err)
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error does not say %q: %v", s, err)
		}
	}
	if strings.Contains(err.Error(), password) || strings.Contains(err.Error(), wrongPassword) {
		t.Errorf("error shows a password: %v", err)
	}
}

func TestSASL(t *testing.T) {
	ctx := context.Background()
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			brokers := cluster(t, kfake.EnableSASL(), kfake.Superuser(mech, "sluice", password))
			t.Setenv("KAFKA_TEST_PASSWORD", password)
			t.Setenv("KAFKA_TEST_WRONG", wrongPassword)

			ok := sink(t, brokers, "sasl: {mechanism: "+mech+", username: sluice, password: {env: KAFKA_TEST_PASSWORD}}\n")
			if err := ok.Connect(ctx); err != nil {
				t.Fatal(err)
			}
			if err := ok.Write(ctx, batch()); err != nil {
				t.Fatal(err)
			}
			var m sasl.Mechanism = plain.Mechanism{Username: "sluice", Password: password}
			if mech != "PLAIN" {
				algo := scram.SHA256
				if mech == "SCRAM-SHA-512" {
					algo = scram.SHA512
				}
				var err error
				if m, err = scram.Mechanism(algo, "sluice", password); err != nil {
					t.Fatal(err)
				}
			}
			dialer := &kafkago.Dialer{Timeout: 5 * time.Second, SASLMechanism: m}
			if got := readEvents(t, brokers, dialer, 2); strings.Join(got, ",") != "b1,b2" {
				t.Fatalf("records %v", got)
			}

			wrong := sink(t, brokers, "sasl: {mechanism: "+mech+", username: sluice, password: {env: KAFKA_TEST_WRONG}}\n")
			says := []string{"SASL " + mech + ` authentication as "sluice" (password from env KAFKA_TEST_WRONG) failed`}
			wantRetryable(t, wrong.Connect(ctx), says...)
			wantRetryable(t, wrong.Write(ctx, batch()), says...)

			// No sasl section at all: the brokers refuse, and that is
			// retried too.
			none := sink(t, brokers, "")
			wantRetryable(t, none.Write(ctx, batch()))
		})
	}
}

func TestTLS(t *testing.T) {
	ctx := context.Background()
	ca, other := secrettest.NewCA(t, "kafka"), secrettest.NewCA(t, "other")
	server := ca.Server(t, "127.0.0.1", "localhost")
	brokers := cluster(t, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{server.TLS}, MinVersion: tls.VersionTLS12}))
	caPool := &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}

	t.Run("the broker's CA is trusted", func(t *testing.T) {
		s := sink(t, brokers, "tls: {ca_file: "+ca.CertFile+"}\n")
		if err := s.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.Write(ctx, batch()); err != nil {
			t.Fatal(err)
		}
		if got := readEvents(t, brokers, &kafkago.Dialer{Timeout: 5 * time.Second, TLS: caPool}, 2); strings.Join(got, ",") != "b1,b2" {
			t.Fatalf("records %v", got)
		}
	})

	for _, c := range []struct{ name, yaml string }{
		{"another CA", "tls: {ca_file: " + other.CertFile + "}\n"},
		{"the system roots", "tls: {}\n"},
		{"a server name the certificate lacks", "tls: {ca_file: " + ca.CertFile + ", server_name: kafka.example}\n"},
	} {
		t.Run("refused with "+c.name, func(t *testing.T) {
			s := sink(t, brokers, c.yaml)
			wantRetryable(t, s.Connect(ctx), "TLS with the brokers failed", "certificate")
			wantRetryable(t, s.Write(ctx, batch()), "TLS with the brokers failed", "certificate")
		})
	}

	t.Run("insecure_skip_verify takes any certificate", func(t *testing.T) {
		s := sink(t, brokers, "tls: {insecure_skip_verify: true}\n")
		if err := s.Write(ctx, batch()); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("plaintext to a TLS broker is retried", func(t *testing.T) {
		s := sink(t, brokers, "")
		wantRetryable(t, s.Write(ctx, batch()))
	})

	t.Run("TLS to a plaintext broker is retried", func(t *testing.T) {
		// The broker waits for the rest of what it takes for a request:
		// the client sees a timeout, not a TLS error.
		s := sink(t, cluster(t), "tls: {ca_file: "+ca.CertFile+"}\ntimeout: 1s\n")
		wantRetryable(t, s.Write(ctx, batch()))
	})

	t.Run("a missing CA file is retried, and named", func(t *testing.T) {
		s := sink(t, brokers, "tls: {ca_file: /nonexistent/ca.pem}\n")
		wantRetryable(t, s.Connect(ctx), "/nonexistent/ca.pem")
		wantRetryable(t, s.Write(ctx, batch()), "/nonexistent/ca.pem")
	})
}

func TestMutualTLSWithSCRAM(t *testing.T) {
	ctx := context.Background()
	ca, other := secrettest.NewCA(t, "kafka"), secrettest.NewCA(t, "other")
	server := ca.Server(t, "127.0.0.1")
	client, stranger := ca.Client(t, "sluice"), other.Client(t, "sluice")
	brokers := cluster(t,
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{server.TLS}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool}),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "sluice", password))
	t.Setenv("KAFKA_TEST_PASSWORD", password)
	sasl := "sasl: {mechanism: SCRAM-SHA-512, username: sluice, password: {env: KAFKA_TEST_PASSWORD}}\n"

	t.Run("with the client certificate", func(t *testing.T) {
		s := sink(t, brokers, fmt.Sprintf("tls: {ca_file: %s, cert_file: %s, key_file: %s}\n%s", ca.CertFile, client.CertFile, client.KeyFile, sasl))
		if err := s.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.Write(ctx, batch()); err != nil {
			t.Fatal(err)
		}
		m, err := scram.Mechanism(scram.SHA512, "sluice", password)
		if err != nil {
			t.Fatal(err)
		}
		dialer := &kafkago.Dialer{Timeout: 5 * time.Second, SASLMechanism: m,
			TLS: &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{client.TLS}, MinVersion: tls.VersionTLS12}}
		if got := readEvents(t, brokers, dialer, 2); strings.Join(got, ",") != "b1,b2" {
			t.Fatalf("records %v", got)
		}
	})

	for _, c := range []struct{ name, yaml string }{
		{"no client certificate", fmt.Sprintf("tls: {ca_file: %s}\n%s", ca.CertFile, sasl)},
		{"a client certificate of another CA", fmt.Sprintf("tls: {ca_file: %s, cert_file: %s, key_file: %s}\n%s", ca.CertFile, stranger.CertFile, stranger.KeyFile, sasl)},
	} {
		t.Run("refused with "+c.name, func(t *testing.T) {
			s := sink(t, brokers, c.yaml)
			wantRetryable(t, s.Connect(ctx), "TLS with the brokers failed")
			wantRetryable(t, s.Write(ctx, batch()), "TLS with the brokers failed")
		})
	}
}

// TestConfigNeverShowsThePassword formats a config with a password every way
// a log line or an error might, and the sink holding it.
func TestConfigNeverShowsThePassword(t *testing.T) {
	cfg := kafka.Config{Brokers: []string{"127.0.0.1:1"}, Topic: "events", TLS: &secret.TLS{CAFile: "ca.pem"},
		SASL: &kafka.SASLConfig{Mechanism: "PLAIN", Username: "sluice", Password: secret.New(password)}}
	s := kafka.New(cfg, 10)
	defer s.Close(context.Background())
	s.Connect(context.Background()) // sets up the writer, with the password inside
	j, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("sink", "config", cfg, "sasl", cfg.SASL, "sink", s)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("sink", "config", cfg, "sasl", cfg.SASL)
	for _, out := range []string{
		fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg),
		fmt.Sprintf("%v", *cfg.SASL), fmt.Sprintf("%+v", *cfg.SASL), fmt.Sprintf("%#v", *cfg.SASL),
		fmt.Sprintf("%v", s), fmt.Sprintf("%+v", s), string(j), logged.String(),
	} {
		if strings.Contains(out, password) {
			t.Errorf("password shown: %s", out)
		}
		if !strings.Contains(out, "events") && !strings.Contains(out, "sluice") {
			t.Errorf("nothing printed? %s", out)
		}
	}
}

func TestValidateSecurity(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		{"sasl without a password", "sasl: {mechanism: PLAIN, username: u}",
			`sluice.yaml:4:1: sasl: missing required key "password"`},
		{"unknown mechanism", "sasl: {mechanism: GSSAPI, username: u, password: p}",
			`sluice.yaml:4:8: sasl.mechanism: "GSSAPI": want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512`},
		{"a password SCRAM cannot take", "sasl: {mechanism: SCRAM-SHA-256, username: u, password: \"" + password + "\\u0007\"}",
			"sluice.yaml:4:47: sasl.password: the username or password holds characters SCRAM does not allow (SASLprep)"},
		{"a certificate without its key", "tls: {cert_file: c.pem}",
			"sluice.yaml:4:7: tls.cert_file: needs key_file: the client certificate's private key"},
		{"an unset variable", "sasl: {mechanism: PLAIN, username: u, password: {env: KAFKA_TEST_NOSUCH}}",
			"sluice.yaml:4:55: sasl.password.env: environment variable KAFKA_TEST_NOSUCH is not set"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var cfg kafka.Config
			_, err := conf.Decode("sluice.yaml", []byte("brokers: [a:9092]\ntopic: t\ntimeout: 5s\n"+c.yaml+"\n"), &cfg)
			if err == nil || err.Error() != c.want {
				t.Fatalf("got  %v\nwant %s", err, c.want)
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}
