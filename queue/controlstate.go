package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/signing"
)

// controlState is the fold of the control log: the kills, revocations,
// approvals and pending admin actions that its verified entries, applied
// in order, produce. Every process builds its own from the log it
// verified; nothing in it comes from any other Redis value. Its rules are
// the API's: an entry the API would have refused changes nothing here,
// whoever wrote it into the log.
//
// Stops stand on little: a kill, a revocation, a cancel or a recall whose
// signing key has since left the keyring keeps its effect (it was verified
// when it was integrated), so that rotating out an admin's key does not
// lift the brakes that admin set. Releases need everything: a resume or
// an approval counts only while its key is in the keyring, holds the role
// and is not revoked.
//
// It is not safe for concurrent use; Control guards it.
type controlState struct {
	policy   Policy
	keys     signing.KeyLookup
	verifier *signing.Verifier // without revocations: they apply in log order
	window   controllog.Window

	size    int64
	kills   map[string]api.Kill
	revoked map[string]api.Kill // key id → the kill of its scope
	// seen maps "key\x00nonce" of every applied request to its entry
	// index, and when it was integrated for pruning.
	seen map[string]seenRequest
	// submitters maps a broadcast id to the key that submitted it.
	submitters map[string]seenSubmission
	// approvals holds each broadcast's approval envelopes: approver key
	// id → the signed request as JSON, as coSigned reads them.
	approvals map[string]map[string]string
	actions   map[string]*controlAction
	// recalls holds the verified recall of each recalled broadcast.
	recalls map[string]*controlRecall
	// ignored counts entries that changed nothing, by why.
	ignored map[string]int64
}

type seenRequest struct {
	index int64
	at    time.Time
}

type seenSubmission struct {
	keyID string
	at    time.Time
}

// controlAction is an admin action waiting for a second person.
type controlAction struct {
	api.PendingAction
	requester *signing.Key
	envelope  string // the signed request as JSON
	approvals map[string]string
	reason    string
}

// controlRecall is a recall the log carried out: its envelope and, for
// custom text, the approvals of its action.
type controlRecall struct {
	envelope  string
	actionID  string
	approvals map[string]string
}

func newControlState(p Policy, keys signing.KeyLookup, v *signing.Verifier, window controllog.Window) *controlState {
	return &controlState{
		policy:     p,
		keys:       keys,
		verifier:   v,
		window:     window,
		kills:      map[string]api.Kill{},
		revoked:    map[string]api.Kill{},
		seen:       map[string]seenRequest{},
		submitters: map[string]seenSubmission{},
		approvals:  map[string]map[string]string{},
		actions:    map[string]*controlAction{},
		recalls:    map[string]*controlRecall{},
		ignored:    map[string]int64{},
	}
}

// requestID names a signed request: its key and nonce.
func requestID(keyID, nonce string) string { return keyID + "\x00" + nonce }

// errIgnored marks an entry that changes nothing; the reason says why.
var errIgnored = errors.New("entry changes nothing")

// apply folds entry index into the state. It returns an errIgnored error
// for an entry the API would not have acted on, which the caller logs;
// any other error is a bug in the log's data that it cannot skip.
func (s *controlState) apply(ctx context.Context, index int64, e *controllog.Entry) error {
	if index != s.size {
		return fmt.Errorf("control log: entry %d folded where %d is next", index, s.size)
	}
	s.size++
	err := s.applyChecked(ctx, index, e)
	if errors.Is(err, errIgnored) {
		why, _, _ := strings.Cut(strings.TrimPrefix(err.Error(), errIgnored.Error()+": "), ":")
		s.ignored[why]++
	}
	return err
}

func ignored(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errIgnored, fmt.Sprintf(format, args...))
}

