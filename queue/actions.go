package queue

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/signing"
)

// Stopping is one person's job; putting text on phones and releasing a
// brake are two people's. An admin's recall with custom text, resume of a
// global or key kill, and revocation of another admin key are stored as
// pending actions — the signed request as received — and carried out only
// once AdminApprovals admin or approve keys of other owners have co-signed
// exactly that request. A recall's approvals are copied beside its
// envelope, where every worker verifies them again before it sends the
// text.

// ActionID derives an action's id from the key that signed its request and
// the signature's nonce, as BroadcastID does for broadcasts, so that a
// worker can tell which action a recall envelope was.
func ActionID(keyID, nonce string) string {
	h := sha256.Sum256([]byte("pushgate action id\x00" + keyID + "\x00" + nonce))
	return "a" + strings.ToLower(base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(h[:15]))
}

// isRetraction reports whether a recall replaces with exactly the standard
// retraction, which one admin may send.
func (c *core) isRetraction(r *api.RecallRequest) bool {
	if r.Mode != api.RecallReplace {
		return true // a removal shows nothing
	}
	m := r.Replacement
	return m.Title == c.policy.RetractionTitle && m.Body == c.policy.RetractionBody && len(m.Data) == 0
}

// requestAction stores an admin action that waits for approvals.
func (s *Service) requestAction(ctx context.Context, v *signing.Verified, envelope *signing.Request, kind, target string) (*api.PendingAction, error) {
	id := ActionID(v.Key.ID, v.Nonce)
	env, err := json.Marshal(envelope)
	if err != nil {
		return nil, fmt.Errorf("encode action: %w", err)
	}
	now := s.now()
	expires := now.Add(s.policy.ApprovalWindow)
	key := s.keys.Action(id)
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, "kind", kind, "target", target, "key_id", v.Key.ID, "envelope", env,
			"created_at", now.UnixMilli(), "expires_at", expires.UnixMilli())
		p.ZAdd(ctx, s.keys.Actions(), redis.Z{Score: float64(now.UnixMilli()), Member: id})
		p.Expire(ctx, key, recordRetention)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store action: %w", err)
	}
	s.recordAudit(ctx, api.AuditEntry{Actor: v.Key.ID, Action: kind + "_requested", Target: target,
		Outcome: fmt.Sprintf("action %s awaits %d approval(s)", id, s.policy.AdminApprovals)})
	return s.action(ctx, id)
}

// storedAction is an action as stored, with its verified request.
type storedAction struct {
	api.PendingAction
	envelope  []byte
	requester *signing.Key
	request   *signing.Request
}

