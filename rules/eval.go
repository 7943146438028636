package rules

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr/vm"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/rules/decode"
)

// Evaluator runs a Set against messages and keeps the per-series state of
// one shard: stateful function windows and alert episodes. It is not safe for
// concurrent use: each worker has its own, and a series always goes to the
// same worker. Time comes from the messages (their receive time) and from
// Tick, so tests drive it with a simulated clock.
type Evaluator struct {
	set    *Set
	env    map[string]any
	vm     vm.VM
	ctx    callCtx
	states []*ruleState // per rule

	// per message
	filterState []int8            // per filter: 0 not checked, 1 matches, 2 does not
	filterVals  [][]string        // per filter: the named levels
	filterTags  [][]sluice.Tag    // per filter: the levels as record tags, built once per message
	filterAny   [][]any           // per filter: the levels boxed for env, once per message
	envFilter   int               // the filter whose levels are in env, -1 for none
	decoders    []*decode.Decoder // per chain: readings stay valid until their decoder's next use
	decoded     []bool            // per chain
	readings    [][]decode.Reading
	decErr      []error
	envReading  [2]int // chain and reading index in env, {-1,-1} for none
	// Payload fields in env, by slot (index into Set.fields): slotGen is
	// the load that last set each, slotSet whether env holds a value for
	// it. prevNames/prevSlots remember the last reading's names and slots,
	// so a stream of same-shaped payloads (interned names) skips the map.
	gen       uint32
	slotGen   []uint32
	slotSet   []bool
	prevNames []string
	prevSlots []int
	noProps   map[string]string

	evictions uint64
	// alertGen counts the changes to the set of firing series (see
	// AlertGeneration).
	alertGen uint64
	timer    func(rule int, d time.Duration)
	// changed lists the series changed since Changes last ran; nil unless
	// TrackChanges was called (a cluster checkpoints them).
	changed map[seriesRef]struct{}
	// only, when set, is the fields records carry (KeepFields).
	only *projection
}

// KeepFields makes the records carry only the fields named (after the
// rule's own keep, drop and rename), for sinks that write no others: a
// reading's other fields are not copied into its records. Alerts, the
// expressions and the state see every field as before. Nil: every field.
func (ev *Evaluator) KeepFields(names []string) {
	ev.only = nil
	if names != nil {
		ev.only = &projection{names: slices.Clone(names)}
	}
	ev.wants()
}

// wants has each decoder keep only the payload fields its rules read: the
// names their expressions read and, for a rule that makes records, what
// its records carry (every field, unless KeepFields said which). A
// payload's other fields are checked as before, but not made into values
// (sluice bench -job influx: 4 of 21).
func (ev *Evaluator) wants() {
	for c := range ev.set.chains {
		ev.decoders[c].Want(ev.chainWant(c))
	}
}

// chainWant says which payload fields the rules decoding with chain c read;
// nil: every field.
func (ev *Evaluator) chainWant(c int) func(name string) bool {
	s := ev.set
	if s.uses.payload {
		return nil // the payload map holds every field
	}
	var recs []*rule
	for _, r := range s.rules {
		if r.chain != c || !r.records {
			continue
		}
		if ev.only == nil {
			return nil
		}
		recs = append(recs, r)
	}
	slots, only := s.slots, ev.only
	return func(name string) bool {
		if _, ok := slots[name]; ok {
			return true
		}
		for _, r := range recs {
			if (r.keep != nil && !r.keep[name]) || r.drop[name] {
				continue
			}
			out := name
			if to, ok := r.rename[name]; ok {
				out = to
			}
			if slices.Contains(only.names, out) {
				return true
			}
		}
		return false
	}
}

// projection is the fields records keep (Evaluator.KeepFields). Readings
// of a stream of same-shaped payloads have their fields in the same order,
// with interned names: whether the field at a place is wanted is kept from
// one reading to the next, so most fields cost a string comparison that
// ends at their pointers.
type projection struct {
	names []string
	at    []string // the name last seen at each place of a reading
	want  []bool   // whether it is wanted
}

