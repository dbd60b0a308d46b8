package queue

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/signing"
)

// unlimited reports whether r sets no limit: the zero signing.Rate.
func unlimited(r signing.Rate) bool { return r.Count <= 0 || r.Per <= 0 }

// gcra is r as a GCRA limit that allows a burst of one second's worth
// (at least one).
func gcra(r signing.Rate) redis_rate.Limit {
	burst := max(1, int(float64(r.Count)*float64(time.Second)/float64(r.Per)))
	return redis_rate.Limit{Rate: r.Count, Period: r.Per, Burst: burst}
}

// limiter takes rate-limit tokens for whole batches, shared by every
// process through Redis: per platform and per sender key with GCRA
// (redis_rate's AllowAtMost, one call per batch), and per device with a
// sliding-window count (one script call per batch).
type limiter struct {
	rdb      redis.UniversalClient
	rl       *redis_rate.Limiter
	keys     Keys
	provider map[providers.Platform]signing.Rate
	// deviceMax pushes per deviceWindow; deviceMax <= 0 disables it.
	deviceMax    int
	deviceWindow time.Duration
	now          func() time.Time
}

// take asks for n tokens from the limits of platform and sender key. It
// returns how many may be sent now and, when fewer than n, how long to wait
// before asking for the rest and which limit held them back ("sender key
// k1 at 20000/1m0s", "provider apns at 50000/1s").
func (l *limiter) take(ctx context.Context, platform providers.Platform, keyID string, keyRate signing.Rate, n int) (int, time.Duration, string, error) {
	allowed, wait, by := n, time.Duration(0), ""
	step := func(key, name string, r signing.Rate) error {
		if unlimited(r) || allowed == 0 {
			return nil
		}
		res, err := l.rl.AllowAtMost(ctx, key, gcra(r), allowed)
		if err != nil {
			return fmt.Errorf("rate limit: %w", err)
		}
		if res.Allowed < allowed {
			by = fmt.Sprintf("%s at %d/%s", name, r.Count, r.Per)
		}
		allowed = res.Allowed
		if allowed < n {
			wait = max(wait, res.RetryAfter)
		}
		return nil
	}
	if err := step(l.keys.ProviderRate(string(platform)), "provider "+string(platform), l.provider[platform]); err != nil {
		return 0, 0, "", err
	}
	if err := step(l.keys.SenderRate(keyID), "sender key "+keyID, keyRate); err != nil {
		return 0, 0, "", err
	}
	if allowed < n && wait <= 0 {
		wait = 100 * time.Millisecond
	}
	return allowed, wait, by, nil
}

// deviceScript counts one push per device unless the device's estimated
// count over the sliding window has reached the limit. KEYS[1] current
// window hash, KEYS[2] previous window hash; ARGV[1] limit, ARGV[2] weight
// of the previous window (the part of it still inside the sliding window),
// ARGV[3] TTL in seconds, ARGV[4..] device hashes. Returns 1 (allowed) or
// 0 per device.
var deviceScript = redis.NewScript(`
local limit = tonumber(ARGV[1])
local weight = tonumber(ARGV[2])
local out = {}
for i = 4, #ARGV do
  local f = ARGV[i]
  local cur = tonumber(redis.call('HGET', KEYS[1], f) or '0')
  local prev = tonumber(redis.call('HGET', KEYS[2], f) or '0')
  if prev * weight + cur + 1 <= limit then
    redis.call('HINCRBY', KEYS[1], f, 1)
    out[i-3] = 1
  else
    out[i-3] = 0
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return out
`)

// allowDevices applies the per-device limit to members, counting a push
// for each allowed one.
func (l *limiter) allowDevices(ctx context.Context, members []string) ([]bool, error) {
	out := make([]bool, len(members))
	if l.deviceMax <= 0 || l.deviceWindow <= 0 {
		for i := range out {
			out[i] = true
		}
		return out, nil
	}
	now := l.now()
	w := now.UnixNano() / int64(l.deviceWindow)
	into := float64(now.UnixNano()%int64(l.deviceWindow)) / float64(l.deviceWindow)
	args := make([]any, 0, 3+len(members))
	args = append(args, l.deviceMax, strconv.FormatFloat(1-into, 'f', 6, 64), int64(2*l.deviceWindow/time.Second)+1)
	for _, m := range members {
		args = append(args, deviceHash(m))
	}
	res, err := deviceScript.Run(ctx, l.rdb, []string{l.keys.DeviceRate(w), l.keys.DeviceRate(w - 1)}, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("device limit: %w", err)
	}
	if len(res) != len(members) {
		return nil, fmt.Errorf("device limit: %d answers for %d devices", len(res), len(members))
	}
	for i, v := range res {
		out[i] = v == 1
	}
	return out, nil
}

// deviceHash keeps the per-device counters small and keeps tokens out of
// the counter keys: 8 bytes of FNV-1a per device.
func deviceHash(member string) string {
	h := fnv.New64a()
	h.Write([]byte(member))
	var b [8]byte
	s := h.Sum64()
	for i := range b {
		b[i] = byte(s >> (8 * i))
	}
	return string(b[:])
}
