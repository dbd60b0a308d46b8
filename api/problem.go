package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/pushgate/pushgate/signing"
)

// ProblemContentType is the media type of every error answer (RFC 9457).
const ProblemContentType = "application/problem+json"

// ProblemTypeBase prefixes a problem's code to make its type URI. The URIs
// are identifiers in pushgate's own scheme; they need not resolve.
const ProblemTypeBase = "https://pushgate.dev/problems/"

// Stable problem codes. The signature codes are signing's (signing.Code*);
// StatusOf maps both.
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
	CodeInvalidReason   = "invalid_reason"
	// CodeNonCanonicalPath: the request path is not spelled exactly as
	// the API spells its route (percent-encoding where none is needed,
	// lowercase hex, empty or dot segments, a trailing slash). A signature
	// covers the path as sent, and the workers accept only the canonical
	// one.
	CodeNonCanonicalPath = "non_canonical_path"
	// CodeDuplicateKey: a JSON object of the body repeats a key, which
	// JSON parsers resolve differently.
	CodeDuplicateKey = "duplicate_key"

	CodeForbidden       = "forbidden"
	CodeTopicNotAllowed = "topic_not_allowed"
	CodeAudienceOverCap = "audience_over_cap"
	// CodeDeviceNotInScope: a tokens audience names devices that are not
	// registered, or not subscribed to any topic the key may send to.
	CodeDeviceNotInScope = "device_not_in_scope"
	// CodeDeviceQuotaExceeded: a register key would create more devices
	// than its max_devices.
	CodeDeviceQuotaExceeded = "device_quota_exceeded"
	// CodeSelfApproval: the approver is the submitter's key or owner.
	CodeSelfApproval = "self_approval"

	// CodeDuplicateApproval: this key or owner already approved.
	CodeDuplicateApproval = "duplicate_approval"
	// CodeApprovalMismatch: the approval names another broadcast or
	// action, or another envelope than the one stored.
	CodeApprovalMismatch = "approval_mismatch"
	// CodeApprovalExpired: the approval window has passed.
	CodeApprovalExpired = "approval_expired"

	// CodeReachBudgetExceeded: the sender key's reach budget cannot cover
	// the audience; the answer's Retry-After says when it can.
	CodeReachBudgetExceeded = "reach_budget_exceeded"

	CodeNotFound         = "not_found"
	CodeMethodNotAllowed = "method_not_allowed"

	CodeIdempotencyConflict = "idempotency_conflict"
	CodeNotResumable        = "not_resumable"
	CodeInvalidState        = "invalid_state"
	// CodeNotRecallable: the broadcast cannot be recalled any more: it was
	// signed longer before the recall than the recall window, or its
	// envelope no longer verifies (its key left the keyring).
	CodeNotRecallable = "not_recallable"

	CodeBodyTooLarge         = "body_too_large"
	CodeUnsupportedMediaType = "unsupported_media_type"
	// CodeBodyTimeout: the body did not arrive within the gateway's body
	// read timeout (limits.body_read_timeout).
	CodeBodyTimeout = "body_timeout"

	CodeInternal         = "internal"
	CodeKillSwitchActive = "kill_switch_active"
	CodeUnavailable      = "unavailable"
	// CodeControlLogInconsistent: the control log in Redis failed its
	// checks (smaller than a checkpoint this process verified, forked,
	// altered or badly signed); nothing changes until it is restored.
	CodeControlLogInconsistent = "control_log_inconsistent"
	// CodeControlLogUnavailable: the request could not be integrated into
	// the control log (no integrator running, or it refused it).
	CodeControlLogUnavailable = "control_log_unavailable"
	// CodeRedisDataLost: Redis lost data (its deployment marker is missing
	// or another deployment's); new work is refused until an operator
	// restores it or accepts the loss (pushgate redis).
	CodeRedisDataLost = "redis_data_lost"
	// CodeProviderDegraded: a worker's provider refuses the deployment's
	// own credential (its /readyz).
	CodeProviderDegraded = "provider_degraded"
)