// wants reports whether the field name, at place i of its reading (-1: not
// from a reading), is wanted.
func (p *projection) wants(i int, name string) bool {
	if i >= 0 && i < len(p.at) && p.at[i] == name {
		return p.want[i]
	}
	w := slices.Contains(p.names, name)
	switch {
	case i >= 0 && i < len(p.at):
		p.at[i], p.want[i] = name, w
	case i == len(p.at) && i < 1024:
		p.at, p.want = append(p.at, name), append(p.want, w)
	}
	return w
}

// timingSample is how often a rule's evaluation is timed: one message in
// timingSample, so that timing costs the hot path next to nothing.
const timingSample = 16

// TimeRules has observe called with how long rule (an index into
// Set.Rules) took to evaluate one message, for one message in 16 per rule.
func (ev *Evaluator) TimeRules(observe func(rule int, d time.Duration)) { ev.timer = observe }

type ruleState struct {
	fingerprint string
	series      map[string]*series
	evictions   uint64
	evaluated   uint64 // readings evaluated (the topic matched)
	passed      uint64 // of those, readings that passed the where
	firing      int    // series whose alert is firing, as of the last Tick

	// most is the most series the map has held since it was made: a Go
	// map keeps the room of its most entries, so a map that held many
	// more than it does is made again (Tick).
	most int
}

// series is the state of one series (by default one device) for one rule.
type series struct {
	heard    bool // passed the rule's where at least once
	lastSeen int64
	topic    string
	tags     []sluice.Tag
	slots    []any // per stateful call site
	alert    alertState
}

type alertPhase uint8

const (
	idle alertPhase = iota
	pending
	firing
)

type alertState struct {
	phase    alertPhase
	since    int64 // pending since, or firing since
	notified int64
	count    int
	value    any // the value of the last notification
	// last is the last notification of a firing episode, for Firing (not
	// checkpointed: a series restored from a cluster's changelog has none
	// until its next notification).
	last *sluice.Alert
}

// Limits for decoding; see decode.Limits.
type Limits = decode.Limits

// NewEvaluator returns an Evaluator. When from is not nil, the state of
// every rule whose definition did not change is taken over from it (a
// reload); from must not be used afterwards.
func (s *Set) NewEvaluator(from *Evaluator, limits Limits) *Evaluator {
	ev := &Evaluator{
		set:         s,
		env:         make(map[string]any, 32+len(s.fields)),
		decoders:    make([]*decode.Decoder, len(s.chains)),
		filterAny:   make([][]any, len(s.filters)),
		slotGen:     make([]uint32, len(s.fields)),
		slotSet:     make([]bool, len(s.fields)),
		states:      make([]*ruleState, len(s.rules)),
		filterState: make([]int8, len(s.filters)),
		filterVals:  make([][]string, len(s.filters)),
		filterTags:  make([][]sluice.Tag, len(s.filters)),
		decoded:     make([]bool, len(s.chains)),
		readings:    make([][]decode.Reading, len(s.chains)),
		decErr:      make([]error, len(s.chains)),
		envReading:  [2]int{-1, -1},
		noProps:     map[string]string{},
	}
	ev.vm.MemoryBudget = memoryBudget
	ev.ctx.rnd = 0x5eed
	most := 0
	for _, r := range s.rules {
		most = max(most, len(r.sites))
	}
	ev.ctx.results = make([]any, most)
	ev.env[ctxKey] = &ev.ctx
	for i, f := range s.filters {
		ev.filterVals[i] = make([]string, len(f.Names()))
	}
	for i := range s.chains {
		ev.decoders[i] = decode.NewDecoder(limits)
	}
	ev.wants()
	old := map[string]*ruleState{}
	if from != nil {
		for _, st := range from.states {
			old[st.fingerprint] = st
		}
		ev.ctx.rnd = from.ctx.rnd
	}
	for i, r := range s.rules {
		if st, ok := old[r.fingerprint]; ok {
			ev.states[i] = st
			delete(old, r.fingerprint)
			continue
		}
		ev.states[i] = &ruleState{fingerprint: r.fingerprint, series: map[string]*series{}}
	}
	return ev
}

