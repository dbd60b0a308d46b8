package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/redis/go-redis/v9"
)

// This file is the store's side of the pipeline: the per-device ledgers,
// planning progress, and the counters and timeline entries planners and
// deliverers write. The pipeline reaches Redis through these methods only.

// ledgerKind selects a broadcast's delivery ledger or its recall ledger,
// which are claimed and recorded alike.
type ledgerKind int

const (
	ledgerDelivery ledgerKind = iota
	ledgerRecall
)

// ledger returns the ledger key of a broadcast and the record counters a
// claim grows: new claims and duplicates of another batch.
func (s *store) ledger(id string, k ledgerKind) (key, claimed, duplicate string) {
	if k == ledgerRecall {
		return s.keys.RecallLedger(id), "recall_targeted", "recall_duplicate"
	}
	return s.keys.Ledger(id), "targeted", "skipped_duplicate"
}

// claim claims members for batch seq in a ledger and returns, per member,
// claimNew, claimOwn, 3 (already final for this batch), 0 (another
// batch's device: a duplicate) or claimCapped (beyond cap devices in the
// ledger; 0 is no cap).
func (s *store) claim(ctx context.Context, id string, k ledgerKind, seq int64, cap int, members []string) ([]int64, error) {
	if len(members) == 0 {
		return nil, nil
	}
	ledger, claimed, duplicate := s.ledger(id, k)
	args := make([]any, 0, 5+len(members))
	args = append(args, seq, claimed, duplicate, int64(recordRetention/time.Second), cap)
	for _, m := range members {
		args = append(args, m)
	}
	res, err := claimScript.Run(ctx, s.rdb, []string{ledger, s.keys.Broadcast(id)}, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("claim devices: %w", err)
	}
	if len(res) != len(members) {
		return nil, errors.New("claim devices: short reply")
	}
	return res, nil
}

// counts are record counters a batch adds besides its outcomes.
type counts struct {
	retries     int64 // devices retried after a transient failure
	rateLimited int64 // devices deferred by a rate limit
}

// recordOutcomes records the final outcomes of a delivery batch (pairs of
// member and letter), adds its counts, remembers the kill that stopped it
// ("" for none) and completes the broadcast when it can. It returns the
// state the broadcast entered, or "".
func (s *store) recordOutcomes(ctx context.Context, id string, seq int64, now time.Time, killedBy string, pairs []any, c counts) (string, error) {
	if len(pairs) == 0 && killedBy == "" && c == (counts{}) {
		return "", nil
	}
	args := append([]any{seq, now.UnixMilli(), killedBy, c.retries, c.rateLimited}, pairs...)
	st, err := recordScript.Run(ctx, s.rdb,
		[]string{s.keys.Ledger(id), s.keys.Broadcast(id), s.keys.Timeline(id)}, args...).Text()
	if err != nil {
		return "", fmt.Errorf("record outcomes: %w", err)
	}
	return st, nil
}

// recordRecallOutcomes records the outcomes of a recall batch (pairs of
// member and letter: s recalled, f recall_failed) and completes the
// recall when it can. It returns the state the broadcast entered, or "".
func (s *store) recordRecallOutcomes(ctx context.Context, id string, seq int64, now time.Time, pairs []any) (string, error) {
	if len(pairs) == 0 {
		return "", nil
	}
	args := append([]any{seq, now.UnixMilli()}, pairs...)
	st, err := recallRecordScript.Run(ctx, s.rdb,
		[]string{s.keys.RecallLedger(id), s.keys.Broadcast(id), s.keys.Timeline(id)}, args...).Text()
	if err != nil {
		return "", fmt.Errorf("record recall outcomes: %w", err)
	}
	return st, nil
}

// ledgerValues returns the delivery ledger's values for members ("" for a
// device without one).
func (s *store) ledgerValues(ctx context.Context, id string, members []string) ([]string, error) {
	vals, err := s.rdb.HMGet(ctx, s.keys.Ledger(id), members...).Result()
	if err != nil {
		return nil, fmt.Errorf("read ledger: %w", err)
	}
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i], _ = v.(string)
	}
	return out, nil
}

// scanLedger reads one page of a broadcast's delivery ledger from cursor:
// members and their values.
func (s *store) scanLedger(ctx context.Context, id string, cursor uint64, count int64) (members, values []string, next uint64, err error) {
	fields, next, err := s.rdb.HScan(ctx, s.keys.Ledger(id), cursor, "", count).Result()
	if err != nil {
		return nil, nil, 0, fmt.Errorf("scan ledger: %w", err)
	}
	for i := 0; i+1 < len(fields); i += 2 {
		members = append(members, fields[i])
		values = append(values, fields[i+1])
	}
	return members, values, next, nil
}

// planProgress is a planner's saved position: resuming from it never
// enqueues a batch twice.
type planProgress struct {
	cursor  uint64
	seq     int64
	planned int64 // devices planned so far
	done    bool
}

