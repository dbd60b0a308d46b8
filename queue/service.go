package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/signing"
)

// Service is what the HTTP API does: submit, read, cancel, recall and kill
// broadcasts, manage devices, revoke keys, read the audit log. It only
// writes records and enqueues; workers deliver.
type Service struct {
	*core
}

// NewService builds the API-side service.
func NewService(cfg Config) (*Service, error) {
	c, err := newCore(cfg)
	if err != nil {
		return nil, err
	}
	return &Service{core: c}, nil
}

// Registry returns the device registry, for tests that look behind the
// API.
func (s *Service) Registry() *Registry { return s.registry }

// Kills returns the durable kill state, for tests that look behind the
// API.
func (s *Service) Kills() *Kills { return s.kills }

// ActiveKills returns the active kills, oldest first.
func (s *Service) ActiveKills(ctx context.Context) ([]api.Kill, error) { return s.kills.Active(ctx) }

// AuditLog returns up to limit audit entries, newest first.
func (s *Service) AuditLog(ctx context.Context, limit int) ([]api.AuditEntry, error) {
	return s.audit.List(ctx, limit)
}

// Submission is the outcome of a broadcast submission.
type Submission struct {
	Status *api.Status
	// Created is false when an earlier submission with the same
	// idempotency key and body is returned instead.
	Created bool
}

// Submit accepts a verified broadcast request. It checks, before writing
// anything: the key's topics and audience cap, that a tokens audience
// names only devices in the key's scope, the global and key kills, the
// key's reach budget, and the idempotency key. It then stores the record
// and the envelope (the signed request as received) and enqueues planning
// — or, for an audience that needs approvals, leaves the broadcast
// awaiting them until its approval window ends.
func (s *Service) Submit(ctx context.Context, v *signing.Verified, envelope *signing.Request, req *api.BroadcastRequest) (*Submission, error) {
	key := v.Key
	if err := authorize(key, &req.Audience); err != nil {
		return nil, err
	}
	id := BroadcastID(key.ID, v.Nonce)
	hash := bodyHash(envelope.Body)
	if sub, err := s.repeated(ctx, key.ID, req.IdempotencyKey, hash); sub != nil || err != nil {
		return sub, err
	}
	for _, scope := range []string{api.ScopeGlobal, api.KeyScope(key.ID)} {
		active, err := s.kills.IsActive(ctx, scope)
		if err != nil {
			return nil, err
		}
		if active {
			return nil, api.Errorf(api.CodeKillSwitchActive, "kill switch %s is active; broadcasts are refused until an admin resumes", scope)
		}
	}
	size, err := s.audienceSize(ctx, key, &req.Audience)
	if err != nil {
		return nil, err
	}
	if err := s.checkReach(ctx, key, &req.Audience, size); err != nil {
		return nil, err
	}
	ttl, err := req.Message.ParseTTL(s.policy.MaxTTL)
	if err != nil {
		return nil, err
	}
	env, err := json.Marshal(envelope)
	if err != nil {
		return nil, fmt.Errorf("encode envelope: %w", err)
	}
	if req.IdempotencyKey != "" {
		got, fresh, err := s.store.claimIdempotency(ctx, key.ID, req.IdempotencyKey, idempotency{id: id, bodyHash: hash}, s.policy.IdempotencyTTL)
		if err != nil {
			return nil, err
		}
		if !fresh {
			// Another submission with this key won the race.
			return s.existing(ctx, req.IdempotencyKey, got, hash)
		}
	}
	now := s.now()
	rec := newRecord{
		id: id, keyID: key.ID, state: api.StateQueued, audience: req.Audience.Kind(), topic: req.Audience.Topic,
		title: req.Message.Title, idemKey: req.IdempotencyKey, ttl: ttl, created: now,
	}
	pending := s.needsApproval(key, req.Audience.Kind(), size)
	if pending {
		rec.state = api.StateAwaitingApproval
		rec.approvalsRequired = s.policy.ApprovalsRequired
		rec.approvalExpires = now.Add(s.policy.ApprovalWindow)
	}
	if err := s.store.create(ctx, rec, env); err != nil {
		if errors.Is(err, errExists) {
			return nil, api.Errorf(api.CodeIdempotencyConflict, "broadcast %s already exists", id)
		}
		return nil, err
	}
	if pending {
		if err := s.scheduleExpiry(ctx, id, rec.approvalExpires); err != nil {
			return nil, err
		}
		s.recordAudit(ctx, api.AuditEntry{Actor: key.ID, Action: "submit", Target: id,
			Outcome: fmt.Sprintf("awaiting %d approvals for %d devices", rec.approvalsRequired, size)})
	} else if err := s.enqueuePlan(ctx, id); err != nil {
		return nil, err
	}
	s.metrics.transition(rec.state)
	st, err := s.store.get(ctx, id, false)
	if err != nil {
		return nil, err
	}
	return &Submission{Status: st, Created: true}, nil
}

