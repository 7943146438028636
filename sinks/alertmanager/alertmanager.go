// Package alertmanager is the Alertmanager sink: it hands alerts to
// Prometheus Alertmanager's v2 API (POST /api/v2/alerts), which groups,
// silences, inhibits and routes them to e-mail, chat and pagers.
//
// Alertmanager treats a client the way it treats Prometheus: an alert is
// firing while the client keeps sending it, and ends at its endsAt. So the
// sink keeps the alerts it has sent, by rule and series, bounded by
// max_alerts, and a timer (Run) sends the firing ones again every
// resend_interval with endsAt four intervals ahead; a resolved alert is sent
// with endsAt at the time it resolved, and again on the timer for four
// intervals, for an Alertmanager that missed it. Every alert goes to every
// configured Alertmanager (an HA cluster shares silences and notifications,
// not alerts); a write succeeds once one of them took it, and the timer
// brings the others up to date.
package alertmanager

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/httpsink"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/ratelog"
	"github.com/sluicehq/sluice/internal/tmpl"
)

// Options are what a Sink is given rather than configured with.
type Options struct {
	// Name is the sink's name, for metrics.
	Name    string
	Logger  *slog.Logger
	Metrics *metrics.Metrics
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// expireAfter is how many resend intervals ahead a firing alert's endsAt
// is, and how long a resolved alert is re-sent: Prometheus' choice.
const expireAfter = 4

// maxPerRequest bounds the alerts in one request of a re-send.
const maxPerRequest = 256

// Sink sends alerts to Alertmanager.
type Sink struct {
	cfg     Config
	name    string
	log     *slog.Logger
	rlog    *ratelog.Logger
	metrics *metrics.Metrics
	now     func() time.Time
	targets []target

	labels       []namedTemplate
	annotations  []namedTemplate
	generatorURL *tmpl.Template

	client httpsink.Client // made on first use, with the TLS settings

	// sending is held while alerts are built and posted, by Write and by
	// the re-send alike: a re-send never overtakes a later transition of
	// the same alert (a firing copy arriving after its resolve would open
	// it again).
	sending sync.Mutex
	alerts  map[alertKey]*tracked
}

// target is one Alertmanager.
type target struct {
	url   string // .../api/v2/alerts
	label string // for metrics and logs
}

type namedTemplate struct {
	name string
	t    *tmpl.Template
}

// alertKey names an alert in sluice: one per rule and series.
type alertKey struct{ rule, series string }

// tracked is an alert the sink keeps sending: its labels (fixed for the
// episode, see build) and the rest of its JSON but endsAt.
type tracked struct {
	labels []byte // {"alertname":...}
	rest   []byte // ,"annotations":{...},"startsAt":"..."[,"generatorURL":"..."]
	// resolved is when the sink learnt the alert resolved (zero while it
	// fires); endsAt the time it resolved.
	resolved time.Time
	endsAt   time.Time
}

// New returns a sink for cfg (validated). It does no I/O: the TLS files are
// read by Connect or the first Write.
func New(cfg Config, o Options) *Sink {
	cfg.SetDefaults()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Sink{cfg: cfg, name: o.Name, log: o.Logger, rlog: ratelog.New(o.Logger, 10*time.Second, nil), metrics: o.Metrics,
		now: o.Now, alerts: map[alertKey]*tracked{}, client: httpsink.Client{TLS: cfg.TLS}}
	for _, raw := range cfg.URLs {
		u, _ := url.Parse(raw)
		api := u.JoinPath("api", "v2", "alerts")
		s.targets = append(s.targets, target{url: api.String(), label: u.Redacted()})
	}
	for _, name := range sortedKeys(cfg.Labels) {
		s.labels = append(s.labels, namedTemplate{name, tmpl.MustParse(cfg.Labels[name])})
	}
	for _, name := range sortedKeys(cfg.Annotations) {
		s.annotations = append(s.annotations, namedTemplate{name, tmpl.MustParse(cfg.Annotations[name])})
	}
	if cfg.GeneratorURL != "" {
		s.generatorURL = tmpl.MustParse(cfg.GeneratorURL)
	}
	for _, t := range s.targets {
		for _, result := range []string{"ok", "error"} {
			s.metrics.AlertmanagerRequests.WithLabelValues(o.Name, t.label, result)
		}
	}
	s.metrics.AlertmanagerUntracked.WithLabelValues(o.Name)
	s.gauge()
	return s
}

// Connect checks that the Alertmanagers answer (GET /api/v2/status, with
// the credentials): it returns an error only when none does.
func (s *Sink) Connect(ctx context.Context) error {
	client, err := s.client.Get()
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range s.targets {
		if err := s.status(ctx, client, t); err != nil {
			errs = append(errs, fmt.Errorf("alertmanager %s: %w", t.label, err))
		}
	}
	if len(errs) == len(s.targets) {
		return errors.Join(errs...)
	}
	for _, err := range errs {
		s.log.Warn("an Alertmanager does not answer; the others do, and it is sent the alerts when it comes back", "error", err)
	}
	return nil
}

func (s *Sink) status(ctx context.Context, client *http.Client, t target) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(t.url, "/alerts")+"/status", nil)
	if err != nil {
		return err
	}
	s.auth(req.Header)
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return err
	}
	return httpsink.Check(resp, s.now())
}