// plan returns the key of a broadcast's planning progress (of its
// delivery or of its recall) and the record counter of devices planned.
func (s *store) plan(id string, k ledgerKind) (key, planned string) {
	if k == ledgerRecall {
		return s.keys.RecallPlan(id), "recall_planned"
	}
	return s.keys.Plan(id), "planned"
}

// loadProgress reads a planner's saved position.
func (s *store) loadProgress(ctx context.Context, id string, k ledgerKind) (planProgress, error) {
	key, planned := s.plan(id, k)
	var prog *redis.MapStringStringCmd
	var n *redis.StringCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		prog = p.HGetAll(ctx, key)
		n = p.HGet(ctx, s.keys.Broadcast(id), planned)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return planProgress{}, fmt.Errorf("read plan progress: %w", err)
	}
	f := prog.Val()
	var p planProgress
	p.cursor, _ = strconv.ParseUint(f["cursor"], 10, 64)
	p.seq, _ = strconv.ParseInt(f["seq"], 10, 64)
	p.planned, _ = strconv.ParseInt(n.Val(), 10, 64)
	p.done = f["done"] == "1"
	return p, nil
}

// saveProgress saves a planner's position after it enqueued added more
// devices, and renews the broadcast's retention (the plan, ledger and
// recall keys appear after the record).
func (s *store) saveProgress(ctx context.Context, id string, k ledgerKind, p planProgress, added int64) error {
	key, planned := s.plan(id, k)
	_, err := s.rdb.TxPipelined(ctx, func(pl redis.Pipeliner) error {
		pl.HSet(ctx, key, "cursor", p.cursor, "seq", p.seq)
		pl.HIncrBy(ctx, s.keys.Broadcast(id), planned, added)
		for _, k := range s.broadcastKeys(id) {
			pl.Expire(ctx, k, recordRetention)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("save plan progress: %w", err)
	}
	return nil
}

// planDone marks a broadcast's planning finished; killedBy names a kill
// that cut it short. It returns the state the broadcast entered, or "".
func (s *store) planDone(ctx context.Context, id string, now time.Time, killedBy string) (string, error) {
	st, err := planDoneScript.Run(ctx, s.rdb, []string{s.keys.Plan(id), s.keys.Broadcast(id), s.keys.Timeline(id)},
		now.UnixMilli(), killedBy).Text()
	if err != nil {
		return "", fmt.Errorf("finish planning: %w", err)
	}
	return st, nil
}

// recallPlanDone marks a recall's planning finished. It returns the state
// the broadcast entered, or "".
func (s *store) recallPlanDone(ctx context.Context, id string, now time.Time) (string, error) {
	st, err := recallPlanDoneScript.Run(ctx, s.rdb,
		[]string{s.keys.RecallPlan(id), s.keys.Broadcast(id), s.keys.Timeline(id)}, now.UnixMilli()).Text()
	if err != nil {
		return "", fmt.Errorf("finish recall planning: %w", err)
	}
	return st, nil
}

// cancelPending ends a broadcast still awaiting approval as cancelled,
// with planning done and nothing planned. It reports whether the
// broadcast was still awaiting approval.
func (s *store) cancelPending(ctx context.Context, id, reason string, now time.Time) (bool, error) {
	ok, _, err := s.transition(ctx, id, api.StateCancelled, reason, "cancel_requested", now, api.StateAwaitingApproval)
	if err != nil || !ok {
		return ok, err
	}
	if err := s.rdb.HSet(ctx, s.keys.Broadcast(id), "plan_done", 1, "finished_at", now.UnixMilli()).Err(); err != nil {
		return false, fmt.Errorf("finish cancelled broadcast: %w", err)
	}
	return true, nil
}

// note appends an event to a broadcast's timeline.
func (s *store) note(ctx context.Context, id string, now time.Time, event, detail string) error {
	if err := s.rdb.RPush(ctx, s.keys.Timeline(id), timelineJSON(now.UnixMilli(), event, detail)).Err(); err != nil {
		return fmt.Errorf("timeline: %w", err)
	}
	return nil
}

// saveRecallMode notes on a broadcast's record how it is being recalled.
func (s *store) saveRecallMode(ctx context.Context, id, mode string) error {
	if err := s.rdb.HSet(ctx, s.keys.Broadcast(id), "recall_mode", mode).Err(); err != nil {
		return fmt.Errorf("store recall: %w", err)
	}
	return nil
}

// securityEvents reads the counts of refused tasks. Values that are not
// numbers (Redis is not trusted) read as zero.
func (s *store) securityEvents(ctx context.Context) (map[string]int64, error) {
	m, err := s.rdb.HGetAll(ctx, s.keys.SecurityEvents()).Result()
	if err != nil {
		return nil, fmt.Errorf("read security events: %w", err)
	}
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k], _ = strconv.ParseInt(v, 10, 64)
	}
	return out, nil
}

// countSecurityEvent counts a refused task by task type and reason.
func (s *store) countSecurityEvent(ctx context.Context, task, reason string) error {
	if err := s.rdb.HIncrBy(ctx, s.keys.SecurityEvents(), task+":"+reason, 1).Err(); err != nil {
		return fmt.Errorf("count security event: %w", err)
	}
	return nil
}
