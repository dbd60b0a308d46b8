package queue

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/api"
)

// The sweeper is the last net under "nothing accepted is lost": a Redis
// that came back from an older state can leave asynq without the task of
// a batch that was planned (its enqueue, or its retry, is what Redis
// lost, or a stale write of asynq's own deleted it). Every worker, every
// SweepInterval, looks at the broadcasts still sending whose planning is
// done and whose record has not changed for three intervals, and enqueues again
// the devices they planned that no batch ever claimed
// (docs/ARCHITECTURE.md, "The device registry"). Devices claimed without
// an outcome are not swept: their batch may be waiting for a Retry-After
// or a provider pause, and re-sending them early would break it; the
// reaper and the in-flight reconcile resume those.

// DefaultSweepInterval is how often a worker sweeps unless configured.
const DefaultSweepInterval = 10 * time.Second

// stallFactor times the sweep interval is how long a broadcast's record
// must have been still before it is swept: batches that merely wait their
// turn in a long queue are left alone (a copy of one would only find its
// devices claimed).
const stallFactor = 3

// sweepScan bounds how many recent broadcasts one sweep looks at.
const sweepScan = 1000

// sweep runs the sweeper until ctx is cancelled.
func (w *Worker) sweep(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := w.sweepOnce(ctx, stallFactor*every); err != nil && ctx.Err() == nil {
				w.logger.Warn("sweeper: sweep failed", "err", err)
			}
		}
	}
}

// sweepOnce sweeps the broadcasts stalled for longer than stall.
func (w *Worker) sweepOnce(ctx context.Context, stall time.Duration) error {
	if w.fresh() != nil {
		return nil // nothing is sent on a stale view or a Redis that lost data anyway
	}
	ids, err := w.rdb.ZRevRange(ctx, w.keys.BroadcastIndex(), 0, sweepScan-1).Result()
	if err != nil {
		return err
	}
	recs := make([]*redis.SliceCmd, len(ids))
	_, err = w.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			recs[i] = p.HMGet(ctx, w.keys.Broadcast(id), "state", "plan_done", "updated_at")
		}
		return nil
	})
	if err != nil {
		return err
	}
	cutoff := w.now().Add(-stall).UnixMilli()
	for i, id := range ids {
		v := recs[i].Val()
		if len(v) != 3 || v[0] != api.StateSending || v[1] != "1" {
			continue
		}
		updated, _ := strconv.ParseInt(str(v[2]), 10, 64)
		if updated > cutoff {
			continue
		}
		// One worker sweeps a broadcast per stall period.
		ok, err := w.rdb.SetNX(ctx, w.keys.Sweep(id), w.ks.workerID, stall).Result()
		if err != nil || !ok {
			continue
		}
		if err := w.sweepBroadcast(ctx, id); err != nil {
			w.logger.Warn("sweeper: sweeping a stalled broadcast failed", "broadcast_id", id, "err", err)
		}
	}
	return nil
}

func str(v any) string { s, _ := v.(string); return s }

// sweepBroadcast enqueues again the planned positions of broadcast id
// that are not done and that no batch claimed.
func (w *Worker) sweepBroadcast(ctx context.Context, id string) error {
	vb, err := w.loadBroadcast(ctx, id)
	if err != nil {
		return err
	}
	planned, done := w.store.bitmaps(id, ledgerDelivery)
	scratch := w.keys.Scratch(id)
	_, err = w.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.BitOpXor(ctx, scratch, planned, done)
		p.BitOpAnd(ctx, scratch, scratch, planned)
		p.Expire(ctx, scratch, time.Minute)
		return nil
	})
	if err != nil {
		return err
	}
	defer w.rdb.Del(context.WithoutCancel(ctx), scratch)
	var cursor int64
	var members []string
	for {
		nums, next, end, err := scanBits(ctx, w.rdb, scratch, cursor, scanCount)
		if err != nil {
			return err
		}
		_, ms, err := w.audienceMembers(ctx, vb, nums)
		if err != nil {
			return err
		}
		vals, err := w.store.ledgerValues(ctx, id, ms)
		if err != nil {
			return err
		}
		for j, v := range vals {
			if v == "" {
				members = append(members, ms[j])
			}
		}
		if end {
			break
		}
		cursor = next
	}
	members, _ = wellFormed(members, make([]int64, len(members))) // positions are not needed here
	if len(members) == 0 {
		return nil
	}
	prog, err := w.store.loadProgress(ctx, id, ledgerDelivery)
	if err != nil {
		return err
	}
	batches := chunk(id, members, prog.seq)
	next := prog
	next.seq += int64(len(batches))
	// Take the sequence numbers first: a planner or sweeper that moved
	// them meanwhile makes this sweep give way.
	if _, err := w.store.saveProgress(ctx, id, ledgerDelivery, prog, next, nil); err != nil {
		return err
	}
	for _, b := range batches {
		if err := w.enqueueBatch(ctx, TypeDeliver, QueueDeliver, b, 0); err != nil {
			return err
		}
	}
	w.logger.Warn("sweeper: a stalled broadcast had planned devices no batch ever claimed (Redis came back from an older state?); enqueued them again",
		"event", "broadcast_swept", "broadcast_id", id, "devices", len(members), "batches", len(batches))
	return nil
}
