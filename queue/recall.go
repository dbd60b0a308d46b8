package queue

import (
	"context"
	"fmt"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/providers"
)

// openGate admits every call: recalls are not stopped by kills, since a
// kill is usually what makes a recall necessary.
type openGate struct{}

func (openGate) Enter() bool  { return true }
func (openGate) Commit() bool { return true }
func (openGate) Leave(int)    {}

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
	if vr.req.Mode == RecallRemove {
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

// loadRecall verifies a broadcast's envelope and its recall envelope.
func (w *Worker) loadRecall(ctx context.Context, id string) (*verifiedBroadcast, *verifiedRecall, error) {
	vb, err := w.loadBroadcast(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	raw, err := w.store.envelope(ctx, w.keys.RecallEnvelope(id))
	if CodeOf(err) == CodeNotFound {
		return nil, nil, fmt.Errorf("%w: no recall envelope for broadcast %s", errForged, id)
	}
	if err != nil {
		return nil, nil, err
	}
	vr, err := w.verify.recall(ctx, id, raw)
	if err != nil {
		return nil, nil, err
	}
	return vb, vr, nil
}

// recallPlan reads the ledger for devices the broadcast reached and
// enqueues recall batches for them, resumably.
func (w *Worker) recallPlan(ctx context.Context, t *asynq.Task) error {
	p, err := decodePlan(t.Payload())
	if err != nil {
		w.securityEvent(ctx, TypeRecallPlan, "", err)
		return fmt.Errorf("%w: %v", asynq.SkipRetry, err)
	}
	id := p.Broadcast
	if _, _, err := w.loadRecall(ctx, id); err != nil {
		return w.refuseOrRetry(ctx, TypeRecallPlan, id, err)
	}
	prog, err := w.loadProgress(ctx, w.keys.RecallPlan(id))
	if err != nil || prog.done {
		return err
	}
	for {
		fields, next, err := w.rdb.HScan(ctx, w.keys.Ledger(id), prog.cursor, "", scanCount).Result()
		if err != nil {
			return fmt.Errorf("scan ledger: %w", err)
		}
		var reached []string
		for i := 0; i+1 < len(fields); i += 2 {
			if mayHaveReached(fields[i+1]) {
				reached = append(reached, fields[i])
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
		_, err = w.rdb.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.HSet(ctx, w.keys.RecallPlan(id), "cursor", prog.cursor, "seq", prog.seq)
			pl.HIncrBy(ctx, w.keys.Broadcast(id), "recall_planned", int64(n))
			w.store.touchExpiry(ctx, pl, id) // the recall's keys expire with the broadcast
			return nil
		})
		if err != nil {
			return fmt.Errorf("save recall progress: %w", err)
		}
		if next == 0 {
			break
		}
	}
	st, err := recallPlanDoneScript.Run(ctx, w.rdb,
		[]string{w.keys.RecallPlan(id), w.keys.Broadcast(id), w.keys.Timeline(id)}, "", w.now().UnixMilli()).Text()
	if err != nil {
		return fmt.Errorf("finish recall planning: %w", err)
	}
	w.metrics.transition(st)
	return nil
}

// recallDeliver sends one recall batch, under the provider rate limits but
// not the kill-switch.
func (w *Worker) recallDeliver(ctx context.Context, t *asynq.Task) error {
	p, err := decodeBatch(t.Payload())
	if err != nil {
		w.securityEvent(ctx, TypeRecallDeliver, "", err)
		return fmt.Errorf("%w: %v", asynq.SkipRetry, err)
	}
	vb, vr, err := w.loadRecall(ctx, p.Broadcast)
	if err != nil {
		return w.refuseOrRetry(ctx, TypeRecallDeliver, p.Broadcast, err)
	}
	sender := w.senders[p.Platform]
	if sender == nil {
		return fmt.Errorf("%w: no sender configured for platform %s", asynq.SkipRetry, p.Platform)
	}
	id := vb.id
	members := p.members()
	// Only devices the ledger says this broadcast reached may get a recall.
	states, err := w.rdb.HMGet(ctx, w.keys.Ledger(id), members...).Result()
	if err != nil {
		return fmt.Errorf("read ledger: %w", err)
	}
	var reached []string
	for i, s := range states {
		if v, _ := s.(string); mayHaveReached(v) {
			reached = append(reached, members[i])
		}
	}
	if len(reached) < len(members) {
		w.securityEvent(ctx, TypeRecallDeliver, id, fmt.Errorf("%w: %d devices not reached by the broadcast",
			errOutsideAudience, len(members)-len(reached)))
	}
	claims, err := w.claim(ctx, w.keys.RecallLedger(id), w.keys.Broadcast(id), p.Seq, "recall_targeted", "recall_duplicate", reached)
	if err != nil {
		return err
	}
	var send []string
	for i, m := range reached {
		if claims[i] == claimNew || claims[i] == claimOwn {
			send = append(send, m)
		}
	}
	var out outcomes
	if len(send) > 0 {
		n, wait, err := w.limits.take(ctx, p.Platform, "", Rate{}, len(send))
		if err != nil {
			return err
		}
		for _, m := range send[n:] {
			out.deferred = append(out.deferred, tokenOf(m))
		}
		out.wait = wait
		send = send[:n]
	}
	if len(send) > 0 {
		msg := recallMessage(vb, vr)
		tokens := make([]string, len(send))
		for i, m := range send {
			tokens[i] = tokenOf(m)
		}
		results := sender.Send(ctx, openGate{}, &msg, tokens)
		w.classify(p, send, results, false, &out)
	}
	return w.finishRecallBatch(ctx, id, p, &out)
}

// finishRecallBatch mirrors finishBatch for the recall ledger: recalled
// ("s") or recall_failed ("f", invalid tokens included).
func (w *Worker) finishRecallBatch(ctx context.Context, id string, p *batchPayload, out *outcomes) error {
	if _, err := w.followUp(ctx, TypeRecallDeliver, QueueRecall, p, out); err != nil {
		return err
	}
	// Only sent and failed exist for recalls; an invalid token failed.
	pairs := out.pairs
	for i := 1; i < len(pairs); i += 2 {
		if pairs[i] != outSent {
			pairs[i] = outFailed
		}
	}
	if len(pairs) > 0 {
		args := append([]any{p.Seq, w.now().UnixMilli()}, pairs...)
		st, err := recallRecordScript.Run(ctx, w.rdb,
			[]string{w.keys.RecallLedger(id), w.keys.Broadcast(id), w.keys.Timeline(id)}, args...).Text()
		if err != nil {
			return fmt.Errorf("record recall outcomes: %w", err)
		}
		w.metrics.transition(st)
	}
	return nil
}
