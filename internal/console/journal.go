package console

import (
	"bufio"
	"encoding/json"
	"net/http"
	"time"

	"github.com/sluicehq/sluice"
)

// JournalLine is one line of GET /api/v1/journal/messages (JSON lines): a
// message, in sluice's own encoding (base64 in JSON), exact to the byte and
// the nanosecond; then a last line with End set, or Error.
type JournalLine struct {
	Seq     uint64 `json:"seq,omitempty"`
	Message []byte `json:"message,omitempty"`
	// End closes a complete answer: how many messages, and the time of
	// the oldest record the journal held (where a look back can start).
	End      bool      `json:"end,omitempty"`
	Messages int       `json:"messages,omitempty"`
	Oldest   time.Time `json:"oldest,omitzero"`
	Error    string    `json:"error,omitempty"`
}

// journalMessages streams the messages a pipeline's journal holds received
// at or after since (RFC 3339): what sluice replay runs candidate rules
// over. The journal keeps them for journal.retention after the sinks are
// done with them.
func (s *Server) journalMessages(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	pipeline := q.Get("pipeline")
	if s.o.Backend.Rules(pipeline) == nil {
		apiError(w, http.StatusNotFound, "no pipeline %q", pipeline)
		return
	}
	var since time.Time
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			apiError(w, http.StatusBadRequest, "since: want a time such as 2026-01-02T15:04:05Z: %v", err)
			return
		}
		since = t
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	bw := bufio.NewWriterSize(w, 64<<10)
	defer bw.Flush()
	enc := json.NewEncoder(bw)
	n := 0
	var buf []byte
	oldest, err := s.o.Backend.Messages(r.Context(), pipeline, since, func(seq uint64, msg *sluice.Message) error {
		n++
		buf = msg.AppendBinary(buf[:0])
		return enc.Encode(JournalLine{Seq: seq, Message: buf})
	})
	if err != nil {
		enc.Encode(JournalLine{Error: err.Error()})
		return
	}
	enc.Encode(JournalLine{End: true, Messages: n, Oldest: oldest})
}