func (s *controlState) applyChecked(ctx context.Context, index int64, e *controllog.Entry) error {
	c, err := controllog.Check(ctx, s.verifier, e, s.window)
	if err != nil {
		var se *signing.Error
		switch {
		case errors.As(err, &se) && se.Code == signing.CodeUnknownKey:
			return s.applyStandingStop(e, "(a key no longer in the keyring)")
		case errors.As(err, &se) && se.Code == signing.CodeWrongAuthority:
			// Integrated while its authority was listed, since removed
			// from public_authorities: a stop stands, a release does not.
			return s.applyStandingStop(e, "(signed for an authority no longer listed)")
		}
		return ignored("unverified: %v", err)
	}
	k, nonce := c.Verified.Key, c.Verified.Nonce
	if _, ok := s.revoked[k.ID]; ok {
		return ignored("revoked: key %s was revoked before entry %d", k.ID, index)
	}
	rid := requestID(k.ID, nonce)
	if first, ok := s.seen[rid]; ok {
		return ignored("replayed: entry %d repeats the request of entry %d", index, first.index)
	}
	s.seen[rid] = seenRequest{index: index, at: e.Time}
	body := e.Request.Body
	by, at := k.ID, e.Time.UTC()

	switch c.Kind {
	case controllog.KindSubmit:
		s.submitters[BroadcastID(k.ID, nonce)] = seenSubmission{keyID: k.ID, at: e.Time}
	case controllog.KindKill:
		r, err := api.ParseKillRequest(body)
		if err != nil {
			return ignored("body: %v", err)
		}
		s.kills[r.Scope] = api.Kill{Scope: r.Scope, Reason: r.Reason, By: by, At: at}
	case controllog.KindResume:
		r, err := api.ParseResumeRequest(body)
		if err != nil {
			return ignored("body: %v", err)
		}
		if needsSecondPerson(r.Scope) {
			s.request(k, nonce, api.ActionResume, r.Scope, r.Reason, e)
			return nil
		}
		return s.lift(r.Scope)
	case controllog.KindRevoke:
		r, err := api.ParseReasonRequest(body)
		if err != nil {
			return ignored("body: %v", err)
		}
		if target, ok := s.keys.Lookup(c.Target); ok && target.Has(signing.RoleAdmin) && target.ID != k.ID {
			s.request(k, nonce, api.ActionRevoke, c.Target, r.Reason, e)
			return nil
		}
		s.revoke(c.Target, r.Reason, by, at)
	case controllog.KindCancel:
		r, err := api.ParseReasonRequest(body)
		if err != nil {
			return ignored("body: %v", err)
		}
		if !k.Has(signing.RoleAdmin) && s.submitters[c.Target].keyID != k.ID {
			return ignored("forbidden: key %s did not submit broadcast %s", k.ID, c.Target)
		}
		scope := api.BroadcastScope(c.Target)
		s.kills[scope] = api.Kill{Scope: scope, Reason: "cancelled: " + r.Reason, By: by, At: at}
	case controllog.KindRecall:
		r, err := api.ParseRecallRequest(body)
		if err != nil {
			return ignored("body: %v", err)
		}
		if !s.policy.isRetraction(r) {
			s.request(k, nonce, api.ActionRecall, c.Target, r.Mode, e)
			return nil
		}
		s.recall(c.Target, r.Mode, by, at, &controlRecall{envelope: envelopeJSON(e.Request), actionID: ActionID(k.ID, nonce)})
	case controllog.KindApprove:
		if _, err := api.ParseApprovalRequest(body, c.Target); err != nil {
			return ignored("body: %v", err)
		}
		m := s.approvals[c.Target]
		if m == nil {
			m = map[string]string{}
			s.approvals[c.Target] = m
		}
		if _, ok := m[k.ID]; !ok {
			m[k.ID] = envelopeJSON(e.Request)
		}
	case controllog.KindApproveAction:
		r, err := api.ParseActionApprovalRequest(body, c.Target)
		if err != nil {
			return ignored("body: %v", err)
		}
		return s.approveAction(k, r, e)
	}
	return nil
}

