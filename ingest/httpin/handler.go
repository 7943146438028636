package httpin

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice"
)

const (
	publishPath = "/v1/publish"
	// propPrefix starts the headers that carry MQTT 5 user properties:
	// X-Mqtt-Prop-Unit: degC gives the property unit=degC.
	propPrefix = "X-Mqtt-Prop-"
	// clientIDHeader names the client (the ACL's %c, the rules' client_id).
	clientIDHeader = "X-Client-Id"
)

// batchTypes are the content types of a batch (JSON lines).
var batchTypes = []string{"application/x-ndjson", "application/jsonl", "application/x-jsonlines"}

var qosLabel = [2]string{"0", "1"}

// ServeHTTP routes a request: POST /v1/publish/{topic...} publishes the body
// to the topic; POST /v1/publish takes a batch of JSON lines.
//
// The topic is the rest of the path, percent-decoded: "/" separates levels
// as in MQTT, so empty levels ("a//b") and levels such as ".." are kept as
// written; %2F is a "/" too.
func (s *Source) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	path := r.URL.EscapedPath()
	rawTopic, single := strings.CutPrefix(path, publishPath+"/")
	if !single && path != publishPath {
		s.refuse(w, r, http.StatusNotFound, "not_found", "no such endpoint: publish with POST /v1/publish/{topic} (one message) or POST /v1/publish (a batch of JSON lines)")
		return
	}
	if r.Method != http.MethodPost {
		h.Set("Allow", http.MethodPost)
		s.refuse(w, r, http.StatusMethodNotAllowed, "method", "use POST")
		return
	}
	if !s.enter() {
		s.shuttingDown(w, r)
		return
	}
	defer s.inflight.Done()
	user, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		h.Set("Retry-After", s.retryAfter())
		s.metrics.Refused.WithLabelValues(s.name, "limit").Inc()
		s.refuse(w, r, http.StatusTooManyRequests, "overloaded",
			fmt.Sprintf("too many requests in flight (max_inflight %d); send again after Retry-After", s.cfg.MaxInflight), "user", user)
		return
	}
	in, problem := s.requestInfo(r, user)
	if problem != "" {
		s.refuse(w, r, http.StatusBadRequest, "invalid", problem, "user", user)
		return
	}
	if single {
		s.publishOne(w, r, in, rawTopic)
	} else {
		s.publishBatch(w, r, in)
	}
}

// authenticate finds the user a request's bearer token names, or answers
// 401. Without an Authorization header the request is anonymous (user "")
// where allow_anonymous is set. Tokens are compared as SHA-256 sums, each
// in constant time and all of them every time, and never logged.
func (s *Source) authenticate(w http.ResponseWriter, r *http.Request) (string, bool) {
	header := r.Header.Get("Authorization")
	if header == "" {
		if s.cfg.AllowAnonymous {
			return "", true
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
		s.metrics.Refused.WithLabelValues(s.name, "auth").Inc()
		s.refuse(w, r, http.StatusUnauthorized, "auth", "a bearer token is required (Authorization: Bearer <token>)", "detail", "no token")
		return "", false
	}
	scheme, token, _ := strings.Cut(header, " ")
	user, found := "", false
	if strings.EqualFold(scheme, "Bearer") {
		sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
		for _, t := range s.tokens {
			if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
				user, found = t.user, true
			}
		}
	}
	if !found {
		w.Header().Set("WWW-Authenticate", `Bearer realm="sluice", error="invalid_token"`)
		s.metrics.Refused.WithLabelValues(s.name, "auth").Inc()
		why := "unknown token"
		if !strings.EqualFold(scheme, "Bearer") {
			why = "not a bearer token"
		}
		s.refuse(w, r, http.StatusUnauthorized, "auth", "the bearer token is not valid", "detail", why)
		return "", false
	}
	return user, true
}

// reqInfo is what a request says about all its messages.
type reqInfo struct {
	user, clientID string
	qos            byte
	props          []sluice.Property // from X-Mqtt-Prop-* headers
	received       time.Time
}

