package journal

// centry is a record held in memory: what a reader at the tail gets without
// file I/O or decoding.
type centry struct {
	data  []byte
	value any
	time  int64
	vsize int32 // bytes the value holds (Options.ValueSize)
	kind  byte
}

const (
	centryOverhead = 64       // bytes a cached record costs beyond its data
	arenaChunk     = 64 << 10 // record data is copied into chunks of this size
)

// cache is a ring of consecutive records first, first+1, ... In Memory mode
// it holds every record of the journal; otherwise the most recent ones, up
// to a byte budget. Callers hold Journal.mu.
type cache struct {
	ents  []centry // len is zero or a power of two
	head  int
	n     int
	first uint64
	bytes int64
	arena []byte // unused tail of the current data chunk
}

func (c *cache) get(seq uint64) (*centry, bool) {
	if seq < c.first || seq-c.first >= uint64(c.n) {
		return nil, false
	}
	return &c.ents[(c.head+int(seq-c.first))&(len(c.ents)-1)], true
}

// push adds the record seq, which must follow the last one held (otherwise
// the cache starts over at seq).
func (c *cache) push(seq uint64, e centry) {
	if c.n > 0 && seq != c.first+uint64(c.n) {
		c.clear()
	}
	if c.n == 0 {
		c.first, c.head = seq, 0
	}
	if c.n == len(c.ents) {
		c.resize(max(64, 2*len(c.ents)))
	}
	c.ents[(c.head+c.n)&(len(c.ents)-1)] = e
	c.n++
	c.bytes += e.size()
}

// size is what a cached record costs: its data, its value and the
// entry.
func (e *centry) size() int64 { return int64(len(e.data)) + int64(e.vsize) + centryOverhead }

// pop drops the oldest record.
func (c *cache) pop() {
	e := &c.ents[c.head]
	c.bytes -= e.size()
	*e = centry{} // let the data chunk and the value be collected
	c.head = (c.head + 1) & (len(c.ents) - 1)
	c.n--
	c.first++
}

// dropBefore drops the records before seq.
func (c *cache) dropBefore(seq uint64) {
	for c.n > 0 && c.first < seq {
		c.pop()
	}
	if c.n == 0 && c.first < seq {
		c.first = seq
	}
	c.shrink()
}

// trim drops the oldest records while the cache is over budget.
func (c *cache) trim(budget int64) {
	for c.n > 0 && c.bytes > budget {
		c.pop()
	}
}

func (c *cache) clear() {
	clear(c.ents)
	c.head, c.n, c.bytes = 0, 0, 0
}

// shrink gives back most of a large ring that is mostly empty (Memory mode
// after a burst). Rings up to 128 Ki entries (7 MiB) are kept: a ring that
// shrinks as segments are reclaimed and grows again as records come costs
// more than it saves.
func (c *cache) shrink() {
	if len(c.ents) > 1<<17 && c.n < len(c.ents)/16 {
		c.resize(len(c.ents) / 4)
	}
}

func (c *cache) resize(size int) {
	ents := make([]centry, size)
	for i := 0; i < c.n; i++ {
		ents[i] = c.ents[(c.head+i)&(len(c.ents)-1)]
	}
	c.ents, c.head = ents, 0
}

// copyData copies d into the current chunk, so that small records do not
// each cost an allocation. Large records get their own.
func (c *cache) copyData(d []byte) []byte {
	if len(d) == 0 {
		return nil
	}
	if len(d) > arenaChunk/8 {
		return append([]byte(nil), d...)
	}
	if len(c.arena) < len(d) {
		c.arena = make([]byte, arenaChunk)
	}
	out := c.arena[:len(d):len(d)]
	copy(out, d)
	c.arena = c.arena[len(d):]
	return out
}
