// Package console is the operator's console: what the pipelines feed it
// while they run (a live tail of the messages and what the rules made of
// them, the recent dead letters, the alerts firing), the admin API that
// serves it, and the page on /console. The CLI's tail, alerts, deadletters
// and replay commands read the same API.
//
// It imports no pipeline code: pipelines feed a Hub and implement Backend.
package console

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/rules"
)

// Hub is what the pipelines feed and the console reads. One per process.
type Hub struct {
	Tap         *Tap
	DeadLetters *DeadLetters
	Alerts      *Alerts
}

// NewHub returns an empty hub; dropped counts the messages the tail
// dropped for slow watchers (may be nil).
func NewHub(dropped prometheus.Counter) *Hub {
	return &Hub{Tap: &Tap{dropped: dropped}, DeadLetters: NewDeadLetters(0, 0), Alerts: NewAlerts(0)}
}

// Tap is the live tail: each message a pipeline's rules evaluated, with
// what came of it, offered to the watches whose filter takes it. It costs
// one atomic load per message while nobody watches, and never waits: a
// watch whose buffer is full loses the message, counted.
type Tap struct {
	watching atomic.Int32
	watches  atomic.Pointer[[]*Watch] // copied on write, under mu
	mu       sync.Mutex
	dropped  prometheus.Counter
}

// Watched reports whether anyone watches: the hot path's check, before it
// calls Publish.
func (t *Tap) Watched() bool { return t != nil && t.watching.Load() > 0 }

// TailEvent is one message and what the rules made of it: records, alert
// transitions and dead letters. An alert raised by time alone (a deadman)
// comes with the message that stands for it, its series' topic, and no Set.
type TailEvent struct {
	Pipeline string
	Message  *sluice.Message
	Events   []sluice.Event
	Outcome  rules.Outcome
	// Set is the rule set that evaluated the message (to show which rules
	// it matched and the payload decoded).
	Set *rules.Set
}

// Publish offers a message and its events to every watch that takes it.
// events is copied (once, for all). Call it only when Watched.
func (t *Tap) Publish(pipeline string, msg *sluice.Message, events []sluice.Event, o rules.Outcome, set *rules.Set) {
	ws := t.watches.Load()
	if ws == nil {
		return
	}
	var ev TailEvent
	for _, w := range *ws {
		if !w.filter.takes(pipeline, msg, events) {
			continue
		}
		if ev.Message == nil {
			ev = TailEvent{Pipeline: pipeline, Message: msg, Events: slices.Clone(events), Outcome: o, Set: set}
		}
		select {
		case w.c <- ev:
		default:
			w.dropped.Add(1)
			if t.dropped != nil {
				t.dropped.Inc()
			}
		}
	}
}

// Filter says which messages a watch takes. The zero Filter takes all.
type Filter struct {
	Pipeline string
	// Topic is an MQTT topic filter (levels may be named, as in rules).
	Topic *rules.Filter
	// Device takes a message with a topic level of that name, or whose
	// records or alerts name that device (the device tag, or the series).
	Device string
}

func (f *Filter) takes(pipeline string, msg *sluice.Message, events []sluice.Event) bool {
	if f.Pipeline != "" && f.Pipeline != pipeline {
		return false
	}
	if f.Topic != nil && !f.Topic.Match(msg.Topic, nil) {
		return false
	}
	return f.Device == "" || namesDevice(f.Device, msg.Topic, events)
}

func namesDevice(device, topic string, events []sluice.Event) bool {
	for level := range strings.SplitSeq(topic, "/") {
		if level == device {
			return true
		}
	}
	for i := range events {
		switch e := &events[i]; {
		case e.Record != nil:
			if d, ok := e.Record.Tag("device"); ok && d == device {
				return true
			}
		case e.Alert != nil:
			if e.Alert.Device == device || e.Alert.Series == device {
				return true
			}
		}
	}
	return false
}

// Watch is one watcher of the tail: it receives on C what its filter takes.
type Watch struct {
	C       <-chan TailEvent
	c       chan TailEvent
	filter  Filter
	dropped atomic.Uint64
	tap     *Tap
	once    sync.Once
}

// Watch starts a watch taking what f takes, with room for size events
// waiting to be read; past that, events are dropped (Dropped counts them).
func (t *Tap) Watch(f Filter, size int) *Watch {
	c := make(chan TailEvent, max(size, 1))
	w := &Watch{C: c, c: c, filter: f, tap: t}
	t.mu.Lock()
	defer t.mu.Unlock()
	var next []*Watch
	if ws := t.watches.Load(); ws != nil {
		next = slices.Clone(*ws)
	}
	next = append(next, w)
	t.watches.Store(&next)
	t.watching.Store(int32(len(next)))
	return w
}

// Dropped returns how many events the watch lost because it was full.
func (w *Watch) Dropped() uint64 { return w.dropped.Load() }

// Close ends the watch. C is not closed: a publisher may still hold it.
func (w *Watch) Close() {
	w.once.Do(func() {
		t := w.tap
		t.mu.Lock()
		defer t.mu.Unlock()
		next := slices.DeleteFunc(slices.Clone(*t.watches.Load()), func(x *Watch) bool { return x == w })
		t.watches.Store(&next)
		t.watching.Store(int32(len(next)))
	})
}
