package ingest

import (
	"log/slog"
	"net"

	"github.com/sluicehq/sluice/internal/metrics"
)

// PublishACL answers whether a client may publish to a topic. The broker's
// live ACL (Broker.CanPublish) is one, so one ACL file governs MQTT and the
// other sources (HTTP, CoAP).
type PublishACL interface {
	CanPublish(user, clientID, topic string) bool
}

// SourceOptions are what a source outside the broker (HTTP, CoAP) is given
// rather than configured with.
type SourceOptions struct {
	// Name labels the source in logs and as the listener label of metrics
	// (default: the source's kind).
	Name string
	// Handler takes each message into the pipelines.
	Handler Handler
	// ACL decides who may publish where; nil allows every client that
	// authenticated everything, as a broker without an ACL file does.
	ACL     PublishACL
	Logger  *slog.Logger
	Metrics *metrics.Metrics
}

// IsLoopback reports whether addr, a host:port or a bare host, is a
// loopback address (or localhost): one only this machine can reach.
func IsLoopback(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}
