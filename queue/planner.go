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
	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/providers"
)

// scanCount is the COUNT hint of each SSCAN/HSCAN page the planners read.
const scanCount = 2000

// planProgress is a planner's saved position: resuming from it never
// enqueues a batch twice.
type planProgress struct {
	cursor uint64
	seq    int64
	done   bool
}

func (w *Worker) loadProgress(ctx context.Context, key string) (planProgress, error) {
	f, err := w.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return planProgress{}, fmt.Errorf("read plan progress: %w", err)
	}
	var p planProgress
	p.cursor, _ = strconv.ParseUint(f["cursor"], 10, 64)
	p.seq, _ = strconv.ParseInt(f["seq"], 10, 64)
	p.done = f["done"] == "1"
	return p, nil
}

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
	by := map[providers.Platform][]string{}
	var order []providers.Platform
	for _, m := range members {
		d, err := ParseMember(m)
		if err != nil {
			continue // not a device: registry sets hold nothing else unless tampered with
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
	if by, ok := w.ks.Killed(vb.scope()); ok {
		return w.planDone(ctx, id, by)
	}
	if _, err := w.transition(ctx, id, StateSending, "", "", StateQueued); err != nil {
		return err
	}
	prog, err := w.loadProgress(ctx, w.keys.Plan(id))
	if err != nil || prog.done {
		return err
	}

	limit := int64(vb.maxAudience)
	planned, err := w.rdb.HGet(ctx, w.keys.Broadcast(id), "planned").Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read planned: %w", err)
	}
	tokens := vb.req.Audience.Tokens
	for {
		var page []string
		var next uint64
		if tokens != nil {
			start := min(int(prog.cursor), len(tokens))
			end := min(start+scanCount, len(tokens))
			for _, d := range tokens[start:end] {
				page = append(page, d.Member())
			}
			if end < len(tokens) {
				next = uint64(end)
			}
		} else {
			page, next, err = w.registry.scan(ctx, vb.req.Audience.Topic, prog.cursor, scanCount)
			if err != nil {
				return err
			}
		}
		capped := false
		if planned+int64(len(page)) > limit {
			page = page[:max(0, limit-planned)]
			capped = true
		}
		batches := chunk(id, page, prog.seq)
		n := 0
		for _, b := range batches {
			payload, _ := json.Marshal(b)
			if err := w.enqueue(ctx, TypeDeliver, payload, asynq.Queue(QueueDeliver),
				asynq.TaskID(batchTaskID("deliver", b)), asynq.MaxRetry(w.taskRetries)); err != nil {
				return err
			}
			n += len(b.Tokens)
		}
		prog.seq += int64(len(batches))
		prog.cursor = next
		planned += int64(n)
		_, err = w.rdb.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.HSet(ctx, w.keys.Plan(id), "cursor", prog.cursor, "seq", prog.seq)
			pl.HIncrBy(ctx, w.keys.Broadcast(id), "planned", int64(n))
			w.store.touchExpiry(ctx, pl, id)
			return nil
		})
		if err != nil {
			return fmt.Errorf("save plan progress: %w", err)
		}
		if capped {
			w.logger.Warn("audience capped at the key's max_audience", "broadcast_id", id, "key_id", vb.keyID, "max_audience", limit)
			w.rdb.RPush(ctx, w.keys.Timeline(id), timelineJSON(w.now().UnixMilli(), "audience_capped",
				"stopped at max_audience "+strconv.FormatInt(limit, 10)))
			break
		}
		if by, ok := w.ks.Killed(vb.scope()); ok {
			return w.planDone(ctx, id, by)
		}
		if next == 0 {
			break
		}
	}
	return w.planDone(ctx, id, "")
}

// planDone marks planning finished; killedBy names a kill that cut it
// short.
func (w *Worker) planDone(ctx context.Context, id, killedBy string) error {
	st, err := planDoneScript.Run(ctx, w.rdb, []string{w.keys.Plan(id), w.keys.Broadcast(id), w.keys.Timeline(id)},
		"", w.now().UnixMilli(), killedBy).Text()
	if err != nil {
		return fmt.Errorf("finish planning: %w", err)
	}
	w.metrics.transition(st)
	return nil
}

func timelineJSON(at int64, event, detail string) string {
	b, _ := json.Marshal(Event{At: at, Event: event, Detail: detail})
	return string(b)
}

// loadBroadcast reads and verifies a broadcast's envelope.
func (w *Worker) loadBroadcast(ctx context.Context, id string) (*verifiedBroadcast, error) {
	raw, err := w.store.envelope(ctx, w.keys.Envelope(id))
	if CodeOf(err) == CodeNotFound {
		return nil, fmt.Errorf("%w: no envelope for broadcast %s", errForged, id)
	}
	if err != nil {
		return nil, err
	}
	return w.verify.broadcast(ctx, id, raw)
}

// refuseOrRetry turns a verification failure into a refused task (never
// retried) and passes other errors to asynq to retry.
func (w *Worker) refuseOrRetry(ctx context.Context, task, id string, err error) error {
	if errors.Is(err, errForged) || errors.Is(err, errOutsideAudience) {
		w.securityEvent(ctx, task, id, err)
		return fmt.Errorf("%w: %v", asynq.SkipRetry, err)
	}
	return err
}

// transition changes a broadcast's state and counts it.
func (w *Worker) transition(ctx context.Context, id, to, detail, flag string, from ...string) (bool, error) {
	ok, _, err := w.store.transition(ctx, id, to, detail, flag, w.now(), from...)
	if ok {
		w.metrics.transition(to)
	}
	return ok, err
}

// containsAll is a helper for audience checks of explicit-token audiences.
func containsAll(set map[string]struct{}, members []string) []bool {
	out := make([]bool, len(members))
	for i, m := range members {
		_, out[i] = set[m]
	}
	return out
}
