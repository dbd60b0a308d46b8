package queue

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/signing"
)

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
// the broadcast: sent, or cancelled while the call was in flight.
func mayHaveReached(ledgerValue string) bool {
	return strings.HasPrefix(ledgerValue, outSent) || strings.HasPrefix(ledgerValue, outUnknown)
}

// loadRecall verifies a broadcast's envelope and the recall the control
// log holds for it (read again once if this worker's view does not hold
// it yet: the API starts a recall only once it is integrated).
func (w *Worker) loadRecall(ctx context.Context, id string) (*verifiedBroadcast, *verifiedRecall, error) {
	vb, err := w.loadBroadcast(ctx, id)
	if err != nil {
		return nil, nil, err
	}
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
	ok, err = w.recallApproved(ctx, vr, rec.approvals)
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		return nil, nil, fmt.Errorf("%w: recall of %s with custom text by %s", errUnapproved, id, vr.adminID)
	}
	return vb, vr, nil
}

// recallPlan reads the ledger for devices the broadcast reached and
// enqueues recall batches for them, resumably.
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
	if _, _, err := w.loadRecall(ctx, id); err != nil {
		return w.refuseOrRetry(ctx, TypeRecallPlan, id, err)
	}
	prog, err := w.store.loadProgress(ctx, id, ledgerRecall)
	if err != nil || prog.done {
		return err
	}
	for {
		if err := w.leased(ctx); err != nil {
			return err // see plan
		}
		members, values, next, err := w.store.scanLedger(ctx, id, prog.cursor, scanCount)
		if err != nil {
			return err
		}
		var reached []string
		for i, v := range values {
			if mayHaveReached(v) {
				reached = append(reached, members[i])
			}
		}
		batches := chunk(id, reached, prog.seq)
		n := 0
		for _, b := range batches {
			if err := w.enqueueBatch(ctx, TypeRecallDeliver, QueueRecall, b, 0); err != nil {
				return err
			}
			n += len(b.Tokens)
		}
		prog.seq += int64(len(batches))
		prog.cursor = next
		if err := w.store.saveProgress(ctx, id, ledgerRecall, prog, int64(n)); err != nil {
			return err
		}
		if next == 0 {
			break
		}
	}
	st, err := w.store.recallPlanDone(ctx, id, w.now())
	if err != nil {
		return err
	}
	w.metrics.transition(st)
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
	// Only devices the ledger says this broadcast reached may get a recall.
	states, err := w.store.ledgerValues(ctx, id, b.members)
	if err != nil {
		return err
	}
	var reached []int
	for i, v := range states {
		if mayHaveReached(v) {
			reached = append(reached, i)
		}
	}
	if len(reached) < len(b.members) {
		w.securityEvent(ctx, TypeRecallDeliver, id, fmt.Errorf("%w: %d devices not reached by the broadcast",
			errOutsideAudience, len(b.members)-len(reached)))
	}
	claims, err := w.store.claim(ctx, id, ledgerRecall, b.Seq, 0, b.pick(reached))
	if err != nil {
		return err
	}
	var send []int
	for j, i := range reached {
		if claims[j] == claimNew || claims[j] == claimOwn {
			send = append(send, i)
		}
	}
	var out outcomes
	if len(send) > 0 {
		n, wait, err := w.limits.take(ctx, b.Platform, "", signing.Rate{}, len(send))
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
		results := sender.Send(f.ctx, f, &msg, b.tokens(send))
		w.classify(b.Platform, send, results, f.killed() != "", f.stalled(), &out)
	}
	if by := f.killed(); by != "" {
		w.logger.Warn("recall stopped: the admin who signed it was revoked", "broadcast_id", id, "killed_by", by)
		for _, i := range slices.Concat(out.retry, out.deferred, out.stalled) {
			out.add(i, outFailed)
		}
		out.retry, out.deferred, out.stalled = nil, nil, nil
	}
	return w.finishRecallBatch(ctx, id, b, &out)
}

// finishRecallBatch mirrors finishBatch for the recall ledger: recalled
// ("s") or recall_failed ("f", invalid tokens included).
func (w *Worker) finishRecallBatch(ctx context.Context, id string, b *batch, out *outcomes) error {
	if _, err := w.followUp(ctx, TypeRecallDeliver, QueueRecall, b, out); err != nil {
		return err
	}
	// Only sent and failed exist for recalls; an invalid token failed.
	for i := range out.final {
		if out.final[i].letter != outSent {
			out.final[i].letter = outFailed
		}
	}
	st, err := w.store.recordRecallOutcomes(ctx, id, b.Seq, w.now(), b.pairs(out.final))
	if err != nil {
		return err
	}
	w.metrics.transition(st)
	return nil
}
