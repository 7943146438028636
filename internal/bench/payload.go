package bench

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/klauspost/compress/gzip"
)

// Payload shapes: how a device's telemetry is written.
const (
	ShapeFlat   = "flat"   // one JSON object
	ShapeNested = "nested" // one JSON object with nested objects (flattened by the decoder)
	ShapeGzip   = "gzip"   // a flat JSON object, gzip-compressed
	ShapeArray  = "array"  // a JSON array of readings (one record each)
	ShapeMixed  = "mixed"  // devices take the four shapes in turn
)

var shapes = []string{ShapeFlat, ShapeNested, ShapeGzip, ShapeArray}

// Device kinds, with the telemetry the example rules (examples/rules) expect.
var kinds = []string{"boiler", "pump", "coldchain", "motor"}

// device is one simulated device: where it publishes and what. Only its
// publisher goroutine touches it while it runs.
type device struct {
	index  int
	id     string // <kind>-<index>, also the topic's device level
	kind   string
	topic  string
	shape  string
	drifts bool    // swings into alert range and back
	period float64 // seconds of one swing
	phase  float64
	rnd    *rand.Rand

	seq    uint64 // next reading's sequence number
	lastUS int64  // sent_us of the last reading: readings get distinct, rising times
	prefix string // the topic up to the device level
	series int64  // series topics given so far (seriesTopic)

	gz  *gzip.Writer
	gzb bytes.Buffer
}

var sites = []string{"north", "south", "east", "west", "delta"}

func newDevice(i int, shape string) *device {
	kind := kinds[i%len(kinds)]
	d := &device{
		index:  i,
		id:     fmt.Sprintf("%s-%05d", kind, i),
		kind:   kind,
		shape:  shape,
		drifts: i%4 == 0,
		period: float64(40 + i%20),
		phase:  2 * math.Pi * float64(i%97) / 97,
		rnd:    rand.New(rand.NewPCG(uint64(i), 0x5eed)),
	}
	if shape == ShapeMixed {
		d.shape = shapes[(i/len(kinds))%len(shapes)]
	}
	if d.drifts {
		d.phase = math.Pi / 3 // starts just below its alert threshold
	}
	site := sites[(i/len(kinds))%len(sites)]
	line := "line" + strconv.Itoa(1+(i/(len(kinds)*len(sites)))%4)
	d.prefix = "plant/" + site + "/" + line + "/"
	d.topic = d.prefix + d.id + "/telemetry"
	return d
}

// seriesTopic returns the topic of the device's next series (Load.Series):
// its k-th is series number index + k*devices, unique in the fleet, named
// s<number>-<device id> so that the device (and its sequence numbers) can
// be told from the series' name, as from a device's own (deviceIndex).
func (d *device) seriesTopic(devices int) string {
	n := int64(d.index) + d.series*int64(devices)
	d.series++
	return d.prefix + "s" + strconv.FormatInt(n, 10) + "-" + d.id + "/telemetry"
}

// deviceIndex reads the index back from a device id ("boiler-00042" → 42).
func deviceIndex(id []byte) (int, bool) {
	i := bytes.LastIndexByte(id, '-')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(string(id[i+1:]))
	return n, err == nil
}

// payloadSpec says what a device publishes.
type payloadSpec struct {
	size     int // bytes of JSON per reading (before compression)
	readings int // readings per message, for the array shape
}

// readingsPer is how many readings (records) one message of the device carries.
func (d *device) readingsPer(p payloadSpec) int {
	if d.shape == ShapeArray {
		return max(1, p.readings)
	}
	return 1
}

// message appends the device's next message to b. It returns the payload,
// the sequence number of its first reading and how many readings it holds.
// Each reading carries its seq and sent_us: the time of publishing in
// microseconds since the epoch, rising by at least 1 from one reading of
// the device to the next (InfluxDB keys points by time, so no two readings
// of a device may share one). Microseconds stay exact as the float64 the
// decoder makes of them; nanoseconds would not.
func (d *device) message(b []byte, now time.Time, elapsed time.Duration, p payloadSpec) ([]byte, uint64, int) {
	n := d.readingsPer(p)
	first := d.seq
	us := max(now.UnixMicro(), d.lastUS+1)
	ms := now.UnixMilli()
	start := len(b)
	switch d.shape {
	case ShapeArray:
		b = append(b, '[')
		for k := range n {
			if k > 0 {
				b = append(b, ',')
			}
			b = d.reading(b, ms, us+int64(k), elapsed, p.size, false)
		}
		b = append(b, ']')
	case ShapeNested:
		b = d.reading(b, ms, us, elapsed, p.size, true)
	default:
		b = d.reading(b, ms, us, elapsed, p.size, false)
	}
	d.lastUS = us + int64(n) - 1
	if d.shape == ShapeGzip {
		if d.gz == nil {
			d.gz, _ = gzip.NewWriterLevel(&d.gzb, gzip.BestSpeed)
		}
		d.gzb.Reset()
		d.gz.Reset(&d.gzb)
		d.gz.Write(b[start:])
		d.gz.Close()
		b = append(b[:start], d.gzb.Bytes()...)
	}
	return b[start:], first, n
}