// statusTable is the one table from problem code to HTTP status and
// title.
var statusTable = map[string]struct {
	status int
	title  string
}{
	string(signing.CodeMissingSignature):   {http.StatusUnauthorized, "Missing signature"},
	string(signing.CodeMalformedSignature): {http.StatusUnauthorized, "Malformed signature"},
	string(signing.CodeMissingComponent):   {http.StatusUnauthorized, "Signature does not cover a required component"},
	string(signing.CodeUnknownKey):         {http.StatusUnauthorized, "Unknown key"},
	string(signing.CodeRevokedKey):         {http.StatusUnauthorized, "Revoked key"},
	string(signing.CodeStaleRequest):       {http.StatusUnauthorized, "Stale request"},
	string(signing.CodeExpiredSignature):   {http.StatusUnauthorized, "Expired signature"},
	string(signing.CodeReplayedNonce):      {http.StatusUnauthorized, "Replayed nonce"},
	string(signing.CodeDigestMismatch):     {http.StatusUnauthorized, "Content digest mismatch"},
	string(signing.CodeBadSignature):       {http.StatusUnauthorized, "Bad signature"},
	string(signing.CodeWrongAuthority):     {http.StatusUnauthorized, "Signed for another authority"},

	CodeMalformedJSON:   {http.StatusBadRequest, "Malformed JSON"},
	CodeUnknownField:    {http.StatusBadRequest, "Unknown field"},
	CodeInvalidAudience: {http.StatusBadRequest, "Invalid audience"},
	CodeInvalidTTL:      {http.StatusBadRequest, "Invalid TTL"},
	CodeTooManyTokens:   {http.StatusBadRequest, "Too many tokens"},
	CodeInvalidMessage:  {http.StatusBadRequest, "Invalid message"},
	CodeInvalidDevice:   {http.StatusBadRequest, "Invalid device"},
	CodeInvalidTopic:    {http.StatusBadRequest, "Invalid topic"},
	CodeInvalidIdemKey:  {http.StatusBadRequest, "Invalid idempotency key"},
	CodeInvalidScope:    {http.StatusBadRequest, "Invalid kill scope"},
	CodeInvalidRecall:   {http.StatusBadRequest, "Invalid recall"},
	CodeInvalidQuery:    {http.StatusBadRequest, "Invalid query parameter"},
	CodeInvalidReason:   {http.StatusBadRequest, "Invalid reason"},

	CodeNonCanonicalPath: {http.StatusBadRequest, "Non-canonical path"},
	CodeDuplicateKey:     {http.StatusBadRequest, "Duplicate key"},

	CodeForbidden:           {http.StatusForbidden, "Forbidden"},
	CodeTopicNotAllowed:     {http.StatusForbidden, "Topic not allowed"},
	CodeAudienceOverCap:     {http.StatusForbidden, "Audience over cap"},
	CodeDeviceNotInScope:    {http.StatusForbidden, "Device not in scope"},
	CodeDeviceQuotaExceeded: {http.StatusForbidden, "Device quota exceeded"},
	CodeSelfApproval:        {http.StatusForbidden, "Self-approval"},

	CodeNotFound:         {http.StatusNotFound, "Not found"},
	CodeMethodNotAllowed: {http.StatusMethodNotAllowed, "Method not allowed"},

	CodeIdempotencyConflict: {http.StatusConflict, "Idempotency conflict"},
	CodeNotResumable:        {http.StatusConflict, "Not resumable"},
	CodeInvalidState:        {http.StatusConflict, "Invalid state"},
	CodeNotRecallable:       {http.StatusConflict, "Not recallable"},
	CodeDuplicateApproval:   {http.StatusConflict, "Duplicate approval"},
	CodeApprovalMismatch:    {http.StatusConflict, "Approval mismatch"},
	CodeApprovalExpired:     {http.StatusConflict, "Approval expired"},

	CodeReachBudgetExceeded: {http.StatusTooManyRequests, "Reach budget exceeded"},

	CodeBodyTooLarge:         {http.StatusRequestEntityTooLarge, "Body too large"},
	CodeUnsupportedMediaType: {http.StatusUnsupportedMediaType, "Unsupported media type"},
	CodeBodyTimeout:          {http.StatusRequestTimeout, "Body timeout"},

	CodeInternal:         {http.StatusInternalServerError, "Internal error"},
	CodeKillSwitchActive: {http.StatusServiceUnavailable, "Kill switch active"},
	CodeUnavailable:      {http.StatusServiceUnavailable, "Service unavailable"},

	CodeControlLogInconsistent: {http.StatusServiceUnavailable, "Control log inconsistent"},
	CodeControlLogUnavailable:  {http.StatusServiceUnavailable, "Control log unavailable"},
	CodeRedisDataLost:          {http.StatusServiceUnavailable, "Redis lost data"},
	CodeProviderDegraded:       {http.StatusServiceUnavailable, "Provider refuses the credential"},
}

