package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
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

// bitmaps returns a broadcast's planned and done bitmaps, of its delivery
// or of its recall.
func (s *store) bitmaps(id string, k ledgerKind) (planned, done string) {
	if k == ledgerRecall {
		return s.keys.RecallPlanned(id), s.keys.RecallDone(id)
	}
	return s.keys.Planned(id), s.keys.Done(id)
}

// claim claims members for batch seq in a ledger and returns, per member,
// claimNew, claimOwn, 3 (already final for this batch), 0 (another
// batch's device: a duplicate) or claimCapped (beyond cap devices in the
// ledger; 0 is no cap). pos holds each member's audience position (-1
// for none), which a capped device is marked done at.
func (s *store) claim(ctx context.Context, id string, k ledgerKind, seq int64, cap int, members []string, pos []int64) ([]int64, error) {
	if len(members) == 0 {
		return nil, nil
	}
	ledger, claimed, duplicate := s.ledger(id, k)
	_, done := s.bitmaps(id, k)
	args := make([]any, 0, 5+2*len(members))
	args = append(args, seq, claimed, duplicate, int64(recordRetention/time.Second), cap)
	for i, m := range members {
		args = append(args, m, pos[i])
	}
	res, err := claimScript.Run(ctx, s.rdb, []string{ledger, s.keys.Broadcast(id), done}, args...).Int64Slice()
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
	// limitedBy names the rate limit that deferred devices, "" for none.
	limitedBy string
}

// extra is the JSON argument of recordScript for what counts does not
// pass as numbers.
type extra struct {
	LimitedBy string `json:"limited_by,omitempty"`
}

// errClaimsLost reports that devices a batch claimed have no ledger
// entry any more: Redis came back from an older state. The batch runs
// again (asynq retries it) and claims them afresh.
var errClaimsLost = errors.New("ledger lost this batch's claims (Redis restarted from an older state?); running the batch again")

// recordOutcomes records the final outcomes of a delivery batch (triples
// of member, letter and position), adds its counts, remembers the kill
// that stopped it ("" for none) and completes the broadcast when it can.
// It returns the state the broadcast entered, or "".
func (s *store) recordOutcomes(ctx context.Context, id string, seq int64, now time.Time, killedBy string, triples []any, c counts) (string, error) {
	if len(triples) == 0 && killedBy == "" && c.limitedBy == "" {
		return "", nil
	}
	x, err := json.Marshal(extra{LimitedBy: c.limitedBy})
	if err != nil {
		return "", fmt.Errorf("record outcomes: %w", err)
	}
	args := append([]any{seq, now.UnixMilli(), killedBy, x}, triples...)
	return runRecord(ctx, s.rdb, recordScript, []string{s.keys.Ledger(id), s.keys.Broadcast(id), s.keys.Timeline(id),
		s.keys.Planned(id), s.keys.Done(id), s.keys.Scratch(id), s.keys.Delayed(id)}, args, "record outcomes")
}

// recordRecallOutcomes records the outcomes of a recall batch (triples of
// member, letter — s recalled, f recall_failed — and position) and
// completes the recall when it can. It returns the state the broadcast
// entered, or "".
func (s *store) recordRecallOutcomes(ctx context.Context, id string, seq int64, now time.Time, triples []any) (string, error) {
	if len(triples) == 0 {
		return "", nil
	}
	args := append([]any{seq, now.UnixMilli()}, triples...)
	return runRecord(ctx, s.rdb, recallRecordScript, []string{s.keys.RecallLedger(id), s.keys.Broadcast(id),
		s.keys.Timeline(id), s.keys.RecallPlanned(id), s.keys.RecallDone(id), s.keys.Scratch(id)}, args, "record recall outcomes")
}

// runRecord runs a record script and reads its {state, lost} reply.
func runRecord(ctx context.Context, rdb redis.UniversalClient, sc *redis.Script, keys []string, args []any, what string) (string, error) {
	res, err := sc.Run(ctx, rdb, keys, args...).Slice()
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	if len(res) != 2 {
		return "", fmt.Errorf("%s: short reply", what)
	}
	st, _ := res[0].(string)
	if lost, _ := res[1].(int64); lost > 0 {
		return st, fmt.Errorf("%s: %d devices: %w", what, lost, errClaimsLost)
	}
	return st, nil
}

