package decode

import (
	"fmt"
	"slices"
	"strings"
)

// shape is how a format step's fields make readings.
type shape uint8

const (
	shapeObject shape = iota // one reading: top
	shapeArray               // one reading per element of a top-level array
	shapeSplit               // one reading per element of the split array, with top merged in
)

// fieldBuilder collects the fields that a format step decodes and arranges
// them into readings. It is reused from one payload to the next.
//
// String values are collected end to end in strs and copied into a single
// string once the payload is parsed (a retained value keeps that string
// alive, which is at most the size of the payload); until then their fields
// are listed in pending.
type fieldBuilder struct {
	format    step // for messages
	maxFields int
	shape     shape

	top        []Field // fields of the top-level object
	elems      []Field // fields of the elements of a top-level array or of the split array
	bounds     []int   // end of each element's fields in elems
	repeats    []bool  // whether each element may repeat a name
	topRepeats bool    // whether top may repeat a name

	strs    []byte
	pending []pendingString

	names   nameCache
	key     []byte  // the flattened name being built
	skipped []byte  // strings parsed only to be validated
	order   []int32 // dedupe's sort order

	merged []Field // fields of split readings
	list   []Reading

	// want, when set, says which fields to keep (Decoder.Want); the
	// others are parsed and checked, counted against maxFields, and left
	// out. skippedTop and skippedElems count those left out of top and
	// of elems.
	want                     func(name string) bool
	skippedTop, skippedElems int
	// filter: want applies to the payload being parsed (not split).
	filter bool
}

// pendingString is a field whose value is strs[start:end].
type pendingString struct {
	list       *[]Field
	i          int
	start, end int
}

// reset readies b for a new payload. It clears the fields of the previous
// one so that the reused buffers do not keep its strings alive.
func (b *fieldBuilder) reset() {
	clear(b.top)
	clear(b.elems)
	clear(b.merged)
	clear(b.list)
	b.shape = shapeObject
	b.top, b.elems, b.bounds, b.repeats = b.top[:0], b.elems[:0], b.bounds[:0], b.repeats[:0]
	b.merged, b.list = b.merged[:0], b.list[:0]
	b.strs, b.pending = b.strs[:0], b.pending[:0]
	b.skippedTop, b.skippedElems = 0, 0
	b.names.rewind()
}

// count is how many fields and readings the payload has given so far.
func (b *fieldBuilder) count() int {
	return len(b.top) + len(b.elems) + len(b.bounds) + b.skippedTop + b.skippedElems
}

// field returns the field name raw as a string, and whether the field is
// kept (see want).
func (b *fieldBuilder) field(raw []byte) (string, bool) {
	if !b.filter {
		return b.names.get(raw), true
	}
	name, e := b.names.entry(raw)
	if e == nil {
		return name, b.want(name)
	}
	if e.want == 0 {
		e.want = 2
		if b.want(name) {
			e.want = 1
		}
	}
	return name, e.want == 1
}

// skip counts a field of list left out, reporting false if that makes too
// many.
func (b *fieldBuilder) skip(list *[]Field) bool {
	if b.count() >= b.maxFields {
		return false
	}
	if list == &b.elems {
		b.skippedElems++
	} else {
		b.skippedTop++
	}
	return true
}

// tooMany is the error for a payload with more than maxFields fields.
func (b *fieldBuilder) tooMany(size int) error {
	return &limitError{fmt.Sprintf("%s: payload gives more than %d fields and readings (payload %d bytes): rejected as too large",
		b.format, b.maxFields, size)}
}

// add appends a field to list, reporting false if that makes too many.
func (b *fieldBuilder) add(list *[]Field, name string, v any) bool {
	if b.count() >= b.maxFields {
		return false
	}
	*list = append(*list, Field{Name: name, Value: v})
	return true
}

// addBool appends a boolean field named raw, or skips it.
func (b *fieldBuilder) addBool(list *[]Field, raw []byte, v bool) bool {
	if key, kept := b.field(raw); kept {
		return b.add(list, key, v)
	}
	return b.skip(list)
}

// addString appends a field whose value is strs[start:].
func (b *fieldBuilder) addString(list *[]Field, name string, start int) bool {
	if !b.add(list, name, nil) {
		return false
	}
	if start < len(b.strs) { // the empty string needs no copy
		b.pending = append(b.pending, pendingString{list: list, i: len(*list) - 1, start: start, end: len(b.strs)})
	} else {
		(*list)[len(*list)-1].Value = ""
	}
	return true
}

// endElement closes an element of elems.
func (b *fieldBuilder) endElement() {
	b.bounds = append(b.bounds, len(b.elems))
	b.repeats = append(b.repeats, b.names.repeats)
}

// dropElements forgets the elements parsed so far, with their strings.
func (b *fieldBuilder) dropElements() {
	b.pending = slices.DeleteFunc(b.pending, func(p pendingString) bool { return p.list == &b.elems })
	clear(b.elems)
	b.elems, b.bounds, b.repeats = b.elems[:0], b.bounds[:0], b.repeats[:0]
	b.skippedElems = 0
}

// endTop closes the top-level object (or the kv text).
func (b *fieldBuilder) endTop() { b.topRepeats = b.names.repeats }