// Outcome summarises what the rules did with one message.
type Outcome struct {
	Matched  int // rules whose topic filter matched
	Filtered int // of those, rules that produced nothing (where was false)
	Failed   int // of those, rules that failed (decode or evaluation)
	// Undecoded counts, of the failed, rules that could not decode the payload.
	Undecoded int
}

// Eval evaluates every rule against msg and appends what they produce to
// out: a record per rule and reading that passed its filter, an alert per
// alert transition, a dead letter per failure. Events have no Ack set.
func (ev *Evaluator) Eval(msg *sluice.Message, out []sluice.Event) ([]sluice.Event, Outcome) {
	var o Outcome
	ev.startMessage(msg)
	now := msg.Received.UnixNano()
	for i, r := range ev.set.rules {
		var segs []string
		if r.filter >= 0 {
			if !ev.match(r.filter, msg.Topic) {
				continue
			}
			segs = ev.filterVals[r.filter]
		}
		o.Matched++
		readings, err := ev.decode(r, msg)
		if err != nil {
			o.Failed++
			o.Undecoded++
			out = append(out, deadLetter(msg, r.name, "decode", err))
			continue
		}
		produced, failed := false, false
		timed := ev.timer != nil && ev.states[i].evaluated%timingSample == 0
		var start time.Time
		if timed {
			start = time.Now()
		}
		ev.states[i].evaluated += uint64(len(readings))
		for j, reading := range readings {
			ev.load(r.chain, j, reading)
			n := len(out)
			out, err = ev.evalReading(i, r, msg, reading, segs, now, out)
			if err != nil {
				failed = true
				out = append(out, deadLetter(msg, r.name, "rule", ev.explain(err, reading)))
				continue
			}
			produced = produced || len(out) > n
		}
		if timed {
			ev.timer(i, time.Since(start))
		}
		switch {
		case failed:
			o.Failed++
		case !produced:
			o.Filtered++
		}
	}
	return out, o
}

func deadLetter(msg *sluice.Message, rule, stage string, err error) sluice.Event {
	return sluice.Event{
		Stream:     sluice.StreamDeadLetters,
		Message:    msg,
		DeadLetter: &sluice.DeadLetter{Stage: stage, Rule: rule, Reason: err.Error()},
	}
}

func (ev *Evaluator) startMessage(msg *sluice.Message) {
	clear(ev.filterState)
	clear(ev.filterTags)
	for i := range ev.filterAny {
		ev.filterAny[i] = ev.filterAny[i][:0]
	}
	clear(ev.decoded)
	ev.envFilter = -1
	ev.envReading = [2]int{-1, -1}
	// Only what some expression reads goes into the environment: boxing a
	// string costs an allocation.
	e, uses := ev.env, ev.set.uses
	if uses.topic {
		e["topic"] = msg.Topic
	}
	if uses.clientID {
		e["client_id"] = msg.ClientID
	}
	if uses.username {
		e["username"] = msg.Username
	}
	if uses.contentType {
		e["content_type"] = msg.ContentType
	}
	if uses.qos {
		e["qos"] = int(msg.QoS)
	}
	if uses.retain {
		e["retain"] = msg.Retain
	}
	if uses.received {
		e["received"] = msg.Received
	}
	if !uses.props {
		return
	}
	if len(msg.UserProperties) == 0 {
		e["props"] = ev.noProps
	} else {
		props := make(map[string]string, len(msg.UserProperties))
		for _, p := range msg.UserProperties {
			if _, ok := props[p.Key]; !ok {
				props[p.Key] = p.Value
			}
		}
		e["props"] = props
	}
}

