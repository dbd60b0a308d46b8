package sim

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The APNs simulator: POST /3/device/{token} over HTTP/2, provider-token
// authentication, and Apple's table of statuses and reasons.

const (
	// apnsMaxPayload is Apple's limit; VoIP pushes get 5 KB.
	apnsMaxPayload     = 4096
	apnsMaxVoIPPayload = 5120
	apnsMaxCollapseID  = 64
)

// apnsPushTypes are the values of apns-push-type Apple documents.
var apnsPushTypes = map[string]bool{
	"alert": true, "background": true, "voip": true, "complication": true, "fileprovider": true,
	"mdm": true, "location": true, "liveactivity": true, "pushtotalk": true, "widgets": true,
}

// apnsTopicSuffixes are the topic suffixes Apple uses for push types that
// do not go to the app itself (voip, complication, ...).
var apnsTopicSuffixes = []string{"", ".voip", ".complication", ".pushkit.fileprovider", ".push-type.liveactivity", ".voip-ptt", ".location-query"}

// apnsOutcomes maps an outcome to APNs's status and reason.
var apnsOutcomes = map[Outcome]struct {
	status int
	reason string
}{
	OutcomeUnregistered:   {410, "Unregistered"},
	OutcomeExpiredToken:   {410, "ExpiredToken"},
	OutcomeBadToken:       {400, "BadDeviceToken"},
	OutcomeMismatch:       {400, "DeviceTokenNotForTopic"},
	OutcomeQuota:          {429, "TooManyRequests"},
	OutcomeUnavailable:    {503, "ServiceUnavailable"},
	OutcomeShutdown:       {503, "Shutdown"},
	OutcomeInternal:       {500, "InternalServerError"},
	OutcomeThirdPartyAuth: {403, "Forbidden"},
	OutcomeCredential:     {429, "TooManyProviderTokenUpdates"},
}

// apnsSingleHeaders must appear at most once (DuplicateHeaders).
var apnsSingleHeaders = []string{
	"Authorization", "Apns-Id", "Apns-Topic", "Apns-Push-Type", "Apns-Priority",
	"Apns-Expiration", "Apns-Collapse-Id",
}

// providerTokens tracks the APNs provider tokens the team has used.
type providerTokens struct {
	mu       sync.Mutex
	accepted map[string]time.Time // bearer → its iat
	lastNew  time.Time            // when the team last started a new token
}

func (s *Sim) apnsHandler() http.Handler {
	return s.track(s.handleAPNs)
}

// apnsRetryAfter is the Retry-After, in seconds, that an APNs answer with
// status carries: Apple sends one only with 429 and 503.
func apnsRetryAfter(status, retryAfter int) int {
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		return retryAfter
	}
	return 0
}

// apnsFail writes an APNs error: {"reason": ...}, with "timestamp" (ms)
// for 410.
func (s *Sim) apnsFail(w http.ResponseWriter, status int, reason string, retryAfter int) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if ra := apnsRetryAfter(status, retryAfter); ra > 0 {
		h.Set("Retry-After", strconv.Itoa(ra))
	}
	w.WriteHeader(status)
	b := make([]byte, 0, 64)
	b = append(b, `{"reason":`...)
	b = strconv.AppendQuote(b, reason)
	if status == http.StatusGone {
		b = append(b, `,"timestamp":`...)
		b = strconv.AppendInt(b, s.now().UnixMilli(), 10)
	}
	b = append(b, '}')
	w.Write(b)
	s.stats.status(idxAPNs, status)
}

