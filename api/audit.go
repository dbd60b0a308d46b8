package api

import "time"

// AuditEntry records one admin or sender action: who, what, when, why,
// and what came of it.
type AuditEntry struct {
	ID      string    `json:"id"`
	At      time.Time `json:"at"`
	Actor   string    `json:"actor"`
	Action  string    `json:"action"`
	Target  string    `json:"target"`
	Reason  string    `json:"reason,omitempty"`
	Outcome string    `json:"outcome,omitempty"`
}

// AuditPage answers GET /v1/audit: entries, newest first.
type AuditPage struct {
	Entries []AuditEntry `json:"entries"`
}

// Audit list limits of GET /v1/audit.
const (
	DefaultAuditLimit = 100
	MaxAuditLimit     = 1000
)