// requestInfo reads the query (qos) and the headers every message of the
// request shares, or says what is wrong with them.
func (s *Source) requestInfo(r *http.Request, user string) (reqInfo, string) {
	in := reqInfo{user: user, qos: s.cfg.defaultQoS(), received: time.Now()}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return in, "the query string does not parse"
	}
	for key, vals := range query {
		switch key {
		case "qos":
			if len(vals) != 1 || !isDigits(vals[0]) {
				return in, "qos: want 0 or 1"
			}
			q, _ := strconv.Atoi(vals[0])
			qos, err := checkQoS(q)
			if err != nil {
				return in, "qos " + err.Error()
			}
			in.qos = qos
		case "retain":
			return in, "retain is not supported: messages published over HTTP go to the pipelines, not to MQTT subscribers, and are not retained"
		default:
			return in, fmt.Sprintf("unknown query parameter %q (the one taken is qos)", key)
		}
	}
	in.clientID = strings.TrimSpace(r.Header.Get(clientIDHeader))
	if err := checkString(in.clientID); err != nil {
		return in, clientIDHeader + ": " + err.Error()
	}
	if in.clientID == "" {
		in.clientID = "http"
		if user != "" {
			in.clientID = "http:" + user
		}
	}
	for key, vals := range r.Header {
		if len(key) <= len(propPrefix) || !strings.EqualFold(key[:len(propPrefix)], propPrefix) {
			continue
		}
		name := strings.ToLower(key[len(propPrefix):])
		for _, v := range vals {
			if err := checkString(v); err != nil {
				return in, fmt.Sprintf("%s: %v", key, err)
			}
			in.props = append(in.props, sluice.Property{Key: name, Value: v})
		}
	}
	// Headers come in no order; properties come sorted by name.
	slices.SortStableFunc(in.props, func(a, b sluice.Property) int { return strings.Compare(a.Key, b.Key) })
	return in, ""
}

func isDigits(s string) bool {
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != "" && len(s) < 4
}

// publishOne publishes the request's body to the topic in its path.
func (s *Source) publishOne(w http.ResponseWriter, r *http.Request, in reqInfo, rawTopic string) {
	topic, err := url.PathUnescape(rawTopic)
	if err != nil {
		s.refuse(w, r, http.StatusBadRequest, "invalid", "topic: the path has a bad percent-encoding", "user", in.user)
		return
	}
	if err := checkTopic(topic); err != nil {
		s.refuse(w, r, http.StatusBadRequest, "invalid", fmt.Sprintf("topic %s %v", quoteTopic(topic), err), "user", in.user)
		return
	}
	ct, status, problem := payloadType(r)
	if problem != "" {
		s.refuse(w, r, status, "invalid", problem, "user", in.user, "topic", topic)
		return
	}
	if !s.allowed(in, topic) {
		s.denied(w, r, in, topic, nil)
		return
	}
	payload, ok := s.readBody(w, r, in, int64(s.cfg.MaxBodyBytes), "max_body_bytes")
	if !ok {
		return
	}
	msg := &sluice.Message{
		Topic: topic, Payload: payload, QoS: in.qos, ClientID: in.clientID, Username: in.user,
		ContentType: ct, UserProperties: in.props, Received: in.received,
	}
	s.count(msg)
	if err := s.handler.Handle(r.Context(), msg, true); err != nil {
		s.notAccepted(w, r, in, msg, err, nil)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"accepted": 1})
}

// publishBatch checks every line of a batch, and only when all are valid
// and allowed hands them over, in order; 202 once every one was accepted.
// When one is not (a full journal), those before it were accepted and it
// and those after were not: the answer says from which line to send again.
func (s *Source) publishBatch(w http.ResponseWriter, r *http.Request, in reqInfo) {
	ct := r.Header.Get("Content-Type")
	mt, _, _ := strings.Cut(ct, ";")
	if !slices.Contains(batchTypes, strings.ToLower(strings.TrimSpace(mt))) {
		s.refuse(w, r, http.StatusUnsupportedMediaType, "invalid",
			fmt.Sprintf("a batch is JSON lines, Content-Type: application/x-ndjson (not %q); to publish one message, POST /v1/publish/{topic}", ct),
			"user", in.user)
		return
	}
	if _, status, problem := payloadType(r); problem != "" {
		s.refuse(w, r, status, "invalid", problem, "user", in.user)
		return
	}
	data, ok := s.readBody(w, r, in, int64(s.cfg.MaxBatchBytes), "max_batch_bytes")
	if !ok {
		return
	}
	items, err := ParseBatch(data, BatchLimits{MaxLines: s.cfg.MaxBatchLines, MaxPayload: int(s.cfg.MaxBodyBytes), DefaultQoS: in.qos})
	var bad *BadLines
	switch {
	case errors.As(err, &bad):
		s.refuse(w, r, http.StatusBadRequest, "invalid", bad.Error()+"; nothing was accepted", "user", in.user,
			extra{"lines": bad.First, "invalid_lines": bad.Total})
		return
	case errors.Is(err, ErrTooManyLines):
		s.refuse(w, r, http.StatusRequestEntityTooLarge, "too_large", err.Error()+"; nothing was accepted", "user", in.user)
		return
	case err != nil:
		s.refuse(w, r, http.StatusBadRequest, "invalid", err.Error(), "user", in.user)
		return
	}
	denied, firstDenied := &BadLines{}, ""
	for _, it := range items {
		if !s.allowed(in, it.Message.Topic) {
			if denied.Total == 0 {
				firstDenied = it.Message.Topic
			}
			denied.add(it.Line, "the ACL does not let this client (user %q, client id %q) publish to topic %s",
				in.user, in.clientID, quoteTopic(it.Message.Topic))
		}
	}
	if denied.Total > 0 {
		s.denied(w, r, in, firstDenied, denied)
		return
	}
	for i := range items {
		m := &items[i].Message
		m.ClientID, m.Username, m.Received = in.clientID, in.user, in.received
		if len(in.props) > 0 {
			m.UserProperties = append(slices.Clip(in.props), m.UserProperties...)
		}
		s.count(m)
	}
	for i := range items {
		if err := s.handler.Handle(r.Context(), &items[i].Message, true); err != nil {
			s.notAccepted(w, r, in, &items[i].Message, err, extra{"accepted": i, "failed_line": items[i].Line})
			return
		}
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"accepted": len(items)})
}

