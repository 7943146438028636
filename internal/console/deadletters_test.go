package console

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sluicehq/sluice"
)

// TestDeadLettersBounded: the store keeps the newest within its count and
// its bytes, and keeps no more than the first MiB of a huge payload.
func TestDeadLettersBounded(t *testing.T) {
	d := NewDeadLetters(3, 100)
	add := func(payload string) {
		d.Add("p", &sluice.Message{Topic: "t", Payload: []byte(payload)}, &sluice.DeadLetter{Stage: "rule", Rule: "r", Reason: "bad " + payload})
	}
	for _, p := range []string{"a", "b", "c", "d"} {
		add(p)
	}
	if l := d.List(); len(l) != 3 || l[0].Reason != "bad b" || l[2].ID != 4 || d.Total() != 4 {
		t.Fatalf("by count: %+v, total %d", l, d.Total())
	}
	add(strings.Repeat("x", 99)) // 1 + 1 + 99 bytes: c goes
	if l := d.List(); len(l) != 2 || l[0].ID != 4 || l[1].ID != 5 {
		t.Fatalf("by bytes: %d held", len(l))
	}
	add(strings.Repeat("y", 200)) // alone over the bound: kept, alone
	if l := d.List(); len(l) != 1 || l[0].ID != 6 {
		t.Fatalf("one over the bound: %d held", len(l))
	}

	big := NewDeadLetters(0, 0)
	huge := bytes.Repeat([]byte("z"), maxKeptPayload+10)
	big.Add("p", &sluice.Message{Topic: "t", Payload: huge}, &sluice.DeadLetter{Stage: "decode", Rule: "r", Reason: "too big"})
	if l := big.List(); len(l[0].Message.Payload) != maxKeptPayload || !l[0].Truncated {
		t.Fatalf("huge payload: kept %d bytes, truncated %v", len(l[0].Message.Payload), l[0].Truncated)
	}
}

// TestDeadLetterReplayedOnce: the dead letters of one message and rule are
// replayed together, once, unless again.
func TestDeadLetterReplayedOnce(t *testing.T) {
	d := NewDeadLetters(0, 0)
	msg := &sluice.Message{Topic: "t", Payload: []byte(`{"readings":[1,2]}`)}
	d.Add("p", msg, &sluice.DeadLetter{Stage: "rule", Rule: "r", Reason: "reading 1"})
	d.Add("p", msg, &sluice.DeadLetter{Stage: "rule", Rule: "r", Reason: "reading 2"})
	d.Add("p", msg, &sluice.DeadLetter{Stage: "rule", Rule: "other", Reason: "other rule"})
	group, err := d.take(1, false)
	if err != nil || len(group) != 2 || group[1].ID != 2 {
		t.Fatalf("take 1: %v %v", group, err)
	}
	if _, err := d.take(2, false); err == nil || !strings.Contains(err.Error(), "being replayed") {
		t.Fatalf("take 2 while 1 replays: %v", err)
	}
	d.replayed([]uint64{1, 2}, ReplayOutcome{Sent: true, Records: 2})
	if _, err := d.take(2, false); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("take 2 once sent: %v", err)
	}
	if g, err := d.take(2, true); err != nil || len(g) != 2 {
		t.Fatalf("take 2 again: %v %v", g, err)
	}
	if g, err := d.take(3, false); err != nil || len(g) != 1 {
		t.Fatalf("take 3, another rule: %v %v", g, err)
	}
	if _, err := d.take(99, false); err == nil || !strings.Contains(err.Error(), "no longer held") {
		t.Fatalf("take 99: %v", err)
	}
}
