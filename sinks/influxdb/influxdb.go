// Package influxdb is the InfluxDB sink: it turns records (or alerts) into
// points and writes each batch with influxdb-client-go's blocking write API,
// one HTTP request per batch, so the result drives the acknowledgement.
// It speaks the v2 write API, which InfluxDB 2.x and 1.8+ both serve (for
// 1.x the bucket is "database/retention-policy" and the token "user:password").
package influxdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"
	"unsafe"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/influxdata/influxdb-client-go/v2/api"
	http2 "github.com/influxdata/influxdb-client-go/v2/api/http"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/secret"
	"github.com/sluicehq/sluice/internal/tmpl"
)

// Config configures an InfluxDB sink.
type Config struct {
	URL string `yaml:"url"`
	// Token authenticates: an InfluxDB 2 API token, or "user:password" for
	// InfluxDB 1.x with authentication on (empty when it is off). Inline,
	// {env: NAME} or {file: PATH}.
	Token  secret.String `yaml:"token"`
	Org    string        `yaml:"org"`
	Bucket string        `yaml:"bucket"`
	// Measurement is a template; default "{rule}" for records (each rule
	// its own measurement) and "alerts" for alerts.
	Measurement string `yaml:"measurement"`
	// Tags maps tag names to templates, e.g. {site: "{1}", device: "{device}"}.
	// Default: the record's tags (the rule's named topic segments).
	Tags map[string]string `yaml:"tags"`
	// Fields lists the record fields written; default all of them.
	Fields []string `yaml:"fields"`
	// TimeField names a record field holding the measurement's time (the
	// device's timestamp); it is not written as a field. Default: the time
	// sluice received the message.
	TimeField string `yaml:"time_field"`
	// TimeProperty names an MQTT 5 user property holding the measurement's
	// time instead (the device's timestamp, sent beside the payload); a
	// message without it gets the receive time. Not with TimeField.
	TimeProperty string `yaml:"time_property"`
	// TimeFormat is how TimeField or TimeProperty is written: unix,
	// unix_ms (default), unix_us, unix_ns (numbers) or rfc3339 (text).
	TimeFormat string `yaml:"time_format"`
	// TagProperties lists MQTT 5 user properties written as tags (named as
	// the property) when a message carries them, e.g. [gateway, firmware].
	TagProperties []string `yaml:"tag_properties"`
	// Timeout bounds one batch write (default 10s).
	Timeout time.Duration `yaml:"timeout"`
	// TLS sets what an https URL trusts (default: the system's roots) and
	// the client certificate for mutual TLS.
	TLS *secret.TLS `yaml:"tls"`
	// Create makes the database when it does not exist (InfluxDB 1.x:
	// CREATE DATABASE), at start and when a write finds it gone. InfluxDB
	// 2.x buckets are made with its own tools.
	Create bool `yaml:"create"`
}

var timeFormats = []string{"unix", "unix_ms", "unix_us", "unix_ns", "rfc3339"}

// SetDefaults fills in what the operator left out, for the stream the sink
// is configured with.
func (c *Config) SetDefaults(stream sluice.Stream) {
	if c.Measurement == "" {
		c.Measurement = "{rule}"
		if stream == sluice.StreamAlerts {
			c.Measurement = "alerts"
		}
	}
	if c.TimeFormat == "" {
		c.TimeFormat = "unix_ms"
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var p conf.Problems
	if c.URL == "" {
		p.Missing("url")
	} else if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.Addf("url", "%q is not an http(s) URL", c.URL)
	}
	if c.Bucket == "" {
		p.Missing("bucket")
	}
	if _, err := tmpl.Parse(c.Measurement); err != nil {
		p.Addf("measurement", "%v", err)
	}
	for name, t := range c.Tags {
		if _, err := tmpl.Parse(t); err != nil {
			p.Addf("tags."+name, "%v", err)
		}
	}
	if c.TimeFormat != "" {
		ok := false
		for _, f := range timeFormats {
			ok = ok || f == c.TimeFormat
		}
		if !ok {
			p.Addf("time_format", "%q: want one of unix, unix_ms, unix_us, unix_ns, rfc3339", c.TimeFormat)
		}
	}
	if c.TimeField != "" && c.TimeProperty != "" {
		p.Addf("time_property", "set time_field or time_property, not both")
	}
	for i, name := range c.TagProperties {
		if name == "" {
			p.Addf(fmt.Sprintf("tag_properties[%d]", i), "empty property name")
		}
	}
	if c.Timeout < 0 {
		p.Addf("timeout", "must not be negative")
	}
	if c.TLS != nil {
		if u, err := url.Parse(c.URL); err == nil && u.Scheme == "http" {
			p.Addf("tls", "the url is http://, so TLS is not used; write https://")
		}
		p.Nest("tls", c.TLS.Validate())
	}
	return p.Err()
}

