package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/sluicehq/sluice/rules"
)

// tailBuffer is how many messages a watcher may have waiting to be sent
// before the tail drops (and counts) the next ones.
const tailBuffer = 256

// tailPing is how often an idle tail sends a comment, so that proxies and
// clients know the stream is alive.
const tailPing = 15 * time.Second

// tail streams the messages the rules evaluate, as server-sent events
// (text/event-stream), until the client goes:
//
//	event: message   data: a MessageView
//	event: dropped   data: {"dropped": N}  (N: total so far, when it grew)
//
// Query: topic (an MQTT topic filter), device, pipeline.
func (s *Server) tail(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := Filter{Pipeline: q.Get("pipeline"), Device: q.Get("device")}
	if t := q.Get("topic"); t != "" {
		tf, err := rules.ParseFilter(t)
		if err != nil {
			apiError(w, http.StatusBadRequest, "topic: %v", err)
			return
		}
		f.Topic = tf
	}
	if f.Pipeline != "" && s.o.Backend.Rules(f.Pipeline) == nil {
		apiError(w, http.StatusNotFound, "no pipeline %q", f.Pipeline)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		apiError(w, http.StatusInternalServerError, "streaming is not supported here")
		return
	}
	watch := s.o.Hub.Tap.Watch(f, tailBuffer)
	defer watch.Close()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, ": watching %s\n\n", describeFilter(f))
	flusher.Flush()
	limits := s.o.Backend.DecodeLimits()
	ping := time.NewTicker(tailPing)
	defer ping.Stop()
	var dropped uint64
	reportDrops := func() {
		if d := watch.Dropped(); d > dropped {
			dropped = d
			fmt.Fprintf(w, "event: dropped\ndata: {\"dropped\": %d}\n\n", d)
		}
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-ping.C:
			reportDrops()
			fmt.Fprint(w, ": ping\n\n")
		case ev := <-watch.C:
			reportDrops()
			b, err := json.Marshal(viewMessage(ev.Pipeline, ev.Message, ev.Events, ev.Set, limits))
			if err != nil {
				continue
			}
			fmt.Fprintf(w, "event: message\ndata: %s\n\n", b)
		}
		flusher.Flush()
	}
}

func describeFilter(f Filter) string {
	var parts []string
	if f.Pipeline != "" {
		parts = append(parts, "pipeline "+f.Pipeline)
	}
	if f.Topic != nil {
		parts = append(parts, "topic "+f.Topic.String())
	}
	if f.Device != "" {
		parts = append(parts, "device "+f.Device)
	}
	if len(parts) == 0 {
		return "every message"
	}
	return strings.Join(parts, ", ")
}
