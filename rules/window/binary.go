package window

import (
	"encoding/binary"
	"errors"
	"math"
)

// The windows are checkpointed (a cluster's changelog: docs/scaling.md) as
// their fields in a fixed order. AppendBinary appends a window's state;
// DecodeBinary reads it back into a window made for the same function and
// span, and returns what follows. The encoding is internal: the rule's
// fingerprint, checked by the caller, guarantees that the site that reads
// it is the one that wrote it.

// ErrState is returned for state that cannot be decoded.
var ErrState = errors.New("window: unreadable state")

type enc []byte

func (e enc) i64(v int64) enc   { return binary.AppendVarint(e, v) }
func (e enc) f64(v float64) enc { return binary.LittleEndian.AppendUint64(e, math.Float64bits(v)) }
func (e enc) bool(v bool) enc {
	if v {
		return append(e, 1)
	}
	return append(e, 0)
}
func (e enc) str(s string) enc { return append(binary.AppendUvarint(e, uint64(len(s))), s...) }

type dec struct {
	b   []byte
	err error
}

func (d *dec) i64() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = ErrState
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) f64() float64 {
	if len(d.b) < 8 {
		d.err = ErrState
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(d.b))
	d.b = d.b[8:]
	return v
}

func (d *dec) bool() bool {
	if len(d.b) < 1 {
		d.err = ErrState
		return false
	}
	v := d.b[0] != 0
	d.b = d.b[1:]
	return v
}

func (d *dec) str() string {
	n, k := binary.Uvarint(d.b)
	if k <= 0 || n > uint64(len(d.b)-k) {
		d.err = ErrState
		return ""
	}
	s := string(d.b[k : k+int(n)])
	d.b = d.b[k+int(n):]
	return s
}

func (d *dec) done() ([]byte, error) { return d.b, d.err }

func (r *ring) append(e enc) enc {
	return e.i64(r.width).i64(r.latest).i64(int64(r.cur)).bool(r.seen)
}

func (r *ring) decode(d *dec) {
	r.width, r.latest = d.i64(), d.i64()
	cur := d.i64()
	if cur < 0 || cur >= Buckets {
		d.err = ErrState
	}
	r.cur, r.seen = uint8(cur), d.bool()
}

// AppendBinary appends the state of l.
func (l *Last) AppendBinary(b []byte) []byte {
	return enc(b).f64(l.prev).i64(l.at).bool(l.set).i64(int64(l.kind)).bool(l.cset).f64(l.num).str(l.text)
}

// DecodeBinary reads a state written by AppendBinary into l.
func (l *Last) DecodeBinary(b []byte) ([]byte, error) {
	d := dec{b: b}
	l.prev, l.at, l.set = d.f64(), d.i64(), d.bool()
	l.kind, l.cset, l.num, l.text = kind(d.i64()), d.bool(), d.f64(), d.str()
	return d.done()
}

// AppendBinary appends the state of h.
func (h *Held) AppendBinary(b []byte) []byte {
	return enc(b).i64(h.since).i64(h.last).bool(h.on).bool(h.seen)
}

// DecodeBinary reads a state written by AppendBinary into h.
func (h *Held) DecodeBinary(b []byte) ([]byte, error) {
	d := dec{b: b}
	h.since, h.last, h.on, h.seen = d.i64(), d.i64(), d.bool(), d.bool()
	return d.done()
}

// AppendBinary appends the state of e.
func (e *EWMA) AppendBinary(b []byte) []byte {
	return enc(b).f64(e.halfLife).f64(e.avg).i64(e.last).bool(e.set)
}

// DecodeBinary reads a state written by AppendBinary into e.
func (e *EWMA) DecodeBinary(b []byte) ([]byte, error) {
	d := dec{b: b}
	e.halfLife, e.avg, e.last, e.set = d.f64(), d.f64(), d.i64(), d.bool()
	return d.done()
}

// Only the slices that hold samples are written: a window that saw a few
// readings is a few bytes, not Buckets slices.

