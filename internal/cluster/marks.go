package cluster

import (
	"encoding/binary"
	"errors"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Marks tell, per partition, the last message seen from each origin (an
// ingest node's journal). The forwarder sends each origin's messages to a
// partition in order and without gaps, so a message at or below its
// origin's mark is a copy sent again after a restart: the rules drop it, and
// a reading is never counted twice. The marks are committed with the state.
type Marks struct {
	last map[string]uint64 // origin -> seq
}

func newMarks() *Marks { return &Marks{last: map[string]uint64{}} }

// fresh reports whether r is new, and marks it seen. A record without the
// headers (written by something else than a sluice forwarder) is new.
func (m *Marks) fresh(r *kgo.Record) bool {
	origin, seq := Origin(r)
	if origin == "" {
		return true
	}
	if last, ok := m.last[origin]; ok && seq <= last {
		return false
	}
	m.last[origin] = seq
	return true
}

// Origin returns where an ingest record's message was accepted: the origin
// of the journal and its seq there ("" and 0 for a record without them).
func Origin(r *kgo.Record) (string, uint64) {
	var origin string
	var seq uint64
	for _, h := range r.Headers {
		switch h.Key {
		case HeaderOrigin:
			origin = string(h.Value)
		case HeaderSeq:
			if len(h.Value) == 8 {
				seq = binary.BigEndian.Uint64(h.Value)
			}
		}
	}
	if seq == 0 {
		return "", 0
	}
	return origin, seq
}

// encode returns the partition's meta record: next (the offset of the next
// input the state does not include) and the marks.
func (m *Marks) encode(next int64) []byte {
	b := []byte{1}
	b = binary.AppendVarint(b, next)
	b = binary.AppendUvarint(b, uint64(len(m.last)))
	for origin, seq := range m.last {
		b = binary.AppendUvarint(b, uint64(len(origin)))
		b = append(b, origin...)
		b = binary.AppendUvarint(b, seq)
	}
	return b
}

var errMeta = errors.New("unreadable partition meta record")

func decodeMarks(b []byte) (int64, *Marks, error) {
	if len(b) == 0 || b[0] != 1 {
		return 0, nil, errMeta
	}
	b = b[1:]
	next, n := binary.Varint(b)
	if n <= 0 {
		return 0, nil, errMeta
	}
	b = b[n:]
	count, n := binary.Uvarint(b)
	if n <= 0 || count > uint64(len(b)) {
		return 0, nil, errMeta
	}
	b = b[n:]
	m := newMarks()
	for range count {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return 0, nil, errMeta
		}
		origin := string(b[n : n+int(l)])
		b = b[n+int(l):]
		seq, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, nil, errMeta
		}
		b = b[n:]
		m.last[origin] = seq
	}
	return next, m, nil
}
