package gateway

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/pushgate/pushgate/queue"
	"github.com/pushgate/pushgate/signing"
)

// ProblemContentType is the media type of every error answer (RFC 9457).
const ProblemContentType = "application/problem+json"

// ProblemTypeBase prefixes a problem's code to make its type URI. The URIs
// are identifiers in pushgate's own scheme; they need not resolve.
const ProblemTypeBase = "https://pushgate.dev/problems/"

// Codes the gateway answers with itself. The Service's codes are in
// package queue (queue.Code*) and the signature codes in package signing
// (signing.Code*); statusOf maps all of them.
const (
	// CodeBodyTooLarge: the body is over MaxBodyBytes.
	CodeBodyTooLarge = "body_too_large"
	// CodeUnsupportedMediaType: a request with a body is not JSON.
	CodeUnsupportedMediaType = "unsupported_media_type"
	// CodeMethodNotAllowed: the path exists, the method does not.
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeInvalidQuery: a query parameter is malformed or out of range.
	CodeInvalidQuery = "invalid_query"
	// CodeInvalidReason: a reason is missing where required, or too long.
	CodeInvalidReason = "invalid_reason"
	// CodeNotImplemented: the route is part of the API but not built yet.
	CodeNotImplemented = "not_implemented"
	// CodeUnavailable: a dependency (Redis) failed; try again.
	CodeUnavailable = "unavailable"
	// CodeInternal: a bug in pushgate.
	CodeInternal = "internal"
)

// Problem is an RFC 9457 problem document, as every error answer of the
// API carries it. Code is stable and machine-readable; Detail is for
// people and never holds internal details. Clients decode it and use it
// as their error.
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

// statusOf is the one table from error code to HTTP status and title.
// ok is false for a code it does not know, which is a bug: a new code
// must be added here.
func statusOf(code string) (status int, title string, ok bool) {
	switch code {
	case string(signing.CodeMissingSignature):
		return http.StatusUnauthorized, "Missing signature", true
	case string(signing.CodeMalformedSignature):
		return http.StatusUnauthorized, "Malformed signature", true
	case string(signing.CodeMissingComponent):
		return http.StatusUnauthorized, "Signature does not cover a required component", true
	case string(signing.CodeUnknownKey):
		return http.StatusUnauthorized, "Unknown key", true
	case string(signing.CodeRevokedKey):
		return http.StatusUnauthorized, "Revoked key", true
	case string(signing.CodeStaleRequest):
		return http.StatusUnauthorized, "Stale request", true
	case string(signing.CodeExpiredSignature):
		return http.StatusUnauthorized, "Expired signature", true
	case string(signing.CodeReplayedNonce):
		return http.StatusUnauthorized, "Replayed nonce", true
	case string(signing.CodeDigestMismatch):
		return http.StatusUnauthorized, "Content digest mismatch", true
	case string(signing.CodeBadSignature):
		return http.StatusUnauthorized, "Bad signature", true

	case queue.CodeMalformedJSON:
		return http.StatusBadRequest, "Malformed JSON", true
	case queue.CodeUnknownField:
		return http.StatusBadRequest, "Unknown field", true
	case queue.CodeInvalidAudience:
		return http.StatusBadRequest, "Invalid audience", true
	case queue.CodeInvalidTTL:
		return http.StatusBadRequest, "Invalid TTL", true
	case queue.CodeTooManyTokens:
		return http.StatusBadRequest, "Too many tokens", true
	case queue.CodeInvalidMessage:
		return http.StatusBadRequest, "Invalid message", true
	case queue.CodeInvalidDevice:
		return http.StatusBadRequest, "Invalid device", true
	case queue.CodeInvalidTopic:
		return http.StatusBadRequest, "Invalid topic", true
	case queue.CodeInvalidIdemKey:
		return http.StatusBadRequest, "Invalid idempotency key", true
	case queue.CodeInvalidScope:
		return http.StatusBadRequest, "Invalid kill scope", true
	case queue.CodeInvalidRecall:
		return http.StatusBadRequest, "Invalid recall", true
	case CodeInvalidQuery:
		return http.StatusBadRequest, "Invalid query parameter", true
	case CodeInvalidReason:
		return http.StatusBadRequest, "Invalid reason", true

	case queue.CodeForbidden:
		return http.StatusForbidden, "Forbidden", true
	case queue.CodeTopicNotAllowed:
		return http.StatusForbidden, "Topic not allowed", true
	case queue.CodeAudienceOverCap:
		return http.StatusForbidden, "Audience over cap", true

	case queue.CodeNotFound:
		return http.StatusNotFound, "Not found", true
	case CodeMethodNotAllowed:
		return http.StatusMethodNotAllowed, "Method not allowed", true

	case queue.CodeIdempotencyConflict:
		return http.StatusConflict, "Idempotency conflict", true
	case queue.CodeNotResumable:
		return http.StatusConflict, "Not resumable", true
	case queue.CodeInvalidState:
		return http.StatusConflict, "Invalid state", true

	case CodeBodyTooLarge:
		return http.StatusRequestEntityTooLarge, "Body too large", true
	case CodeUnsupportedMediaType:
		return http.StatusUnsupportedMediaType, "Unsupported media type", true

	case CodeInternal:
		return http.StatusInternalServerError, "Internal error", true
	case CodeNotImplemented:
		return http.StatusNotImplemented, "Not implemented", true
	case queue.CodeKillSwitchActive:
		return http.StatusServiceUnavailable, "Kill switch active", true
	case CodeUnavailable:
		return http.StatusServiceUnavailable, "Service unavailable", true
	}
	return 0, "", false
}

// newProblem builds the problem document of a code. A code missing from
// statusOf becomes an internal error, so that a bug never answers with a
// status nobody chose.
func newProblem(code, detail string) *Problem {
	status, title, ok := statusOf(code)
	if !ok {
		code, detail = CodeInternal, ""
		status, title, _ = statusOf(code)
	}
	return &Problem{Type: ProblemTypeBase + code, Title: title, Status: status, Detail: detail, Code: code}
}

// problemOf turns an error from the verifier, the Service or a handler
// into the problem the client sees. internal is true when err is not a
// refusal (Redis down, a bug): the client then gets "unavailable" without
// detail, and the caller logs err.
func problemOf(err error) (p *Problem, internal bool) {
	var pe *Problem
	if errors.As(err, &pe) {
		return newProblem(pe.Code, pe.Detail), false
	}
	var se *signing.Error
	if errors.As(err, &se) {
		return newProblem(string(se.Code), se.Detail), false
	}
	var qe *queue.Error
	if errors.As(err, &qe) {
		if _, _, ok := statusOf(qe.Code); !ok {
			return newProblem(CodeInternal, ""), true
		}
		return newProblem(qe.Code, qe.Detail), false
	}
	return newProblem(CodeUnavailable, ""), true
}

// writeProblem answers with p.
func writeProblem(w http.ResponseWriter, p *Problem) {
	b, err := json.Marshal(p)
	if err != nil {
		// A Problem is strings and an int; this cannot fail.
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", ProblemContentType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(b, '\n'))
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeProblem(w, newProblem(CodeInternal, ""))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
