package queue

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/signing"
)

// A sender key's reach budget caps the distinct devices its broadcasts
// reach in a rolling window, so that many small requests add up: a stolen
// key that may send 20 devices at a time still reaches no more than its
// budget. Every process shares the count through Redis. The API refuses a
// submission the budget cannot cover; the deliverer takes the budget device
// by device as it sends, and holds (never sends) what is beyond it.

// reachScript takes reach budget for devices about to be sent. KEYS[1] the
// key's reach set; ARGV[1] now in ms, ARGV[2] window in ms, ARGV[3] budget,
// ARGV[4..] device hashes. A device already reached in the window costs
// nothing and is allowed; a new one is allowed while the budget lasts.
// Allowed devices are stamped with now. Returns 1 (allowed) or 0 (held)
// per device.
var reachScript = redis.NewScript(`
local now, window, budget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local since = now - window
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. since)
local used = redis.call('ZCARD', KEYS[1])
local out = {}
for i = 4, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score then
    out[i-3] = 1
  elseif used < budget then
    used = used + 1
    out[i-3] = 1
  else
    out[i-3] = 0
  end
  if out[i-3] == 1 then redis.call('ZADD', KEYS[1], now, ARGV[i]) end
end
redis.call('PEXPIRE', KEYS[1], window)
return out
`)

// takeReach takes reach budget of key k for members. It returns, per
// member, whether it may be sent.
func (l *limiter) takeReach(ctx context.Context, k *signing.Key, members []string) ([]bool, error) {
	out := make([]bool, len(members))
	if unlimited(k.Reach) || len(members) == 0 {
		for i := range out {
			out[i] = true
		}
		return out, nil
	}
	args := make([]any, 0, 3+len(members))
	args = append(args, l.now().UnixMilli(), k.Reach.Per.Milliseconds(), k.Reach.Count)
	for _, m := range members {
		args = append(args, deviceHash(m))
	}
	res, err := reachScript.Run(ctx, l.rdb, []string{l.keys.Reach(k.ID)}, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("reach budget: %w", err)
	}
	if len(res) != len(members) {
		return nil, fmt.Errorf("reach budget: %d answers for %d devices", len(res), len(members))
	}
	for i, v := range res {
		out[i] = v == 1
	}
	return out, nil
}

// reachLeft reads what is left of key k's budget now.
func (l *limiter) reachLeft(ctx context.Context, k *signing.Key) (int64, error) {
	since := strconv.FormatInt(l.now().Add(-k.Reach.Per).UnixMilli(), 10)
	used, err := l.rdb.ZCount(ctx, l.keys.Reach(k.ID), since, "+inf").Result()
	if err != nil {
		return 0, fmt.Errorf("reach budget: %w", err)
	}
	return int64(k.Reach.Count) - used, nil
}

// reachFrees says how long until n more devices fit key k's budget: until
// the n-th oldest device reached in the window leaves it. It is zero when
// fewer than n are in the window to leave.
func (l *limiter) reachFrees(ctx context.Context, k *signing.Key, n int64) (time.Duration, error) {
	now := l.now()
	zs, err := l.rdb.ZRangeByScoreWithScores(ctx, l.keys.Reach(k.ID), &redis.ZRangeBy{
		Min: strconv.FormatInt(now.Add(-k.Reach.Per).UnixMilli(), 10), Max: "+inf", Offset: max(n-1, 0), Count: 1}).Result()
	if err != nil {
		return 0, fmt.Errorf("reach budget: %w", err)
	}
	if len(zs) == 0 {
		return 0, nil
	}
	return max(time.UnixMilli(int64(zs[0].Score)).Add(k.Reach.Per).Sub(now), 0), nil
}

// reachNew counts the members key k's broadcasts have not reached in the
// window: what sending to them would cost.
func (l *limiter) reachNew(ctx context.Context, k *signing.Key, members []string) (int64, error) {
	if len(members) == 0 {
		return 0, nil
	}
	hashes := make([]string, len(members))
	for i, m := range members {
		hashes[i] = deviceHash(m)
	}
	scores, err := l.rdb.ZMScore(ctx, l.keys.Reach(k.ID), hashes...).Result()
	if err != nil {
		return 0, fmt.Errorf("reach budget: %w", err)
	}
	since := float64(l.now().Add(-k.Reach.Per).UnixMilli())
	var n int64
	for _, s := range scores {
		if s < since { // ZMSCORE answers 0 for a device never reached
			n++
		}
	}
	return n, nil
}

// checkReach refuses a submission whose audience would take key k past
// its reach budget. It counts exactly for audiences of at most MaxTokens
// devices; for larger ones it refuses only what cannot fit even if every
// device had been reached already in the window, and the deliverer holds
// whatever is beyond the budget.
func (s *Service) checkReach(ctx context.Context, k *signing.Key, a *api.Audience, size int64) error {
	if unlimited(k.Reach) {
		return nil
	}
	if size > int64(k.Reach.Count) {
		return api.Errorf(api.CodeReachBudgetExceeded, "the audience has %d devices; key %s may reach at most %d in %s",
			size, k.ID, k.Reach.Count, k.Reach.Per)
	}
	var members []string
	switch {
	case a.Tokens != nil:
		for _, d := range a.Tokens {
			members = append(members, member(d))
		}
	case size <= api.MaxTokens:
		var err error
		if members, err = s.registry.members(ctx, a.Topic); err != nil {
			return err
		}
	default:
		return nil
	}
	left, err := s.limits.reachLeft(ctx, k)
	if err != nil {
		return err
	}
	need, err := s.limits.reachNew(ctx, k, members)
	if err != nil {
		return err
	}
	if need <= left {
		return nil
	}
	frees, err := s.limits.reachFrees(ctx, k, need-left)
	if err != nil {
		return err
	}
	e := api.Errorf(api.CodeReachBudgetExceeded,
		"the audience would reach %d devices key %s has not reached in the last %s; its reach budget has %d of %d left",
		need, k.ID, k.Reach.Per, max(left, 0), k.Reach.Count)
	e.RetryAfter = frees.Round(time.Second) + time.Second
	return e
}