func (ev *Evaluator) match(filter int, topic string) bool {
	switch ev.filterState[filter] {
	case 1:
		return true
	case 2:
		return false
	}
	ok := ev.set.filters[filter].Match(topic, ev.filterVals[filter])
	ev.filterState[filter] = 2
	if ok {
		ev.filterState[filter] = 1
	}
	return ok
}

// decode decodes the payload once per message for all rules using the same
// decoding.
func (ev *Evaluator) decode(r *rule, msg *sluice.Message) ([]decode.Reading, error) {
	c := r.chain
	if !ev.decoded[c] {
		ev.decoded[c] = true
		ev.readings[c], ev.decErr[c] = ev.decoders[c].Decode(ev.set.chains[c], msg.Payload,
			decode.Options{ContentType: msg.ContentType, Split: ev.set.splits[c]})
	}
	return ev.readings[c], ev.decErr[c]
}

// load puts a reading's fields that expressions read into the environment,
// and takes out those of the previous reading it does not have.
func (ev *Evaluator) load(chain, idx int, reading decode.Reading) {
	if ev.envReading == [2]int{chain, idx} {
		return
	}
	ev.envReading = [2]int{chain, idx}
	ev.gen++
	same := len(reading) == len(ev.prevNames)
	if !same {
		ev.prevNames = ev.prevNames[:0]
		ev.prevSlots = ev.prevSlots[:0]
	}
	for i, f := range reading {
		var slot int
		if same && f.Name == ev.prevNames[i] { // interned names compare by pointer
			slot = ev.prevSlots[i]
		} else {
			var ok bool
			if slot, ok = ev.set.slots[f.Name]; !ok {
				slot = -1
			}
			if same {
				ev.prevNames[i], ev.prevSlots[i] = f.Name, slot
			} else {
				ev.prevNames = append(ev.prevNames, f.Name)
				ev.prevSlots = append(ev.prevSlots, slot)
			}
		}
		if slot >= 0 {
			ev.env[f.Name] = f.Value
			ev.slotGen[slot], ev.slotSet[slot] = ev.gen, true
		}
	}
	for slot, set := range ev.slotSet {
		if set && ev.slotGen[slot] != ev.gen {
			delete(ev.env, ev.set.fields[slot])
			ev.slotSet[slot] = false
		}
	}
	if ev.set.uses.payload {
		p := make(map[string]any, len(reading))
		for _, f := range reading {
			p[f.Name] = f.Value
		}
		ev.env["payload"] = p
	}
}

// unload takes every payload field out of the environment.
func (ev *Evaluator) unload() {
	for slot, set := range ev.slotSet {
		if set {
			delete(ev.env, ev.set.fields[slot])
			ev.slotSet[slot] = false
		}
	}
	ev.envReading = [2]int{-1, -1}
}

// stageError says which part of a rule failed, and in which program.
type stageError struct {
	stage string
	err   error
	prog  *vm.Program
}

func (e *stageError) Error() string { return e.stage + ": " + e.err.Error() }
func (e *stageError) Unwrap() error { return e.err }