// repeated returns the broadcast an idempotency key already names, or nil
// when it names none. It only reads: a refused submission binds nothing.
func (s *Service) repeated(ctx context.Context, keyID, idemKey, hash string) (*Submission, error) {
	if idemKey == "" {
		return nil, nil
	}
	got, ok, err := s.store.idempotencyBinding(ctx, keyID, idemKey)
	if err != nil || !ok {
		return nil, err
	}
	return s.existing(ctx, idemKey, got, hash)
}

// existing answers a submission whose idempotency key is bound to got.
func (s *Service) existing(ctx context.Context, idemKey string, got idempotency, hash string) (*Submission, error) {
	if got.bodyHash != hash {
		return nil, api.Errorf(api.CodeIdempotencyConflict, "idempotency_key %q was used with a different body", idemKey)
	}
	st, err := s.store.get(ctx, got.id, false)
	if err != nil {
		return nil, err
	}
	// A crash after creating but before enqueuing leaves a queued
	// broadcast with no plan task; enqueueing again heals it (the task id
	// makes it a no-op otherwise).
	if st.State == api.StateQueued {
		if err := s.enqueuePlan(ctx, got.id); err != nil {
			return nil, err
		}
	}
	return &Submission{Status: st}, nil
}

// audienceSize counts an audience, refusing one over the key's cap and a
// tokens audience that names devices outside the key's scope.
func (s *Service) audienceSize(ctx context.Context, key *signing.Key, a *api.Audience) (int64, error) {
	if a.Tokens != nil {
		in, err := s.registry.inScope(ctx, key, a.Tokens)
		if err != nil {
			return 0, err
		}
		if out := len(in) - countTrue(in); out > 0 {
			return 0, api.Errorf(api.CodeDeviceNotInScope,
				"%d of the %d devices are not registered, or not subscribed to a topic key %s may send to", out, len(in), key.ID)
		}
		return int64(len(a.Tokens)), nil
	}
	n, err := s.registry.Count(ctx, a.Topic)
	if err != nil {
		return 0, err
	}
	if n > int64(key.MaxAudience) {
		return 0, api.Errorf(api.CodeAudienceOverCap, "the audience has %d devices; key %s may reach at most %d", n, key.ID, key.MaxAudience)
	}
	return n, nil
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

func (s *Service) enqueuePlan(ctx context.Context, id string) error {
	t := PlanTask(id)
	return s.enqueue(ctx, t.Type(), t.Payload(), asynq.Queue(QueuePlan), asynq.TaskID("plan:"+id), asynq.MaxRetry(25))
}

// SecurityEvents returns the counts of refused tasks by task type and
// reason ("pushgate:plan:envelope", ...), as every worker recorded them.
func (s *Service) SecurityEvents(ctx context.Context) (map[string]int64, error) {
	return s.store.securityEvents(ctx)
}

// Get returns a broadcast's status with its timeline, and for one that
// needs approvals, the approvals that count as this process verifies them.
func (s *Service) Get(ctx context.Context, id string) (*api.Status, error) {
	if !api.ValidBroadcastID(id) {
		return nil, api.Errorf(api.CodeNotFound, "no broadcast %q", id)
	}
	st, err := s.store.get(ctx, id, true)
	if err != nil || st.ApprovalsRequired == 0 {
		return st, err
	}
	vb, err := s.loadBroadcast(ctx, id)
	if errors.Is(err, errForged) {
		return st, nil // the status describes; whoever plans it refuses it
	}
	if err != nil {
		return nil, err
	}
	st.Approvals, _, err = s.broadcastApprovals(ctx, vb)
	if err != nil {
		return nil, err
	}
	return st, nil
}

// List returns a page of broadcasts newest first, optionally only those in
// state, after a cursor from a previous page ("" for the first page).
func (s *Service) List(ctx context.Context, state string, limit int, after string) (*api.ListPage, error) {
	if state != "" && !api.ValidState(state) {
		return nil, api.Errorf(api.CodeInvalidQuery, "state %q is not a broadcast state", state)
	}
	return s.store.list(ctx, state, limit, after)
}

// MaxTTL is the longest TTL a broadcast may ask for; the API parses bodies
// with it so that what it accepts, the workers accept too.
func (s *Service) MaxTTL() time.Duration { return s.policy.MaxTTL }

// KillResult reports a kill and, when waited for, its acknowledgement.
type KillResult struct {
	Kill    api.Kill      `json:"kill"`
	Version int64         `json:"version"`
	Ack     api.AckReport `json:"ack"`
	Waited  bool          `json:"waited"`
}

// Kill stops a scope everywhere. The kill is durable before Kill returns;
// with wait it also waits until every live worker has acknowledged it (or
// the policy's KillWait passes, which the result reports).
func (s *Service) Kill(ctx context.Context, by, scope, reason string, wait bool) (*KillResult, error) {
	if err := api.ValidateScope(scope); err != nil {
		return nil, err
	}
	return s.kill(ctx, by, scope, reason, wait, func(ctx context.Context) (int64, error) {
		return s.kills.Kill(ctx, scope, reason, by)
	})
}

// kill runs change (which writes the kill) while opening an
// acknowledgement subscription, then waits on it, marks a killed broadcast
// as killed, and audits.
//
// The subscription takes a new connection (a dial and a handshake: several
// Redis round trips, each slow on a loaded Redis), so it is opened beside
// the change rather than before it: the kill reaches the workers that much
// sooner. An acknowledgement published before the subscription is in place
// is not lost: waitAcks reads the stored acknowledgements first, and polls
// them.
func (s *Service) kill(ctx context.Context, by, scope, reason string, wait bool, change func(context.Context) (int64, error)) (*KillResult, error) {
	var sub *ackSubscription
	var subErr error
	var subscribed sync.WaitGroup
	if wait {
		subscribed.Go(func() { sub, subErr = s.kills.subscribeAcks(ctx) })
	}
	version, err := change(ctx)
	subscribed.Wait()
	if sub != nil {
		defer sub.Close()
	}
	if err != nil {
		return nil, err
	}
	if subErr != nil && ctx.Err() == nil {
		s.logger.Warn("kill: no acknowledgement subscription; polling for acknowledgements", "err", subErr)
	}
	res := &KillResult{Kill: api.Kill{Scope: scope, Reason: reason, By: by, At: s.now().UTC()}, Version: version, Waited: wait}
	if id, ok := strings.CutPrefix(scope, api.ScopeBroadcastPrefix); ok {
		if _, err := s.transition(ctx, id, api.StateKilled, reason, "", api.StateQueued, api.StateSending); err != nil {
			return nil, err
		}
	}
	if wait {
		res.Ack, err = s.kills.waitAcks(ctx, sub, version, s.policy.KillWait)
		if err != nil {
			return nil, err
		}
	}
	outcome := "durable"
	if wait {
		outcome = fmt.Sprintf("acknowledged=%t workers=%d missing=%d", res.Ack.Acknowledged, res.Ack.Workers, len(res.Ack.Missing))
	}
	s.recordAudit(ctx, api.AuditEntry{Actor: by, Action: "kill", Target: scope, Reason: reason, Outcome: outcome})
	return res, nil
}

// Resume lifts a global, key or topic kill. Broadcast kills are final: a
// killed broadcast is resubmitted, not resumed. Lifting a global or key
// kill releases a brake, so it waits for a second person: Resume then
// returns the pending action and changes nothing.
func (s *Service) Resume(ctx context.Context, v *signing.Verified, envelope *signing.Request, scope, reason string) (int64, *api.PendingAction, error) {
	if err := s.resumable(ctx, scope); err != nil {
		return 0, nil, err
	}
	if scope == api.ScopeGlobal || strings.HasPrefix(scope, api.ScopeKeyPrefix) {
		p, err := s.requestAction(ctx, v, envelope, api.ActionResume, scope)
		return 0, p, err
	}
	version, err := s.resume(ctx, v.Key.ID, scope, reason)
	return version, nil, err
}

// resumable refuses a resume that could not be carried out.
func (s *Service) resumable(ctx context.Context, scope string) error {
	if err := api.ValidateScope(scope); err != nil {
		return err
	}
	if _, ok := strings.CutPrefix(scope, api.ScopeBroadcastPrefix); ok {
		return api.Errorf(api.CodeNotResumable, "a killed broadcast is not resumed; submit it again")
	}
	if id, ok := strings.CutPrefix(scope, api.ScopeKeyPrefix); ok {
		revoked, err := s.kills.Revoked(ctx, id)
		if err != nil {
			return err
		}
		if revoked {
			return api.Errorf(api.CodeNotResumable, "key %s is revoked", id)
		}
	}
	active, err := s.kills.IsActive(ctx, scope)
	if err != nil {
		return err
	}
	if !active {
		return api.Errorf(api.CodeNotFound, "no active kill for scope %s", scope)
	}
	return nil
}

// resume lifts a kill.
func (s *Service) resume(ctx context.Context, by, scope, reason string) (int64, error) {
	if err := s.resumable(ctx, scope); err != nil {
		return 0, err
	}
	existed, version, err := s.kills.Resume(ctx, scope)
	if err != nil {
		return 0, err
	}
	if !existed {
		return 0, api.Errorf(api.CodeNotFound, "no active kill for scope %s", scope)
	}
	s.recordAudit(ctx, api.AuditEntry{Actor: by, Action: "resume", Target: scope, Reason: reason})
	return version, nil
}

// Revoke revokes a key: its future requests fail signature checks, its
// queued tasks are refused, and its running broadcasts are killed.
// Revoking an admin key waits for a second person, so that one admin
// cannot lock the others out: Revoke then returns the pending action.
func (s *Service) Revoke(ctx context.Context, v *signing.Verified, envelope *signing.Request, keyID, reason string) (*KillResult, *api.PendingAction, error) {
	target, ok := s.verifier.Keys().Lookup(keyID)
	if !ok {
		return nil, nil, api.Errorf(api.CodeNotFound, "no key %q in the keyring", keyID)
	}
	if target.Has(signing.RoleAdmin) && target.ID != v.Key.ID {
		p, err := s.requestAction(ctx, v, envelope, api.ActionRevoke, keyID)
		return nil, p, err
	}
	res, err := s.revoke(ctx, v.Key.ID, keyID, reason)
	return res, nil, err
}

// revoke revokes a key and kills everything it submitted.
func (s *Service) revoke(ctx context.Context, by, keyID, reason string) (*KillResult, error) {
	res, err := s.kill(ctx, by, api.KeyScope(keyID), reason, true, func(ctx context.Context) (int64, error) {
		return s.kills.Revoke(ctx, keyID, reason, by)
	})
	if err != nil {
		return nil, err
	}
	s.recordAudit(ctx, api.AuditEntry{Actor: by, Action: "revoke", Target: keyID, Reason: reason})
	return res, nil
}

// Cancel stops the rest of a broadcast's fan-out. Only the key that
// submitted it or an admin may cancel.
func (s *Service) Cancel(ctx context.Context, by *signing.Key, id, reason string) (*KillResult, error) {
	st, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if st.KeyID != by.ID && !by.Has(signing.RoleAdmin) {
		return nil, api.Errorf(api.CodeForbidden, "only the submitting key or an admin may cancel this broadcast")
	}
	if st.Terminal() {
		return nil, api.Errorf(api.CodeInvalidState, "broadcast is %s", st.State)
	}
	if st.State == api.StateAwaitingApproval {
		// Nothing was planned: the broadcast ends here.
		ok, err := s.store.cancelPending(ctx, id, reason, s.now())
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, api.Errorf(api.CodeInvalidState, "broadcast changed state while it was being cancelled")
		}
		s.metrics.transition(api.StateCancelled)
		s.recordAudit(ctx, api.AuditEntry{Actor: by.ID, Action: "cancel", Target: id, Reason: reason})
		return &KillResult{}, nil
	}
	ok, err := s.transition(ctx, id, api.StateCancelled, reason, "cancel_requested", api.StateQueued, api.StateSending)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, api.Errorf(api.CodeInvalidState, "broadcast finished while it was being cancelled")
	}
	scope := api.BroadcastScope(id)
	res, err := s.kill(ctx, by.ID, scope, "cancelled: "+reason, true, func(ctx context.Context) (int64, error) {
		return s.kills.Kill(ctx, scope, "cancelled: "+reason, by.ID)
	})
	if err != nil {
		return nil, err
	}
	s.recordAudit(ctx, api.AuditEntry{Actor: by.ID, Action: "cancel", Target: id, Reason: reason})
	return res, nil
}