// payloadType is the content type a single message carries, from the
// request's Content-Type: as sent, but for the form type curl -d sends by
// default, which says nothing about the payload. A Content-Encoding is
// refused rather than undone: a compressed payload is sent as it is, with
// its own content type (application/gzip), and the rules decompress it.
func payloadType(r *http.Request) (string, int, string) {
	if enc := r.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		return "", http.StatusUnsupportedMediaType, fmt.Sprintf(
			"Content-Encoding %q is not taken: send the compressed payload as the body with Content-Type: application/gzip (or zstd, zlib); the rules decompress it", enc)
	}
	ct := strings.TrimSpace(r.Header.Get("Content-Type"))
	if err := checkString(ct); err != nil {
		return "", http.StatusBadRequest, "Content-Type " + err.Error()
	}
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	switch {
	case mt == "application/x-www-form-urlencoded":
		return "", 0, ""
	case strings.HasPrefix(mt, "multipart/"):
		return "", http.StatusUnsupportedMediaType, "multipart bodies are not taken: send the payload itself as the body"
	}
	return ct, 0, ""
}

// readBody reads the body, up to limit bytes, or answers 413 (or 400 when
// it cannot be read).
func (s *Source) readBody(w http.ResponseWriter, r *http.Request, in reqInfo, limit int64, key string) ([]byte, bool) {
	tooLarge := func() ([]byte, bool) {
		s.refuse(w, r, http.StatusRequestEntityTooLarge, "too_large",
			fmt.Sprintf("the body is over the limit of %d bytes (%s)", limit, key), "user", in.user)
		return nil, false
	}
	if r.ContentLength > limit {
		return tooLarge()
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	body := s.paced(w, r, r.Body, in.received)
	_, err := buf.ReadFrom(http.MaxBytesReader(w, io.NopCloser(body), limit))
	body.done()
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return tooLarge()
	case body.slow:
		s.metrics.Refused.WithLabelValues(s.name, "slow").Inc()
		w.Header().Set("Connection", "close")
		s.refuse(w, r, http.StatusRequestTimeout, "slow",
			fmt.Sprintf("the body came slower than min_body_rate (%v per second after the first %v): send it faster, or in smaller parts",
				s.cfg.MinBodyRate, s.cfg.BodyGrace), "user", in.user, "bytes", body.n)
		return nil, false
	case err != nil:
		s.refuse(w, r, http.StatusBadRequest, "invalid", "the body could not be read", "user", in.user, "error", err)
		return nil, false
	}
	return buf.Bytes(), true
}

func (s *Source) allowed(in reqInfo, topic string) bool {
	return s.acl == nil || s.acl.CanPublish(in.user, in.clientID, topic)
}

// denied answers 403 for a topic (and, in a batch, the lines) the ACL does
// not allow.
func (s *Source) denied(w http.ResponseWriter, r *http.Request, in reqInfo, topic string, lines *BadLines) {
	s.metrics.Denied.WithLabelValues("publish", "acl").Inc()
	msg := fmt.Sprintf("the ACL does not let this client (user %q, client id %q) publish to topic %s", in.user, in.clientID, quoteTopic(topic))
	var ex extra
	if lines != nil {
		msg = fmt.Sprintf("%s; nothing was accepted", lines.Error())
		ex = extra{"lines": lines.First, "denied_lines": lines.Total}
	}
	s.refuse(w, r, http.StatusForbidden, "acl", msg, "user", in.user, "client", in.clientID, "topic", topic, ex)
}