func (ev *Evaluator) evalReading(i int, r *rule, msg *sluice.Message, reading decode.Reading, segs []string, now int64, out []sluice.Event) ([]sluice.Event, error) {
	if r.filter >= 0 && ev.envFilter != r.filter {
		// Rules sharing a filter share its levels: box and set them once.
		ev.envFilter = r.filter
		boxed := ev.filterAny[r.filter]
		if len(boxed) == 0 {
			for _, v := range segs {
				boxed = append(boxed, v)
			}
			ev.filterAny[r.filter] = boxed
		}
		for j, k := range r.segKeys {
			ev.env[k] = boxed[j]
		}
	}
	var key string
	switch {
	case !r.needsSeries:
	case r.keySegment >= 0:
		key = segs[r.keySegment]
	default:
		v, err := ev.run(r.key)
		if err != nil {
			return out, &stageError{stage: "key", err: err, prog: r.key}
		}
		key = sluice.FormatValue(v)
	}
	// A series is kept only for rules that need one (stateful functions or
	// an alert), and, unless its where uses stateful functions, only once
	// it has passed the where: a boiler rule keeps no state for pumps.
	var s *series
	ev.ctx.rule, ev.ctx.series, ev.ctx.now = r, nil, now
	fed := 0 // the rule's sites fed this reading
	if r.whereSites {
		s = ev.series(i, r, key, now)
		if err := ev.feed(r, &fed, r.whereFeed); err != nil {
			return out, err
		}
	}
	if r.quickWhere != nil {
		if !ev.quick(r.quickWhere) {
			return out, nil
		}
	} else if r.where != nil {
		ok, err := ev.runBool(r.where, "where")
		if err != nil || !ok {
			return out, err
		}
	}
	ev.states[i].passed++
	if s == nil && r.needsSeries {
		s = ev.series(i, r, key, now)
	}
	var tags []sluice.Tag
	if len(r.segNames) > 0 {
		// Tags are read-only once made: records of rules sharing a filter
		// share them.
		if tags = ev.filterTags[r.filter]; tags == nil {
			tags = make([]sluice.Tag, len(r.segNames))
			for j, n := range r.segNames {
				tags[j] = sluice.Tag{Key: n, Value: segs[j]}
			}
			ev.filterTags[r.filter] = tags
		}
	}
	if s != nil {
		// A reading that arrives late (held in a journal while its node was
		// down) does not move the series' last-seen time back.
		s.heard, s.lastSeen, s.topic, s.tags = true, max(s.lastSeen, now), msg.Topic, tags
	}

	for _, d := range r.lets {
		if err := ev.feed(r, &fed, d.feed); err != nil {
			return out, err
		}
		v, err := ev.run(d.prog)
		if err != nil {
			return out, &stageError{stage: "let." + d.name, err: err, prog: d.prog}
		}
		ev.env[d.key] = v
	}
	for _, d := range r.fields {
		if err := ev.feed(r, &fed, d.feed); err != nil {
			return out, err
		}
		v, err := ev.run(d.prog)
		if err != nil {
			return out, &stageError{stage: "fields." + d.name, err: err, prog: d.prog}
		}
		ev.env[d.key] = normalize(v)
	}
	if r.alert != nil {
		if err := ev.feed(r, &fed, r.alert.feed); err != nil {
			return out, err
		}
	}
	if r.records {
		rec := &sluice.Record{Rule: r.name, Topic: msg.Topic, Time: msg.Received, Tags: tags, Fields: ev.recordFields(r, reading)}
		out = append(out, sluice.Event{Stream: sluice.StreamRecords, Message: msg, Record: rec})
	}
	if r.alert != nil {
		a, err := ev.alertOnMessage(r, key, s, now, msg.Topic)
		if err != nil {
			return out, err
		}
		if a != nil {
			out = append(out, sluice.Event{Stream: sluice.StreamAlerts, Message: msg, Alert: a})
		}
	}
	return out, nil
}

// series returns the state of a series of rule i, creating it.
func (ev *Evaluator) series(i int, r *rule, key string, now int64) *series {
	st := ev.states[i]
	s := st.series[key]
	if s == nil {
		s = &series{slots: make([]any, len(r.sites)), lastSeen: now}
		st.series[key] = s
		st.most = max(st.most, len(st.series))
	}
	ev.ctx.series = s
	ev.touch(i, key)
	return s
}

