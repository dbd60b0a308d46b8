package api

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// Reaching many phones takes more than one credential. A broadcast whose
// audience is all, or larger than its key's (or the gateway's)
// approval_above, waits in awaiting_approval until keys with the approve
// role of other owners co-sign it. Admin actions that put text on phones
// or release a brake — a recall with custom text, a resume of a global or
// key kill, the revocation of an admin key — wait the same way for a
// second admin or approver. The bodies below are what those co-signers
// sign.

// Digest is the hex SHA-256 of a signed request's body: what an approval
// names so that it approves exactly the content it was shown. It is the
// same digest the request's Content-Digest carries, in hex.
func Digest(body []byte) string {
	h := sha256.Sum256(body)
	return hex.EncodeToString(h[:])
}

// ApprovalRequest is the body of POST /v1/broadcasts/{id}/approvals.
type ApprovalRequest struct {
	BroadcastID string `json:"broadcast_id"`
	// EnvelopeSHA256 is Digest of the submission's body, as
	// PendingBroadcast.Body shows it.
	EnvelopeSHA256 string `json:"envelope_sha256"`
}

// ActionApprovalRequest is the body of POST /v1/actions/{id}/approvals.
type ActionApprovalRequest struct {
	ActionID string `json:"action_id"`
	// RequestSHA256 is Digest of the action request's body, as
	// PendingAction.Body shows it.
	RequestSHA256 string `json:"request_sha256"`
}

// ParseApprovalRequest decodes and validates a broadcast approval for the
// broadcast of the path.
func ParseApprovalRequest(body []byte, pathID string) (*ApprovalRequest, error) {
	var r ApprovalRequest
	if err := DecodeJSON(body, &r); err != nil {
		return nil, err
	}
	if r.BroadcastID != pathID {
		return nil, Errorf(CodeApprovalMismatch, "broadcast_id %q is not the broadcast of the path", r.BroadcastID)
	}
	if !validDigest(r.EnvelopeSHA256) {
		return nil, Errorf(CodeMalformedJSON, "envelope_sha256 must be 64 lowercase hex digits")
	}
	return &r, nil
}

// ParseActionApprovalRequest decodes and validates an action approval for
// the action of the path.
func ParseActionApprovalRequest(body []byte, pathID string) (*ActionApprovalRequest, error) {
	var r ActionApprovalRequest
	if err := DecodeJSON(body, &r); err != nil {
		return nil, err
	}
	if r.ActionID != pathID {
		return nil, Errorf(CodeApprovalMismatch, "action_id %q is not the action of the path", r.ActionID)
	}
	if !validDigest(r.RequestSHA256) {
		return nil, Errorf(CodeMalformedJSON, "request_sha256 must be 64 lowercase hex digits")
	}
	return &r, nil
}

func validDigest(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Approval is one accepted approval.
type Approval struct {
	KeyID string    `json:"key_id"`
	Owner string    `json:"owner"`
	At    time.Time `json:"at"`
}

// PendingBroadcast is a broadcast awaiting approval, with what an approver
// must see before co-signing: the submission's body exactly as signed.
type PendingBroadcast struct {
	Status
	Body           json.RawMessage `json:"body"`
	EnvelopeSHA256 string          `json:"envelope_sha256"`
}

// Action kinds that wait for a second person.
const (
	ActionRecall = "recall" // a recall with custom replacement text
	ActionResume = "resume" // lifting a global or key kill
	ActionRevoke = "revoke" // revoking an admin key
)

// PendingAction is an admin action waiting for approvals, or, once done,
// what became of it.
type PendingAction struct {
	ID    string `json:"id"`
	Kind  string `json:"kind"`
	KeyID string `json:"key_id"`
	Owner string `json:"owner"`
	// Target is the broadcast id (recall), the scope (resume) or the key
	// id (revoke).
	Target string `json:"target"`
	// Body is the action request's body exactly as its requester signed it.
	Body              json.RawMessage `json:"body"`
	RequestSHA256     string          `json:"request_sha256"`
	Approvals         []Approval      `json:"approvals"`
	ApprovalsRequired int             `json:"approvals_required"`
	CreatedAt         time.Time       `json:"created_at"`
	ExpiresAt         time.Time       `json:"expires_at"`
	// Done is true once the action has been carried out.
	Done bool `json:"done"`
}

// ApprovalsList answers GET /v1/approvals: what waits for approvals,
// oldest first.
type ApprovalsList struct {
	Broadcasts []PendingBroadcast `json:"broadcasts"`
	Actions    []PendingAction    `json:"actions"`
}

// ValidActionID reports whether id has the shape of an action id: "a" and
// up to 63 characters of lowercase base32hex.
func ValidActionID(id string) bool {
	return len(id) >= 2 && id[0] == 'a' && ValidBroadcastID("b"+id[1:])
}
