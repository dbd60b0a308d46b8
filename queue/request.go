package queue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pushgate/pushgate/providers"
)

// Limits on what a broadcast may ask for. They hold at the API and again
// when a worker re-reads a verified envelope.
const (
	// MaxTokens is the largest explicit-token audience of one broadcast and
	// the largest device import.
	MaxTokens = 10000
	// MaxTextBytes bounds title + body + data of a message, leaving room
	// for the provider envelope within the 4096-byte payload limit.
	MaxTextBytes = 3072
	// DefaultTTL is the TTL of a broadcast that names none.
	DefaultTTL = time.Hour
	// maxTokenLen is longer than any real FCM or APNs token.
	maxTokenLen = 4096
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

// Kind names which audience form is used: "topic", "all" or "tokens".
func (a *Audience) Kind() string {
	switch {
	case a.Topic != "":
		return "topic"
	case a.All:
		return "all"
	default:
		return "tokens"
	}
}

// Device is a registered phone: a platform and its provider token.
type Device struct {
	Platform providers.Platform `json:"platform"`
	Token    string             `json:"token"`
}

// Member is the device's member string in registry sets and ledger fields:
// "<platform>:<token>".
func (d Device) Member() string { return string(d.Platform) + ":" + d.Token }

// ParseMember splits a registry member back into a device.
func ParseMember(m string) (Device, error) {
	p, tok, ok := strings.Cut(m, ":")
	d := Device{Platform: providers.Platform(p), Token: tok}
	if !ok {
		return d, newError(CodeInvalidDevice, "device has no platform prefix")
	}
	if problem := d.problem(); problem != "" {
		return d, newError(CodeInvalidDevice, "%s", problem)
	}
	return d, nil
}

// problem describes what is wrong with d, or returns "" when d is well formed.
func (d Device) problem() string {
	if !d.Platform.Valid() {
		return fmt.Sprintf("platform %q is not fcm or apns", d.Platform)
	}
	if d.Token == "" || len(d.Token) > maxTokenLen {
		return fmt.Sprintf("token must be 1 to %d characters", maxTokenLen)
	}
	for i := 0; i < len(d.Token); i++ {
		if c := d.Token[i]; c <= ' ' || c >= 0x7f || c == '/' {
			return "token has a character outside printable ASCII or a slash"
		}
	}
	if d.Platform == providers.APNs && !isHex(d.Token) {
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

// ValidTopic reports whether name is a well-formed topic name.
func ValidTopic(name string) bool { return topicRE.MatchString(name) }

// DecodeJSON decodes exactly one JSON value into v, refusing unknown
// fields and trailing data with an *Error (malformed_json or
// unknown_field). Every body the API reads goes through it.
func DecodeJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		// encoding/json reports unknown fields only through its message.
		if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return newError(CodeUnknownField, "unknown field %s", name)
		}
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return newError(CodeMalformedJSON, "field %q must be %s", typeErr.Field, typeErr.Type)
		}
		return newError(CodeMalformedJSON, "body is not valid JSON")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return newError(CodeMalformedJSON, "body has data after the JSON value")
	}
	return nil
}

// ParseBroadcastRequest decodes and validates a broadcast body. maxTTL caps
// the message TTL. The same function validates at the API and again in the
// worker, on the verified envelope.
func ParseBroadcastRequest(body []byte, maxTTL time.Duration) (*BroadcastRequest, error) {
	var r BroadcastRequest
	if err := DecodeJSON(body, &r); err != nil {
		return nil, err
	}
	if r.IdempotencyKey != "" && !idemKeyRE.MatchString(r.IdempotencyKey) {
		return nil, newError(CodeInvalidIdemKey, "idempotency_key must be 1 to 128 of A-Z a-z 0-9 _ . : ~ -")
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
			return newError(CodeInvalidTopic, "topic must be 1 to 128 of A-Z a-z 0-9 _ . ~ -")
		}
	}
	if a.All {
		forms++
	}
	if a.Tokens != nil {
		forms++
		if len(a.Tokens) == 0 {
			return newError(CodeInvalidAudience, "audience.tokens is empty")
		}
		if len(a.Tokens) > MaxTokens {
			return newError(CodeTooManyTokens, "audience.tokens has %d devices; at most %d", len(a.Tokens), MaxTokens)
		}
		for i, d := range a.Tokens {
			if problem := d.problem(); problem != "" {
				return newError(CodeInvalidDevice, "audience.tokens[%d]: %s", i, problem)
			}
		}
	}
	switch forms {
	case 0:
		return newError(CodeInvalidAudience, "audience must name a topic, all, or tokens")
	case 1:
		return nil
	}
	return newError(CodeInvalidAudience, "audience must name exactly one of topic, all, tokens")
}