// recordFields builds a record's fields: the reading's fields (kept or
// dropped, converted and renamed as the rule says) and the derived fields.
func (ev *Evaluator) recordFields(r *rule, reading decode.Reading) []sluice.Field {
	only := ev.only
	n := len(reading) + len(r.fields)
	if only != nil {
		n = min(n, len(only.names))
	}
	fields := make([]sluice.Field, 0, n)
	plain := r.keep == nil && r.drop == nil && r.units == nil && r.rename == nil
	for i, f := range reading {
		if plain {
			if only == nil || only.wants(i, f.Name) {
				fields = append(fields, sluice.Field{Name: f.Name, Value: f.Value})
			}
			continue
		}
		if (r.keep != nil && !r.keep[f.Name]) || r.drop[f.Name] {
			continue
		}
		name, v := f.Name, f.Value
		if conv, ok := r.units[name]; ok {
			if x, isNum := v.(float64); isNum {
				v = conv.apply(x)
			}
		}
		if to, ok := r.rename[name]; ok {
			name = to
		}
		if only != nil && !only.wants(-1, name) {
			continue
		}
		fields = append(fields, sluice.Field{Name: name, Value: v})
	}
next:
	for _, d := range r.fields {
		if only != nil && !only.wants(-1, d.name) {
			continue
		}
		v := ev.env[d.key]
		if missing(v) {
			continue
		}
		for k := range fields {
			if fields[k].Name == d.name {
				fields[k].Value = v
				continue next
			}
		}
		fields = append(fields, sluice.Field{Name: d.name, Value: v})
	}
	return fields
}

func missing(v any) bool {
	if v == nil {
		return true
	}
	f, ok := v.(float64)
	return ok && math.IsNaN(f)
}

// alertOnMessage advances a series' alert on a new reading and returns the
// transition it causes, if any.
func (ev *Evaluator) alertOnMessage(r *rule, key string, s *series, now int64, topic string) (*sluice.Alert, error) {
	ar, st := r.alert, &s.alert
	if ar.absent > 0 {
		// Heard from: an absent alert resolves.
		if st.phase == firing {
			return ev.transition(r, key, s, now, sluice.AlertResolved)
		}
		return nil, nil
	}
	cond, err := ev.runBool(ar.when, "alert.when")
	if err != nil {
		return nil, err
	}
	switch st.phase {
	case firing:
		resolve := !cond
		if ar.clear != nil {
			if resolve, err = ev.runBool(ar.clear, "alert.clear"); err != nil {
				return nil, err
			}
		}
		switch {
		case resolve:
			return ev.transition(r, key, s, now, sluice.AlertResolved)
		case ar.renotify > 0 && now-st.notified >= int64(ar.renotify):
			return ev.transition(r, key, s, now, sluice.AlertFiring)
		}
	case pending:
		switch {
		case !cond:
			st.phase = idle
		case now-st.since >= int64(ar.hold):
			return ev.transition(r, key, s, now, sluice.AlertFiring)
		}
	case idle:
		if cond {
			if ar.hold == 0 {
				return ev.transition(r, key, s, now, sluice.AlertFiring)
			}
			st.phase, st.since = pending, now
		}
	}
	return nil, nil
}

// transition moves a series' alert to status at time at and returns the
// alert to send. A value or message that fails to evaluate does not stop the
// alert: the failure is reported in its place.
func (ev *Evaluator) transition(r *rule, key string, s *series, at int64, status string) (*sluice.Alert, error) {
	ar, st := r.alert, &s.alert
	a := &sluice.Alert{
		Rule: r.name, Severity: ar.severity, Status: status, Series: key, Device: key,
		Time: time.Unix(0, at), Topic: s.topic, Tags: s.tags,
	}
	if d, ok := findTag(s.tags, "device"); ok {
		a.Device = d
	}
	if ar.value != nil {
		if v, err := ev.run(ar.value); err == nil {
			a.Value = normalize(v)
		}
	}
	a.Message = ev.renderOrSay(ar.message)
	if len(ar.labels) > 0 {
		tags := append(make([]sluice.Tag, 0, len(s.tags)+len(ar.labels)), s.tags...)
		for _, l := range ar.labels {
			tags = append(tags, sluice.Tag{Key: l.key, Value: ev.renderOrSay(l.t)})
		}
		a.Tags = tags
	}
	switch {
	case status == sluice.AlertResolved:
		a.Since = time.Unix(0, st.since)
		*st = alertState{}
	case st.phase == firing: // a re-notification
		st.count++
		st.notified = at
		a.Since, a.Notification = time.Unix(0, st.since), st.count
	default:
		*st = alertState{phase: firing, since: at, notified: at, count: 1}
		a.Since, a.Notification = a.Time, 1
	}
	a.Episode = episode(r.name, key, a.Since)
	if st.phase == firing {
		st.value, st.last = a.Value, a
	}
	ev.alertGen++
	return a, nil
}

