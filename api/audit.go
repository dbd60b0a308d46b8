package api

import (
	"encoding/json"
	"time"
)

// AuditEntry is one entry of the control log, as GET /v1/audit serves it:
// who did what, when, why and what the API decided, derived from the
// entry, with the entry itself and its inclusion proof against the page's
// checkpoint, so that anyone holding the log's public key can check that
// the log holds exactly this entry at this index.
type AuditEntry struct {
	Index   int64     `json:"index"`
	At      time.Time `json:"at"`
	Actor   string    `json:"actor"`
	Action  string    `json:"action"`
	Target  string    `json:"target"`
	Reason  string    `json:"reason,omitempty"`
	Outcome string    `json:"outcome,omitempty"`
	// Entry is the entry's leaf bytes: the signed request exactly as
	// received, the API's decision and the integration time.
	Entry json.RawMessage `json:"entry"`
	// Proof is the RFC 6962 inclusion proof of Entry at Index in the tree
	// the page's checkpoint signs: base64 hashes, leaf to root.
	Proof []string `json:"proof"`
}

// AuditPage answers GET /v1/audit: the newest entries first, and the
// signed checkpoint their proofs lead to.
type AuditPage struct {
	// Checkpoint is the signed checkpoint (C2SP tlog-checkpoint) of the
	// log the entries were read from.
	Checkpoint string       `json:"checkpoint"`
	Entries    []AuditEntry `json:"entries"`
}

// Audit list limits of GET /v1/audit.
const (
	DefaultAuditLimit = 100
	MaxAuditLimit     = 1000
)