// handleAPNs serves one push.
func (s *Sim) handleAPNs(w http.ResponseWriter, r *http.Request) {
	s.stats.inflight[idxAPNs].Add(1)
	defer s.stats.inflight[idxAPNs].Add(-1)
	plan := s.faults.Load()
	if s.connAction(w, r, plan, idxAPNs) {
		return
	}
	if r.ProtoMajor != 2 {
		// APNs speaks only HTTP/2.
		w.WriteHeader(http.StatusHTTPVersionNotSupported)
		s.stats.status(idxAPNs, http.StatusHTTPVersionNotSupported)
		return
	}
	apnsID := r.Header.Get("Apns-Id")
	if apnsID == "" || !validUUID(apnsID) {
		w.Header().Set("Apns-Id", newUUID())
	} else {
		w.Header().Set("Apns-Id", apnsID)
	}
	if r.Method != http.MethodPost {
		s.apnsFail(w, http.StatusMethodNotAllowed, "MethodNotAllowed", 0)
		return
	}
	token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	switch {
	case !ok && r.URL.Path != "/3/device":
		s.apnsFail(w, http.StatusNotFound, "BadPath", 0)
		return
	case token == "":
		s.apnsFail(w, http.StatusBadRequest, "MissingDeviceToken", 0)
		return
	case strings.Contains(token, "/"):
		s.apnsFail(w, http.StatusNotFound, "BadPath", 0)
		return
	}
	for _, h := range apnsSingleHeaders {
		if len(r.Header[h]) > 1 {
			s.apnsFail(w, http.StatusBadRequest, "DuplicateHeaders", 0)
			return
		}
	}
	now := s.now()
	if status, reason := s.checkProviderToken(r.Header.Get("Authorization"), now); status != 0 {
		s.apnsFail(w, status, reason, 0)
		return
	}
	if apnsID != "" && !validUUID(apnsID) {
		s.apnsFail(w, http.StatusBadRequest, "BadMessageId", 0)
		return
	}
	h, reason := s.apnsHeaders(r)
	if reason != "" {
		s.apnsFail(w, http.StatusBadRequest, reason, 0)
		return
	}
	limit := apnsMaxPayload
	if h.pushType == "voip" {
		limit = apnsMaxVoIPPayload
	}
	body, err := readBody(r, limit)
	if err != nil {
		s.stats.cancelled.Add(1) // the client went away before the answer
		return
	}
	switch {
	case len(body) == 0:
		s.apnsFail(w, http.StatusBadRequest, "PayloadEmpty", 0)
		return
	case len(body) > limit:
		s.apnsFail(w, http.StatusRequestEntityTooLarge, "PayloadTooLarge", 0)
		return
	}
	c, ok := s.apnsContent(h, body)
	if !ok {
		// Apple documents no reason for a payload that is not a JSON
		// object with an "aps" dictionary; the simulator calls it empty.
		s.apnsFail(w, http.StatusBadRequest, "PayloadEmpty", 0)
		return
	}
	outcome := s.decide(s.apnsBook, plan, token, wellFormedAPNsToken)
	if outcome == OutcomeDrop {
		s.drop(r)
		return
	}
	if !s.waitLatency(r.Context(), plan) {
		return
	}
	if outcome != OutcomeDeliver {
		o := apnsOutcomes[outcome]
		ra := plan.retryAfter(outcome)
		s.apnsFail(w, o.status, o.reason, ra)
		s.attempt(s.apnsBook, token, now, h.expiry(), o.status, apnsRetryAfter(o.status, ra))
		return
	}
	s.accept(s.apnsBook, token, apnsMessage(h, c, w.Header().Get("Apns-Id")))
	s.attempt(s.apnsBook, token, now, h.expiry(), http.StatusOK, 0)
	if ci := connInfoFrom(r.Context()); ci != nil && ci.h2 != nil && ci.raised.CompareAndSwap(false, true) {
		// The connection's first success: lift its stream limit, before
		// the answer lets the client send more.
		ci.h2.raise()
	}
	s.log.Debug("apns push accepted", slog.String("push_type", h.pushType))
	w.WriteHeader(http.StatusOK)
	s.stats.status(idxAPNs, http.StatusOK)
}

// checkProviderToken verifies the provider token in an authorization
// header. It returns status 0 when the token is good.
func (s *Sim) checkProviderToken(header string, now time.Time) (status int, reason string) {
	if header == "" {
		return http.StatusForbidden, "MissingProviderToken"
	}
	scheme, bearer, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || bearer == "" {
		return http.StatusForbidden, "InvalidProviderToken"
	}
	pt := &s.apnsTok
	pt.mu.Lock()
	iat, known := pt.accepted[bearer]
	pt.mu.Unlock()
	if !known {
		t, err := parseJWS(bearer)
		if err != nil || t.header.Kid != s.cfg.KeyID || t.claims.Iss != s.cfg.TeamID ||
			t.claims.Iat == 0 || !t.verifyES256(&s.creds.apnsKey.PublicKey) {
			return http.StatusForbidden, "InvalidProviderToken"
		}
		iat = unixTime(t.claims.Iat)
		if iat.After(now.Add(clockSkew)) {
			return http.StatusForbidden, "InvalidProviderToken"
		}
	}
	if now.Sub(iat) > s.cfg.TokenTTL {
		return http.StatusForbidden, "ExpiredProviderToken"
	}
	if known {
		return 0, ""
	}
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if _, ok := pt.accepted[bearer]; ok {
		return 0, "" // another request registered it meanwhile
	}
	if !pt.lastNew.IsZero() && s.cfg.MinTokenRefresh > 0 && now.Sub(pt.lastNew) < s.cfg.MinTokenRefresh {
		return http.StatusTooManyRequests, "TooManyProviderTokenUpdates"
	}
	for k, t := range pt.accepted {
		if now.Sub(t) > s.cfg.TokenTTL {
			delete(pt.accepted, k)
		}
	}
	pt.accepted[bearer] = iat
	pt.lastNew = now
	s.log.Debug("apns provider token accepted")
	return 0, ""
}

// apnsRequest holds the validated apns-* headers.
type apnsRequest struct {
	pushType   string
	collapseID string
	expiration int64 // -1 when absent
}

