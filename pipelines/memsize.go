package pipelines

import (
	"unsafe"

	"github.com/sluicehq/sluice"
)

// journalValueSize estimates the bytes a value a pipeline gives its journal
// holds beyond the record's data (journal.Options.ValueSize), so that the
// journal's cache of recent records stays within its budget values
// included: a message as received (its struct, topic, payload and
// properties), or the events the rules derived from one (their structs,
// the records' fields and tags, alerts, dead letters, and the message
// they share: its own record may have left the cache, or never been in it
// when it was read back from the files). Strings shared with what the
// rules keep anyway (interned field names, tag values cut from the topic)
// are not counted.
func journalValueSize(v any) int {
	switch x := v.(type) {
	case *sluice.Message:
		return messageSize(x)
	case []sluice.Event:
		return eventsSize(x)
	}
	return 0
}

func messageSize(m *sluice.Message) int {
	n := int(unsafe.Sizeof(*m)) + len(m.Topic) + cap(m.Payload) + len(m.ClientID) + len(m.Username) + len(m.ContentType)
	n += cap(m.UserProperties) * int(unsafe.Sizeof(sluice.Property{}))
	for _, p := range m.UserProperties {
		n += len(p.Key) + len(p.Value)
	}
	return n
}

func eventsSize(events []sluice.Event) int {
	n := cap(events) * int(unsafe.Sizeof(sluice.Event{}))
	var msg *sluice.Message
	for i := range events {
		e := &events[i]
		n += len(e.ID)
		if e.Message != msg {
			msg = e.Message
			n += messageSize(msg)
		}
		switch {
		case e.Record != nil:
			r := e.Record
			n += int(unsafe.Sizeof(*r)) + cap(r.Tags)*int(unsafe.Sizeof(sluice.Tag{}))
			n += cap(r.Fields) * int(unsafe.Sizeof(sluice.Field{}))
			for _, f := range r.Fields {
				n += boxedSize(f.Value)
			}
		case e.Alert != nil:
			a := e.Alert
			n += int(unsafe.Sizeof(*a)) + len(a.Message) + len(a.Episode) + boxedSize(a.Value)
			n += cap(a.Tags) * int(unsafe.Sizeof(sluice.Tag{}))
			for _, t := range a.Tags {
				n += len(t.Value)
			}
		case e.DeadLetter != nil:
			d := e.DeadLetter
			n += int(unsafe.Sizeof(*d)) + len(d.Reason)
		}
	}
	return n
}

// boxedSize is what a field value in an interface holds besides the
// interface itself.
func boxedSize(v any) int {
	switch x := v.(type) {
	case nil, bool:
		return 0
	case string:
		return 16 + len(x)
	}
	return 8
}