// AppendBinary appends the state of s.
func (s *Stats) AppendBinary(b []byte) []byte {
	e := s.ring.append(enc(b))
	for i := range s.b {
		if x := &s.b[i]; x.n > 0 {
			e = e.i64(int64(i)).i64(x.start).i64(x.n).f64(x.k).f64(x.s).f64(x.sq).f64(x.min).f64(x.max)
		}
	}
	return e.i64(-1)
}

// DecodeBinary reads a state written by AppendBinary into s.
func (s *Stats) DecodeBinary(b []byte) ([]byte, error) {
	d := dec{b: b}
	s.ring.decode(&d)
	s.b = [Buckets]statsBucket{}
	for i := bucket(&d); i >= 0; i = bucket(&d) {
		s.b[i] = statsBucket{start: d.i64(), n: d.i64(), k: d.f64(), s: d.f64(), sq: d.f64(), min: d.f64(), max: d.f64()}
	}
	return d.done()
}

// AppendBinary appends the state of q.
func (q *Quantiles) AppendBinary(b []byte) []byte {
	e := q.ring.append(enc(b))
	for i := range q.b {
		if x := &q.b[i]; x.n > 0 {
			e = e.i64(int64(i)).i64(x.start).i64(x.n)
			for _, v := range x.v[:min(x.n, SamplesPerBucket)] {
				e = e.f64(v)
			}
		}
	}
	return e.i64(-1)
}

// DecodeBinary reads a state written by AppendBinary into q.
func (q *Quantiles) DecodeBinary(b []byte) ([]byte, error) {
	d := dec{b: b}
	q.ring.decode(&d)
	q.b = [Buckets]quantBucket{}
	for i := bucket(&d); i >= 0; i = bucket(&d) {
		x := &q.b[i]
		x.start, x.n = d.i64(), d.i64()
		if x.n < 0 {
			d.err = ErrState
			break
		}
		for j := range min(x.n, SamplesPerBucket) {
			x.v[j] = d.f64()
		}
	}
	return d.done()
}

// AppendBinary appends the state of t.
func (t *Deriv) AppendBinary(b []byte) []byte {
	e := t.ring.append(enc(b))
	for i := range t.b {
		if x := &t.b[i]; x.n > 0 {
			e = e.i64(int64(i)).i64(x.start).i64(x.n).f64(x.k).f64(x.mt).f64(x.mv).f64(x.m2t).f64(x.ctv)
		}
	}
	return e.i64(-1)
}

// DecodeBinary reads a state written by AppendBinary into t.
func (t *Deriv) DecodeBinary(b []byte) ([]byte, error) {
	d := dec{b: b}
	t.ring.decode(&d)
	t.b = [Buckets]derivBucket{}
	for i := bucket(&d); i >= 0; i = bucket(&d) {
		t.b[i] = derivBucket{start: d.i64(), n: d.i64(), k: d.f64(), mt: d.f64(), mv: d.f64(), m2t: d.f64(), ctv: d.f64()}
	}
	return d.done()
}

// AppendBinary appends the state of w.
func (w *DeltaOver) AppendBinary(b []byte) []byte {
	e := w.ring.append(enc(b))
	for i := range w.b {
		if x := &w.b[i]; x.n > 0 {
			e = e.i64(int64(i)).i64(x.start).i64(x.n).f64(x.first).f64(x.last)
		}
	}
	return e.i64(-1)
}

// DecodeBinary reads a state written by AppendBinary into w.
func (w *DeltaOver) DecodeBinary(b []byte) ([]byte, error) {
	d := dec{b: b}
	w.ring.decode(&d)
	w.b = [Buckets]deltaBucket{}
	for i := bucket(&d); i >= 0; i = bucket(&d) {
		w.b[i] = deltaBucket{start: d.i64(), n: d.i64(), first: d.f64(), last: d.f64()}
	}
	return d.done()
}

// bucket reads the index of the next slice written, -1 at the end (or on
// an error).
func bucket(d *dec) int {
	i := d.i64()
	switch {
	case d.err != nil || i == -1:
		return -1
	case i < 0 || i >= Buckets:
		d.err = ErrState
		return -1
	}
	return int(i)
}