// auth sets the credentials.
func (s *Sink) auth(h http.Header) {
	switch {
	case s.cfg.Token.IsSet():
		h.Set("Authorization", "Bearer "+s.cfg.Token.Reveal())
	case s.cfg.Username != "":
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(s.cfg.Username+":"+s.cfg.Password.Reveal())))
	}
}

// Write sends the batch's alerts to every Alertmanager in one request each,
// and updates the alerts kept for re-sending. It succeeds once one
// Alertmanager took them. An event that is not an alert, or whose template
// cannot be filled, is permanent; so is the batch when every Alertmanager
// refuses it as invalid (400, 413, 422); any other failure (down, 5xx,
// 401/403 while credentials are fixed) is retried.
func (s *Sink) Write(ctx context.Context, batch []sluice.Event) error {
	client, err := s.client.Get()
	if err != nil {
		return sluice.Retryable(fmt.Errorf("alertmanager: %w", err), 0)
	}
	s.sending.Lock()
	defer s.sending.Unlock()
	now := s.now()
	bad := map[int]error{}
	body := []byte{'['}
	var keys []alertKey
	for i := range batch {
		e := &batch[i]
		if e.Alert == nil {
			bad[i] = sluice.Permanent(fmt.Errorf("the alertmanager sink sends alerts, not %s", e.Stream))
			continue
		}
		t, err := s.build(e)
		if err != nil {
			bad[i] = sluice.Permanent(err)
			continue
		}
		if len(keys) > 0 {
			body = append(body, ',')
		}
		keys = append(keys, alertKey{e.Alert.Rule, e.Alert.Series})
		body = s.apply(body, keys[len(keys)-1], t, e.Alert, now)
	}
	s.gauge()
	if len(keys) > 0 {
		if err := s.send(ctx, client, append(body, ']')); err != nil {
			if sluice.IsPermanent(err) && len(batch) == 1 {
				// Refused for good: it would be refused at every re-send.
				s.forget(keys[0])
			}
			if len(bad) == 0 {
				return err
			}
			for i := range batch {
				if _, failed := bad[i]; !failed {
					bad[i] = err
				}
			}
		}
	}
	if len(bad) > 0 {
		return &sluice.BatchError{Errs: bad}
	}
	return nil
}

// apply records a transition in the alerts kept and appends what to send
// for it to body.
//
// An episode keeps the labels it first fired with: an alert's tags are
// those of the reading that caused the transition, and for a rule keyed by
// site a re-notification may come from another device's reading; in
// Alertmanager that would be another alert. The resolve goes out with the
// labels Alertmanager has.
func (s *Sink) apply(body []byte, k alertKey, t *tracked, a *sluice.Alert, now time.Time) []byte {
	old, known := s.alerts[k]
	if known && old.resolved.IsZero() {
		t.labels = old.labels
	}
	if a.Status == sluice.AlertResolved {
		t.resolved, t.endsAt = now, a.Time
	}
	s.track(k, t)
	return appendAlert(body, t, s.endsAt(t, now))
}

