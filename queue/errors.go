package queue

import (
	"errors"
	"fmt"
)

// Error is a request that pushgate refuses because of what it asks for, not
// because something broke. Code is stable and reaches API clients, which map
// it to an HTTP status in one table; Detail is safe to show them.
type Error struct {
	Code   string
	Detail string
}

func (e *Error) Error() string { return e.Code + ": " + e.Detail }

func newError(code, format string, args ...any) *Error {
	return &Error{Code: code, Detail: fmt.Sprintf(format, args...)}
}

// Stable error codes.
const (
	CodeMalformedJSON   = "malformed_json"
	CodeUnknownField    = "unknown_field"
	CodeInvalidAudience = "invalid_audience"
	CodeInvalidTTL      = "invalid_ttl"
	CodeTooManyTokens   = "too_many_tokens"
	CodeInvalidMessage  = "invalid_message"
	CodeInvalidDevice   = "invalid_device"
	CodeInvalidTopic    = "invalid_topic"
	CodeInvalidIdemKey  = "invalid_idempotency_key"
	CodeInvalidScope    = "invalid_scope"
	CodeInvalidRecall   = "invalid_recall"
	CodeInvalidQuery    = "invalid_query"

	CodeNotFound            = "not_found"
	CodeIdempotencyConflict = "idempotency_conflict"
	CodeTopicNotAllowed     = "topic_not_allowed"
	CodeAudienceOverCap     = "audience_over_cap"
	CodeKillSwitchActive    = "kill_switch_active"
	CodeForbidden           = "forbidden"
	CodeNotResumable        = "not_resumable"
	CodeInvalidState        = "invalid_state"
)

// CodeOf returns the code of an *Error in err's chain, or "".
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