// RecordFields returns the record fields the sink reads, when it reads
// only some (fields is set): those it writes, its time field and the names
// its measurement and tag templates look up. all is true when it reads
// every field (no fields list). The configuration must be valid.
func (c *Config) RecordFields() (names []string, all bool) {
	if len(c.Fields) == 0 {
		return nil, true
	}
	names = append(names, c.Fields...)
	if c.TimeField != "" {
		names = append(names, c.TimeField)
	}
	measurement := c.Measurement
	if measurement == "" {
		measurement = "{rule}"
	}
	names = append(names, tmpl.MustParse(measurement).Names()...)
	for _, t := range c.Tags {
		names = append(names, tmpl.MustParse(t).Names()...)
	}
	slices.Sort(names)
	return slices.Compact(names), false
}

// Sink writes points to InfluxDB.
type Sink struct {
	cfg         Config
	measurement *tmpl.Template
	tags        []tagTemplate
	fields      map[string]bool
	encoders    sync.Pool // of *encoder

	mu     sync.Mutex
	closed bool
	client influxdb2.Client // nil until set up
	write  api.WriteAPIBlocking
}

type tagTemplate struct {
	name string
	t    *tmpl.Template
}

// New returns a sink for cfg (validated). It does no I/O: the TLS files are
// read by Connect or the first Write.
func New(cfg Config, stream sluice.Stream) *Sink {
	cfg.SetDefaults(stream)
	s := &Sink{cfg: cfg, measurement: tmpl.MustParse(cfg.Measurement)}
	for name, t := range cfg.Tags {
		s.tags = append(s.tags, tagTemplate{name, tmpl.MustParse(t)})
	}
	sort.Slice(s.tags, func(i, j int) bool { return s.tags[i].name < s.tags[j].name })
	if len(cfg.Fields) > 0 {
		s.fields = map[string]bool{}
		for _, f := range cfg.Fields {
			s.fields[f] = true
		}
	}
	return s
}

// setup reads the TLS files and makes the client, once it succeeds: until
// then every Connect and Write tries again, so a fixed file is picked up
// without a restart.
func (s *Sink) setup() (influxdb2.Client, api.WriteAPIBlocking, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, errors.New("sink closed")
	}
	if s.client != nil {
		return s.client, s.write, nil
	}
	opts := influxdb2.DefaultOptions().
		SetHTTPRequestTimeout(uint(math.Ceil(s.cfg.Timeout.Seconds()))).
		SetLogLevel(0)
	if s.cfg.TLS != nil {
		tlsCfg, err := s.cfg.TLS.Load()
		if err != nil {
			return nil, nil, err
		}
		opts.SetTLSConfig(tlsCfg)
	}
	hc := opts.HTTPClient() // the client's own, with the options above
	hc.Transport = fullErrors{hc.Transport}
	s.client = influxdb2.NewClientWithOptions(s.cfg.URL, s.cfg.Token.Reveal(), opts)
	s.write = s.client.WriteAPIBlocking(s.cfg.Org, s.cfg.Bucket)
	return s.client, s.write, nil
}

// Connect checks that InfluxDB answers.
func (s *Sink) Connect(ctx context.Context) error {
	client, _, err := s.setup()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	ok, err := client.Ping(ctx)
	if err != nil {
		return s.explain(err)
	}
	if !ok {
		return errors.New("ping failed")
	}
	// A missing database is said once, here, with the fix (or made).
	return s.checkBucket(ctx, client)
}