// endsAt is a firing alert's endsAt, if sent at now, or a resolved one's.
func (s *Sink) endsAt(t *tracked, now time.Time) time.Time {
	if t.resolved.IsZero() {
		return now.Add(expireAfter * s.cfg.ResendInterval)
	}
	return t.endsAt
}

// track keeps t under k, within max_alerts: when full, a resolved alert
// makes room for a firing one; a firing alert finding no room is sent this
// once, without re-sends, and counted.
func (s *Sink) track(k alertKey, t *tracked) {
	if _, ok := s.alerts[k]; ok || len(s.alerts) < s.cfg.MaxAlerts {
		s.alerts[k] = t
		return
	}
	if !t.resolved.IsZero() {
		return
	}
	for other, o := range s.alerts {
		if !o.resolved.IsZero() {
			delete(s.alerts, other)
			s.alerts[k] = t
			return
		}
	}
	s.metrics.AlertmanagerUntracked.WithLabelValues(s.name).Inc()
	s.rlog.Warn("untracked", "max_alerts alerts are firing: this one is sent once and not again; Alertmanager resolves it after four resend intervals", "max_alerts", s.cfg.MaxAlerts, "rule", k.rule, "series", k.series)
}

func (s *Sink) forget(k alertKey) {
	delete(s.alerts, k)
	s.gauge()
}

// gauge publishes how many alerts are kept.
func (s *Sink) gauge() {
	firing := 0
	for _, t := range s.alerts {
		if t.resolved.IsZero() {
			firing++
		}
	}
	s.metrics.AlertmanagerAlerts.WithLabelValues(s.name, "firing").Set(float64(firing))
	s.metrics.AlertmanagerAlerts.WithLabelValues(s.name, "resolved").Set(float64(len(s.alerts) - firing))
}

// send posts body to every Alertmanager at once. It returns nil when one
// took it; otherwise the failures, permanent if every Alertmanager refused
// the alerts as invalid.
func (s *Sink) send(ctx context.Context, client *http.Client, body []byte) error {
	errs := make([]error, len(s.targets))
	var wg sync.WaitGroup
	for i, t := range s.targets {
		wg.Go(func() { errs[i] = s.post(ctx, client, t, body) })
	}
	wg.Wait()
	ok := slices.Index(errs, nil) >= 0
	var failed []error
	permanent := true
	var after time.Duration
	for i, err := range errs {
		if err == nil {
			continue
		}
		err = fmt.Errorf("alertmanager %s: %w", s.targets[i].label, err)
		if ok {
			s.rlog.Warn("target:"+s.targets[i].label, "an Alertmanager did not take the alerts; another did, and it is sent them again within resend_interval", "error", err)
			continue
		}
		var se *httpsink.StatusError
		if !errors.As(err, &se) || (se.Code != http.StatusBadRequest && se.Code != http.StatusRequestEntityTooLarge && se.Code != http.StatusUnprocessableEntity) {
			permanent = false
		}
		if se != nil {
			after = max(after, se.RetryAfter)
		}
		failed = append(failed, err)
	}
	if ok {
		return nil
	}
	if permanent {
		return sluice.Permanent(errors.Join(failed...))
	}
	return sluice.Retryable(errors.Join(failed...), after)
}

// post sends body to one Alertmanager, and counts the result.
func (s *Sink) post(ctx context.Context, client *http.Client, t target, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	err := httpsink.Post(ctx, client, t.url, body, s.auth)
	result := "ok"
	if err != nil {
		result = "error"
	}
	s.metrics.AlertmanagerRequests.WithLabelValues(s.name, t.label, result).Inc()
	return err
}

// Run sends the alerts kept again every resend_interval until ctx ends.
func (s *Sink) Run(ctx context.Context) {
	tick := time.NewTicker(s.cfg.ResendInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			s.resend(ctx)
		case <-ctx.Done():
			return
		}
	}
}

