package queue

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"strings"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/signing"
)

// Stopping is one person's job; putting text on phones and releasing a
// brake are two people's. An admin's recall with custom text, resume of a
// global or key kill, and revocation of another admin key are entries of
// the control log that wait as pending actions, carried out — by every
// process's fold of the log, not by the API alone — only once
// AdminApprovals admin or approve keys of other owners have co-signed
// exactly that request in later entries. A recall's approvals are held
// with it, and every worker verifies them again before it sends the text.

// ActionID derives an action's id from the key that signed its request and
// the signature's nonce, as BroadcastID does for broadcasts, so that a
// worker can tell which action a recall envelope was.
func ActionID(keyID, nonce string) string {
	h := sha256.Sum256([]byte("pushgate action id\x00" + keyID + "\x00" + nonce))
	return "a" + strings.ToLower(base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(h[:15]))
}

// isRetraction reports whether a recall removes the broadcast or replaces
// it with exactly the standard retraction, which one admin may send.
func (p Policy) isRetraction(r *api.RecallRequest) bool {
	if r.Mode != api.RecallReplace {
		return true // a removal shows nothing
	}
	m := r.Replacement
	return m.Title == p.RetractionTitle && m.Body == p.RetractionBody && len(m.Data) == 0
}

// requestAction records an admin action that waits for approvals and
// returns it as the control log holds it.
func (s *Service) requestAction(ctx context.Context, v *signing.Verified, envelope *signing.Request, kind, target string) (*api.PendingAction, error) {
	id := ActionID(v.Key.ID, v.Nonce)
	logKind, _, _ := controllog.KindOf(envelope.Method, envelope.Path)
	d := controllog.Decision{Kind: logKind, Target: target,
		Outcome: fmt.Sprintf("%s awaits %d approval(s) as action %s", kind, s.policy.AdminApprovals, id)}
	if _, err := s.logged(ctx, v, envelope, d, false); err != nil {
		return nil, err
	}
	a, ok := s.control.action(id)
	if !ok {
		return nil, api.Errorf(api.CodeInvalidState, "the control log did not take action %s as pending", id)
	}
	return &a, nil
}

// ActionOutcome is what approving an action did: the action, and when the
// approval completed it, what carrying it out returned.
type ActionOutcome struct {
	Action *api.PendingAction
	// Kill is the kill of a carried-out revocation.
	Kill *KillResult
	// Version is the size of the control log that holds a carried-out
	// resume.
	Version int64
	// Recall is the broadcast of a carried-out recall.
	Recall *api.Status
}

// ApproveAction records an approval of a pending admin action. The
// control log's fold carries the action out once it has the approvals it
// needs; the API then does what follows: it waits for the workers to
// acknowledge a revocation's kill, or starts a recall.
func (s *Service) ApproveAction(ctx context.Context, v *signing.Verified, envelope *signing.Request, req *api.ActionApprovalRequest) (*ActionOutcome, error) {
	if err := s.controlOK(); err != nil {
		return nil, err
	}
	a, ok := s.control.action(req.ActionID)
	if !ok {
		return nil, api.Errorf(api.CodeNotFound, "no action %q", req.ActionID)
	}
	if a.Kind != api.ActionRevoke { // a revocation is a stop: never refused for lost data
		if err := s.dataOK(); err != nil {
			return nil, err
		}
	}
	switch {
	case a.Done:
		return nil, api.Errorf(api.CodeInvalidState, "action %s was already carried out", a.ID)
	case !s.now().Before(a.ExpiresAt):
		return nil, api.Errorf(api.CodeApprovalExpired, "action %s waited for approvals until %s", a.ID, a.ExpiresAt.Format(time.RFC3339))
	case req.RequestSHA256 != a.RequestSHA256:
		return nil, api.Errorf(api.CodeApprovalMismatch, "request_sha256 is not the digest of action %s's request", a.ID)
	}
	k := v.Key
	requester, _ := s.verifier.Keys().Lookup(a.KeyID)
	if k.ID == a.KeyID || k.Owner == a.Owner || requester != nil && k.Public.Equal(requester.Public) {
		return nil, api.Errorf(api.CodeSelfApproval, "key %s (owner %s) requested this action or shares its owner or key", k.ID, k.Owner)
	}
	for _, ap := range a.Approvals {
		if ap.KeyID == k.ID || ap.Owner == k.Owner {
			return nil, api.Errorf(api.CodeDuplicateApproval, "owner %s already approved action %s", ap.Owner, a.ID)
		}
	}
	d := controllog.Decision{Kind: controllog.KindApproveAction, Target: a.ID,
		Outcome: fmt.Sprintf("%s %s: %d of %d", a.Kind, a.Target, len(a.Approvals)+1, s.policy.AdminApprovals)}
	version, err := s.logged(ctx, v, envelope, d, false)
	if err != nil {
		return nil, err
	}
	after, _ := s.control.action(a.ID)
	out := &ActionOutcome{Action: &after}
	if !after.Done {
		return out, nil
	}
	switch after.Kind {
	case api.ActionResume:
		out.Version = version
	case api.ActionRevoke:
		scope := api.KeyScope(after.Target)
		ack, err := s.workers.waitAcks(ctx, nil, version, s.policy.KillWait)
		if err != nil {
			return nil, err
		}
		out.Kill = &KillResult{Kill: api.Kill{Scope: scope, Reason: "revoked", By: after.KeyID, At: s.now().UTC()},
			Version: version, Ack: ack, Waited: true}
	case api.ActionRecall:
		if _, err := s.workers.waitAcks(ctx, nil, version, s.policy.KillWait); err != nil {
			return nil, err
		}
		if out.Recall, err = s.startRecall(ctx, after.Target, api.RecallReplace); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// recallApproved reports whether a verified recall may send its text: a
// removal or the standard retraction may, anything else only with the
// approvals of its action that the control log holds, which this process
// verifies.
func (c *core) recallApproved(ctx context.Context, vr *verifiedRecall, approvals map[string]string) (bool, error) {
	if c.policy.isRetraction(vr.req) {
		return true, nil
	}
	counted, _, err := c.coSigned(ctx, approvals, api.ActionApprovalsPath(vr.actionID), secondPersonRoles,
		parseActionApproval, vr.actionID, vr.digest, vr.admin)
	if err != nil {
		return false, err
	}
	return len(counted) >= c.policy.AdminApprovals, nil
}

// parseActionApproval reads the target and digest of an action approval
// body.
func parseActionApproval(body []byte) (string, string, error) {
	var r api.ActionApprovalRequest
	if err := api.DecodeJSON(body, &r); err != nil {
		return "", "", err
	}
	return r.ActionID, r.RequestSHA256, nil
}

// secondPersonRoles are the roles whose keys may approve admin actions.
var secondPersonRoles = []signing.Role{signing.RoleAdmin, signing.RoleApprove}
