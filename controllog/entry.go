package controllog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/signing"
)

// Entry is one record of the control log: a signed request exactly as the
// API received it, what the API decided, and when the entry was
// integrated. The request is the evidence; readers verify it and apply
// their own rules, so a Decision never grants anything by itself.
type Entry struct {
	// Time is when the integrator took the entry into the log, by its
	// clock. The checkpoint signature covers it with the rest of the leaf.
	Time     time.Time        `json:"time"`
	Request  *signing.Request `json:"request"`
	Decision Decision         `json:"decision"`
}

// Decision is what the API decided about a request: for people reading
// the audit trail.
type Decision struct {
	Kind Kind `json:"kind"`
	// Target is the scope, broadcast, key or action the request acted on.
	Target string `json:"target,omitempty"`
	// Outcome says what came of it, in words.
	Outcome string `json:"outcome,omitempty"`
}

// Kind is the control action an entry records, fixed by its request's
// method and path.
type Kind string

// The kinds of entry.
const (
	KindSubmit        Kind = "submit"         // POST /v1/broadcasts
	KindKill          Kind = "kill"           // POST /v1/kill
	KindResume        Kind = "resume"         // POST /v1/resume
	KindRevoke        Kind = "revoke"         // POST /v1/keys/{id}/revoke
	KindCancel        Kind = "cancel"         // POST /v1/broadcasts/{id}/cancel
	KindRecall        Kind = "recall"         // POST /v1/broadcasts/{id}/recall
	KindApprove       Kind = "approve"        // POST /v1/broadcasts/{id}/approvals
	KindApproveAction Kind = "approve_action" // POST /v1/actions/{id}/approvals
)

// roles are the roles whose keys may sign each kind of entry. Who may act
// on what (a cancel by the broadcast's own key, a second person's
// approval) is the reader's rule, not the format's.
var roles = map[Kind][]signing.Role{
	KindSubmit:        {signing.RoleBroadcast},
	KindKill:          {signing.RoleAdmin},
	KindResume:        {signing.RoleAdmin},
	KindRevoke:        {signing.RoleAdmin},
	KindCancel:        {signing.RoleBroadcast, signing.RoleAdmin},
	KindRecall:        {signing.RoleAdmin},
	KindApprove:       {signing.RoleApprove},
	KindApproveAction: {signing.RoleAdmin, signing.RoleApprove},
}

// KindOf returns the kind of a request and the id its path names (the
// broadcast of a cancel, recall or approval, the key of a revoke, the
// action of an action approval; "" for the rest). ok is false for anything
// that is not a control action, including a path whose id is not spelled
// the way the API spells it.
func KindOf(method, path string) (kind Kind, target string, ok bool) {
	if method != "POST" {
		return "", "", false
	}
	switch path {
	case api.PathBroadcasts:
		return KindSubmit, "", true
	case api.PathKill:
		return KindKill, "", true
	case api.PathResume:
		return KindResume, "", true
	}
	if rest, ok := strings.CutPrefix(path, api.PathBroadcasts+"/"); ok {
		id, _, _ := strings.Cut(rest, "/")
		if !api.ValidBroadcastID(id) {
			return "", "", false
		}
		switch path {
		case api.CancelPath(id):
			return KindCancel, id, true
		case api.RecallPath(id):
			return KindRecall, id, true
		case api.ApprovalsPath(id):
			return KindApprove, id, true
		}
		return "", "", false
	}
	if id, ok := api.RevokeTarget(path); ok {
		return KindRevoke, id, true
	}
	if id, ok := api.ActionApprovalsTarget(path); ok {
		return KindApproveAction, id, true
	}
	return "", "", false
}

// MaxEntryBytes bounds an encoded entry: a request body of the API's
// largest (1 MiB), base64-encoded, with its headers.
const MaxEntryBytes = 2 << 20

// Encode returns the entry's leaf bytes: compact JSON, as hashed.
func Encode(e *Entry) ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("controllog: encode entry: %w", err)
	}
	if len(b) > MaxEntryBytes {
		return nil, fmt.Errorf("controllog: entry of %d bytes is over %d", len(b), MaxEntryBytes)
	}
	return b, nil
}

// Decode parses leaf bytes read from outside: exactly one JSON object with
// only Entry's fields, a request and a time.
func Decode(b []byte) (*Entry, error) {
	if len(b) > MaxEntryBytes {
		return nil, fmt.Errorf("entry of %d bytes is over %d", len(b), MaxEntryBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var e Entry
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("entry is not valid JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("entry has data after its JSON object")
	}
	if e.Request == nil {
		return nil, errors.New("entry has no request")
	}
	if e.Time.IsZero() {
		return nil, errors.New("entry has no time")
	}
	return &e, nil
}

// Checked is an entry whose request verified.
type Checked struct {
	Kind Kind
	// Target is the id the request's path names; see KindOf.
	Target   string
	Verified *signing.Verified
}

// Window bounds how a request's signature time may relate to the entry's
// integration time: signed at most Skew after it (clocks differ) and at
// most MaxAge before it.
type Window struct {
	Skew, MaxAge time.Duration
}

// Check verifies an entry's request as every reader of the log must: it
// is a control action (KindOf), signed by a key of the keyring with a
// valid signature (v.VerifyRecorded: revocations are the reader's, in log
// order), by a key holding a role that may take it, and signed within w
// of the entry's time. Its error says which check failed.
func Check(ctx context.Context, v *signing.Verifier, e *Entry, w Window) (*Checked, error) {
	req := e.Request
	kind, target, ok := KindOf(req.Method, req.Path)
	if !ok {
		return nil, fmt.Errorf("%s %q is not a control action", quote(req.Method, 8), quote(req.Path, 120))
	}
	if e.Decision.Kind != kind {
		return nil, fmt.Errorf("decision kind %q does not match the request, a %s", quote(string(e.Decision.Kind), 32), kind)
	}
	ver, err := v.VerifyRecorded(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("request does not verify: %w", err)
	}
	if !slices.ContainsFunc(roles[kind], ver.Key.Has) {
		return nil, fmt.Errorf("key %s may not %s: it lacks the role %v", ver.Key.ID, kind, roles[kind])
	}
	if ver.Created.IsZero() {
		return nil, errors.New("request signature has no created time")
	}
	if ver.Created.After(e.Time.Add(w.Skew)) || ver.Created.Before(e.Time.Add(-w.MaxAge)) {
		return nil, fmt.Errorf("request signed at %s, too far from its integration at %s",
			ver.Created.UTC().Format(time.RFC3339), e.Time.UTC().Format(time.RFC3339))
	}
	return &Checked{Kind: kind, Target: target, Verified: ver}, nil
}

// quote shortens s for an error message.
func quote(s string, n int) string {
	if len(s) > n {
		s = s[:n] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