// applyStandingStop keeps the stop of an integrated entry that no longer
// verifies only because its key has left the keyring or its authority
// has left public_authorities: a kill, a cancel or the stop part of a
// recall, by whom by names. Everything else such an entry asked for is
// ignored.
func (s *controlState) applyStandingStop(e *controllog.Entry, by string) error {
	kind, target, _ := controllog.KindOf(e.Request.Method, e.Request.Path)
	at := e.Time.UTC()
	switch kind {
	case controllog.KindKill:
		if r, err := api.ParseKillRequest(e.Request.Body); err == nil {
			s.kills[r.Scope] = api.Kill{Scope: r.Scope, Reason: r.Reason, By: by, At: at}
			return nil
		}
	case controllog.KindCancel, controllog.KindRecall:
		scope := api.BroadcastScope(target)
		s.kills[scope] = api.Kill{Scope: scope, Reason: string(kind), By: by, At: at}
		return nil
	case controllog.KindRevoke:
		// Revoking an admin key took a second person; revoking any other
		// key was one person's stop.
		if t, ok := s.keys.Lookup(target); !ok || !t.Has(signing.RoleAdmin) {
			s.revoke(target, "revoked", by, at)
			return nil
		}
	}
	return ignored("unverified: %s entry %s", kind, by)
}

// needsSecondPerson reports whether resuming scope releases a brake that
// takes two people.
func needsSecondPerson(scope string) bool {
	return scope == api.ScopeGlobal || strings.HasPrefix(scope, api.ScopeKeyPrefix)
}

// lift ends a kill, unless it is a broadcast's (final) or the kill of a
// revoked key.
func (s *controlState) lift(scope string) error {
	if strings.HasPrefix(scope, api.ScopeBroadcastPrefix) {
		return ignored("not resumable: broadcast kills are final")
	}
	if id, ok := strings.CutPrefix(scope, api.ScopeKeyPrefix); ok {
		if _, revoked := s.revoked[id]; revoked {
			return ignored("not resumable: key %s is revoked", id)
		}
	}
	if _, ok := s.kills[scope]; !ok {
		return ignored("not active: no kill of %s", scope)
	}
	delete(s.kills, scope)
	return nil
}

func (s *controlState) revoke(keyID, reason, by string, at time.Time) {
	scope := api.KeyScope(keyID)
	kl := api.Kill{Scope: scope, Reason: reason, By: by, At: at}
	s.revoked[keyID] = kl
	s.kills[scope] = kl
}

func (s *controlState) recall(id, mode, by string, at time.Time, r *controlRecall) {
	scope := api.BroadcastScope(id)
	s.kills[scope] = api.Kill{Scope: scope, Reason: "recall (" + mode + ")", By: by, At: at}
	if _, ok := s.recalls[id]; !ok {
		s.recalls[id] = r
	}
}

// request records an admin action that waits for a second person.
func (s *controlState) request(k *signing.Key, nonce, kind, target, reason string, e *controllog.Entry) {
	id := ActionID(k.ID, nonce)
	body := json.RawMessage(e.Request.Body)
	if len(body) == 0 || !json.Valid(body) {
		body = json.RawMessage("{}")
	}
	s.actions[id] = &controlAction{
		PendingAction: api.PendingAction{
			ID: id, Kind: kind, KeyID: k.ID, Owner: k.Owner, Target: target,
			Body: body, RequestSHA256: api.Digest(e.Request.Body), Approvals: []api.Approval{},
			ApprovalsRequired: s.policy.AdminApprovals,
			CreatedAt:         e.Time.UTC(), ExpiresAt: e.Time.Add(s.policy.ApprovalWindow).UTC(),
		},
		requester: k,
		envelope:  envelopeJSON(e.Request),
		approvals: map[string]string{},
		reason:    reason,
	}
}

