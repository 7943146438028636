package rules

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/sluicehq/sluice"
)

// Series state can leave an evaluator and come back in another: a cluster
// checkpoints the series it changed after each transaction (Changes) and
// the next owner of a partition restores them (Restore) before it
// evaluates anything, so a window, an alert episode and a deadman's clock
// survive a node's death (docs/scaling.md).
//
// A key names the rule and the series: "<rule>\x00<series key>". A value
// holds the rule's fingerprint (state of a rule whose definition changed is
// not restored, as in a reload), what the series last saw, its alert and
// the state of each stateful call.

const stateVersion = 1

// stateful is what each stateful call's state can do to be checkpointed.
type checkpointed interface {
	AppendBinary(b []byte) []byte
	DecodeBinary(b []byte) ([]byte, error)
}

type seriesRef struct {
	rule int
	key  string
}

// TrackChanges makes the evaluator remember the series that change, for
// Changes. Without it (one node), nothing is remembered and nothing costs.
func (ev *Evaluator) TrackChanges() {
	if ev.changed == nil {
		ev.changed = map[seriesRef]struct{}{}
	}
}

func (ev *Evaluator) touch(rule int, key string) {
	if ev.changed != nil {
		ev.changed[seriesRef{rule, key}] = struct{}{}
	}
}

// Changes calls put for each series changed since the last call, with its
// key and its state; a nil value is a series that is gone (evicted after
// its ttl).
func (ev *Evaluator) Changes(put func(key, value []byte)) {
	var buf []byte
	for ref := range ev.changed {
		key := stateKey(ev.set.rules[ref.rule].name, ref.key)
		s := ev.states[ref.rule].series[ref.key]
		if s == nil {
			put(key, nil)
			continue
		}
		buf = ev.appendSeries(buf[:0], ev.set.rules[ref.rule], s)
		put(key, bytes.Clone(buf))
	}
	clear(ev.changed)
}

func stateKey(rule, series string) []byte {
	k := make([]byte, 0, len(rule)+1+len(series))
	k = append(k, rule...)
	k = append(k, 0)
	return append(k, series...)
}

// Restore puts back a series from its key and state as Changes gave them.
// It reports false for state it drops on purpose: of a rule no longer in
// the set, or whose definition changed.
func (ev *Evaluator) Restore(key, value []byte) (bool, error) {
	name, skey, ok := bytes.Cut(key, []byte{0})
	if !ok {
		return false, fmt.Errorf("rules: state key %q names no series", key)
	}
	i := -1
	for j, r := range ev.set.rules {
		if r.name == string(name) {
			i = j
			break
		}
	}
	if i < 0 {
		return false, nil
	}
	r := ev.set.rules[i]
	s, fingerprint, err := decodeSeries(r, value)
	if err != nil {
		return false, fmt.Errorf("rules: state of rule %q series %q: %w", r.name, skey, err)
	}
	if fingerprint != r.fingerprint {
		return false, nil
	}
	ev.states[i].series[string(skey)] = s
	if s.alert.phase == firing {
		ev.alertGen++
	}
	return true, nil
}

func (ev *Evaluator) appendSeries(b []byte, r *rule, s *series) []byte {
	b = append(b, stateVersion)
	b = appendStr(b, r.fingerprint)
	b = append(b, boolByte(s.heard))
	b = binary.AppendVarint(b, s.lastSeen)
	b = appendStr(b, s.topic)
	b = binary.AppendUvarint(b, uint64(len(s.tags)))
	for _, t := range s.tags {
		b = appendStr(appendStr(b, t.Key), t.Value)
	}
	a := &s.alert
	b = append(b, byte(a.phase))
	b = binary.AppendVarint(b, a.since)
	b = binary.AppendVarint(b, a.notified)
	b = binary.AppendVarint(b, int64(a.count))
	b = appendAny(b, a.value)
	b = binary.AppendUvarint(b, uint64(len(s.slots)))
	for _, st := range s.slots {
		c, ok := st.(checkpointed)
		b = append(b, boolByte(ok))
		if ok {
			b = c.AppendBinary(b)
		}
	}
	return b
}

var errState = errors.New("unreadable series state")

func decodeSeries(r *rule, b []byte) (*series, string, error) {
	d := stateDec{b: b}
	if v := d.byte(); v != stateVersion {
		return nil, "", fmt.Errorf("state version %d, want %d", v, stateVersion)
	}
	fingerprint := d.str()
	s := &series{heard: d.byte() == 1, lastSeen: d.varint(), topic: d.str()}
	if n := d.uvarint(); n > 0 && n <= uint64(len(d.b)) {
		s.tags = make([]sluice.Tag, n)
		for i := range s.tags {
			s.tags[i] = sluice.Tag{Key: d.str(), Value: d.str()}
		}
	}
	s.alert = alertState{phase: alertPhase(d.byte()), since: d.varint(), notified: d.varint(), count: int(d.varint()), value: d.any()}
	n := d.uvarint()
	if d.err != nil || fingerprint != r.fingerprint {
		return nil, fingerprint, d.err
	}
	if n != uint64(len(r.sites)) {
		return nil, "", fmt.Errorf("%d stateful calls, the rule has %d", n, len(r.sites))
	}
	s.slots = make([]any, n)
	for i := range s.slots {
		if d.byte() != 1 {
			continue
		}
		st := stateful[r.sites[i].fn].state(&r.sites[i])
		c, ok := st.(checkpointed)
		if !ok {
			return nil, "", fmt.Errorf("the state of %s cannot be restored", r.sites[i].fn)
		}
		rest, err := c.DecodeBinary(d.b)
		if err != nil {
			return nil, "", err
		}
		d.b = rest
		s.slots[i] = st
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errState
	}
	return s, fingerprint, d.err
}

func appendStr(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// appendAny appends a value as records carry them (normalize).
func appendAny(b []byte, v any) []byte {
	switch x := v.(type) {
	case float64:
		return binary.LittleEndian.AppendUint64(append(b, 'f'), math.Float64bits(x))
	case int64:
		return binary.AppendVarint(append(b, 'i'), x)
	case bool:
		return append(b, 'b', boolByte(x))
	case string:
		return appendStr(append(b, 's'), x)
	case nil:
		return append(b, 'n')
	}
	return appendStr(append(b, 's'), sluice.FormatValue(v))
}

type stateDec struct {
	b   []byte
	err error
}

func (d *stateDec) fail() {
	if d.err == nil {
		d.err = errState
	}
	d.b = nil
}

func (d *stateDec) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *stateDec) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *stateDec) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *stateDec) str() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *stateDec) any() any {
	switch d.byte() {
	case 'f':
		if len(d.b) < 8 {
			d.fail()
			return nil
		}
		v := math.Float64frombits(binary.LittleEndian.Uint64(d.b))
		d.b = d.b[8:]
		return v
	case 'i':
		return d.varint()
	case 'b':
		return d.byte() == 1
	case 's':
		return d.str()
	case 'n':
		return nil
	}
	d.fail()
	return nil
}
