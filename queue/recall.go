package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/signing"
	"github.com/pushgate/pushgate/signing/appsig"
)

// kind is the app-signing kind of what the recall sends.
func (vr *verifiedRecall) kind() appsig.Kind {
	if vr.req.Mode == api.RecallRemove {
		return appsig.KindRecallRemove
	}
	return appsig.KindRecallReplace
}

// recallMessage builds what a recall sends to every reached device: the
// replacement under the original's collapse identity and TTL, or a silent
// instruction to remove it (same collapse identity, so it also replaces a
// copy still waiting in a provider's store for an offline phone).
func recallMessage(vb *verifiedBroadcast, vr *verifiedRecall) providers.Message {
	m := providers.Message{
		BroadcastID: vb.id,
		TTL:         vb.msg.TTL,
		Priority:    providers.PriorityHigh,
		CollapseID:  vb.msg.CollapseID,
	}
	if vr.req.Mode == api.RecallRemove {
		m.RecallOf = vb.id
		m.Silent = true
		return m
	}
	r := vr.req.Replacement
	m.Title, m.Body, m.Data = r.Title, r.Body, r.Data
	if r.Priority != "" {
		m.Priority = priorityOf(r.Priority)
	}
	return m
}

// mayHaveReached reports whether a ledger value says the device may show
// the broadcast: sent, uncertain (cut short in flight), or claimed by a
// batch that never recorded an outcome (its worker may have sent and then
// died, or lost Redis). When Redis restarted since delivery began
// (uncertain), a device cancelled, handed on untried or planned without a
// claim may have been reached too: the claim and outcome of a call made just before the
// restart may be what Redis lost.
func mayHaveReached(ledgerValue string, uncertain bool) bool {
	switch {
	case strings.HasPrefix(ledgerValue, outSent), strings.HasPrefix(ledgerValue, outUnknown),
		strings.HasPrefix(ledgerValue, "c"):
		return true
	case uncertain:
		return ledgerValue == "" || strings.HasPrefix(ledgerValue, outCancelled) ||
			strings.HasPrefix(ledgerValue, outUntried)
	}
	return false
}

// recallWindow is how long after a broadcast was signed a recall of it may
// be signed: as long as its record is kept. The API refuses a recall the
// window has closed on (not_recallable) with the same rule the workers
// apply, recallTarget, so a recall it accepts is one they run.
const recallWindow = recordRetention

// recallTarget reads and verifies the envelope of broadcast id for a
// recall signed at recalled (envelopeVerifier.recallTarget: neither its
// age nor its key's revocation refuse it), and refuses it when it was
// signed more than recallWindow before the recall. A refusal is errForged.
func (c *core) recallTarget(ctx context.Context, id string, recalled time.Time) (*verifiedBroadcast, error) {
	raw, err := c.store.envelope(ctx, c.keys.Envelope(id))
	if api.CodeOf(err) == api.CodeNotFound {
		return nil, fmt.Errorf("%w: no envelope for broadcast %s", errForged, id)
	}
	if err != nil {
		return nil, err
	}
	vb, err := c.verify.recallTarget(ctx, id, raw)
	if err != nil {
		return nil, err
	}
	if age := recalled.Sub(vb.created); age > recallWindow {
		return nil, fmt.Errorf("%w: broadcast %s was signed %s before the recall; a recall must come within %s",
			errForged, id, age.Round(time.Second), recallWindow)
	}
	return vb, nil
}

// loadRecall verifies the recall the control log holds for broadcast id
// (read again once if this worker's view does not hold it yet: the API
// starts a recall only once it is integrated), and the broadcast's
// envelope as a recall's target.
func (w *Worker) loadRecall(ctx context.Context, id string) (*verifiedBroadcast, *verifiedRecall, error) {
	rec, ok := w.control.recallOf(id)
	if !ok {
		if err := w.control.refresh(ctx); err != nil {
			return nil, nil, err
		}
		if rec, ok = w.control.recallOf(id); !ok {
			return nil, nil, fmt.Errorf("%w: the control log holds no recall of broadcast %s", errForged, id)
		}
	}
	vr, err := w.verify.recall(ctx, id, []byte(rec.envelope))
	if err != nil {
		return nil, nil, err
	}
	vb, err := w.recallTarget(ctx, id, vr.created)
	if err != nil {
		return nil, nil, err
	}
	ok, err = w.recallApproved(ctx, vr, rec.approvals)
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		return nil, nil, fmt.Errorf("%w: recall of %s with custom text by %s", errUnapproved, id, vr.adminID)
	}
	return vb, vr, nil
}