// approveAction counts a second person's approval and carries the action
// out once it has the approvals it needs. The checks are the API's:
// approvals of an action that is done or expired, of another request, by
// the requester's key, public key or owner, or by an owner who approved
// already, count for nothing.
func (s *controlState) approveAction(k *signing.Key, r *api.ActionApprovalRequest, e *controllog.Entry) error {
	a, ok := s.actions[r.ActionID]
	switch {
	case !ok:
		return ignored("no action: %s is not a pending action", r.ActionID)
	case a.Done:
		return ignored("done: action %s was carried out", a.ID)
	case !e.Time.Before(a.ExpiresAt):
		return ignored("expired: action %s waited for approvals until %s", a.ID, a.ExpiresAt.Format(time.RFC3339))
	case r.RequestSHA256 != a.RequestSHA256:
		return ignored("mismatch: the approval names another request than action %s's", a.ID)
	case k.ID == a.requester.ID || k.Owner == a.requester.Owner || k.Public.Equal(a.requester.Public):
		return ignored("self approval: key %s shares the requester's key or owner", k.ID)
	}
	for _, ap := range a.Approvals {
		if ap.KeyID == k.ID || ap.Owner == k.Owner {
			return ignored("duplicate: owner %s already approved action %s", k.Owner, a.ID)
		}
	}
	a.Approvals = append(a.Approvals, api.Approval{KeyID: k.ID, Owner: k.Owner, At: e.Time.UTC()})
	a.approvals[k.ID] = envelopeJSON(e.Request)
	if s.countedApprovals(a) < s.policy.AdminApprovals {
		return nil
	}
	a.Done = true
	by, at := a.requester.ID, e.Time.UTC()
	switch a.Kind {
	case api.ActionResume:
		return s.lift(a.Target)
	case api.ActionRevoke:
		s.revoke(a.Target, a.reason, by, at)
	case api.ActionRecall:
		s.recall(a.Target, api.RecallReplace, by, at, &controlRecall{envelope: a.envelope, actionID: a.ID, approvals: maps.Clone(a.approvals)})
	}
	return nil
}

// countedApprovals counts an action's approvals whose keys are still not
// revoked.
func (s *controlState) countedApprovals(a *controlAction) int {
	n := 0
	for _, ap := range a.Approvals {
		if _, gone := s.revoked[ap.KeyID]; !gone {
			n++
		}
	}
	return n
}

// prune forgets what can no longer matter: requests and submissions older
// than the oldest request the integrator would still accept (so a replay
// of them is refused on its age), and actions whose window has closed.
func (s *controlState) prune(now time.Time) {
	horizon := now.Add(-s.window.MaxAge - s.window.Skew)
	maps.DeleteFunc(s.seen, func(_ string, r seenRequest) bool { return r.at.Before(horizon) })
	maps.DeleteFunc(s.submitters, func(_ string, r seenSubmission) bool { return r.at.Before(horizon) })
	maps.DeleteFunc(s.actions, func(_ string, a *controlAction) bool { return a.ExpiresAt.Before(horizon) })
}

// killState returns the snapshot the kill switch applies.
func (s *controlState) killState() *killState {
	st := &killState{version: s.size, kills: maps.Clone(s.kills), revoked: make(map[string]bool, len(s.revoked))}
	for id := range s.revoked {
		st.revoked[id] = true
	}
	return st
}

// activeKills returns the kills, oldest first.
func (s *controlState) activeKills() []api.Kill {
	out := slices.Collect(maps.Values(s.kills))
	slices.SortFunc(out, func(a, b api.Kill) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		return strings.Compare(a.Scope, b.Scope)
	})
	return out
}

// pendingActions returns the actions still waiting for approvals at now,
// oldest first.
func (s *controlState) pendingActions(now time.Time) []api.PendingAction {
	var out []api.PendingAction
	for _, a := range s.actions {
		if !a.Done && now.Before(a.ExpiresAt) {
			p := a.PendingAction
			p.Approvals = slices.Clone(a.Approvals)
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b api.PendingAction) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out
}

// envelopeJSON encodes a request as stored envelopes are.
func envelopeJSON(r *signing.Request) string {
	b, _ := json.Marshal(r) // a Request always encodes
	return string(b)
}