// Write writes a batch as one request. An event that cannot become a point
// (no fields, a bad timestamp) is reported permanent in a *sluice.BatchError;
// so is a point InfluxDB refuses by name in a partial write, the others
// being stored (see send); a request refused as a whole is classified by
// its HTTP status.
func (s *Sink) Write(ctx context.Context, batch []sluice.Event) error {
	_, writeAPI, err := s.setup()
	if err != nil {
		// A TLS file that is missing or bad: the events wait in the
		// journal while the operator fixes it.
		return sluice.Retryable(err, 0)
	}
	// The batch is encoded here, in one buffer reused from batch to
	// batch, rather than as a client Point per event: that was an eighth
	// of sluice's CPU under load (sluice bench).
	enc, _ := s.encoders.Get().(*encoder)
	if enc == nil {
		enc = new(encoder)
	}
	defer s.encoders.Put(enc)
	body, lines := enc.body[:0], enc.lines[:0]
	bad := map[int]error{}
	for i := range batch {
		p, err := s.point(enc, &batch[i])
		if err != nil {
			bad[i] = sluice.Permanent(err)
			continue
		}
		start := len(body)
		body = p.appendLine(body)
		lines = append(lines, line{event: i, start: start, end: len(body)})
	}
	enc.body, enc.lines = body, lines
	if err := s.send(ctx, writeAPI, enc, batch, bad); err != nil {
		if len(bad) == 0 {
			return err
		}
		// The events of the request share its error: the writer finds
		// the bad ones among them, if it is permanent.
		for _, l := range enc.lines {
			bad[l.event] = err
		}
	}
	if len(bad) > 0 {
		return &sluice.BatchError{Errs: bad}
	}
	return nil
}

// send writes the lines of enc in one request. When InfluxDB refuses some
// of its points by name (a partial write), each of them goes into bad with
// an error of its own and leaves enc, and the rest, unless InfluxDB stored
// all of it, is sent again in one request: points stored already are
// overwritten with themselves. It returns the error of a request refused
// with no point named (the lines left in enc are those it held), or nil.
func (s *Sink) send(ctx context.Context, w api.WriteAPIBlocking, enc *encoder, batch []sluice.Event, bad map[int]error) error {
	created := false
	for len(enc.lines) > 0 {
		// The request body is enc's buffer itself, not a copy: a write
		// InfluxDB acknowledged has been read whole before its answer, so
		// the next batch may write over the buffer. A failed one may still
		// be read by the HTTP transport after WriteRecord returns (a server
		// can answer before it reads the body): enc moves to a copy.
		body := enc.body[:len(enc.body)-1]
		err := w.WriteRecord(ctx, unsafe.String(unsafe.SliceData(body), len(body)))
		if err == nil {
			return nil
		}
		enc.body = bytes.Clone(enc.body)
		if db := missingDatabase(err); db != "" && s.cfg.Create && !created {
			created = true // once a request: a database made and still missing is said
			if client, _, serr := s.setup(); serr == nil && s.createDatabase(ctx, client, db) == nil {
				continue
			}
		}
		err = classify(s.explain(err))
		r := partialWrite(err)
		if r == nil {
			return err
		}
		named := enc.drop(func(l line) bool {
			p, perr := s.point(enc, &batch[l.event])
			if perr != nil || !r.named(&p) {
				return false
			}
			bad[l.event] = sluice.Permanent(fmt.Errorf("InfluxDB refused the point: %w", err))
			return true
		})
		switch {
		case named == 0:
			return err
		case named == r.dropped:
			return nil // InfluxDB stored the others
		}
		// InfluxDB dropped points for a reason it did not give (it gives
		// the first only), or named points it stored (1.x keeps field
		// types per shard): the rest goes again.
	}
	return nil
}

// Close releases the HTTP client. It is idempotent.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed && s.client != nil {
		s.client.Close()
	}
	s.closed = true
	return nil
}

// encoder is the scratch space of one Write: the request body and the
// tags and fields of the point being built, kept from batch to batch.
type encoder struct {
	body   []byte
	lines  []line // where each event's point is in body
	tags   []sluice.Tag
	fields []sluice.Field
	sorted []sluice.Field
	orders fieldOrders
}

// line is where the point of an event (its index in the batch) is in the
// request body.
type line struct{ event, start, end int }