// recallPlan walks the positions the broadcast planned, in order (a
// cursor that stays valid across Redis restarts), and enqueues recall
// batches for the devices the ledger says it may have reached, resumably.
func (w *Worker) recallPlan(ctx context.Context, t *asynq.Task) error {
	if err := w.fresh(); err != nil {
		return err
	}
	p, err := decodePlan(t.Payload())
	if err != nil {
		w.securityEvent(ctx, TypeRecallPlan, "", err)
		return fmt.Errorf("%w: %v", asynq.SkipRetry, err)
	}
	id := p.Broadcast
	vb, _, err := w.loadRecall(ctx, id)
	if err != nil {
		return w.refuseOrRetry(ctx, TypeRecallPlan, id, err)
	}
	prog, err := w.store.loadProgress(ctx, id, ledgerRecall)
	if err != nil || prog.done {
		return err
	}
	uncertain, err := w.store.uncertain(ctx, id)
	if err != nil {
		return err
	}
	if uncertain {
		w.logger.Warn("Redis restarted since this broadcast's delivery began: the recall also covers devices cancelled or not yet claimed",
			"broadcast_id", id)
	}
	moves := 0
	for {
		if err := w.leased(ctx); err != nil {
			return err // see plan
		}
		prev := prog
		positions, next, end, err := scanBits(ctx, w.rdb, w.keys.Planned(id), prog.cursor, scanCount)
		if err != nil {
			return err
		}
		prog.cursor = next
		positions, members, err := w.audienceMembers(ctx, vb, positions)
		if err != nil {
			return err
		}
		values, err := w.store.ledgerValues(ctx, id, members)
		if err != nil {
			return err
		}
		var reached []string
		var at []int64
		for i, v := range values {
			if mayHaveReached(v, uncertain) {
				reached = append(reached, members[i])
				at = append(at, positions[i])
			}
		}
		reached, at = wellFormed(reached, at)
		// A recall batch sends only to positions marked planned (the
		// worker checks), so they are marked before the batches exist; the
		// position moves after, and a crash between the two plans the page
		// again (marking is idempotent).
		if _, err = w.store.saveProgress(ctx, id, ledgerRecall, prev, prev, at); err == nil {
			batches := chunk(id, reached, prog.seq)
			for _, b := range batches {
				if err := w.enqueueBatch(ctx, TypeRecallDeliver, QueueRecall, b, 0); err != nil {
					return err
				}
			}
			prog.seq += int64(len(batches))
			_, err = w.store.saveProgress(ctx, id, ledgerRecall, prev, prog, nil)
		}
		if errors.Is(err, errPlanMoved) && moves < maxPlanMoves {
			moves++
			w.logger.Warn("recall planning position moved; planning again from the stored position", "broadcast_id", id)
			if prog, err = w.store.loadProgress(ctx, id, ledgerRecall); err != nil || prog.done {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if end {
			break
		}
	}
	st, err := w.store.recallPlanDone(ctx, id, w.now())
	if err != nil {
		return err
	}
	w.noteTransition(ctx, id, st)
	return nil
}

// audienceMembers returns the members at audience positions of a
// broadcast — device numbers of a topic, indices into a signed tokens
// list — leaving out positions that name no device.
func (w *Worker) audienceMembers(ctx context.Context, vb *verifiedBroadcast, positions []int64) ([]int64, []string, error) {
	if len(positions) == 0 {
		return nil, nil, nil
	}
	if vb.req.Audience.Tokens == nil {
		return w.registry.membersOf(ctx, positions)
	}
	list := vb.req.Audience.Tokens
	kept := positions[:0]
	var members []string
	for _, n := range positions {
		if n < int64(len(list)) {
			kept = append(kept, n)
			members = append(members, member(list[n]))
		}
	}
	return kept, members, nil
}

// setPositions looks up the audience positions of a batch's devices
// without checking membership: device numbers for a topic audience,
// indices into the signed list for tokens (-1 for none).
func (w *Worker) setPositions(ctx context.Context, vb *verifiedBroadcast, b *batch) error {
	if vb.tokens == nil {
		nums, err := w.registry.numbers(ctx, b.members)
		b.pos = nums
		return err
	}
	b.pos = make([]int64, len(b.members))
	for i, m := range b.members {
		b.pos[i] = -1
		if at, ok := vb.tokens[m]; ok {
			b.pos[i] = at
		}
	}
	return nil
}

// recallDeliver sends one recall batch, under the provider rate limits and
// a gate that only the revocation of the recall's admin closes.
func (w *Worker) recallDeliver(ctx context.Context, t *asynq.Task) error {
	if err := w.fresh(); err != nil {
		return err
	}
	b, err := decodeBatch(t.Payload())
	if err != nil {
		w.securityEvent(ctx, TypeRecallDeliver, "", err)
		return fmt.Errorf("%w: %v", asynq.SkipRetry, err)
	}
	vb, vr, err := w.loadRecall(ctx, b.Broadcast)
	if err != nil {
		return w.refuseOrRetry(ctx, TypeRecallDeliver, b.Broadcast, err)
	}
	sender := w.senders[b.Platform]
	if sender == nil {
		return fmt.Errorf("%w: no sender configured for platform %s", asynq.SkipRetry, b.Platform)
	}
	id := vb.id
	// Only devices the recall planner found the broadcast may have
	// reached get a recall.
	if err := w.setPositions(ctx, vb, b); err != nil {
		return err
	}
	planned, err := readBits(ctx, w.rdb, w.keys.RecallPlanned(id), b.pos)
	if err != nil {
		return err
	}
	var reached []int
	for i, ok := range planned {
		if ok {
			reached = append(reached, i)
		}
	}
	if len(reached) < len(b.members) {
		w.securityEvent(ctx, TypeRecallDeliver, id, fmt.Errorf("%w: %d devices not reached by the broadcast",
			errOutsideAudience, len(b.members)-len(reached)))
	}
	claims, err := w.store.claim(ctx, id, ledgerRecall, b.Seq, 0, b.pick(reached), b.positions(reached))
	if err != nil {
		return err
	}
	var send []int
	for j, i := range reached {
		if claims[j] == claimNew || claims[j] == claimOwn || claims[j] == claimUntried {
			send = append(send, i)
		}
	}
	var out outcomes
	if len(send) > 0 {
		until, paused, err := w.pauses.sync(ctx, b.Platform)
		if err != nil {
			return err
		}
		if paused {
			out.paused, out.pauseUntil = send, until
			send = nil
		}
	}
	if len(send) > 0 {
		n, wait, _, err := w.limits.take(ctx, b.Platform, "", signing.Rate{}, len(send))
		if err != nil {
			return err
		}
		out.deferred, out.wait = send[n:], wait
		send = send[:n]
	}
	// Kills do not stop a recall — a kill is usually what made it
	// necessary — but revoking the admin who signed it does, at once.
	f := w.ks.begin(ctx, Scope{RecallBy: vr.adminID})
	defer f.end()
	if len(send) > 0 {
		msg := recallMessage(vb, vr)
		msg.Seal = w.appSigning.seal(vr.kind(), vb.req.Audience)
		g := w.pauses.gate(f, b.Platform)
		results := sender.Send(f.ctx, g, &msg, b.tokens(send))
		w.classify(b.Platform, send, results, f.killed() != "", f.stalled(), g.stopped.Load(), &out)
		w.afterSend(ctx, g, &out)
	}
	if by := f.killed(); by != "" {
		w.logger.Warn("recall stopped: the admin who signed it was revoked", "broadcast_id", id, "killed_by", by)
		for _, i := range slices.Concat(out.retry, out.deferred, out.stalled, out.paused) {
			out.add(i, outFailed)
		}
		out.retry, out.deferred, out.stalled, out.paused = nil, nil, nil, nil
	}
	// A wrong message stays on a phone past its TTL, so a recall is
	// retried for Policy.RetryFor after it was signed, whatever the TTL.
	return w.finishRecallBatch(ctx, id, b, &out, vr.created.Add(w.policy.RetryFor))
}

// finishRecallBatch mirrors finishBatch for the recall ledger: recalled
// ("s") or recall_failed ("f", invalid tokens and devices whose retries
// ran out of time included). Retries are scheduled only when due before
// until.
func (w *Worker) finishRecallBatch(ctx context.Context, id string, b *batch, out *outcomes, until time.Time) error {
	if _, err := w.followUp(ctx, TypeRecallDeliver, QueueRecall, b, out, until); err != nil {
		return err
	}
	if err := w.notePaused(ctx, id, b.Platform, out); err != nil {
		return err
	}
	// Only sent and failed exist for recalls; an invalid token failed.
	for i := range out.final {
		if out.final[i].letter != outSent {
			out.final[i].letter = outFailed
		}
	}
	st, err := w.store.recordRecallOutcomes(ctx, id, b.Seq, w.now(), b.triples(out.final))
	if err != nil {
		return err
	}
	w.noteTransition(ctx, id, st)
	return nil
}
