package api

import (
	"fmt"
	"regexp"
	"time"
	"unicode/utf8"
)

// Limits on what a broadcast may ask for. They hold at the API and again
// when a worker re-reads a verified envelope.
const (
	// MaxTokens is the largest explicit-token audience of one broadcast and
	// the largest device import.
	MaxTokens = 10000
	// DefaultTTL is the TTL of a broadcast that names none.
	DefaultTTL = time.Hour
	// MaxTokenLen is longer than any real FCM or APNs token.
	MaxTokenLen = 4096
)

// Platform names a push provider: "fcm" or "apns". Its string form is
// used in the API, in Redis and in metrics.
type Platform string

// The platforms pushgate delivers to.
const (
	FCM  Platform = "fcm"
	APNs Platform = "apns"
)

// Valid reports whether p is a known platform.
func (p Platform) Valid() bool { return p == FCM || p == APNs }

// Message priorities, as MessageSpec.Priority spells them.
const (
	PriorityHigh   = "high"
	PriorityNormal = "normal"
)

// BroadcastRequest is the body of POST /v1/broadcasts.
type BroadcastRequest struct {
	IdempotencyKey string      `json:"idempotency_key,omitempty"`
	Audience       Audience    `json:"audience"`
	Message        MessageSpec `json:"message"`
}

// Audience is exactly one of a topic, every device, or explicit tokens.
type Audience struct {
	Topic  string   `json:"topic,omitempty"`
	All    bool     `json:"all,omitempty"`
	Tokens []Device `json:"tokens,omitempty"`
}

// Audience kinds, as Audience.Kind names them.
const (
	AudienceTopic  = "topic"
	AudienceAll    = "all"
	AudienceTokens = "tokens"
)

// Kind names which audience form is used: AudienceTopic, AudienceAll or
// AudienceTokens.
func (a *Audience) Kind() string {
	switch {
	case a.Topic != "":
		return AudienceTopic
	case a.All:
		return AudienceAll
	default:
		return AudienceTokens
	}
}

// Device is a registered phone: a platform and its provider token.
type Device struct {
	Platform Platform `json:"platform"`
	Token    string   `json:"token"`
}

// NewDevice validates a platform and a token, as a URL path names them.
func NewDevice(platform, token string) (Device, error) {
	d := Device{Platform: Platform(platform), Token: token}
	if p := d.Invalid(); p != "" {
		return d, Errorf(CodeInvalidDevice, "%s", p)
	}
	return d, nil
}