// Recall kills a broadcast and, once every worker has acknowledged, sends
// the verified recall request's replacement or removal to every device the
// ledger says it reached. A replacement with custom text, rather than the
// standard retraction, waits for a second person: Recall then returns the
// pending action and does nothing else.
func (s *Service) Recall(ctx context.Context, v *signing.Verified, id string, envelope *signing.Request, req *api.RecallRequest) (*api.Status, *api.PendingAction, error) {
	if err := s.recallable(ctx, id); err != nil {
		return nil, nil, err
	}
	if !s.isRetraction(req) {
		p, err := s.requestAction(ctx, v, envelope, api.ActionRecall, id)
		return nil, p, err
	}
	env, err := json.Marshal(envelope)
	if err != nil {
		return nil, nil, fmt.Errorf("encode envelope: %w", err)
	}
	st, err := s.recall(ctx, v.Key.ID, id, env, req, nil)
	return st, nil, err
}

// recallable refuses a recall of a broadcast that is already recalling or
// recalled, or has nothing that could have reached a phone.
func (s *Service) recallable(ctx context.Context, id string) error {
	st, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	switch st.State {
	case api.StateRecalling, api.StateRecalled:
		return api.Errorf(api.CodeInvalidState, "broadcast is already %s", st.State)
	case api.StateAwaitingApproval, api.StateExpired:
		return api.Errorf(api.CodeInvalidState, "broadcast is %s: nothing of it was sent; cancel it instead", st.State)
	}
	return nil
}