// episode identifies an alert episode by what defines it: the rule, the
// series and when it started firing. Every node that evaluates the series
// derives the same id, so sinks can drop a transition they already have.
func episode(rule, series string, since time.Time) string {
	h := fnv.New64a()
	h.Write([]byte(rule))
	h.Write([]byte{0})
	h.Write([]byte(series))
	h.Write([]byte{0})
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(since.UnixNano())))
	return strconv.FormatUint(h.Sum64(), 16)
}

func findTag(tags []sluice.Tag, key string) (string, bool) {
	for _, t := range tags {
		if t.Key == key {
			return t.Value, true
		}
	}
	return "", false
}

// Tick runs what time alone decides, at now: absent series fire their alert,
// firing alerts are re-notified, and series silent for longer than their
// rule's TTL are evicted (a firing alert is resolved as it goes, except an
// absent alert, which keeps firing for as long as the series stays away).
// It appends the alerts to out.
func (ev *Evaluator) Tick(now time.Time, out []sluice.Event) []sluice.Event {
	t := now.UnixNano()
	for i, r := range ev.set.rules {
		st := ev.states[i]
		st.firing = 0
		for key, s := range st.series {
			silent := t - s.lastSeen
			if r.alert != nil {
				out = ev.tickAlert(i, r, key, s, t, out)
			}
			if silent > int64(r.ttl) && !(r.alert != nil && r.alert.absent > 0 && s.alert.phase == firing) {
				if s.alert.phase == firing {
					a := &sluice.Alert{Rule: r.name, Severity: r.alert.severity, Status: sluice.AlertResolved,
						Series: key, Device: key, Time: now, Since: time.Unix(0, s.alert.since), Topic: s.topic, Tags: s.tags,
						Message: fmt.Sprintf("no data for %v: series state expired", r.ttl)}
					if d, ok := findTag(s.tags, "device"); ok {
						a.Device = d
					}
					a.Episode = episode(r.name, key, a.Since)
					out = append(out, sluice.Event{Stream: sluice.StreamAlerts, Message: &sluice.Message{Topic: s.topic, Received: now}, Alert: a})
					ev.alertGen++
				}
				delete(st.series, key)
				ev.touch(i, key)
				st.evictions++
				ev.evictions++
				continue
			}
			if s.alert.phase == firing {
				st.firing++
			}
		}
		st.shrink()
	}
	return out
}

// shrink makes the series map again once it holds under a quarter of the
// most it held (at least 1,024): a fleet that came and went must not keep
// the map's room for it.
func (st *ruleState) shrink() {
	if st.most < 1024 || len(st.series) >= st.most/4 {
		return
	}
	m := make(map[string]*series, len(st.series))
	for k, s := range st.series {
		m[k] = s
	}
	st.series, st.most = m, len(m)
}

func (ev *Evaluator) tickAlert(i int, r *rule, key string, s *series, t int64, out []sluice.Event) []sluice.Event {
	ar, st := r.alert, &s.alert
	var status string
	at := t
	switch {
	case ar.absent > 0 && s.heard && st.phase != firing && t-s.lastSeen >= int64(ar.absent):
		status, at = sluice.AlertFiring, s.lastSeen+int64(ar.absent)
	case st.phase == firing && ar.renotify > 0 && t-st.notified >= int64(ar.renotify):
		status = sluice.AlertFiring
	default:
		return out
	}
	ev.tickEnv(r, s, t)
	a, _ := ev.transition(r, key, s, at, status)
	ev.touch(i, key)
	return append(out, sluice.Event{Stream: sluice.StreamAlerts, Message: &sluice.Message{Topic: s.topic, Received: a.Time}, Alert: a})
}

