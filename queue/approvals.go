package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/signing"
)

// Reaching many phones takes more than one credential: a broadcast to all
// devices, or to more than its key's approval threshold, is planned only
// once M approve keys of distinct public keys and owners, none the
// submitter's, have signed approvals of exactly its body. The API checks
// each approval and records it in the control log; every worker takes the
// approvals from its own verified view of the log and verifies each one
// itself before it plans or sends past the threshold, so a state, a count
// or an approval written into Redis is worth nothing.

// approvalThreshold is the audience above which a broadcast of k needs
// approvals; zero means only audiences of all devices do.
func (c *core) approvalThreshold(k *signing.Key) int {
	if k.ApprovalAbove > 0 {
		return k.ApprovalAbove
	}
	return c.policy.ApprovalAbove
}

// needsApproval reports whether a broadcast of k to an audience of kind
// and size needs approvals.
func (c *core) needsApproval(k *signing.Key, kind string, size int64) bool {
	if kind == api.AudienceAll {
		return true
	}
	t := c.approvalThreshold(k)
	return t > 0 && size > int64(t)
}

// coSigned verifies approval envelopes of one target: each must be a
// signed POST to path, by a key that holds one of roles and is not
// revoked, whose body (read by parse) names target and digest. Approvals
// by the requester's key, public key or owner do not count; of the rest,
// each public key and each owner counts once. It returns the approvals
// that count and how many envelopes did not verify at all.
func (c *core) coSigned(ctx context.Context, raws map[string]string, path string, roles []signing.Role,
	parse func([]byte) (target, digest string, err error), target, digest string, requester *signing.Key,
) (counted []api.Approval, forged int, err error) {
	ids := make([]string, 0, len(raws))
	for id := range raws {
		ids = append(ids, id)
	}
	slices.Sort(ids) // the same envelopes always count the same way
	keys, owners := map[string]bool{string(requester.Public): true}, map[string]bool{requester.Owner: true}
	for _, id := range ids {
		v, req, err := c.verify.reverifyAny(ctx, []byte(raws[id]), path, roles)
		if errors.Is(err, errForged) {
			forged++
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		t, d, err := parse(req.Body)
		if err != nil || t != target || d != digest {
			forged++
			continue
		}
		k := v.Key
		if k.ID == requester.ID || keys[string(k.Public)] || owners[k.Owner] {
			continue
		}
		keys[string(k.Public)], owners[k.Owner] = true, true
		counted = append(counted, api.Approval{KeyID: k.ID, Owner: k.Owner, At: v.Created.UTC()})
	}
	return counted, forged, nil
}

// parseBroadcastApproval reads the target and digest of a broadcast
// approval body.
func parseBroadcastApproval(body []byte) (string, string, error) {
	var r api.ApprovalRequest
	if err := api.DecodeJSON(body, &r); err != nil {
		return "", "", err
	}
	return r.BroadcastID, r.EnvelopeSHA256, nil
}

// broadcastApprovals verifies the approvals the control log holds for a
// broadcast.
func (c *core) broadcastApprovals(ctx context.Context, vb *verifiedBroadcast) ([]api.Approval, int, error) {
	return c.coSigned(ctx, c.control.broadcastApprovals(vb.id), api.ApprovalsPath(vb.id), []signing.Role{signing.RoleApprove},
		parseBroadcastApproval, vb.id, vb.digest, vb.key)
}

// approved reports whether a broadcast has the approvals it needs, as
// this process verifies them from its view of the control log. Planning
// reads the log again once when they fall short: the API integrates the
// last approval before it enqueues the plan, and this view may lag. A
// forged approval is a security event.
func (c *core) approved(ctx context.Context, task string, vb *verifiedBroadcast) (bool, error) {
	counted, forged, err := c.broadcastApprovals(ctx, vb)
	if err != nil {
		return false, err
	}
	if len(counted) < c.policy.ApprovalsRequired && task == TypePlan {
		if err := c.control.refresh(ctx); err != nil {
			return false, err
		}
		if counted, forged, err = c.broadcastApprovals(ctx, vb); err != nil {
			return false, err
		}
	}
	if forged > 0 {
		c.securityEvent(ctx, task, vb.id, fmt.Errorf("%w: %d approvals do not verify", errForged, forged))
	}
	return len(counted) >= c.policy.ApprovalsRequired, nil
}

// Approve records an approval of a broadcast awaiting it. The approval was
// verified at ingress (signature, nonce, approve role); Approve checks it
// names the broadcast's exact body, comes from another key and owner than
// the submitter's and than every earlier approval, and is in time. The
// approval that completes the set moves the broadcast to queued and
// enqueues its planning.
func (s *Service) Approve(ctx context.Context, v *signing.Verified, envelope *signing.Request, req *api.ApprovalRequest) (*api.Status, error) {
	id := req.BroadcastID
	if err := s.workOK(); err != nil {
		return nil, err
	}
	st, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if st.State == api.StateExpired || st.State == api.StateAwaitingApproval && !s.now().Before(st.ApprovalExpiresAt) {
		s.expire(ctx, id)
		return nil, api.Errorf(api.CodeApprovalExpired, "broadcast %s waited for approvals until %s", id, st.ApprovalExpiresAt.Format(time.RFC3339))
	}
	if st.State != api.StateAwaitingApproval {
		return nil, api.Errorf(api.CodeInvalidState, "broadcast %s is %s, not awaiting approval", id, st.State)
	}
	vb, err := s.loadBroadcast(ctx, id)
	if err != nil {
		return nil, err
	}
	if req.EnvelopeSHA256 != vb.digest {
		return nil, api.Errorf(api.CodeApprovalMismatch, "envelope_sha256 is not the digest of broadcast %s's body", id)
	}
	k := v.Key
	if k.ID == vb.key.ID || k.Owner == vb.key.Owner || k.Public.Equal(vb.key.Public) {
		return nil, api.Errorf(api.CodeSelfApproval, "key %s (owner %s) submitted this broadcast or shares its owner or key", k.ID, k.Owner)
	}
	counted, _, err := s.broadcastApprovals(ctx, vb)
	if err != nil {
		return nil, err
	}
	for _, a := range counted {
		if a.KeyID == k.ID || a.Owner == k.Owner {
			return nil, api.Errorf(api.CodeDuplicateApproval, "owner %s already approved broadcast %s", a.Owner, id)
		}
	}
	d := controllog.Decision{Kind: controllog.KindApprove, Target: id,
		Outcome: fmt.Sprintf("%d of %d", len(counted)+1, s.policy.ApprovalsRequired)}
	if _, err := s.logged(ctx, v, envelope, d, false); err != nil {
		return nil, err
	}
	if counted, _, err = s.broadcastApprovals(ctx, vb); err != nil {
		return nil, err
	}
	if len(counted) >= s.policy.ApprovalsRequired {
		moved, err := s.transition(ctx, id, api.StateQueued, "approved", "", api.StateAwaitingApproval)
		if err != nil {
			return nil, err
		}
		if moved {
			if err := s.enqueuePlan(ctx, id); err != nil {
				return nil, err
			}
		}
	}
	return s.Get(ctx, id)
}

// Pending lists what waits for approvals: broadcasts with their bodies as
// signed, and admin actions.
func (s *Service) Pending(ctx context.Context) (*api.ApprovalsList, error) {
	out := &api.ApprovalsList{Broadcasts: []api.PendingBroadcast{}, Actions: []api.PendingAction{}}
	after := ""
	for {
		page, err := s.store.list(ctx, api.StateAwaitingApproval, api.MaxListLimit, after)
		if err != nil {
			return nil, err
		}
		for _, st := range page.Broadcasts {
			if !s.now().Before(st.ApprovalExpiresAt) {
				s.expire(ctx, st.ID)
				continue
			}
			raw, err := s.store.envelope(ctx, s.keys.Envelope(st.ID))
			if err != nil {
				return nil, err
			}
			var env signing.Request
			if err := json.Unmarshal(raw, &env); err != nil || !json.Valid(env.Body) {
				continue // a damaged record: nothing an approver could judge
			}
			full, err := s.Get(ctx, st.ID)
			if err != nil {
				return nil, err
			}
			out.Broadcasts = append(out.Broadcasts, api.PendingBroadcast{Status: *full, Body: env.Body, EnvelopeSHA256: api.Digest(env.Body)})
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	slices.Reverse(out.Broadcasts) // oldest first
	out.Actions = s.control.pendingActions()
	if out.Actions == nil {
		out.Actions = []api.PendingAction{}
	}
	return out, nil
}

// expire moves a broadcast awaiting approval whose window has passed to
// expired. A failure is logged: the next read tries again.
func (s *core) expire(ctx context.Context, id string) {
	if _, err := s.transition(ctx, id, api.StateExpired, "no approvals in time", "", api.StateAwaitingApproval); err != nil {
		s.logger.Warn("expire broadcast awaiting approval", "broadcast_id", id, "err", err)
	}
}

// scheduleExpiry enqueues the task that expires a broadcast still awaiting
// approval at the end of its window. asynq keeps due times in whole
// seconds, so it is due at the first whole second after at.
func (c *core) scheduleExpiry(ctx context.Context, id string, at time.Time) error {
	payload, _ := json.Marshal(planPayload{Broadcast: id})
	due := at.Truncate(time.Second).Add(time.Second)
	return c.enqueue(ctx, TypeApprovalExpiry, payload, asynq.Queue(QueuePlan),
		asynq.TaskID("approval-expiry:"+id+":"+strconv.FormatInt(due.Unix(), 10)), asynq.ProcessAt(due))
}

// expireApproval handles approvalExpiryTask.
func (w *Worker) expireApproval(ctx context.Context, t *asynq.Task) error {
	if err := w.deployment.Err(); err != nil {
		return err
	}
	p, err := decodePlan(t.Payload())
	if err != nil {
		w.securityEvent(ctx, TypeApprovalExpiry, "", err)
		return fmt.Errorf("%w: %v", asynq.SkipRetry, err)
	}
	st, err := w.store.get(ctx, p.Broadcast, false)
	if api.CodeOf(err) == api.CodeNotFound {
		return nil
	}
	if err != nil {
		return err
	}
	if st.State != api.StateAwaitingApproval {
		return nil
	}
	if w.now().Before(st.ApprovalExpiresAt) {
		// Early (clocks differ): come back when it is due.
		return w.scheduleExpiry(ctx, p.Broadcast, st.ApprovalExpiresAt)
	}
	w.expire(ctx, p.Broadcast)
	return nil
}

// approvalsSummary reads the approval fields of a record for its status.
func approvalsSummary(f map[string]string) (required int, expires time.Time) {
	required, _ = strconv.Atoi(f["approvals_required"])
	if ms, _ := strconv.ParseInt(f["approval_expires_at"], 10, 64); ms > 0 {
		expires = time.UnixMilli(ms).UTC()
	}
	return required, expires
}