// Invalid describes what is wrong with d, or returns "" when d is well
// formed.
func (d Device) Invalid() string {
	if !d.Platform.Valid() {
		return fmt.Sprintf("platform %q is not fcm or apns", d.Platform)
	}
	if d.Token == "" || len(d.Token) > MaxTokenLen {
		return fmt.Sprintf("token must be 1 to %d characters", MaxTokenLen)
	}
	for i := 0; i < len(d.Token); i++ {
		if c := d.Token[i]; c <= ' ' || c >= 0x7f || c == '/' {
			return "token has a character outside printable ASCII or a slash"
		}
	}
	if d.Platform == APNs && !isHex(d.Token) {
		return "APNs token must be hexadecimal"
	}
	return ""
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// MessageSpec is the content of a broadcast.
type MessageSpec struct {
	Title    string            `json:"title"`
	Body     string            `json:"body"`
	Data     map[string]string `json:"data,omitempty"`
	TTL      string            `json:"ttl,omitempty"`
	Priority string            `json:"priority,omitempty"`
}

var (
	topicRE   = regexp.MustCompile(`^[A-Za-z0-9_.~-]{1,128}$`)
	idemKeyRE = regexp.MustCompile(`^[A-Za-z0-9_.:~-]{1,128}$`)
)

// topicRule says what ValidTopic accepts, for error messages.
const topicRule = "1 to 128 of A-Z a-z 0-9 _ . ~ -"

// ValidTopic reports whether name is a well-formed topic name.
func ValidTopic(name string) bool { return topicRE.MatchString(name) }

// ParseBroadcastRequest decodes and validates a broadcast body. maxTTL caps
// the message TTL. The same function validates at the API and again in the
// worker, on the verified envelope.
func ParseBroadcastRequest(body []byte, maxTTL time.Duration) (*BroadcastRequest, error) {
	var r BroadcastRequest
	if err := DecodeJSON(body, &r); err != nil {
		return nil, err
	}
	if r.IdempotencyKey != "" && !idemKeyRE.MatchString(r.IdempotencyKey) {
		return nil, Errorf(CodeInvalidIdemKey, "idempotency_key must be 1 to 128 of A-Z a-z 0-9 _ . : ~ -")
	}
	if err := r.Audience.validate(); err != nil {
		return nil, err
	}
	if err := r.Message.validate(maxTTL); err != nil {
		return nil, err
	}
	return &r, nil
}

func (a *Audience) validate() error {
	forms := 0
	if a.Topic != "" {
		forms++
		if !ValidTopic(a.Topic) {
			return Errorf(CodeInvalidTopic, "topic must be %s", topicRule)
		}
	}
	if a.All {
		forms++
	}
	if a.Tokens != nil {
		forms++
		if len(a.Tokens) == 0 {
			return Errorf(CodeInvalidAudience, "audience.tokens is empty")
		}
		if len(a.Tokens) > MaxTokens {
			return Errorf(CodeTooManyTokens, "audience.tokens has %d devices; at most %d", len(a.Tokens), MaxTokens)
		}
		first := make(map[Device]int, len(a.Tokens))
		for i, d := range a.Tokens {
			if problem := d.Invalid(); problem != "" {
				return Errorf(CodeInvalidDevice, "audience.tokens[%d]: %s", i, problem)
			}
			if j, dup := first[d]; dup {
				return Errorf(CodeInvalidAudience, "audience.tokens[%d] repeats audience.tokens[%d]", i, j)
			}
			first[d] = i
		}
	}
	switch forms {
	case 0:
		return Errorf(CodeInvalidAudience, "audience must name a topic, all, or tokens")
	case 1:
		return nil
	}
	return Errorf(CodeInvalidAudience, "audience must name exactly one of topic, all, tokens")
}

func (m *MessageSpec) validate(maxTTL time.Duration) error {
	if m.Title == "" && m.Body == "" {
		return Errorf(CodeInvalidMessage, "message needs a title or a body")
	}
	for k := range m.Data {
		if why := ReservedDataKey(k); why != "" {
			return Errorf(CodeInvalidMessage, "message.data key %q: %s", k, why)
		}
	}
	for _, s := range []string{m.Title, m.Body} {
		if !utf8.ValidString(s) {
			return Errorf(CodeInvalidMessage, "message text must be UTF-8")
		}
	}
	if size := TextSize(m.Title, m.Body, m.Data); size > MaxTextBytes {
		return Errorf(CodeInvalidMessage, "title, body and data take %d bytes as JSON (escapes included); at most %d", size, MaxTextBytes)
	}
	switch m.Priority {
	case "", PriorityHigh, PriorityNormal:
	default:
		return Errorf(CodeInvalidMessage, "message.priority must be high or normal")
	}
	if _, err := m.ParseTTL(maxTTL); err != nil {
		return err
	}
	return nil
}

// ParseTTL returns the message TTL: DefaultTTL when absent (capped by
// maxTTL), otherwise a Go duration between one second and maxTTL.
func (m *MessageSpec) ParseTTL(maxTTL time.Duration) (time.Duration, error) {
	if m.TTL == "" {
		return min(DefaultTTL, maxTTL), nil
	}
	d, err := time.ParseDuration(m.TTL)
	if err != nil {
		return 0, Errorf(CodeInvalidTTL, "message.ttl %q is not a duration like 15m or 1h", m.TTL)
	}
	if d < time.Second || d > maxTTL {
		return 0, Errorf(CodeInvalidTTL, "message.ttl must be between 1s and %s", maxTTL)
	}
	return d, nil
}

// SubmitResponse answers POST /v1/broadcasts: 202 for a new broadcast,
// 200 for an idempotent repeat.
type SubmitResponse struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	StatusURL string `json:"status_url"`
}

// ValidBroadcastID reports whether id has the shape of a broadcast id: "b"
// and up to 63 characters of lowercase base32hex.
func ValidBroadcastID(id string) bool {
	if len(id) < 2 || len(id) > 64 || id[0] != 'b' {
		return false
	}
	for i := 1; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'v') {
			return false
		}
	}
	return true
}
