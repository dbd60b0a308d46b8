package api

import "time"

// KeyList answers GET /v1/keys (admin): the gateway's keyring, entry by
// entry in file order, each with its revocation as the control log holds
// it. It never carries private material: a key is named by its id and the
// fingerprint of its public key.
type KeyList struct {
	Keys []KeyInfo `json:"keys"`
	// Version is the size of the control log the revocations were read
	// from.
	Version int64 `json:"version"`
}

// KeyInfo is one keyring entry and whether it is revoked. Limits that are
// zero (unlimited, or meaningless for the key's roles) are left out.
type KeyInfo struct {
	ID string `json:"id"`
	// Owner is the person or team holding the key; the key id when the
	// keyring names none.
	Owner string `json:"owner"`
	// Roles are broadcast, register, approve and admin.
	Roles []string `json:"roles"`
	// Topics are the topic patterns the key may broadcast to or register
	// devices into; "*" also permits the audience "all". Never null.
	Topics []string `json:"topics"`
	// MaxAudience caps the devices one broadcast of the key may target.
	MaxAudience int `json:"max_audience,omitempty"`
	// Rate caps delivery of the key's broadcasts, as COUNT/PERIOD.
	Rate string `json:"rate,omitempty"`
	// Reach is the key's reach budget: distinct devices per rolling
	// window, as COUNT/PERIOD.
	Reach string `json:"reach,omitempty"`
	// ApprovalAbove is the audience above which the key's broadcasts wait
	// for approvals; absent when the gateway's policy decides.
	ApprovalAbove int `json:"approval_above,omitempty"`
	// MaxDevices caps the devices a register key may create.
	MaxDevices int `json:"max_devices,omitempty"`
	// PublicKeySHA256 is the lowercase hex SHA-256 of the public key's
	// SPKI DER: of the base64-decoded public_key of a keyring entry.
	PublicKeySHA256 string `json:"public_key_sha256"`
	// Revoked reports whether the control log revoked the key; RevokedAt,
	// RevokedBy (the key that revoked it, or that requested an approved
	// revocation) and RevokedReason say when, by whom and why.
	Revoked       bool      `json:"revoked"`
	RevokedAt     time.Time `json:"revoked_at,omitzero"`
	RevokedBy     string    `json:"revoked_by,omitempty"`
	RevokedReason string    `json:"revoked_reason,omitempty"`
}
