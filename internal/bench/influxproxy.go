package bench

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// influxProxy stands between sluice's InfluxDB sink and influxd, and sees
// each write acknowledged: when influxd answers a write with 2xx, every
// point in it is stored, and the proxy records each record point's latency
// from its time (sent_us, the publish; the bench config makes it the
// point's time) to that moment. That is the sink acknowledgement, one
// loopback hop early. Alert points (measurement "alerts") are counted
// apart: their time is the alert's.
type influxProxy struct {
	target string
	srv    *http.Server
	ln     net.Listener
	client *http.Client

	points, alerts atomic.Int64
	lat            recorder
}

func startInfluxProxy(target string) (*influxProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &influxProxy{target: target, ln: ln, client: &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true},
	}}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(ln)
	return p, nil
}

func (p *influxProxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *influxProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := p.client.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 && r.URL.Path == "/api/v2/write" {
		p.written(body, r.Header.Get("Content-Encoding") == "gzip", r.URL.Query().Get("precision"), time.Now())
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// written notes the points of an acknowledged write body (line protocol:
// the timestamp is the last space-separated token of a line).
func (p *influxProxy) written(body []byte, gzipped bool, precision string, at time.Time) {
	if gzipped {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return
		}
		if body, err = io.ReadAll(zr); err != nil {
			return
		}
	}
	unit := time.Nanosecond
	switch precision {
	case "us":
		unit = time.Microsecond
	case "ms":
		unit = time.Millisecond
	case "s":
		unit = time.Second
	}
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		if len(line) == 0 {
			continue
		}
		if bytes.HasPrefix(line, []byte("alerts,")) || bytes.HasPrefix(line, []byte("alerts ")) {
			p.alerts.Add(1)
			continue
		}
		p.points.Add(1)
		sp := bytes.LastIndexByte(line, ' ')
		ts, err := strconv.ParseInt(string(line[sp+1:]), 10, 64)
		if sp < 0 || err != nil {
			continue
		}
		p.lat.record(at.Sub(time.Unix(0, ts*int64(unit))))
	}
}

func (p *influxProxy) close(ctx context.Context) error {
	err := p.srv.Shutdown(ctx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