// recall carries out a recall whose envelope (and, for custom text, its
// approvals) is stored for the workers to verify.
func (s *Service) recall(ctx context.Context, by, id string, env []byte, req *api.RecallRequest, approvals map[string]string) (*api.Status, error) {
	if err := s.recallable(ctx, id); err != nil {
		return nil, err
	}
	for keyID, raw := range approvals {
		if _, err := s.store.saveApproval(ctx, id, s.keys.RecallApprovals(id), keyID, []byte(raw)); err != nil {
			return nil, err
		}
	}
	scope := api.BroadcastScope(id)
	reason := "recall (" + req.Mode + ")"
	if _, err := s.kill(ctx, by, scope, reason, true, func(ctx context.Context) (int64, error) {
		return s.kills.Kill(ctx, scope, reason, by)
	}); err != nil {
		return nil, err
	}
	if err := s.store.saveRecall(ctx, id, env, req.Mode); err != nil {
		return nil, err
	}
	ok, err := s.transition(ctx, id, api.StateRecalling, req.Mode, "",
		api.StateQueued, api.StateSending, api.StateCompleted, api.StateCancelled, api.StateKilled)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, api.Errorf(api.CodeInvalidState, "broadcast changed state during the recall; read it and try again")
	}
	payload, _ := json.Marshal(planPayload{Broadcast: id})
	if err := s.enqueue(ctx, TypeRecallPlan, payload, asynq.Queue(QueueRecall), asynq.TaskID("recall:"+id), asynq.MaxRetry(25)); err != nil {
		return nil, err
	}
	s.recordAudit(ctx, api.AuditEntry{Actor: by, Action: "recall", Target: id, Reason: req.Mode})
	return s.Get(ctx, id)
}

// recordAudit writes an audit entry. The action has happened by then, so a
// failure to audit is logged loudly rather than turned into an error the
// caller might retry.
func (s *Service) recordAudit(ctx context.Context, e api.AuditEntry) {
	if err := s.audit.Record(ctx, e); err != nil {
		s.logger.Error("audit write failed", "action", e.Action, "target", e.Target, "err", err)
	}
}

// Ping checks that Redis answers, for readiness.
func (s *Service) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return s.rdb.Ping(ctx).Err()
}