// readings resolves the pending strings and returns the readings; size is
// the payload size, for messages.
func (b *fieldBuilder) readings(size int) ([]Reading, error) {
	if len(b.pending) > 0 {
		all := string(b.strs)
		for _, p := range b.pending {
			(*p.list)[p.i].Value = all[p.start:p.end]
		}
	}
	switch b.shape {
	case shapeObject:
		b.list = append(b.list, b.dedupe(b.top, b.topRepeats))
	case shapeArray:
		start := 0
		for i, end := range b.bounds {
			b.list = append(b.list, b.dedupe(b.elems[start:end], b.repeats[i]))
			start = end
		}
	case shapeSplit:
		// Names are not tracked across the top level and the elements.
		top := b.dedupe(b.top, true)
		total := int64(len(b.bounds))*int64(len(top)) + int64(len(b.elems))
		if total > int64(b.maxFields) {
			return nil, b.tooMany(size)
		}
		b.merged = slices.Grow(b.merged[:0], int(total))
		start := 0
		for _, end := range b.bounds {
			m := len(b.merged)
			b.merged = append(b.merged, top...)
			b.merged = append(b.merged, b.elems[start:end]...)
			b.merged = b.merged[:m+len(b.dedupe(b.merged[m:], true))]
			b.list = append(b.list, Reading(b.merged[m:len(b.merged):len(b.merged)]))
			start = end
		}
	}
	return b.list, nil
}

// dedupe removes the repeated names of fs in place, if it may have any,
// and returns what is left, with its capacity cut so that appending to a
// reading cannot overwrite the next. A name keeps the place of its first
// occurrence and the value of its last.
func (b *fieldBuilder) dedupe(fs []Field, mayRepeat bool) Reading {
	n := len(fs)
	if !mayRepeat {
		return Reading(fs[:n:n])
	}
	if n <= 16 {
		n = 0
	next:
		for _, f := range fs {
			for j := range n {
				if fs[j].Name == f.Name {
					fs[j].Value = f.Value
					continue next
				}
			}
			fs[n] = f
			n++
		}
		return Reading(fs[:n:n])
	}

	// Many fields: sort their indexes by name, so that repeats are next to
	// each other, in payload order.
	b.order = b.order[:0]
	for i := range fs {
		b.order = append(b.order, int32(i))
	}
	slices.SortFunc(b.order, func(i, j int32) int {
		if c := strings.Compare(fs[i].Name, fs[j].Name); c != 0 {
			return c
		}
		return int(i - j)
	})
	dup := false
	for k := 1; k < len(b.order); k++ {
		first, this := b.order[k-1], b.order[k]
		if fs[first].Name == fs[this].Name {
			fs[first].Value = fs[this].Value
			fs[this].Name = "" // dropped below
			b.order[k] = first // so that a third repeat finds the first
			dup = true
		}
	}
	if !dup {
		return Reading(fs[:n:n])
	}
	n = 0
	for _, f := range fs {
		if f.Name != "" {
			fs[n] = f
			n++
		}
	}
	clear(fs[n:])
	return Reading(fs[:n:n])
}

// nameCache interns field names, so that a stream of payloads with the
// same names does not allocate them again and again. It first tries the
// name at the same position in the previous payload, then a map.
//
// It also notes which names repeat within a reading, so that readings
// without repeats (nearly all) skip dedupe.
type nameCache struct {
	prev []*nameEntry // names of the previous payload, in order
	n    int          // position in the current payload
	m    map[string]*nameEntry

	reading uint64 // counts readings, to tell if a name was seen in this one
	repeats bool   // a name of this reading may repeat
}

type nameEntry struct {
	name string
	seen uint64 // the reading the name was last given in
	want int8   // 0: not asked yet, 1: the field is kept, 2: left out (fieldBuilder.want)
}

const (
	maxCachedNames   = 4096 // the map starts afresh when it has this many
	maxCachedNameLen = 64   // longer names are not cached
)

func (c *nameCache) rewind() { c.n = 0 }

// startReading starts a reading (an object whose names must not repeat).
func (c *nameCache) startReading() {
	c.reading++
	c.repeats = false
}

// get returns b as a string.
func (c *nameCache) get(b []byte) string {
	s, _ := c.entry(b)
	return s
}

// entry returns b as a string, with its cache entry (nil for a name too
// long to cache).
func (c *nameCache) entry(b []byte) (string, *nameEntry) {
	e := c.lookup(b)
	if e == nil {
		c.repeats = true // not cached, so not tracked
		return string(b), nil
	}
	if e.seen == c.reading {
		c.repeats = true
	}
	e.seen = c.reading
	return e.name, e
}

// lookup returns the cached entry for b, adding one if there is room; nil
// for a name too long to cache.
func (c *nameCache) lookup(b []byte) *nameEntry {
	i := c.n
	c.n++
	if i < len(c.prev) && c.prev[i].name == string(b) {
		return c.prev[i]
	}
	if len(b) > maxCachedNameLen {
		return nil
	}
	e := c.m[string(b)]
	if e == nil {
		if c.m == nil || len(c.m) >= maxCachedNames {
			// Start afresh. The names already given in this reading came
			// from the old map, so their repeats cannot be told.
			c.m = make(map[string]*nameEntry)
			c.prev = c.prev[:0]
			c.repeats = true
		}
		e = &nameEntry{name: string(b)}
		c.m[e.name] = e
	}
	switch {
	case i < len(c.prev):
		c.prev[i] = e
	case i == len(c.prev) && i < maxCachedNames:
		c.prev = append(c.prev, e)
	}
	return e
}