// tickEnv prepares the environment for an alert raised by time: the series'
// named levels are known, payload fields are not.
func (ev *Evaluator) tickEnv(r *rule, s *series, t int64) {
	ev.unload()
	ev.env["topic"] = s.topic
	for _, t := range s.tags {
		ev.env["@"+t.Key] = t.Value
	}
	ev.envFilter = -1
	// The lets and fields are those of the last reading evaluated, perhaps
	// of another series: none, rather than someone else's.
	for _, d := range r.lets {
		ev.env[d.key] = nil
	}
	for _, d := range r.fields {
		ev.env[d.key] = nil
	}
	ev.ctx.rule, ev.ctx.series, ev.ctx.now = r, s, t
	ev.peekAll(r)
}

// quick evaluates a where of quick terms.
func (ev *Evaluator) quick(terms []quickTerm) bool {
	for _, t := range terms {
		if (ev.env[t.key] == t.value) == t.not {
			return false
		}
	}
	return true
}

// renderOrSay renders a template, or says why it failed.
func (ev *Evaluator) renderOrSay(t template) string {
	s, err := ev.render(t)
	if err != nil {
		return fmt.Sprintf("(template failed: %v)", err)
	}
	return s
}

func (ev *Evaluator) render(t template) (string, error) {
	if len(t) == 1 && t[0].prog == nil {
		return t[0].text, nil
	}
	var b strings.Builder
	for _, p := range t {
		if p.prog == nil {
			b.WriteString(p.text)
			continue
		}
		v, err := ev.run(p.prog)
		if err != nil {
			return "", err
		}
		if f, ok := v.(float64); ok && math.IsNaN(f) {
			b.WriteString("n/a")
			continue
		}
		b.WriteString(sluice.FormatValue(normalize(v)))
	}
	return b.String(), nil
}

// run evaluates one program against the environment. A panic inside an
// expression or function fails this evaluation only.
func (ev *Evaluator) run(p *vm.Program) (out any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("expression panicked: %v", r)
		}
	}()
	return ev.vm.Run(p, ev.env)
}

func (ev *Evaluator) runBool(p *vm.Program, stage string) (bool, error) {
	v, err := ev.run(p)
	if err != nil {
		return false, &stageError{stage: stage, err: err, prog: p}
	}
	b, ok := v.(bool)
	if !ok {
		return false, &stageError{stage: stage, err: fmt.Errorf("want true or false, got %T %v", v, v), prog: p}
	}
	return b, nil
}

// normalize turns expression results into the value types records carry:
// float64, int64, bool and string.
func normalize(v any) any {
	switch x := v.(type) {
	case int:
		return int64(x)
	case int32:
		return int64(x)
	case uint64:
		return int64(x)
	case float32:
		return float64(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case time.Duration:
		return x.Seconds()
	}
	return v
}

// RuleStats is the state an evaluator holds for one rule.
type RuleStats struct {
	Rule      string
	Severity  string // the alert's severity; "" for a rule without an alert
	Series    int    // active series
	Evictions uint64 // series evicted after their TTL, since start
	Evaluated uint64 // readings the rule evaluated (its topic matched), since start
	Passed    uint64 // of those, readings that passed its where
	Firing    int    // series whose alert is firing, as of the last Tick
}

// Stats reports the state held per rule.
func (ev *Evaluator) Stats() []RuleStats {
	out := make([]RuleStats, len(ev.set.rules))
	for i, r := range ev.set.rules {
		st := ev.states[i]
		out[i] = RuleStats{Rule: r.name, Series: len(st.series), Evictions: st.evictions,
			Evaluated: st.evaluated, Passed: st.passed, Firing: st.firing}
		if r.alert != nil {
			out[i].Severity = r.alert.severity
		}
	}
	return out
}