// drop removes from the body the lines refused says so of, and returns how
// many it removed.
func (enc *encoder) drop(refused func(line) bool) int {
	body, kept, n := enc.body[:0], enc.lines[:0], 0
	for _, l := range enc.lines {
		if refused(l) {
			n++
			continue
		}
		start := len(body)
		body = append(body, enc.body[l.start:l.end]...) // moves it back in the same array
		kept = append(kept, line{l.event, start, len(body)})
	}
	enc.body, enc.lines = body, kept
	return n
}

// point builds e's point in enc's scratch space: it is valid until the
// next call.
func (s *Sink) point(enc *encoder, e *sluice.Event) (point, error) {
	measurement, err := s.measurement.Render(e)
	if err != nil {
		return point{}, err
	}
	switch {
	case e.Record != nil:
		return s.recordPoint(enc, e, measurement)
	case e.Alert != nil:
		return s.alertPoint(enc, e, measurement)
	}
	return point{}, fmt.Errorf("the influxdb sink writes records or alerts, not %s", e.Stream)
}

func (s *Sink) recordPoint(enc *encoder, e *sluice.Event, measurement string) (point, error) {
	r := e.Record
	tags, err := s.renderTags(enc.tags[:0], e, r.Tags)
	enc.tags = tags
	if err != nil {
		return point{}, err
	}
	ts, err := s.propertyTime(e.Message, r.Time)
	if err != nil {
		return point{}, err
	}
	fields := enc.fields[:0]
	for _, f := range r.Fields {
		name := f.Name
		if name == s.cfg.TimeField {
			if ts, err = parseTime(f.Value, s.cfg.TimeFormat); err != nil {
				return point{}, fmt.Errorf("time field %q: %w", name, err)
			}
			continue
		}
		if s.fields != nil && !s.fields[name] {
			continue
		}
		if hasTag(tags, name) {
			continue
		}
		if fv, ok := fieldValue(f.Value); ok {
			fields = append(fields, sluice.Field{Name: name, Value: fv})
		}
	}
	enc.fields = fields
	if len(fields) == 0 {
		return point{}, fmt.Errorf("record of rule %q has no fields to write", r.Rule)
	}
	if enc.orders == nil {
		enc.orders = fieldOrders{}
	}
	enc.sorted = enc.orders.sort(r.Rule, fields, enc.sorted[:0])
	return point{measurement, tags, enc.sorted, ts}, nil
}

// alertPoint writes an alert transition: tags rule, severity, status,
// device, series (and the rule's tags); fields value, message, firing (1 or
// 0, to graph), and duration_s for a resolved alert.
func (s *Sink) alertPoint(enc *encoder, e *sluice.Event, measurement string) (point, error) {
	a := e.Alert
	base := []sluice.Tag{{Key: "rule", Value: a.Rule}, {Key: "severity", Value: a.Severity}, {Key: "status", Value: a.Status},
		{Key: "device", Value: a.Device}, {Key: "series", Value: a.Series}}
	base = append(base, a.Tags...)
	tags, err := s.renderTags(enc.tags[:0], e, base)
	enc.tags = tags
	if err != nil {
		return point{}, err
	}
	fields := []sluice.Field{{Name: "message", Value: a.Message}}
	if a.Status == sluice.AlertFiring {
		fields = append(fields, sluice.Field{Name: "firing", Value: int64(1)})
	} else {
		fields = append(fields, sluice.Field{Name: "firing", Value: int64(0)},
			sluice.Field{Name: "duration_s", Value: a.Time.Sub(a.Since).Seconds()})
	}
	if v, ok := fieldValue(a.Value); ok {
		if _, isNum := v.(float64); isNum {
			fields = append(fields, sluice.Field{Name: "value", Value: v})
		} else {
			fields = append(fields, sluice.Field{Name: "value_text", Value: fmt.Sprint(v)})
		}
	}
	return point{measurement, tags, sortFields(fields), a.Time}, nil
}

// propertyTime is the time in the message's time_property, if the sink has
// one and the message carries it; otherwise def.
func (s *Sink) propertyTime(m *sluice.Message, def time.Time) (time.Time, error) {
	if s.cfg.TimeProperty == "" {
		return def, nil
	}
	text, ok := m.Property(s.cfg.TimeProperty)
	if !ok {
		return def, nil
	}
	var v any = text
	if s.cfg.TimeFormat != "rfc3339" {
		n, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return time.Time{}, sluice.Permanent(fmt.Errorf("time property %q: %q is not a number (%s)", s.cfg.TimeProperty, text, s.cfg.TimeFormat))
		}
		v = n
	}
	t, err := parseTime(v, s.cfg.TimeFormat)
	if err != nil {
		return time.Time{}, sluice.Permanent(fmt.Errorf("time property %q: %w", s.cfg.TimeProperty, err))
	}
	return t, nil
}

