package httpin

import (
	"errors"
	"io"
	"net"
	"net/http"
	"time"
)

// pacedBody bounds the time a request body may take by its size: after
// the first body_grace, it must arrive at min_body_rate at least. Each read
// sets the connection's read deadline to when the next byte is due, never
// past the request's read_timeout. Without it, an authenticated client
// that sends a body slowly, or stops, holds one of max_inflight's places
// for the whole read_timeout; with it, for body_grace plus the time its
// bytes take at min_body_rate.
type pacedBody struct {
	body  io.Reader
	rc    *http.ResponseController
	start time.Time
	grace time.Duration
	rate  float64   // bytes per second
	limit time.Time // start + read_timeout
	n     int64     // bytes read
	slow  bool      // the deadline ended a read
}

func (s *Source) paced(w http.ResponseWriter, r *http.Request, body io.Reader, start time.Time) *pacedBody {
	return &pacedBody{body: body, rc: http.NewResponseController(w), start: start, grace: s.cfg.BodyGrace,
		rate: float64(s.cfg.MinBodyRate), limit: start.Add(s.cfg.ReadTimeout)}
}

func (p *pacedBody) Read(b []byte) (int, error) {
	due := p.start.Add(p.grace + time.Duration(float64(p.n+1)/p.rate*float64(time.Second)))
	if due.After(p.limit) {
		due = p.limit
	}
	// Not supported (an unusual ResponseWriter): read_timeout still holds.
	_ = p.rc.SetReadDeadline(due)
	n, err := p.body.Read(b)
	p.n += int64(n)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		p.slow = true
	}
	return n, err
}

// done gives the connection back its request's own read deadline, once
// the body is read: net/http goes on reading the connection (to see a
// client go away) and would take a deadline passing as one.
func (p *pacedBody) done() { _ = p.rc.SetReadDeadline(p.limit) }
