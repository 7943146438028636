package console

import (
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Point is one sample of the overview's charts: rates over the time since
// the sample before, and the end-to-end latency of that time.
type Point struct {
	Time time.Time `json:"time"`
	// In is the messages received per second; Out the events the sinks
	// wrote per second; DeadLetters the dead letters per second.
	In          float64 `json:"in"`
	Out         float64 `json:"out"`
	DeadLetters float64 `json:"dead_letters"`
	// P50 and P99 are the receipt-to-sink latency's quantiles, in
	// seconds, over the messages acknowledged in the interval (NaN, sent
	// as null, when none was).
	P50 *float64 `json:"p50"`
	P99 *float64 `json:"p99"`
}

// samples keeps the last points, and the counters they were taken from.
type samples struct {
	mu     sync.Mutex
	max    int
	points []Point
	last   counters
}

type counters struct {
	at                   time.Time
	in, out, deadLetters float64
	buckets              []bucket // the latency histogram, cumulative
}

type bucket struct {
	le    float64
	count uint64
}

func newSamples(n int) *samples { return &samples{max: n} }

// take samples the metrics at now and adds a point (from the second
// sample on).
func (s *samples) take(g prometheus.Gatherer, now time.Time) {
	families, err := g.Gather()
	if err != nil {
		return
	}
	c := counters{at: now}
	for _, f := range families {
		switch f.GetName() {
		case "sluice_messages_received_total":
			c.in = sum(f)
		case "sluice_sink_events_written_total":
			c.out = sum(f)
		case "sluice_dead_letters_total":
			c.deadLetters = sum(f)
		case "sluice_ack_latency_seconds":
			for _, m := range f.GetMetric() {
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					c.buckets = append(c.buckets, bucket{le: b.GetUpperBound(), count: b.GetCumulativeCount()})
				}
				c.buckets = append(c.buckets, bucket{le: math.Inf(1), count: h.GetSampleCount()})
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.last
	s.last = c
	if prev.at.IsZero() {
		return
	}
	secs := now.Sub(prev.at).Seconds()
	rate := func(now, before float64) float64 {
		if secs <= 0 || now < before {
			return 0
		}
		return (now - before) / secs
	}
	p := Point{Time: now, In: rate(c.in, prev.in), Out: rate(c.out, prev.out), DeadLetters: rate(c.deadLetters, prev.deadLetters),
		P50: quantile(0.5, c.buckets, prev.buckets), P99: quantile(0.99, c.buckets, prev.buckets)}
	if len(s.points) >= s.max {
		s.points = append(s.points[:0], s.points[1:]...)
	}
	s.points = append(s.points, p)
}

func sum(f *dto.MetricFamily) float64 {
	var t float64
	for _, m := range f.GetMetric() {
		t += m.GetCounter().GetValue()
	}
	return t
}

// quantile estimates the q-quantile of the observations between two reads
// of a cumulative histogram, interpolating within the bucket it falls in
// (as Prometheus' histogram_quantile does); nil when there were none.
func quantile(q float64, now, before []bucket) *float64 {
	if len(now) == 0 || len(before) != len(now) {
		return nil
	}
	total := float64(now[len(now)-1].count - before[len(before)-1].count)
	if total <= 0 {
		return nil
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for i, b := range now {
		count := float64(b.count - before[i].count)
		if count >= rank {
			v := b.le
			if !math.IsInf(b.le, 1) && count > below {
				v = lower + (b.le-lower)*(rank-below)/(count-below)
			} else if math.IsInf(b.le, 1) {
				v = lower
			}
			return &v
		}
		lower, below = b.le, count
	}
	return nil
}

// Overview is what GET /api/v1/overview answers: the charts' points,
// oldest first, SampleEvery apart (the sinks' state is /api/v1/status's).
type Overview struct {
	Every  float64 `json:"every_seconds"`
	Points []Point `json:"points"`
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request) {
	s.samples.mu.Lock()
	v := Overview{Every: s.o.SampleEvery.Seconds(), Points: append([]Point{}, s.samples.points...)}
	s.samples.mu.Unlock()
	writeJSON(w, http.StatusOK, v)
}