// apnsHeaders validates the apns-* headers; reason is Apple's for the
// first bad one.
func (s *Sim) apnsHeaders(r *http.Request) (h apnsRequest, reason string) {
	topic := r.Header.Get("Apns-Topic")
	switch {
	case topic == "":
		return h, "MissingTopic"
	case strings.ContainsAny(topic, " \t/") || strings.Trim(topic, ".") != topic:
		return h, "BadTopic"
	case !s.topicAllowed(topic):
		return h, "TopicDisallowed"
	}
	h.pushType = r.Header.Get("Apns-Push-Type")
	if h.pushType == "" {
		h.pushType = "alert"
	} else if !apnsPushTypes[h.pushType] {
		return h, "InvalidPushType"
	}
	switch prio := r.Header.Get("Apns-Priority"); prio {
	case "", "5", "1":
	case "10":
		if h.pushType == "background" {
			// Apple requires priority 5 for background pushes.
			return h, "BadPriority"
		}
	default:
		return h, "BadPriority"
	}
	h.expiration = -1
	if e := r.Header.Get("Apns-Expiration"); e != "" {
		v, err := strconv.ParseInt(e, 10, 64)
		if err != nil || v < 0 {
			return h, "BadExpirationDate"
		}
		h.expiration = v
	}
	h.collapseID = r.Header.Get("Apns-Collapse-Id")
	if len(h.collapseID) > apnsMaxCollapseID {
		return h, "BadCollapseId"
	}
	return h, ""
}

func (s *Sim) topicAllowed(topic string) bool {
	for _, suf := range apnsTopicSuffixes {
		if topic == s.cfg.Topic+suf {
			return true
		}
	}
	return false
}

// apnsPayload is what the phone sees of a push payload.
type apnsPayload struct {
	title, body string
	alert       bool
	data        map[string]string
}

// parseAPNsPayload reads a payload: a JSON object with an "aps"
// dictionary. Top-level keys other than aps become data: strings as they
// are, other values as compact JSON.
func parseAPNsPayload(b []byte) (apnsPayload, bool) {
	var p apnsPayload
	var top map[string]json.RawMessage
	if json.Unmarshal(b, &top) != nil {
		return p, false
	}
	apsRaw, ok := top["aps"]
	if !ok {
		return p, false
	}
	var aps struct {
		Alert json.RawMessage `json:"alert"`
	}
	if json.Unmarshal(apsRaw, &aps) != nil {
		return p, false
	}
	if len(aps.Alert) > 0 && string(aps.Alert) != "null" {
		var str string
		var obj struct {
			Title string `json:"title"`
			Body  string `json:"body"`
		}
		switch {
		case json.Unmarshal(aps.Alert, &str) == nil:
			p.body = str
		case json.Unmarshal(aps.Alert, &obj) == nil:
			p.title, p.body = obj.Title, obj.Body
		default:
			return p, false
		}
		p.alert = p.title != "" || p.body != ""
	}
	if len(top) > 1 {
		p.data = make(map[string]string, len(top)-1)
		for k, v := range top {
			if k == "aps" {
				continue
			}
			var str string
			if json.Unmarshal(v, &str) == nil {
				p.data[k] = str
				continue
			}
			var buf bytes.Buffer
			if json.Compact(&buf, v) != nil {
				return p, false
			}
			p.data[k] = buf.String()
		}
	}
	return p, true
}

// apnsContent returns what the phone sees of a push, or false when the
// payload is not a JSON object with an aps dictionary.
func (s *Sim) apnsContent(h apnsRequest, body []byte) (*content, bool) {
	tag := h.pushType + "\x00" + h.collapseID
	if c, ok := s.apnsCache.get(body, nil, tag); ok {
		return c, true
	}
	p, ok := parseAPNsPayload(body)
	if !ok {
		return nil, false
	}
	c := s.intern(p.title, p.body, h.collapseID, h.pushType != "alert" || !p.alert, p.data)
	s.apnsCache.put(body, nil, tag, c)
	return c, true
}

// apnsMessage is what the iPhone receives for a push.
func apnsMessage(h apnsRequest, c *content, apnsID string) message {
	msg := message{c: c, msgID: apnsID, screen: h.collapseID}
	if msg.screen == "" {
		msg.screen = apnsID
	}
	msg.store = msg.screen
	msg.noStore = h.expiration == 0 // "deliver once, do not store"
	msg.expires = h.expiry()
	return msg
}

// expiry is the push's apns-expiration as a time: zero when it is 0
// (deliver once, do not store) or absent.
func (h apnsRequest) expiry() time.Time {
	if h.expiration <= 0 {
		return time.Time{}
	}
	return time.Unix(h.expiration, 0)
}

// validUUID reports whether id is in the 8-4-4-4-12 hex form Apple
// requires of apns-id.
func validUUID(id string) bool {
	if len(id) != 36 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// newUUID returns a random (version 4) UUID in upper case, as APNs does.
func newUUID() string {
	const digits = "0123456789ABCDEF"
	a, b := rand.Uint64(), rand.Uint64()
	a = a&^(0xf<<12) | 0x4<<12 // version 4
	b = b&^(0x3<<62) | 0x2<<62 // RFC 4122 variant
	var out [36]byte
	j := 0
	for i := range 32 {
		if i == 8 || i == 12 || i == 16 || i == 20 {
			out[j] = '-'
			j++
		}
		x := a
		if i >= 16 {
			x = b
		}
		out[j] = digits[x>>(60-4*(i%16))&0xf]
		j++
	}
	return string(out[:])
}
