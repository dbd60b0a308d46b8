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
	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/signing"
	"github.com/pushgate/pushgate/signing/appsig"
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
	if c.appSigning, err = cfg.AppSigning.prepared(false); err != nil {
		return nil, err
	}
	return &Service{core: c}, nil
}

// Registry returns the device registry, for tests that look behind the
// API.
func (s *Service) Registry() *Registry { return s.registry }

// Control returns the process's view of the control log.
func (s *Service) Control() *Control { return s.control }

// ActiveKills returns the active kills, oldest first.
func (s *Service) ActiveKills() []api.Kill { return s.control.Active() }

// logged records a request in the control log and waits until this
// process's view holds it; it returns the size of the log that does (the
// entry's index plus one). A stop is announced to the workers at once.
func (s *Service) logged(ctx context.Context, v *signing.Verified, envelope *signing.Request, d controllog.Decision, stop bool) (int64, error) {
	if err := s.control.record(ctx, envelope, d, stop); err != nil {
		return 0, err
	}
	i, err := s.control.await(ctx, v.Key.ID, v.Nonce)
	if err != nil {
		return 0, err
	}
	return i + 1, nil
}

// controlOK refuses changes while the control log fails its checks.
func (s *Service) controlOK() error {
	if err := s.control.Err(); err != nil {
		return api.Errorf(api.CodeControlLogInconsistent, "the control log failed its checks; changes are refused until it is restored: %v", err)
	}
	return nil
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
	if err := s.workOK(); err != nil {
		return nil, err
	}
	if err := authorize(key, &req.Audience); err != nil {
		return nil, err
	}
	id := BroadcastID(key.ID, v.Nonce)
	hash := bodyHash(envelope.Body)
	if sub, err := s.repeated(ctx, key.ID, req.IdempotencyKey, hash); sub != nil || err != nil {
		return sub, err
	}
	for _, scope := range []string{api.ScopeGlobal, api.KeyScope(key.ID)} {
		if s.control.IsActive(scope) {
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
	if err := s.appSigning.checkSealedSize(broadcastMessage(id, req, ttl, v.Created), appsig.KindAlert, req.Audience, s.now()); err != nil {
		return nil, err
	}
	env, err := json.Marshal(envelope)
	if err != nil {
		return nil, fmt.Errorf("encode envelope: %w", err)
	}
	bind := idempotency{id: id, bodyHash: hash}
	if req.IdempotencyKey != "" {
		got, fresh, exists, err := s.store.claimIdempotency(ctx, key.ID, req.IdempotencyKey, bind)
		if err != nil {
			return nil, err
		}
		if !fresh {
			return s.claimed(ctx, key.ID, req.IdempotencyKey, got, exists, hash)
		}
	}
	sub, err := s.create(ctx, key, envelope, req, id, size, ttl, env)
	if err != nil && req.IdempotencyKey != "" {
		// A refused submission binds nothing: a correct repeat must be
		// able to send the broadcast this one did not.
		if rerr := s.store.releaseIdempotency(context.WithoutCancel(ctx), key.ID, req.IdempotencyKey, bind); rerr != nil {
			s.logger.Error("idempotency key left claimed by a refused submission; repeats are refused until its lease ends",
				"key", key.ID, "lease", idempotencyLease, "err", rerr)
		}
	}
	return sub, err
}

// create stores a new broadcast whose idempotency key, if any, this
// submission claimed; commits the binding once the broadcast exists; and
// starts it (planning, or the wait for approvals).
func (s *Service) create(ctx context.Context, key *signing.Key, envelope *signing.Request, req *api.BroadcastRequest,
	id string, size int64, ttl time.Duration, env []byte) (*Submission, error) {
	now := s.now()
	rec := newRecord{
		id: id, keyID: key.ID, state: api.StateQueued, audience: req.Audience.Kind(), topic: req.Audience.Topic,
		title: req.Message.Title, idemKey: req.IdempotencyKey, ttl: ttl, created: now,
	}
	pending := s.needsApproval(key, req.Audience.Kind(), size)
	outcome := fmt.Sprintf("queued for %d devices", size)
	if pending {
		rec.state = api.StateAwaitingApproval
		rec.approvalsRequired = s.policy.ApprovalsRequired
		rec.approvalExpires = now.Add(s.policy.ApprovalWindow)
		outcome = fmt.Sprintf("awaiting %d approvals for %d devices", rec.approvalsRequired, size)
	}
	// The submission is in the control log before the broadcast exists.
	if err := s.control.record(ctx, envelope, controllog.Decision{Kind: controllog.KindSubmit, Target: id, Outcome: outcome}, false); err != nil {
		return nil, err
	}
	if err := s.store.create(ctx, rec, env); err != nil {
		if errors.Is(err, errExists) {
			return nil, api.Errorf(api.CodeIdempotencyConflict, "broadcast %s already exists", id)
		}
		return nil, err
	}
	if req.IdempotencyKey != "" {
		if err := s.store.commitIdempotency(ctx, key.ID, req.IdempotencyKey, idempotency{id: id, bodyHash: bodyHash(envelope.Body)}, s.policy.IdempotencyTTL); err != nil {
			// The claim lapsed and another submission holds the key: this
			// broadcast, not started yet, gives way so that one is sent.
			if derr := s.store.discard(context.WithoutCancel(ctx), id); derr != nil {
				return nil, errors.Join(err, derr)
			}
			if errors.Is(err, errIdempotencyLost) {
				return nil, inProgress(req.IdempotencyKey)
			}
			return nil, err
		}
	}
	if pending {
		if err := s.scheduleExpiry(ctx, id, rec.approvalExpires); err != nil {
			return nil, err
		}
	} else if err := s.enqueuePlan(ctx, id); err != nil {
		return nil, err
	}
	s.noteTransition(ctx, id, rec.state)
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
	return s.claimed(ctx, keyID, idemKey, got, true, hash)
}

// claimed answers a submission that found its idempotency key bound or
// claimed by another submission: the broadcast it names when that exists,
// and otherwise a request to repeat once that submission ends.
func (s *Service) claimed(ctx context.Context, keyID, idemKey string, got idempotency, exists bool, hash string) (*Submission, error) {
	if got.bodyHash != hash {
		return nil, api.Errorf(api.CodeIdempotencyConflict, "idempotency_key %q was used with a different body", idemKey)
	}
	if !exists {
		return nil, inProgress(idemKey)
	}
	if got.pending {
		// The submission that claimed the key created its broadcast and
		// then stopped (or is about to commit): bind the key for good.
		if err := s.store.commitIdempotency(ctx, keyID, idemKey, got, s.policy.IdempotencyTTL); err != nil {
			return nil, err
		}
	}
	return s.existing(ctx, idemKey, got, hash)
}

// inProgress is the answer to a repeat that arrives while the submission
// holding its idempotency key is still being stored.
func inProgress(idemKey string) error {
	e := api.Errorf(api.CodeIdempotencyConflict, "a submission with idempotency_key %q is being stored; repeat it in a moment", idemKey)
	e.RetryAfter = 2 * time.Second
	return e
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
	if err != nil {
		return nil, err
	}
	if err := s.showPauses(ctx, st); err != nil {
		return nil, err
	}
	if st.ApprovalsRequired == 0 {
		return st, nil
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
	return s.listPage(ctx, s.keys.BroadcastIndex(), "", state, limit, after)
}

// listPage reads a page of an index (every broadcast's, or with keyID the
// sender index of that key) and shows each broadcast's provider pauses.
func (s *Service) listPage(ctx context.Context, index, keyID, state string, limit int, after string) (*api.ListPage, error) {
	if state != "" && !api.ValidState(state) {
		return nil, api.Errorf(api.CodeInvalidQuery, "state %q is not a broadcast state", state)
	}
	page, err := s.store.listIndex(ctx, index, keyID, state, limit, after)
	if err != nil {
		return nil, err
	}
	for _, st := range page.Broadcasts {
		if err := s.showPauses(ctx, st); err != nil {
			return nil, err
		}
	}
	return page, nil
}

// MaxTTL is the longest TTL a broadcast may ask for; the API parses bodies
// with it so that what it accepts, the workers accept too.
func (s *Service) MaxTTL() time.Duration { return s.policy.MaxTTL }

// KillResult reports a kill and, when waited for, its acknowledgement.
type KillResult struct {
	Kill api.Kill `json:"kill"`
	// Version is the size of the control log that holds the kill.
	Version int64         `json:"version"`
	Ack     api.AckReport `json:"ack"`
	Waited  bool          `json:"waited"`
}

// Kill stops a scope everywhere. The kill is an integrated entry of the
// control log before Kill returns; with wait it also waits until every
// live worker has acknowledged a log that holds it (or the policy's
// KillWait passes, which the result reports).
func (s *Service) Kill(ctx context.Context, v *signing.Verified, envelope *signing.Request, scope, reason string, wait bool) (*KillResult, error) {
	if err := api.ValidateScope(scope); err != nil {
		return nil, err
	}
	if err := s.controlOK(); err != nil {
		return nil, err
	}
	res, err := s.kill(ctx, v, envelope, controllog.Decision{Kind: controllog.KindKill, Target: scope, Outcome: "stop"}, scope, reason, wait)
	if err != nil {
		return nil, err
	}
	if id, ok := strings.CutPrefix(scope, api.ScopeBroadcastPrefix); ok {
		if _, err := s.transition(ctx, id, api.StateKilled, reason, "", api.StateQueued, api.StateSending); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// kill records a stop in the control log, announcing it to the workers,
// while opening an acknowledgement subscription, then waits for the
// workers.
//
// The subscription takes a new connection (a dial and a handshake: several
// Redis round trips, each slow on a loaded Redis), so it is opened beside
// the recording rather than before it: the stop reaches the workers that
// much sooner. An acknowledgement published before the subscription is in
// place is not lost: waitAcks reads the stored acknowledgements first, and
// polls them.
func (s *Service) kill(ctx context.Context, v *signing.Verified, envelope *signing.Request, d controllog.Decision, scope, reason string, wait bool) (*KillResult, error) {
	var sub *ackSubscription
	var subErr error
	var subscribed sync.WaitGroup
	if wait {
		subscribed.Go(func() { sub, subErr = s.workers.subscribeAcks(ctx) })
	}
	version, err := s.logged(ctx, v, envelope, d, true)
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
	res := &KillResult{Kill: api.Kill{Scope: scope, Reason: reason, By: v.Key.ID, At: s.now().UTC()}, Version: version, Waited: wait}
	if wait {
		res.Ack, err = s.workers.waitAcks(ctx, sub, version, s.policy.KillWait)
		if err != nil {
			return nil, err
		}
	}
	return res, nil
}

// Resume lifts a global, key or topic kill. Broadcast kills are final: a
// killed broadcast is resubmitted, not resumed. Lifting a global or key
// kill releases a brake, so it waits for a second person: Resume then
// returns the pending action, and the kill stays until the control log
// holds its approval.
func (s *Service) Resume(ctx context.Context, v *signing.Verified, envelope *signing.Request, scope, reason string) (int64, *api.PendingAction, error) {
	if err := s.workOK(); err != nil {
		return 0, nil, err
	}
	if err := s.resumable(ctx, scope); err != nil {
		return 0, nil, err
	}
	if needsSecondPerson(scope) {
		p, err := s.requestAction(ctx, v, envelope, api.ActionResume, scope)
		return 0, p, err
	}
	version, err := s.logged(ctx, v, envelope, controllog.Decision{Kind: controllog.KindResume, Target: scope, Outcome: "lifted"}, false)
	if err != nil {
		return 0, nil, err
	}
	if s.control.IsActive(scope) {
		return 0, nil, api.Errorf(api.CodeInvalidState, "the control log did not lift the kill of %s (see the log's entry %d)", scope, version-1)
	}
	return version, nil, nil
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
		if revoked, _ := s.control.Revoked(ctx, id); revoked {
			return api.Errorf(api.CodeNotResumable, "key %s is revoked", id)
		}
	}
	if !s.control.IsActive(scope) {
		return api.Errorf(api.CodeNotFound, "no active kill for scope %s", scope)
	}
	return nil
}

// Revoke revokes a key: its future requests fail signature checks, its
// queued tasks are refused, and its running broadcasts are killed.
// Revoking an admin key waits for a second person, so that one admin
// cannot lock the others out: Revoke then returns the pending action.
func (s *Service) Revoke(ctx context.Context, v *signing.Verified, envelope *signing.Request, keyID, reason string) (*KillResult, *api.PendingAction, error) {
	if err := s.controlOK(); err != nil {
		return nil, nil, err
	}
	target, ok := s.verifier.Keys().Lookup(keyID)
	if !ok {
		return nil, nil, api.Errorf(api.CodeNotFound, "no key %q in the keyring", keyID)
	}
	if target.Has(signing.RoleAdmin) && target.ID != v.Key.ID {
		p, err := s.requestAction(ctx, v, envelope, api.ActionRevoke, keyID)
		return nil, p, err
	}
	return s.revoke(ctx, v, envelope, keyID, reason)
}

func (s *Service) revoke(ctx context.Context, v *signing.Verified, envelope *signing.Request, keyID, reason string) (*KillResult, *api.PendingAction, error) {
	res, err := s.kill(ctx, v, envelope, controllog.Decision{Kind: controllog.KindRevoke, Target: keyID, Outcome: "revoked"},
		api.KeyScope(keyID), reason, true)
	return res, nil, err
}

// Cancel stops the rest of a broadcast's fan-out. Only the key that
// submitted it or an admin may cancel.
func (s *Service) Cancel(ctx context.Context, v *signing.Verified, envelope *signing.Request, id, reason string) (*KillResult, error) {
	if err := s.controlOK(); err != nil {
		return nil, err
	}
	by := v.Key
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
	d := controllog.Decision{Kind: controllog.KindCancel, Target: id, Outcome: "cancelled"}
	if st.State == api.StateAwaitingApproval {
		// Nothing was planned: the broadcast ends here, and the log's kill
		// of it keeps it from ever being planned.
		if _, err := s.logged(ctx, v, envelope, d, true); err != nil {
			return nil, err
		}
		ok, err := s.store.cancelPending(ctx, id, reason, s.now())
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, api.Errorf(api.CodeInvalidState, "broadcast changed state while it was being cancelled")
		}
		s.noteTransition(ctx, id, api.StateCancelled)
		return &KillResult{}, nil
	}
	res, err := s.kill(ctx, v, envelope, d, api.BroadcastScope(id), "cancelled: "+reason, true)
	if err != nil {
		return nil, err
	}
	ok, err := s.transition(ctx, id, api.StateCancelled, reason, "cancel_requested", api.StateQueued, api.StateSending)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, api.Errorf(api.CodeInvalidState, "broadcast finished while it was being cancelled")
	}
	return res, nil
}

// Recall kills a broadcast and, once every worker has acknowledged, sends
// the verified recall request's replacement or removal to every device the
// ledger says it reached. A replacement with custom text, rather than the
// standard retraction, waits for a second person: Recall then returns the
// pending action and does nothing else.
func (s *Service) Recall(ctx context.Context, v *signing.Verified, id string, envelope *signing.Request, req *api.RecallRequest) (*api.Status, *api.PendingAction, error) {
	if err := s.workOK(); err != nil {
		return nil, nil, err
	}
	if err := s.recallable(ctx, id); err != nil {
		return nil, nil, err
	}
	// The workers check the broadcast with this same rule.
	vb, err := s.recallTarget(ctx, id, v.Created)
	if errors.Is(err, errForged) {
		why := strings.TrimPrefix(strings.TrimPrefix(err.Error(), errForged.Error()), ": ")
		return nil, nil, api.Errorf(api.CodeNotRecallable, "broadcast %s cannot be recalled: %s", id, why)
	} else if err != nil {
		return nil, nil, err
	}
	vr := &verifiedRecall{req: req}
	if err := s.appSigning.checkSealedSize(recallMessage(vb, vr), vr.kind(), vb.req.Audience, s.now()); err != nil {
		return nil, nil, err
	}
	if !s.policy.isRetraction(req) {
		p, err := s.requestAction(ctx, v, envelope, api.ActionRecall, id)
		return nil, p, err
	}
	d := controllog.Decision{Kind: controllog.KindRecall, Target: id, Outcome: "recall (" + req.Mode + ")"}
	if _, err := s.kill(ctx, v, envelope, d, api.BroadcastScope(id), "recall ("+req.Mode+")", true); err != nil {
		return nil, nil, err
	}
	st, err := s.startRecall(ctx, id, req.Mode)
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

// startRecall starts a recall the control log holds, once its kill is
// acknowledged: the workers take its envelope (and the approvals of a
// custom text) from the log, never from Redis.
func (s *Service) startRecall(ctx context.Context, id, mode string) (*api.Status, error) {
	if err := s.store.saveRecallMode(ctx, id, mode); err != nil {
		return nil, err
	}
	ok, err := s.transition(ctx, id, api.StateRecalling, mode, "",
		api.StateQueued, api.StateSending, api.StateCompleted, api.StateCancelled, api.StateKilled)
	if err != nil {
		return nil, err
	}
	if !ok {
		st, err := s.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if st.State != api.StateRecalling && st.State != api.StateRecalled {
			return nil, api.Errorf(api.CodeInvalidState, "broadcast changed state during the recall; read it and try again")
		}
	}
	payload, _ := json.Marshal(planPayload{Broadcast: id})
	if err := s.enqueue(ctx, TypeRecallPlan, payload, asynq.Queue(QueueRecall), asynq.TaskID("recall:"+id), asynq.MaxRetry(25)); err != nil {
		return nil, err
	}
	return s.Get(ctx, id)
}

// Ping checks that Redis answers, for readiness.
func (s *Service) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return s.rdb.Ping(ctx).Err()
}
