package sluice_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/sluicehq/sluice"
)

func TestAckFanIn(t *testing.T) {
	var calls int
	var got error
	ack := sluice.NewAck(func(err error) { calls++; got = err })
	ack.Add(3) // three sinks
	ack.Done(nil)
	ack.Done(nil)
	ack.Done(nil)
	if calls != 0 {
		t.Fatalf("acked with the creator's part still open")
	}
	ack.Done(nil)
	if calls != 1 || got != nil {
		t.Fatalf("calls=%d err=%v, want one successful ack", calls, got)
	}
}

func TestAckReportsFirstError(t *testing.T) {
	boom := errors.New("boom")
	var got error
	ack := sluice.NewAck(func(err error) { got = err })
	ack.Add(2)
	ack.Done(boom)
	ack.Done(errors.New("later"))
	ack.Done(nil)
	if !errors.Is(got, boom) {
		t.Fatalf("got %v, want the first error", got)
	}
}

func TestAckConcurrent(t *testing.T) {
	const parts = 1000
	done := make(chan error, 2)
	ack := sluice.NewAck(func(err error) { done <- err })
	ack.Add(parts)
	var wg sync.WaitGroup
	for range parts {
		wg.Add(1)
		go func() { defer wg.Done(); ack.Done(nil) }()
	}
	wg.Wait()
	ack.Done(nil)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(done) != 0 {
		t.Fatal("acked twice")
	}
}

func TestNilAck(t *testing.T) {
	var ack *sluice.Ack
	ack.Add(1)
	ack.Done(errors.New("ignored"))
}

func TestClassification(t *testing.T) {
	base := errors.New("field type conflict")
	if !sluice.IsPermanent(sluice.Permanent(base)) {
		t.Error("Permanent not permanent")
	}
	if sluice.IsPermanent(base) {
		t.Error("an unmarked error must be retried, not dropped")
	}
	if got := sluice.RetryAfter(sluice.Retryable(base, 3e9)); got != 3e9 {
		t.Errorf("RetryAfter = %v", got)
	}
}
