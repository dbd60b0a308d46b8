package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The FCM HTTP v1 simulator: POST /v1/projects/{project}/messages:send.

const (
	fcmErrorType = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
	// fcmMaxPayload is FCM's limit on the keys and values of a message's
	// payload; messages to topics get half.
	fcmMaxPayload      = 4096
	fcmMaxTopicPayload = 2048
	// fcmMaxTTL is four weeks, FCM's longest and default TTL.
	fcmMaxTTL = 28 * 24 * time.Hour
	// fcmMaxRequest bounds the request body the simulator reads.
	fcmMaxRequest = 1 << 20
)

// fcmRequest is the body of messages:send. The types list every field the
// Go Admin SDK can send, so unknown fields can be refused as FCM does;
// fields the simulator does not interpret are kept raw.
type fcmRequest struct {
	ValidateOnly bool        `json:"validate_only"`
	Message      *fcmMessage `json:"message"`
}

type fcmMessage struct {
	Name         string            `json:"name"`
	Data         map[string]string `json:"data"`
	Notification *fcmNotification  `json:"notification"`
	Android      *fcmAndroid       `json:"android"`
	Webpush      json.RawMessage   `json:"webpush"`
	APNS         *fcmAPNS          `json:"apns"`
	FCMOptions   json.RawMessage   `json:"fcm_options"`
	Token        string            `json:"token"`
	Topic        string            `json:"topic"`
	Condition    string            `json:"condition"`
}

type fcmNotification struct {
	Title string `json:"title"`
	Body  string `json:"body"`
	Image string `json:"image"`
}

type fcmAndroid struct {
	CollapseKey           string                  `json:"collapse_key"`
	Priority              string                  `json:"priority"`
	TTL                   *string                 `json:"ttl"`
	RestrictedPackageName string                  `json:"restricted_package_name"`
	Data                  map[string]string       `json:"data"`
	Notification          *fcmAndroidNotification `json:"notification"`
	FCMOptions            json.RawMessage         `json:"fcm_options"`
	DirectBootOK          bool                    `json:"direct_boot_ok"`
}

type fcmAndroidNotification struct {
	Title                 string          `json:"title"`
	Body                  string          `json:"body"`
	Tag                   string          `json:"tag"`
	Icon                  json.RawMessage `json:"icon"`
	Color                 json.RawMessage `json:"color"`
	Sound                 json.RawMessage `json:"sound"`
	ClickAction           json.RawMessage `json:"click_action"`
	BodyLocKey            json.RawMessage `json:"body_loc_key"`
	BodyLocArgs           json.RawMessage `json:"body_loc_args"`
	TitleLocKey           json.RawMessage `json:"title_loc_key"`
	TitleLocArgs          json.RawMessage `json:"title_loc_args"`
	ChannelID             json.RawMessage `json:"channel_id"`
	Image                 json.RawMessage `json:"image"`
	Ticker                json.RawMessage `json:"ticker"`
	Sticky                json.RawMessage `json:"sticky"`
	EventTime             json.RawMessage `json:"event_time"`
	LocalOnly             json.RawMessage `json:"local_only"`
	NotificationPriority  json.RawMessage `json:"notification_priority"`
	VibrateTimings        json.RawMessage `json:"vibrate_timings"`
	DefaultVibrateTimings json.RawMessage `json:"default_vibrate_timings"`
	DefaultSound          json.RawMessage `json:"default_sound"`
	LightSettings         json.RawMessage `json:"light_settings"`
	DefaultLightSettings  json.RawMessage `json:"default_light_settings"`
	Visibility            json.RawMessage `json:"visibility"`
	NotificationCount     json.RawMessage `json:"notification_count"`
	Proxy                 json.RawMessage `json:"proxy"`
}

type fcmAPNS struct {
	Headers           map[string]string `json:"headers"`
	Payload           json.RawMessage   `json:"payload"`
	FCMOptions        json.RawMessage   `json:"fcm_options"`
	LiveActivityToken string            `json:"live_activity_token"`
}

