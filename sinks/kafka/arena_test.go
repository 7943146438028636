package kafka

import "testing"

// An arena used again batch after batch holds no more chunks than one batch
// needed, however its records' sizes fall: a record larger than the next
// chunk takes that chunk's place rather than adding one at the end.
func TestArenaChunksStayBounded(t *testing.T) {
	var a arena
	fill := func() { a.bytes = a.bytes[:cap(a.bytes)] }
	// A first batch of three chunks of small records.
	a.reserve(1)
	fill()
	a.reserve(1)
	fill()
	a.reserve(1)
	fill()
	if len(a.chunks) != 3 {
		t.Fatalf("first batch: %d chunks, want 3", len(a.chunks))
	}
	// Then batches of one chunk of small records and one large record.
	for i := range 50 {
		a.reset()
		fill()
		a.reserve(2 * arenaChunk)
		if cap(a.bytes)-len(a.bytes) < 2*arenaChunk {
			t.Fatalf("batch %d: %d bytes free for a record of %d", i, cap(a.bytes)-len(a.bytes), 2*arenaChunk)
		}
		if len(a.chunks) > 3 {
			t.Fatalf("batch %d: the arena holds %d chunks, where a batch needs at most 3", i, len(a.chunks))
		}
	}
}