// renderTags appends the point's tags to tags and sorts them: the
// configured templates, or the defaults (the first value of a key wins),
// and the tag_properties the message carries. Empty values are left out.
func (s *Sink) renderTags(tags []sluice.Tag, e *sluice.Event, defaults []sluice.Tag) ([]sluice.Tag, error) {
	if s.tags == nil {
		tags = append(tags, defaults...)
	} else {
		for _, t := range s.tags {
			v, err := t.t.Render(e)
			if err != nil {
				return tags, fmt.Errorf("tag %q: %w", t.name, err)
			}
			tags = append(tags, sluice.Tag{Key: t.name, Value: v})
		}
	}
	for _, name := range s.cfg.TagProperties {
		if v, ok := e.Message.Property(name); ok {
			tags = append(tags, sluice.Tag{Key: name, Value: v})
		}
	}
	return sortTags(tags), nil
}

func hasTag(tags []sluice.Tag, key string) bool {
	for i := range tags {
		if tags[i].Key == key {
			return true
		}
	}
	return false
}

// fieldValue returns v as an InfluxDB field value: float, integer, boolean
// or string (v itself, when it is one: no new allocation).
func fieldValue(v any) (any, bool) {
	switch x := v.(type) {
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, false
		}
		return v, true
	case int64, bool, string:
		return v, true
	case int:
		return int64(x), true
	}
	return nil, false
}

func parseTime(v any, format string) (time.Time, error) {
	if format == "rfc3339" {
		s, ok := v.(string)
		if !ok {
			return time.Time{}, fmt.Errorf("want RFC 3339 text, got %v", v)
		}
		return time.Parse(time.RFC3339Nano, s)
	}
	var n float64
	switch x := v.(type) {
	case float64:
		n = x
	case int64:
		n = float64(x)
	default:
		return time.Time{}, fmt.Errorf("want a number (%s), got %v", format, v)
	}
	switch format {
	case "unix":
		sec, frac := math.Modf(n)
		return time.Unix(int64(sec), int64(frac*1e9)), nil
	case "unix_ms":
		return time.UnixMilli(int64(n)), nil
	case "unix_us":
		return time.UnixMicro(int64(n)), nil
	default:
		return time.Unix(0, int64(n)), nil
	}
}

// explain adds to a refused token, or a failed TLS handshake, what the
// operator has to check. It says where the token came from, never the token.
func (s *Sink) explain(err error) error {
	var he *http2.Error
	if errors.As(err, &he) {
		he.Message = shortenEcho(he.Message)
	}
	if missing := s.explainMissing(err); missing != nil {
		return missing
	}
	switch {
	case errors.As(err, &he) && (he.StatusCode == http.StatusUnauthorized || he.StatusCode == http.StatusForbidden):
		from := "no token is set"
		if s.cfg.Token.IsSet() {
			from = "the token from " + s.cfg.Token.Source()
		}
		return fmt.Errorf("InfluxDB refused the request (%s); check token in the config and its permissions on the bucket: %w", from, err)
	case secret.IsTLSFailure(err):
		return fmt.Errorf("TLS with InfluxDB failed; check tls in the config (ca_file, cert_file, key_file, server_name): %w", err)
	}
	return err
}

// classify sorts a write error by HTTP status: 400 (bad line protocol, a
// field type conflict), 413 and 422 (outside retention) are permanent for the
// points sent; 429 and 503 are throttling, retried after Retry-After; every
// other failure, including 401/403/404 (a token or bucket the operator must
// fix), is retried, so that no data is dropped while it is being fixed.
func classify(err error) error {
	var he *http2.Error
	if !errors.As(err, &he) {
		return sluice.Retryable(err, 0)
	}
	switch he.StatusCode {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return sluice.Permanent(err)
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return sluice.Retryable(err, time.Duration(he.RetryAfter)*time.Second)
	}
	return sluice.Retryable(err, 0)
}