// StatusOf returns the HTTP status and title of a problem code; ok is
// false for a code the table does not know, which is a bug: a new code
// must be added to the table.
func StatusOf(code string) (status int, title string, ok bool) {
	e, ok := statusTable[code]
	return e.status, e.title, ok
}

// Codes returns every problem code the API answers with.
func Codes() []string {
	out := make([]string, 0, len(statusTable))
	for c := range statusTable {
		out = append(out, c)
	}
	return out
}

// Error is a request pushgate refuses because of what it asks for, not
// because something broke. Code is stable and reaches API clients; Detail
// is safe to show them and never holds a token, a signature or a key.
type Error struct {
	Code   string
	Detail string
	// RetryAfter, when positive, is sent as the answer's Retry-After.
	RetryAfter time.Duration
}

// Error returns the code and the detail.
func (e *Error) Error() string { return e.Code + ": " + e.Detail }

// Errorf returns an *Error with a formatted detail.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Detail: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of the refusal in err's chain (an *Error, a
// *Problem or a *signing.Error), or "" when err is not a refusal.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	var p *Problem
	if errors.As(err, &p) {
		return p.Code
	}
	var se *signing.Error
	if errors.As(err, &se) {
		return string(se.Code)
	}
	return ""
}

// Problem is an RFC 9457 problem document, as every error answer of the
// API carries it. Code is stable and machine-readable; Detail is for
// people. The client returns it as its error.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	Code   string `json:"code"`
}

// Error returns the code and the detail.
func (p *Problem) Error() string {
	if p.Detail == "" {
		return p.Code
	}
	return p.Code + ": " + p.Detail
}

// NewProblem builds the problem document of a code. A code missing from
// the table becomes an internal error, so that a bug never answers with a
// status nobody chose.
func NewProblem(code, detail string) *Problem {
	status, title, ok := StatusOf(code)
	if !ok {
		code, detail = CodeInternal, ""
		status, title, _ = StatusOf(code)
	}
	return &Problem{Type: ProblemTypeBase + code, Title: title, Status: status, Detail: detail, Code: code}
}

// ProblemOf turns an error into the problem a client sees. internal is
// true when err is not a refusal (Redis down, a bug): the client then gets
// "unavailable" (or "internal" for an unknown code) without detail, and
// the caller logs err.
func ProblemOf(err error) (p *Problem, internal bool) {
	var pe *Problem
	if errors.As(err, &pe) {
		return NewProblem(pe.Code, pe.Detail), false
	}
	var se *signing.Error
	if errors.As(err, &se) {
		return NewProblem(string(se.Code), se.Detail), false
	}
	var e *Error
	if errors.As(err, &e) {
		if _, _, ok := StatusOf(e.Code); !ok {
			return NewProblem(CodeInternal, ""), true
		}
		return NewProblem(e.Code, e.Detail), false
	}
	return NewProblem(CodeUnavailable, ""), true
}