// count counts a message received, as the broker counts a PUBLISH.
func (s *Source) count(m *sluice.Message) {
	s.metrics.MessagesIn.WithLabelValues(s.name, qosLabel[m.QoS]).Inc()
	s.metrics.BytesIn.WithLabelValues(s.name).Add(float64(len(m.Payload)))
}

// notAccepted answers a message the Handler did not take: 429 when a
// journal is full, 503 when a journal cannot write or when shutting down,
// 500 otherwise (the reason is logged, not sent).
func (s *Source) notAccepted(w http.ResponseWriter, r *http.Request, in reqInfo, m *sluice.Message, err error, ex extra) {
	partial := ""
	if ex != nil {
		partial = fmt.Sprintf("; the lines before line %d were accepted, it and the lines after it were not", ex["failed_line"])
	}
	switch {
	case errors.Is(err, sluice.ErrBusy):
		s.metrics.Rejected.WithLabelValues("journal_full").Inc()
		w.Header().Set("Retry-After", s.retryAfter())
		s.refuse(w, r, http.StatusTooManyRequests, "busy",
			"a pipeline's journal is full (its sinks are behind); send again after Retry-After"+partial, "user", in.user, "topic", m.Topic, ex)
	case errors.Is(err, sluice.ErrStorage):
		s.metrics.Rejected.WithLabelValues("journal_write_error").Inc()
		w.Header().Set("Retry-After", s.retryAfter())
		s.rlog.Error("journal_write_error", "HTTP publish refused: a pipeline's journal cannot write", "user", in.user, "topic", m.Topic, "error", err)
		writeJSON(w, http.StatusServiceUnavailable, errorBody("a pipeline's journal cannot write (its disk may be full); send again after Retry-After"+partial, ex))
	case s.base.Err() != nil || s.isClosing():
		s.metrics.Rejected.WithLabelValues("shutting_down").Inc()
		w.Header().Set("Connection", "close")
		w.Header().Set("Retry-After", s.retryAfter())
		writeJSON(w, http.StatusServiceUnavailable, errorBody("sluice is shutting down; send again"+partial, ex))
	case r.Context().Err() != nil:
		// The client went away: there is no one to answer.
		s.log.Debug("request cancelled by the client before its message was accepted", "user", in.user, "topic", m.Topic, "remote", r.RemoteAddr)
	default:
		s.metrics.Rejected.WithLabelValues("error").Inc()
		s.rlog.Error("error", "HTTP publish not accepted", "user", in.user, "topic", m.Topic, "error", err)
		writeJSON(w, http.StatusInternalServerError, errorBody("the message could not be stored; send again later"+partial, ex))
	}
}

func (s *Source) shuttingDown(w http.ResponseWriter, r *http.Request) {
	s.metrics.Rejected.WithLabelValues("shutting_down").Inc()
	w.Header().Set("Connection", "close")
	w.Header().Set("Retry-After", s.retryAfter())
	writeJSON(w, http.StatusServiceUnavailable, errorBody("sluice is shutting down; send again", nil))
}

// extra are fields added to an error's JSON body.
type extra map[string]any

// refuse answers an error and logs it, rate-limited per reason. args are
// log attributes; an extra among them goes into the body instead.
func (s *Source) refuse(w http.ResponseWriter, r *http.Request, status int, reason, msg string, args ...any) {
	var ex extra
	if n := len(args); n > 0 {
		if e, ok := args[n-1].(extra); ok {
			ex, args = e, args[:n-1]
		}
	}
	level := slog.LevelInfo
	switch reason {
	case "auth", "acl", "overloaded":
		level = slog.LevelWarn
	case "not_found", "method":
		level = slog.LevelDebug
	}
	s.rlog.Log(level, reason, "HTTP publish refused", append([]any{"status", status, "why", msg, "remote", r.RemoteAddr}, args...)...)
	writeJSON(w, status, errorBody(msg, ex))
}

func errorBody(msg string, ex extra) map[string]any {
	body := map[string]any{"error": msg}
	for k, v := range ex {
		body[k] = v
	}
	return body
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // "<token>" reads better than "\u003ctoken\u003e"
	if err := enc.Encode(v); err != nil {
		buf.Reset()
		buf.WriteString(`{"error":"internal error"}` + "\n")
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}
