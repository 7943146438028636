package auth

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	now := time.Unix(0, 0)
	b := NewBackoff(BackoffConfig{After: 2, Initial: time.Second, Max: 5 * time.Second, Forget: time.Minute},
		func() time.Time { return now })
	s := time.Second

	t.Run("an address", func(t *testing.T) {
		// Unknown names count against the address only.
		for i, want := range []time.Duration{0, 0, s, 2 * s, 4 * s, 5 * s, 5 * s} {
			if got := b.Failed("10.0.0.1:5000", "nobody", false); got != want {
				t.Errorf("failure %d: delay %v, want %v", i+1, got, want)
			}
		}
		if got := b.Failed("10.0.0.2:5000", "nobody", false); got != 0 {
			t.Errorf("another address waits %v", got)
		}
	})
	t.Run("a user, from many addresses", func(t *testing.T) {
		for i, want := range []time.Duration{0, 0, s, 2 * s} {
			if got := b.Failed("192.0.2."+string(rune('1'+i))+":1", "alice", true); got != want {
				t.Errorf("failure %d: delay %v, want %v", i+1, got, want)
			}
		}
	})
	t.Run("an IPv6 address counts by its /64", func(t *testing.T) {
		for i, addr := range []string{"[2001:db8::1]:1", "[2001:db8::2]:1", "[2001:db8::ffff:3]:1"} {
			got := b.Failed(addr, "", false)
			if want := []time.Duration{0, 0, s}[i]; got != want {
				t.Errorf("failure %d (%s): delay %v, want %v", i+1, addr, got, want)
			}
		}
		if got := b.Failed("[2001:db8:0:1::1]:1", "", false); got != 0 {
			t.Errorf("another /64 waits %v", got)
		}
	})
	t.Run("forgotten after a quiet minute", func(t *testing.T) {
		now = now.Add(61 * time.Second)
		if got := b.Failed("10.0.0.1:5000", "alice", true); got != 0 {
			t.Errorf("after the forget interval: delay %v, want none", got)
		}
	})
	t.Run("an address that does not parse is not counted", func(t *testing.T) {
		for range 5 {
			if got := b.Failed("pipe", "", false); got != 0 {
				t.Fatalf("delay %v", got)
			}
		}
	})
}