// rpcStatus is google.rpc.Status as Google's JSON APIs return it.
type rpcStatus struct {
	Error rpcError `json:"error"`
}

type rpcError struct {
	Code    int              `json:"code"`
	Message string           `json:"message"`
	Status  string           `json:"status"`
	Details []map[string]any `json:"details,omitempty"`
}

// fcmOutcomes maps an outcome to FCM's answer: HTTP status, RPC status,
// FcmError code, message.
var fcmOutcomes = map[Outcome]struct {
	http      int
	rpc, code string
	msg       string
}{
	OutcomeUnregistered:   {404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found."},
	OutcomeExpiredToken:   {404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found."},
	OutcomeBadToken:       {400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token"},
	OutcomeMismatch:       {403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", "SenderId mismatch"},
	OutcomeQuota:          {429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota exceeded for the message target."},
	OutcomeUnavailable:    {503, "UNAVAILABLE", "UNAVAILABLE", "The service is currently unavailable."},
	OutcomeShutdown:       {503, "UNAVAILABLE", "UNAVAILABLE", "The service is currently unavailable."},
	OutcomeInternal:       {500, "INTERNAL", "INTERNAL", "Internal error encountered."},
	OutcomeThirdPartyAuth: {401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR", "Auth error from APNS or Web Push Service"},
	OutcomeCredential:     {401, "UNAUTHENTICATED", "", "Request had invalid authentication credentials. Expected OAuth 2 access token."},
}

func (s *Sim) fcmHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/token", s.track(s.handleToken))
	mux.Handle("/", s.track(s.handleFCM))
	return mux
}

// fcmFail writes a google.rpc.Status error; fcmCode, when set, adds the
// FcmError detail the Firebase SDKs read.
func (s *Sim) fcmFail(w http.ResponseWriter, status int, rpc, msg, fcmCode string, retryAfter int) {
	e := rpcStatus{Error: rpcError{Code: status, Message: msg, Status: rpc}}
	if fcmCode != "" {
		e.Error.Details = []map[string]any{{"@type": fcmErrorType, "errorCode": fcmCode}}
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=UTF-8")
	if retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(retryAfter))
	}
	if status == http.StatusUnauthorized && fcmCode == "" {
		h.Set("WWW-Authenticate", `Bearer realm="https://accounts.google.com/"`)
	}
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(e)
	s.stats.status(idxFCM, status)
}

// fcmInvalid answers a message FCM refuses: INVALID_ARGUMENT with the
// FcmError detail and, as FCM does, a google.rpc.BadRequest detail naming
// the message as the field at fault — which is how a client tells a bad
// message from a bad registration token (that answer names no field).
func (s *Sim) fcmInvalid(w http.ResponseWriter, msg string) {
	e := rpcStatus{Error: rpcError{Code: http.StatusBadRequest, Message: msg, Status: "INVALID_ARGUMENT",
		Details: []map[string]any{
			{"@type": fcmErrorType, "errorCode": "INVALID_ARGUMENT"},
			{
				"@type":           "type.googleapis.com/google.rpc.BadRequest",
				"fieldViolations": []map[string]string{{"field": "message", "description": msg}},
			},
		},
	}}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(e)
	s.stats.status(idxFCM, http.StatusBadRequest)
}

// fcmBadRequest answers a body that is not the API's JSON as Google's
// front end does: INVALID_ARGUMENT with a google.rpc.BadRequest detail
// and no FcmError.
func (s *Sim) fcmBadRequest(w http.ResponseWriter, msg string) {
	e := rpcStatus{Error: rpcError{Code: http.StatusBadRequest, Message: msg, Status: "INVALID_ARGUMENT",
		Details: []map[string]any{{
			"@type":           "type.googleapis.com/google.rpc.BadRequest",
			"fieldViolations": []map[string]string{{"description": msg}},
		}},
	}}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(e)
	s.stats.status(idxFCM, http.StatusBadRequest)
}

// handleFCM serves messages:send.
func (s *Sim) handleFCM(w http.ResponseWriter, r *http.Request) {
	s.stats.inflight[idxFCM].Add(1)
	defer s.stats.inflight[idxFCM].Add(-1)
	plan := s.faults.Load()
	if s.connAction(w, r, plan, idxFCM) {
		return
	}
	project, ok := fcmProject(r.URL.Path)
	if !ok || r.Method != http.MethodPost {
		s.fcmFail(w, http.StatusNotFound, "NOT_FOUND", "Requested entity was not found.", "", 0)
		return
	}
	now := s.now()
	switch s.oauth.check(r.Header.Get("Authorization"), now) {
	case authMissing:
		s.fcmFail(w, http.StatusUnauthorized, "UNAUTHENTICATED",
			"Request is missing required authentication credential. Expected OAuth 2 access token.", "", 0)
		return
	case authInvalid:
		s.fcmFail(w, http.StatusUnauthorized, "UNAUTHENTICATED",
			"Request had invalid authentication credentials. Expected OAuth 2 access token.", "", 0)
		return
	case authScope:
		s.fcmFail(w, http.StatusForbidden, "PERMISSION_DENIED", "Request had insufficient authentication scopes.", "", 0)
		return
	}
	if project != s.cfg.ProjectID {
		s.fcmFail(w, http.StatusForbidden, "PERMISSION_DENIED",
			fmt.Sprintf("Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/%s' (or it may not exist).", project), "", 0)
		return
	}
	body, err := readBody(r, fcmMaxRequest)
	if err != nil {
		s.stats.cancelled.Add(1) // the client went away before the answer
		return
	}
	if len(body) > fcmMaxRequest {
		s.fcmInvalid(w, "Request payload size exceeds the limit.")
		return
	}
	p, token, problem := s.parseFCM(body)
	switch {
	case problem != "" && p.jsonError:
		s.fcmBadRequest(w, problem)
		return
	case problem != "":
		s.fcmInvalid(w, problem)
		return
	}
	refused, wait := plan.outage(now)
	if !refused {
		var ok bool
		ok, wait = s.quota.take(now, s.cfg.QuotaPerMinute)
		refused = !ok
	}
	if refused {
		if plan.RetryAfter > 0 {
			wait = plan.RetryAfter
		}
		o := fcmOutcomes[OutcomeQuota]
		s.fcmFail(w, o.http, o.rpc, "Quota exceeded for quota metric 'Messages sent' of the project.", o.code, wait)
		if token != "" {
			s.attempt(s.fcmBook, token, now, p.expiry(now), o.http, wait)
		}
		return
	}
	outcome := OutcomeDeliver
	if token != "" {
		outcome = s.decide(s.fcmBook, plan, token, wellFormedFCMToken)
	}
	if outcome == OutcomeDrop {
		s.drop(r)
		return
	}
	if !s.waitLatency(r.Context(), plan) {
		return
	}
	if outcome != OutcomeDeliver {
		o := fcmOutcomes[outcome]
		ra := plan.retryAfter(outcome)
		s.fcmFail(w, o.http, o.rpc, o.msg, o.code, ra)
		s.attempt(s.fcmBook, token, now, p.expiry(now), o.http, ra)
		return
	}
	name := s.fcmName(project, now)
	if p.validateOnly {
		name = "projects/" + project + "/messages/fake_message_id"
	} else if token != "" {
		s.accept(s.fcmBook, token, p.message(name, now))
		s.attempt(s.fcmBook, token, now, p.expiry(now), http.StatusOK, 0)
	}
	s.log.Debug("fcm message accepted", slog.Bool("validate_only", p.validateOnly))
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	out := make([]byte, 0, len(name)+16)
	out = append(out, `{"name":`...)
	out = strconv.AppendQuote(out, name)
	out = append(out, "}\n"...)
	w.Write(out)
	s.stats.status(idxFCM, http.StatusOK)
}

// fcmProject extracts the project from /v1/projects/{project}/messages:send.
func fcmProject(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, "/v1/projects/")
	if !ok {
		return "", false
	}
	project, method, ok := strings.Cut(rest, "/")
	if !ok || project == "" || method != "messages:send" {
		return "", false
	}
	return project, true
}

// fcmName returns a message name in FCM's shape:
// projects/{p}/messages/0:{micros}%{hex}.
func (s *Sim) fcmName(project string, now time.Time) string {
	n := s.msgSeq.Add(1)
	b := make([]byte, 0, 64+len(project))
	b = append(b, "projects/"...)
	b = append(b, project...)
	b = append(b, "/messages/0:"...)
	b = strconv.AppendInt(b, now.UnixMicro(), 10)
	b = append(b, '%')
	b = strconv.AppendUint(b, n*0x9e3779b97f4a7c15|1<<63, 16)
	return string(b)
}

// validateFCM checks a message as FCM does and returns its Android TTL
// (-1 when none was given), or the message of FCM's INVALID_ARGUMENT.
func validateFCM(m *fcmMessage) (ttl time.Duration, problem string) {
	if m == nil {
		return 0, "Request contains an invalid argument: message is required."
	}
	targets := 0
	for _, t := range []string{m.Token, m.Topic, m.Condition} {
		if t != "" {
			targets++
		}
	}
	if targets != 1 {
		return 0, "Request contains an invalid argument: exactly one of token, topic or condition must be set."
	}
	if m.Topic != "" && !validTopic(m.Topic) {
		return 0, fmt.Sprintf("Invalid topic name %q.", m.Topic)
	}
	data := m.Data
	var title, body string
	if m.Notification != nil {
		title, body = m.Notification.Title, m.Notification.Body
	}
	ttl = -1
	if a := m.Android; a != nil {
		switch a.Priority {
		case "", "normal", "high", "NORMAL", "HIGH":
		default:
			return 0, fmt.Sprintf("Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidConfig.AndroidMessagePriority), %q", a.Priority)
		}
		if a.TTL != nil {
			d, ok := parseProtoDuration(*a.TTL)
			if !ok {
				return 0, fmt.Sprintf("Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), %q", *a.TTL)
			}
			if d > fcmMaxTTL {
				return 0, "Request contains an invalid argument: ttl must be at most 2419200s."
			}
			ttl = d
		}
		if a.Data != nil {
			data = a.Data
		}
		if n := a.Notification; n != nil {
			if n.Title != "" {
				title = n.Title
			}
			if n.Body != "" {
				body = n.Body
			}
		}
	}
	size := len(title) + len(body)
	for k, v := range data {
		if reservedDataKey(k) {
			return 0, fmt.Sprintf("Invalid data payload key: %s", k)
		}
		size += len(k) + len(v)
	}
	limit := fcmMaxPayload
	if m.Topic != "" || m.Condition != "" {
		limit = fcmMaxTopicPayload
	}
	if size > limit {
		return 0, fmt.Sprintf("Message is too big: %d bytes of payload, the limit is %d.", size, limit)
	}
	if a := m.APNS; a != nil && len(a.Payload) > 0 {
		var obj map[string]json.RawMessage
		if json.Unmarshal(a.Payload, &obj) != nil {
			return 0, "Invalid value at 'message.apns.payload' (type.googleapis.com/google.protobuf.Struct)."
		}
	}
	return ttl, ""
}

// reservedDataKey reports keys FCM keeps for itself.
func reservedDataKey(k string) bool {
	return k == "from" || k == "gcm" || k == "message_type" || strings.HasPrefix(k, "google")
}

// validTopic checks a bare topic name.
func validTopic(t string) bool {
	t = strings.TrimPrefix(t, "/topics/")
	if t == "" {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || strings.IndexByte("-_.~%", c) >= 0) {
			return false
		}
	}
	return true
}

// parseProtoDuration parses a google.protobuf.Duration in JSON form:
// seconds with up to nine fractional digits and an "s" suffix, "3.5s".
func parseProtoDuration(s string) (time.Duration, bool) {
	num, ok := strings.CutSuffix(s, "s")
	if !ok || num == "" {
		return 0, false
	}
	whole, frac, hasFrac := strings.Cut(num, ".")
	if whole == "" || len(whole) > 12 || (hasFrac && (frac == "" || len(frac) > 9)) {
		return 0, false
	}
	secs, err := strconv.ParseUint(whole, 10, 64)
	if err != nil || secs > uint64(math.MaxInt64/time.Second)-1 {
		return 0, false
	}
	d := time.Duration(secs) * time.Second
	if hasFrac {
		n, err := strconv.ParseUint(frac, 10, 64)
		if err != nil {
			return 0, false
		}
		for range 9 - len(frac) {
			n *= 10
		}
		d += time.Duration(n)
	}
	return d, true
}

// fcmParsed is what the simulator makes of a valid messages:send body,
// apart from the target token: it is shared by every request with the same
// body but for the token.
type fcmParsed struct {
	validateOnly bool
	jsonError    bool // set with a problem: the body was not valid JSON for the schema
	ttl          time.Duration
	c            *content
	tag          string
	collapseKey  string
}

// parseFCM decodes and validates a messages:send body. It returns the
// message's target token (empty for topics and conditions), or the
// problem FCM would report.
func (s *Sim) parseFCM(body []byte) (p *fcmParsed, token, problem string) {
	head, tail, tok, cacheable := splitToken(body)
	if cacheable {
		if p, ok := s.fcmCache.get(head, tail, ""); ok {
			return p, tok, ""
		}
	}
	var req fcmRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() {
		problem = "Invalid JSON payload received."
		if err != nil {
			problem += " " + err.Error()
		}
		return &fcmParsed{jsonError: true}, "", problem
	}
	m := req.Message
	ttl, problem := validateFCM(m)
	if problem != "" {
		return &fcmParsed{}, "", problem
	}
	p = &fcmParsed{validateOnly: req.ValidateOnly, ttl: ttl}
	data := m.Data
	var title, msgBody string
	if m.Notification != nil {
		title, msgBody = m.Notification.Title, m.Notification.Body
	}
	if a := m.Android; a != nil {
		p.collapseKey = a.CollapseKey
		if a.Data != nil {
			data = a.Data
		}
		if n := a.Notification; n != nil {
			p.tag = n.Tag
			if n.Title != "" {
				title = n.Title
			}
			if n.Body != "" {
				msgBody = n.Body
			}
		}
	}
	p.c = s.intern(title, msgBody, p.tag, title == "" && msgBody == "", data)
	if cacheable && m.Token == tok {
		s.fcmCache.put(head, tail, "", p)
	}
	return p, m.Token, ""
}

// message is what the Android phone receives for the message named name.
func (p *fcmParsed) message(name string, now time.Time) message {
	msg := message{c: p.c, msgID: name, screen: p.tag}
	if msg.screen == "" {
		msg.screen = name
	}
	msg.store = p.collapseKey
	if msg.store == "" {
		msg.store = msg.screen
	}
	msg.expires = p.expiry(now)
	msg.noStore = p.ttl == 0
	return msg
}

// expiry is when FCM drops the message, sent at now, for an offline
// phone: now plus its android.ttl, four weeks when it has none, and zero
// for a ttl of "0s" (now or never).
func (p *fcmParsed) expiry(now time.Time) time.Time {
	switch {
	case p.ttl == 0:
		return time.Time{}
	case p.ttl < 0:
		return now.Add(fcmMaxTTL)
	}
	return now.Add(p.ttl)
}
