package api

import (
	"strings"
	"time"
	"unicode/utf8"
)

// Kill scopes: "global", "key:<id>", "broadcast:<id>" and "topic:<name>".
const (
	ScopeGlobal          = "global"
	ScopeKeyPrefix       = "key:"
	ScopeBroadcastPrefix = "broadcast:"
	ScopeTopicPrefix     = "topic:"
)

// KeyScope is the kill scope of everything a sender key submitted.
func KeyScope(keyID string) string { return ScopeKeyPrefix + keyID }

// BroadcastScope is the kill scope of one broadcast.
func BroadcastScope(id string) string { return ScopeBroadcastPrefix + id }

// TopicScope is the kill scope of every broadcast to a topic.
func TopicScope(topic string) string { return ScopeTopicPrefix + topic }

// ValidateScope checks a kill scope from outside.
func ValidateScope(s string) error {
	if s == ScopeGlobal {
		return nil
	}
	kind, v, ok := strings.Cut(s, ":")
	if ok && v != "" && len(v) <= 128 && !strings.ContainsAny(v, " \t\r\n") {
		switch kind + ":" {
		case ScopeKeyPrefix, ScopeBroadcastPrefix:
			return nil
		case ScopeTopicPrefix:
			if ValidTopic(v) {
				return nil
			}
		}
	}
	return Errorf(CodeInvalidScope, "scope must be global, key:<id>, broadcast:<id> or topic:<name>")
}

// MaxReasonBytes bounds a kill, resume, revoke or cancel reason, which is
// stored in the kill state and the audit log.
const MaxReasonBytes = 1024

// checkReason validates a reason; required reasons must not be blank.
func checkReason(reason string, required bool) error {
	switch {
	case required && strings.TrimSpace(reason) == "":
		return Errorf(CodeInvalidReason, "reason is required: say why, for the audit log")
	case len(reason) > MaxReasonBytes:
		return Errorf(CodeInvalidReason, "reason is over %d bytes", MaxReasonBytes)
	case !utf8.ValidString(reason):
		return Errorf(CodeInvalidReason, "reason must be UTF-8")
	}
	return nil
}

// ScopeRequest is the body of POST /v1/kill and POST /v1/resume.
type ScopeRequest struct {
	Scope  string `json:"scope"`
	Reason string `json:"reason"`
}

// ParseKillRequest decodes and validates a kill body: a valid scope and a
// reason, which a kill requires.
func ParseKillRequest(body []byte) (*ScopeRequest, error) { return parseScope(body, true) }

// ParseResumeRequest decodes and validates a resume body; its reason is
// optional.
func ParseResumeRequest(body []byte) (*ScopeRequest, error) { return parseScope(body, false) }

func parseScope(body []byte, reasonRequired bool) (*ScopeRequest, error) {
	var r ScopeRequest
	if err := DecodeJSON(body, &r); err != nil {
		return nil, err
	}
	if err := ValidateScope(r.Scope); err != nil {
		return nil, err
	}
	if err := checkReason(r.Reason, reasonRequired); err != nil {
		return nil, err
	}
	return &r, nil
}

// ReasonRequest is the body of POST /v1/broadcasts/{id}/cancel and POST
// /v1/keys/{id}/revoke. The body may be left out.
type ReasonRequest struct {
	Reason string `json:"reason"`
}

// ParseReasonRequest decodes and validates an optional reason body.
func ParseReasonRequest(body []byte) (*ReasonRequest, error) {
	var r ReasonRequest
	if err := decodeOptional(body, &r); err != nil {
		return nil, err
	}
	if err := checkReason(r.Reason, false); err != nil {
		return nil, err
	}
	return &r, nil
}

// Kill is one active kill.
type Kill struct {
	Scope  string    `json:"scope"`
	Reason string    `json:"reason"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
}

// KillList answers GET /v1/kill.
type KillList struct {
	Kills []Kill `json:"kills"`
}

// AckReport says which live workers acknowledged a kill: that they
// applied a control log of at least Version entries, which holds it.
type AckReport struct {
	Version      int64    `json:"version"`
	Acknowledged bool     `json:"acknowledged"`
	Workers      int      `json:"workers"`
	Missing      []string `json:"missing,omitempty"`
	// WaitedMS is how long the API waited for the acknowledgements, in
	// milliseconds.
	WaitedMS float64 `json:"waited_ms"`
}

// KillResponse answers POST /v1/kill, and is part of the answer to a
// revoke. Ack is present only when the request waited for the workers
// (?wait=true).
type KillResponse struct {
	Kill Kill `json:"kill"`
	// Version is the size of the control log that holds the kill.
	Version int64      `json:"version"`
	Waited  bool       `json:"waited"`
	Ack     *AckReport `json:"ack,omitempty"`
}

// Acknowledged reports whether every live worker acknowledged the kill; a
// kill that did not wait never is.
func (k *KillResponse) Acknowledged() bool { return k.Waited && k.Ack != nil && k.Ack.Acknowledged }

// ResumeResponse answers POST /v1/resume.
type ResumeResponse struct {
	Scope string `json:"scope"`
	// Version is the size of the control log that holds the resume.
	Version int64 `json:"version"`
}

// RevokeResponse answers POST /v1/keys/{id}/revoke: the key is revoked,
// and the kill of everything it submitted is reported.
type RevokeResponse struct {
	KeyID   string       `json:"key_id"`
	Revoked bool         `json:"revoked"`
	Kill    KillResponse `json:"kill"`
}
