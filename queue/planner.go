package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/hibiken/asynq"

	"github.com/pushgate/pushgate/api"
)

// scanCount is how many audience positions a planner takes per page.
const scanCount = 2000

// batchTaskID names a batch generation by its devices, so that re-planning
// the same page collides with the batches it already enqueued.
func batchTaskID(kind string, p *batchPayload) string {
	h := sha256.New()
	for _, t := range p.Tokens {
		h.Write([]byte(t))
		h.Write([]byte{0})
	}
	return p.taskID(kind) + ":" + hex.EncodeToString(h.Sum(nil)[:6])
}

// chunk splits members into batches of one platform and at most MaxBatch
// devices, numbering them from seq.
func chunk(broadcastID string, members []string, seq int64) []*batchPayload {
	by := map[api.Platform][]string{}
	var order []api.Platform
	for _, m := range members {
		d, err := parseMember(m)
		if err != nil {
			continue // not a device: planners pass well-formed members only
		}
		if _, ok := by[d.Platform]; !ok {
			order = append(order, d.Platform)
		}
		by[d.Platform] = append(by[d.Platform], d.Token)
	}
	var out []*batchPayload
	for _, p := range order {
		toks := by[p]
		for len(toks) > 0 {
			n := min(len(toks), MaxBatch)
			out = append(out, &batchPayload{Broadcast: broadcastID, Seq: seq, Platform: p, Tokens: toks[:n:n]})
			seq++
			toks = toks[n:]
		}
	}
	return out
}