// resend sends every alert kept to every Alertmanager, firing ones with a
// new endsAt, and lets go of resolved ones after four intervals.
func (s *Sink) resend(ctx context.Context) {
	client, err := s.client.Get()
	if err != nil {
		s.rlog.Warn("resend", "cannot re-send the firing alerts", "error", err)
		return
	}
	s.sending.Lock()
	defer s.sending.Unlock()
	now := s.now()
	var bodies [][]byte
	var body []byte
	n := 0
	for k, t := range s.alerts {
		if !t.resolved.IsZero() && now.Sub(t.resolved) > expireAfter*s.cfg.ResendInterval {
			delete(s.alerts, k)
			continue
		}
		if n == maxPerRequest {
			bodies, body, n = append(bodies, append(body, ']')), nil, 0
		}
		if n == 0 {
			body = append(body, '[')
		} else {
			body = append(body, ',')
		}
		body = appendAlert(body, t, s.endsAt(t, now))
		n++
	}
	if n > 0 {
		bodies = append(bodies, append(body, ']'))
	}
	s.gauge()
	for _, b := range bodies {
		for _, t := range s.targets {
			if err := s.post(ctx, client, t, b); err != nil && ctx.Err() == nil {
				s.rlog.Warn("resend:"+t.label, "an Alertmanager did not take the re-sent alerts; they are sent again next interval", "alertmanager", t.label, "error", err)
			}
		}
	}
}

// Close ends the client's idle connections. It is idempotent.
func (s *Sink) Close(ctx context.Context) error {
	s.client.Close()
	return nil
}

// build makes the Alertmanager alert for an alert transition: labels
// alertname (the rule), severity, series, device and the alert's tags
// (names made valid: "line-1" → "line_1"), then the configured labels;
// annotations summary (the message), value, since and topic, then the
// configured annotations; startsAt the episode's start; generatorURL when
// configured. Empty values are left out.
func (s *Sink) build(e *sluice.Event) (*tracked, error) {
	a := e.Alert
	labels := make(map[string]string, len(a.Tags)+4+len(s.labels))
	for _, t := range a.Tags {
		labels[labelName(t.Key)] = t.Value
	}
	labels["alertname"] = a.Rule
	labels["severity"] = a.Severity
	labels["series"] = a.Series
	labels["device"] = a.Device
	for _, l := range s.labels {
		v, err := l.t.Render(e)
		if err != nil {
			return nil, fmt.Errorf("label %q: %w", l.name, err)
		}
		labels[l.name] = v
	}
	annotations := map[string]string{"summary": a.Message, "value": sluice.FormatValue(a.Value), "topic": a.Topic}
	if !a.Since.IsZero() {
		annotations["since"] = a.Since.UTC().Format(time.RFC3339Nano)
	}
	for _, an := range s.annotations {
		v, err := an.t.Render(e)
		if err != nil {
			return nil, fmt.Errorf("annotation %q: %w", an.name, err)
		}
		annotations[an.name] = v
	}
	t := &tracked{labels: appendSet(nil, labels)}
	rest := append([]byte(`,"annotations":`), appendSet(nil, annotations)...)
	startsAt := a.Since
	if startsAt.IsZero() {
		startsAt = a.Time
	}
	rest = append(rest, `,"startsAt":"`...)
	rest = append(startsAt.UTC().AppendFormat(rest, time.RFC3339Nano), '"')
	if s.generatorURL != nil {
		u, err := s.generatorURL.Render(e)
		if err != nil {
			return nil, fmt.Errorf("generator_url: %w", err)
		}
		rest = sluice.AppendJSONString(append(rest, `,"generatorURL":`...), u)
	}
	// Kept for as long as the alert fires: no spare capacity.
	t.labels, t.rest = bytes.Clone(t.labels), bytes.Clone(rest)
	return t, nil
}

// appendSet appends a label or annotation set as a JSON object, sorted by
// name, without empty values; text that is not UTF-8 is made so.
func appendSet(b []byte, set map[string]string) []byte {
	b = append(b, '{')
	first := true
	for _, k := range sortedKeys(set) {
		v := set[k]
		if v == "" {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(sluice.AppendJSONString(b, k), ':')
		b = sluice.AppendJSONString(b, strings.ToValidUTF8(v, "\uFFFD"))
	}
	return append(b, '}')
}

// appendAlert appends t as Alertmanager's postableAlert, with endsAt.
func appendAlert(b []byte, t *tracked, endsAt time.Time) []byte {
	b = append(b, `{"labels":`...)
	b = append(b, t.labels...)
	b = append(b, t.rest...)
	b = append(b, `,"endsAt":"`...)
	b = endsAt.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...)
}