func (m *MessageSpec) validate(maxTTL time.Duration) error {
	if m.Title == "" && m.Body == "" {
		return newError(CodeInvalidMessage, "message needs a title or a body")
	}
	size := len(m.Title) + len(m.Body)
	for k, v := range m.Data {
		if k == "" || k == "pushgate" || k == "from" || k == "notification" || k == "message_type" ||
			strings.HasPrefix(k, "google.") || strings.HasPrefix(k, "gcm.") || k == "aps" {
			return newError(CodeInvalidMessage, "message.data key %q is reserved", k)
		}
		size += len(k) + len(v)
	}
	for _, s := range []string{m.Title, m.Body} {
		if !utf8.ValidString(s) {
			return newError(CodeInvalidMessage, "message text must be UTF-8")
		}
	}
	if size > MaxTextBytes {
		return newError(CodeInvalidMessage, "title, body and data take %d bytes; at most %d", size, MaxTextBytes)
	}
	switch m.Priority {
	case "", string(providers.PriorityHigh), string(providers.PriorityNormal):
	default:
		return newError(CodeInvalidMessage, "message.priority must be high or normal")
	}
	if _, err := m.ttl(maxTTL); err != nil {
		return err
	}
	return nil
}

// ttl is the message TTL: DefaultTTL when absent (capped by maxTTL),
// otherwise a Go duration between one second and maxTTL.
func (m *MessageSpec) ttl(maxTTL time.Duration) (time.Duration, error) {
	if m.TTL == "" {
		return min(DefaultTTL, maxTTL), nil
	}
	d, err := time.ParseDuration(m.TTL)
	if err != nil {
		return 0, newError(CodeInvalidTTL, "message.ttl %q is not a duration like 15m or 1h", m.TTL)
	}
	if d < time.Second || d > maxTTL {
		return 0, newError(CodeInvalidTTL, "message.ttl must be between 1s and %s", maxTTL)
	}
	return d, nil
}

// RecallRequest is the body of POST /v1/broadcasts/{id}/recall.
type RecallRequest struct {
	Mode        string       `json:"mode"`
	Replacement *MessageSpec `json:"replacement,omitempty"`
}

// Recall modes.
const (
	RecallReplace = "replace"
	RecallRemove  = "remove"
)

// ParseRecallRequest decodes and validates a recall body.
func ParseRecallRequest(body []byte) (*RecallRequest, error) {
	var r RecallRequest
	if err := DecodeJSON(body, &r); err != nil {
		return nil, err
	}
	switch r.Mode {
	case RecallReplace:
		if r.Replacement == nil {
			return nil, newError(CodeInvalidRecall, "mode replace needs a replacement with a title or a body")
		}
		if r.Replacement.TTL != "" {
			return nil, newError(CodeInvalidRecall, "a replacement keeps the original's ttl; remove replacement.ttl")
		}
		if err := r.Replacement.validate(time.Hour); err != nil {
			return nil, err
		}
	case RecallRemove:
		if r.Replacement != nil {
			return nil, newError(CodeInvalidRecall, "mode remove takes no replacement")
		}
	default:
		return nil, newError(CodeInvalidRecall, "mode must be replace or remove")
	}
	return &r, nil
}