// plan expands a broadcast's audience into deliver tasks. It verifies the
// envelope first: a plan task for a broadcast whose envelope does not
// verify is refused and delivers nothing.
func (w *Worker) plan(ctx context.Context, t *asynq.Task) error {
	if err := w.fresh(); err != nil {
		return err
	}
	p, err := decodePlan(t.Payload())
	if err != nil {
		w.securityEvent(ctx, TypePlan, "", err)
		return fmt.Errorf("%w: %v", asynq.SkipRetry, err)
	}
	vb, err := w.loadBroadcast(ctx, p.Broadcast)
	if err != nil {
		return w.refuseOrRetry(ctx, TypePlan, p.Broadcast, err)
	}
	id := vb.id
	limit, approved, err := w.deliveryCap(ctx, TypePlan, vb)
	if err != nil {
		return w.refuseOrRetry(ctx, TypePlan, id, err)
	}
	if !approved && vb.req.Audience.Kind() == api.AudienceTopic {
		// Without approvals a topic is planned only while it is no larger
		// than the threshold; the ledger's cap keeps it there if it grows.
		n, err := w.registry.Count(ctx, vb.req.Audience.Topic)
		if err != nil {
			return err
		}
		if n > int64(limit) {
			return w.refuseOrRetry(ctx, TypePlan, id, fmt.Errorf("%w: broadcast %s to %d devices", errUnapproved, id, n))
		}
	}
	if by, ok := w.ks.Killed(vb.scope()); ok {
		return w.planDone(ctx, id, by)
	}
	if err := w.store.markRun(ctx, id); err != nil {
		return err
	}
	if _, err := w.transition(ctx, id, api.StateSending, "", "", api.StateQueued); err != nil {
		return err
	}
	prog, err := w.store.loadProgress(ctx, id, ledgerDelivery)
	if err != nil || prog.done {
		return err
	}

	tokens := vb.req.Audience.Tokens
	moves := 0
	for {
		// Once a reaper may have resumed this plan elsewhere, this copy
		// stops before it saves progress twice (docs/ARCHITECTURE.md,
		// "Dead workers").
		if err := w.leased(ctx); err != nil {
			return err
		}
		prev := prog
		var members []string
		var positions []int64
		var end bool
		if tokens != nil {
			start := min(prog.cursor, int64(len(tokens)))
			stop := min(start+scanCount, int64(len(tokens)))
			for i := start; i < stop; i++ {
				members = append(members, member(tokens[i]))
				positions = append(positions, i)
			}
			prog.cursor, end = stop, stop == int64(len(tokens))
		} else {
			positions, members, prog.cursor, end, err = w.registry.scan(ctx, vb.req.Audience.Topic, prog.cursor, scanCount)
			if err != nil {
				return err
			}
		}
		capped := false
		if prog.planned+int64(len(members)) > int64(limit) {
			n := max(0, int64(limit)-prog.planned)
			members, positions = members[:n], positions[:n]
			capped = true
		}
		members, positions = wellFormed(members, positions)
		batches := chunk(id, members, prog.seq)
		for _, b := range batches {
			payload, err := json.Marshal(b)
			if err != nil {
				return fmt.Errorf("encode batch: %w", err)
			}
			if err := w.enqueue(ctx, TypeDeliver, payload, asynq.Queue(QueueDeliver),
				asynq.TaskID(batchTaskID(TypeDeliver, b)), asynq.MaxRetry(w.taskRetries)); err != nil {
				return err
			}
		}
		prog.seq += int64(len(batches))
		added, err := w.store.saveProgress(ctx, id, ledgerDelivery, prev, prog, positions)
		if errors.Is(err, errPlanMoved) && moves < maxPlanMoves {
			// Start again from what Redis holds: the batches of pages
			// planned again collide with those still queued.
			moves++
			w.logger.Warn("planning position moved; planning again from the stored position", "broadcast_id", id)
			if prog, err = w.store.loadProgress(ctx, id, ledgerDelivery); err != nil || prog.done {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		prog.planned += added
		if hook := w.afterPlanPage.Load(); hook != nil {
			(*hook)(prog.planned)
		}
		if capped {
			w.logger.Warn("audience capped", "broadcast_id", id, "key_id", vb.keyID, "cap", limit, "approved", approved)
			if err := w.store.note(ctx, id, w.now(), "audience_capped", "stopped at "+strconv.Itoa(limit)+" devices"); err != nil {
				return err
			}
			break
		}
		if by, ok := w.ks.Killed(vb.scope()); ok {
			return w.planDone(ctx, id, by)
		}
		if end {
			break
		}
	}
	return w.planDone(ctx, id, "")
}

// maxPlanMoves bounds how often one plan run starts again from a moved
// position before it leaves the task to asynq's retry.
const maxPlanMoves = 10

// wellFormed drops members that are not devices (the registry holds
// nothing else unless tampered with) and their positions.
func wellFormed(members []string, positions []int64) ([]string, []int64) {
	keptM, keptP := members[:0], positions[:0]
	for i, m := range members {
		if _, err := parseMember(m); err == nil {
			keptM = append(keptM, m)
			keptP = append(keptP, positions[i])
		}
	}
	return keptM, keptP
}

// planDone marks planning finished; killedBy names a kill that cut it
// short.
func (w *Worker) planDone(ctx context.Context, id, killedBy string) error {
	st, err := w.store.planDone(ctx, id, w.now(), killedBy)
	if err != nil {
		return err
	}
	w.noteTransition(ctx, id, st)
	return nil
}

func timelineJSON(at int64, event, detail string) string {
	b, _ := json.Marshal(api.Event{At: at, Event: event, Detail: detail})
	return string(b)
}

// loadBroadcast reads and verifies a broadcast's envelope.
func (c *core) loadBroadcast(ctx context.Context, id string) (*verifiedBroadcast, error) {
	raw, err := c.store.envelope(ctx, c.keys.Envelope(id))
	if api.CodeOf(err) == api.CodeNotFound {
		return nil, fmt.Errorf("%w: no envelope for broadcast %s", errForged, id)
	}
	if err != nil {
		return nil, err
	}
	return c.verify.broadcast(ctx, id, raw)
}

// refuseOrRetry turns a verification failure into a refused task (never
// retried) and passes other errors to asynq to retry.
func (w *Worker) refuseOrRetry(ctx context.Context, task, id string, err error) error {
	if errors.Is(err, errForged) || errors.Is(err, errOutsideAudience) || errors.Is(err, errUnapproved) {
		w.securityEvent(ctx, task, id, err)
		return fmt.Errorf("%w: %v", asynq.SkipRetry, err)
	}
	return err
}