// reading appends one reading: the fields its kind's rules use (values on
// a slow wave with noise, as internal/simulator makes them), then filler
// fields up to size bytes. nested puts device metadata and the filler in
// nested objects, which the decoder flattens.
func (d *device) reading(b []byte, ms, us int64, elapsed time.Duration, size int, nested bool) []byte {
	start := len(b)
	seq := d.seq
	d.seq++
	w := math.Sin(d.phase + 2*math.Pi*elapsed.Seconds()/d.period)
	noise := func(scale float64) float64 { return (d.rnd.Float64() - 0.5) * scale }
	num := func(b []byte, name string, v float64, places int) []byte {
		b = append(b, ",\""...)
		b = append(b, name...)
		b = append(b, "\":"...)
		return strconv.AppendFloat(b, v, 'f', places, 64)
	}
	amp := func(normal, drifting float64) float64 {
		if d.drifts {
			return drifting
		}
		return normal
	}
	b = append(b, `{"kind":"`...)
	b = append(b, d.kind...)
	b = append(b, `","ts":`...)
	b = strconv.AppendInt(b, ms, 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"sent_us":`...)
	b = strconv.AppendInt(b, us, 10)
	switch d.kind {
	case "boiler": // alert above 90 °C
		b = num(b, "temperature", 74+amp(8, 22)*w+noise(1), 2)
		b = num(b, "pressure", 2.1+0.15*w+noise(0.05), 3)
	case "pump": // alert above 7.1 mm/s
		b = num(b, "vibration", 3.2+amp(1, 4.5)*w+noise(0.3), 2)
		b = num(b, "rpm", 1450+20*w+noise(5), 0)
		b = num(b, "flow", 42+3*w+noise(1), 1)
	case "coldchain": // alert outside 2–8 °C
		b = num(b, "temperature", 4+amp(1, 5.5)*w+noise(0.3), 2)
		b = append(b, `,"door_open":`...)
		b = strconv.AppendBool(b, d.drifts && w > 0.6)
	case "motor": // in/s and °F; alert on the p95 above 4.5 mm/s
		b = num(b, "vibration_rms", 0.09+amp(0.02, 0.12)*w+noise(0.01), 4)
		b = num(b, "winding_temp", 160+15*w+noise(2), 1)
		b = num(b, "current", 12+2*w+noise(0.5), 2)
	}
	if nested {
		b = append(b, `,"meta":{"fw":"2.4.1","hw":"rev-c","net":{"rssi":`...)
		b = strconv.AppendInt(b, -50-int64(d.index%40), 10)
		b = append(b, `,"snr":9.5}},"aux":{"up":1`...)
		b = pad(b, start, size-2)
		return append(b, "}}"...)
	}
	b = pad(b, start, size-1)
	return append(b, '}')
}

// pad appends filler fields until b[start:] is size bytes long (or just
// under, when a field no longer fits): numbers, as devices send, and a
// string to make up the rest.
func pad(b []byte, start, size int) []byte {
	const field = len(`,"aux00":1234.5`)
	for k := 0; len(b)-start+field <= size && k < 100; k++ {
		b = append(b, `,"aux`...)
		b = append(b, byte('0'+k/10), byte('0'+k%10))
		b = append(b, `":`...)
		b = strconv.AppendFloat(b, 1000+float64(k)*11.1, 'f', 1, 64)
	}
	if rest := size - (len(b) - start) - len(`,"s":""`); rest > 0 {
		b = append(b, `,"s":"`...)
		for range rest {
			b = append(b, 'x')
		}
		b = append(b, '"')
	}
	return b
}