// ledgerValues returns the delivery ledger's values for members ("" for a
// device without one).
func (s *store) ledgerValues(ctx context.Context, id string, members []string) ([]string, error) {
	if len(members) == 0 {
		return nil, nil
	}
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

// planProgress is a planner's saved position: resuming from it never
// enqueues a batch twice.
type planProgress struct {
	cursor  int64 // next audience position to plan
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
	p.cursor, _ = strconv.ParseInt(f["cursor"], 10, 64)
	p.cursor = max(p.cursor, 0)
	p.seq, _ = strconv.ParseInt(f["seq"], 10, 64)
	p.planned, _ = strconv.ParseInt(n.Val(), 10, 64)
	p.done = f["done"] == "1"
	return p, nil
}

// errPlanMoved reports that a planner's stored position is not the one it
// planned its page from: another run moved it, or Redis came back from an
// older state. The plan task runs again from what is stored.
var errPlanMoved = errors.New("planning position moved (another planner, or Redis restarted from an older state); planning again from the stored position")

// saveProgress saves a planner's position after it enqueued the page that
// took it from prev to p, marking the page's positions planned; only
// positions not planned before count. It renews the broadcast's retention
// (the plan, ledger and bitmaps appear after the record).
func (s *store) saveProgress(ctx context.Context, id string, k ledgerKind, prev, p planProgress, positions []int64) (int64, error) {
	key, counter := s.plan(id, k)
	planned, _ := s.bitmaps(id, k)
	keys := append([]string{key, s.keys.Broadcast(id), planned}, s.broadcastKeys(id)...)
	args := make([]any, 0, 6+len(positions))
	args = append(args, prev.cursor, prev.seq, p.cursor, p.seq, int64(recordRetention/time.Second), counter)
	for _, n := range positions {
		args = append(args, n)
	}
	added, err := planSaveScript.Run(ctx, s.rdb, keys, args...).Int64()
	if err != nil {
		if strings.HasPrefix(err.Error(), "PLANMOVED") {
			return 0, errPlanMoved
		}
		return 0, fmt.Errorf("save plan progress: %w", err)
	}
	return added, nil
}

// planDone marks a broadcast's planning finished; killedBy names a kill
// that cut it short. It returns the state the broadcast entered, or "".
func (s *store) planDone(ctx context.Context, id string, now time.Time, killedBy string) (string, error) {
	st, err := planDoneScript.Run(ctx, s.rdb, []string{s.keys.Plan(id), s.keys.Broadcast(id), s.keys.Timeline(id),
		s.keys.Planned(id), s.keys.Done(id), s.keys.Scratch(id)}, now.UnixMilli(), killedBy).Text()
	if err != nil {
		return "", fmt.Errorf("finish planning: %w", err)
	}
	return st, nil
}

// recallPlanDone marks a recall's planning finished. It returns the state
// the broadcast entered, or "".
func (s *store) recallPlanDone(ctx context.Context, id string, now time.Time) (string, error) {
	st, err := recallPlanDoneScript.Run(ctx, s.rdb,
		[]string{s.keys.RecallPlan(id), s.keys.Broadcast(id), s.keys.Timeline(id),
			s.keys.RecallPlanned(id), s.keys.RecallDone(id), s.keys.Scratch(id)}, now.UnixMilli()).Text()
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

// redisRun returns the run id of the Redis server: it changes whenever the
// server restarts or another server takes over, which is when claims and
// outcomes written just before may be gone.
func (s *store) redisRun(ctx context.Context) (string, error) {
	info, err := s.rdb.Info(ctx, "server").Result()
	var reply redis.Error
	if errors.As(err, &reply) {
		// A server that answers but keeps no run id (an embedded test
		// Redis) never restarts under us: one run.
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read Redis run id: %w", err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok && v != "" {
			return v, nil
		}
	}
	return "", nil // as above
}

// markRun remembers on a broadcast's record the Redis run its delivery
// started under (the first one only).
func (s *store) markRun(ctx context.Context, id string) error {
	run, err := s.redisRun(ctx)
	if err != nil {
		return err
	}
	if err := s.rdb.HSetNX(ctx, s.keys.Broadcast(id), "redis_run", run).Err(); err != nil {
		return fmt.Errorf("remember Redis run: %w", err)
	}
	return nil
}

// uncertain reports whether Redis restarted or failed over since a
// broadcast's delivery started: what its ledger says about devices
// claimed, cancelled or not yet claimed may then be missing claims and
// outcomes of calls that were made. A record without a run (Redis is not
// trusted) counts as uncertain.
func (s *store) uncertain(ctx context.Context, id string) (bool, error) {
	started, err := s.rdb.HGet(ctx, s.keys.Broadcast(id), "redis_run").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return false, fmt.Errorf("read Redis run: %w", err)
	}
	run, err := s.redisRun(ctx)
	if err != nil {
		return false, err
	}
	return started != run, nil
}
