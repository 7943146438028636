package decode

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
)

// Field is one decoded value. Value is float64 (all JSON/kv numbers), string, or bool.
type Field struct {
	Name  string
	Value any
}

// Reading is one decoded reading: flat fields in payload order. Nested JSON
// objects are flattened with "_" ({"motor":{"temp":61}} gives motor_temp).
// JSON nulls and arrays (other than the split array) are left out.
type Reading []Field

// Limits guard against decompression bombs.
type Limits struct {
	MaxSize  int // most bytes any step may output; default 1 MiB (1<<20)
	MaxRatio int // most output/input ratio of the whole chain once output exceeds 64 KiB; default 100; negative turns the check off
}

const (
	defaultMaxSize  = 1 << 20
	defaultMaxRatio = 100
	// ratioFloor is the output size below which MaxRatio does not apply:
	// a tiny payload may legitimately expand a thousandfold.
	ratioFloor = 64 << 10
)

// withDefaults fills in the zero fields of l.
func (l Limits) withDefaults() Limits {
	if l.MaxSize <= 0 {
		l.MaxSize = defaultMaxSize
	}
	if l.MaxRatio == 0 {
		l.MaxRatio = defaultMaxRatio
	}
	return l
}

// ErrTooLarge is wrapped by errors for output beyond MaxSize or MaxRatio
// (decompression bombs), and for a payload that gives more fields than the
// limits allow.
var ErrTooLarge = errors.New("decompressed payload too large")

// limitError is a data error that wraps ErrTooLarge under its own message.
type limitError struct{ msg string }

func (e *limitError) Error() string { return e.msg }
func (e *limitError) Unwrap() error { return ErrTooLarge }

// stepError is a step's failure on bad input. Error() strips the package
// prefix that the compression libraries put on their own errors, so that
// messages read "gzip: invalid header", not "gzip: gzip: invalid header".
type stepError struct {
	step step
	err  error
}

func (e *stepError) Error() string {
	msg := e.err.Error()
	if errors.Is(e.err, io.ErrUnexpectedEOF) || errors.Is(e.err, io.EOF) {
		msg = "truncated input"
	}
	for _, prefix := range []string{"gzip: ", "flate: ", "zlib: ", "zstd: ", "s2: ", "snappy: "} {
		msg = strings.TrimPrefix(msg, prefix)
	}
	return e.step.String() + ": " + msg
}

func (e *stepError) Unwrap() error { return e.err }

// Options for decoding one payload.
type Options struct {
	ContentType string // MQTT 5 content-type property, "" if none
	// Split names a top-level array of objects (e.g. "readings"): each
	// element becomes its own Reading, merged with the top-level scalar
	// fields (element fields win on a name clash). Empty: no split.
	Split string
}

// Decoder decodes payloads. It reuses its buffers and parser between calls:
// it is not safe for concurrent use (one per worker goroutine). Readings and
// Fields returned are only valid until the next Decode call, except that
// string values (and names) are safe to keep.
//
// A Decoder keeps the buffers of its largest payload so far; they are
// bounded by Limits.MaxSize.
type Decoder struct {
	limits Limits

	// payloadSize is the size of the payload being decoded, for MaxRatio.
	payloadSize int

	// Transform outputs alternate between two buffers, so that a step never
	// writes over its own input: next is the one the next step writes.
	bufs    [2][]byte
	next    int
	scratch []byte // base64 text with its whitespace removed

	src bytes.Reader     // the input of a streaming decompressor
	lim io.LimitedReader // the cap on its output
	gz  *gzip.Reader     // created on first use, then Reset
	zl  io.ReadCloser    // zlib; implements zlib.Resetter
	fl  io.ReadCloser    // flate; implements flate.Resetter
	zs  *zstd.Decoder    // DecodeAll only: no goroutines
	sn  *snappy.Reader   // the framed format
	out fieldBuilder     // the format steps' output
}

// autoChain is ParseChain(nil).
var autoChain = &Chain{steps: []step{stepAuto}}

// NewDecoder returns a Decoder with the given limits; zero fields of l take
// the defaults.
func NewDecoder(l Limits) *Decoder {
	d := &Decoder{limits: l.withDefaults()}
	d.out.maxFields = max(d.limits.MaxSize/4, 1024)
	return d
}

// Want makes the decoder keep only the fields want says yes to (nil: all):
// the others are parsed and checked as before, and count against the
// limits, but are left out of the readings, for callers that read some
// fields of wide payloads. It does not apply to payloads split into
// readings (Options.Split). want is asked once per name (the answers are
// kept with the names the decoder has seen).
func (d *Decoder) Want(want func(name string) bool) {
	d.out.want = want
	d.out.names = nameCache{}
}

// Decode runs the chain over payload and returns the readings. A JSON object
// gives one reading; a top-level JSON array of objects gives one reading per
// element; with opts.Split, the named array's elements give one reading
// each. kv gives one reading (opts.Split does not apply to it).
//
// A nil Chain means auto. A zero Decoder, not made by NewDecoder, has the
// default limits.
func (d *Decoder) Decode(c *Chain, payload []byte, opts Options) ([]Reading, error) {
	if c == nil || len(c.steps) == 0 {
		c = autoChain
	}
	if d.out.maxFields == 0 {
		*d = *NewDecoder(d.limits)
	}
	d.payloadSize = len(payload)
	d.next = 0
	d.out.reset()

	data := payload
	last := len(c.steps) - 1
	for _, s := range c.steps[:last] {
		var err error
		if data, err = d.transform(s, data); err != nil {
			return nil, err
		}
	}
	switch s := c.steps[last]; s {
	case stepAuto:
		// The content type describes the payload as published, so it only
		// counts when no step has transformed it yet.
		ct := ""
		if last == 0 {
			ct = opts.ContentType
		}
		return d.auto(data, ct, opts.Split)
	default:
		return d.format(s, data, opts.Split)
	}
}

// format runs a format step and returns its readings.
func (d *Decoder) format(s step, data []byte, split string) ([]Reading, error) {
	var err error
	switch s {
	case stepJSON:
		err = d.out.parseJSON(data, split)
	case stepKV:
		err = d.out.parseKV(data)
	default:
		panic("decode: format called with transform " + s.String())
	}
	if err != nil {
		return nil, err
	}
	return d.out.readings(len(data))
}

// outputLimit is the most bytes a step may output for the current payload:
// MaxSize, and MaxRatio times the payload size unless that is under 64 KiB.
func (d *Decoder) outputLimit() int {
	limit := d.limits.MaxSize
	if d.limits.MaxRatio > 0 {
		ratio := math.MaxInt
		if d.payloadSize <= math.MaxInt/d.limits.MaxRatio {
			ratio = max(d.payloadSize*d.limits.MaxRatio, ratioFloor)
		}
		limit = min(limit, ratio)
	}
	return limit
}

// tooLarge is the error for a step whose output went past outputLimit; in is
// the size of the step's input.
func (d *Decoder) tooLarge(s step, in int) error {
	limit := d.outputLimit()
	if limit == d.limits.MaxSize {
		return &limitError{fmt.Sprintf("%s: output exceeds the %d-byte limit (input %d bytes): rejected as a decompression bomb",
			s, limit, in)}
	}
	return &limitError{fmt.Sprintf("%s: output exceeds %d bytes, %d times the %d-byte payload: rejected as a decompression bomb",
		s, limit, d.limits.MaxRatio, d.payloadSize)}
}