// loadAction reads an action and verifies its stored request again: a
// pending action written into Redis by someone without an admin key
// cannot be approved into being.
func (s *Service) loadAction(ctx context.Context, id string) (*storedAction, error) {
	f, err := s.rdb.HGetAll(ctx, s.keys.Action(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("read action: %w", err)
	}
	if f["kind"] == "" {
		return nil, api.Errorf(api.CodeNotFound, "no action %q", id)
	}
	a := &storedAction{envelope: []byte(f["envelope"])}
	v, req, err := s.verify.reverify(ctx, a.envelope, pathOfAction(f["kind"], f["target"]), signing.RoleAdmin)
	if err != nil {
		if errors.Is(err, errForged) {
			return nil, api.Errorf(api.CodeNotFound, "no action %q", id)
		}
		return nil, err
	}
	if ActionID(v.Key.ID, v.Nonce) != id {
		return nil, api.Errorf(api.CodeNotFound, "no action %q", id)
	}
	a.requester, a.request = v.Key, req
	ms := func(k string) time.Time {
		n, _ := strconv.ParseInt(f[k], 10, 64)
		return time.UnixMilli(n).UTC()
	}
	a.PendingAction = api.PendingAction{
		ID: id, Kind: f["kind"], KeyID: v.Key.ID, Owner: v.Key.Owner, Target: f["target"],
		Body: json.RawMessage(req.Body), RequestSHA256: api.Digest(req.Body),
		ApprovalsRequired: s.policy.AdminApprovals, CreatedAt: ms("created_at"), ExpiresAt: ms("expires_at"),
		Done: f["done"] == "1",
	}
	if len(req.Body) == 0 || !json.Valid(req.Body) {
		a.Body = json.RawMessage("{}")
	}
	counted, _, err := s.actionApprovals(ctx, a)
	if err != nil {
		return nil, err
	}
	a.Approvals = append([]api.Approval{}, counted...)
	return a, nil
}

// pathOfAction is the API path an action's request was signed for.
func pathOfAction(kind, target string) string {
	switch kind {
	case api.ActionRecall:
		return api.RecallPath(target)
	case api.ActionResume:
		return api.PathResume
	}
	return api.RevokePath(target)
}

// action returns the public view of an action.
func (s *Service) action(ctx context.Context, id string) (*api.PendingAction, error) {
	a, err := s.loadAction(ctx, id)
	if err != nil {
		return nil, err
	}
	return &a.PendingAction, nil
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

func (s *Service) actionApprovals(ctx context.Context, a *storedAction) ([]api.Approval, int, error) {
	raws, err := s.store.approvals(ctx, s.keys.ActionApprovals(a.ID))
	if err != nil {
		return nil, 0, err
	}
	return s.coSigned(ctx, raws, api.ActionApprovalsPath(a.ID), secondPersonRoles, parseActionApproval,
		a.ID, a.RequestSHA256, a.requester)
}

// ActionOutcome is what approving an action did: the action, and when the
// approval completed it, what carrying it out returned.
type ActionOutcome struct {
	Action *api.PendingAction
	// Kill is the kill of a carried-out revocation.
	Kill *KillResult
	// Version is the kill version of a carried-out resume.
	Version int64
	// Recall is the broadcast of a carried-out recall.
	Recall *api.Status
}

// ApproveAction records an approval of a pending admin action and carries
// the action out once it has the approvals it needs.
func (s *Service) ApproveAction(ctx context.Context, v *signing.Verified, envelope *signing.Request, req *api.ActionApprovalRequest) (*ActionOutcome, error) {
	a, err := s.loadAction(ctx, req.ActionID)
	if err != nil {
		return nil, err
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
	if k.ID == a.requester.ID || k.Owner == a.requester.Owner || k.Public.Equal(a.requester.Public) {
		return nil, api.Errorf(api.CodeSelfApproval, "key %s (owner %s) requested this action or shares its owner or key", k.ID, k.Owner)
	}
	for _, ap := range a.Approvals {
		if ap.KeyID == k.ID || ap.Owner == k.Owner {
			return nil, api.Errorf(api.CodeDuplicateApproval, "owner %s already approved action %s", ap.Owner, a.ID)
		}
	}
	raw, err := json.Marshal(envelope)
	if err != nil {
		return nil, fmt.Errorf("encode approval: %w", err)
	}
	fresh, err := s.store.saveApproval(ctx, "", s.keys.ActionApprovals(a.ID), k.ID, raw)
	if err != nil {
		return nil, err
	}
	if !fresh {
		return nil, api.Errorf(api.CodeDuplicateApproval, "key %s already approved action %s", k.ID, a.ID)
	}
	s.rdb.Expire(ctx, s.keys.ActionApprovals(a.ID), recordRetention)
	s.recordAudit(ctx, api.AuditEntry{Actor: k.ID, Action: "approve", Target: a.ID,
		Outcome: fmt.Sprintf("%s %s: %d of %d", a.Kind, a.Target, len(a.Approvals)+1, s.policy.AdminApprovals)})
	out := &ActionOutcome{}
	if len(a.Approvals)+1 >= s.policy.AdminApprovals {
		// The one approval that completes the set carries the action out.
		claimed, err := s.rdb.HSetNX(ctx, s.keys.Action(a.ID), "done", "1").Result()
		if err != nil {
			return nil, fmt.Errorf("mark action done: %w", err)
		}
		if claimed {
			if err := s.carryOut(ctx, a, out); err != nil {
				// Let a retried approval try again.
				s.rdb.HDel(ctx, s.keys.Action(a.ID), "done")
				return nil, err
			}
		}
	}
	if out.Action, err = s.action(ctx, a.ID); err != nil {
		return nil, err
	}
	return out, nil
}

// carryOut does an approved action, as its requester asked.
func (s *Service) carryOut(ctx context.Context, a *storedAction, out *ActionOutcome) error {
	by := a.requester.ID
	switch a.Kind {
	case api.ActionResume:
		r, err := api.ParseResumeRequest(a.request.Body)
		if err != nil {
			return err
		}
		out.Version, err = s.resume(ctx, by, r.Scope, r.Reason)
		return err
	case api.ActionRevoke:
		r, err := api.ParseReasonRequest(a.request.Body)
		if err != nil {
			return err
		}
		out.Kill, err = s.revoke(ctx, by, a.Target, r.Reason)
		return err
	case api.ActionRecall:
		r, err := api.ParseRecallRequest(a.request.Body)
		if err != nil {
			return err
		}
		// The approvals travel with the recall envelope: workers verify
		// them before they send its text.
		raws, err := s.store.approvals(ctx, s.keys.ActionApprovals(a.ID))
		if err != nil {
			return err
		}
		out.Recall, err = s.recall(ctx, by, a.Target, a.envelope, r, raws)
		return err
	}
	return fmt.Errorf("carry out action %s: unknown kind %q", a.ID, a.Kind)
}

// pendingActions lists the actions still waiting for approvals, oldest
// first.
func (s *Service) pendingActions(ctx context.Context) ([]api.PendingAction, error) {
	ids, err := s.rdb.ZRangeByScore(ctx, s.keys.Actions(), &redis.ZRangeBy{
		Min: strconv.FormatInt(s.now().Add(-s.policy.ApprovalWindow).UnixMilli(), 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, fmt.Errorf("list actions: %w", err)
	}
	out := []api.PendingAction{}
	for _, id := range ids {
		a, err := s.loadAction(ctx, id)
		if api.CodeOf(err) == api.CodeNotFound {
			continue // expired, or not a genuine action
		}
		if err != nil {
			return nil, err
		}
		if !a.Done && s.now().Before(a.ExpiresAt) {
			out = append(out, a.PendingAction)
		}
	}
	return out, nil
}

// recallApproved reports whether a verified recall may send its text: a
// removal or the standard retraction may, anything else only with the
// approvals of its action, which this process verifies.
func (c *core) recallApproved(ctx context.Context, vb *verifiedBroadcast, vr *verifiedRecall) (bool, error) {
	if c.isRetraction(vr.req) {
		return true, nil
	}
	raws, err := c.store.approvals(ctx, c.keys.RecallApprovals(vb.id))
	if err != nil {
		return false, err
	}
	counted, _, err := c.coSigned(ctx, raws, api.ActionApprovalsPath(vr.actionID), secondPersonRoles,
		parseActionApproval, vr.actionID, vr.digest, vr.admin)
	if err != nil {
		return false, err
	}
	return len(counted) >= c.policy.AdminApprovals, nil
}
