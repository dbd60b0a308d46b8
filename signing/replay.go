package signing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisReplayGuard is a ReplayGuard that claims each nonce with one
// SET key 1 NX PX ttl, so every gateway process sharing the Redis refuses a
// nonce any of them has seen, and Redis forgets it after ttl.
type RedisReplayGuard struct {
	rdb redis.UniversalClient
	key func(keyID, nonce string) string
}

var _ ReplayGuard = (*RedisReplayGuard)(nil)

// NewRedisReplayGuard returns a guard on rdb. key names the Redis key of a
// nonce; it is injected because the queue package names every Redis key in
// one place.
func NewRedisReplayGuard(rdb redis.UniversalClient, key func(keyID, nonce string) string) *RedisReplayGuard {
	return &RedisReplayGuard{rdb: rdb, key: key}
}

// Claim reports whether nonce is fresh for keyID and, if so, remembers it
// for ttl.
func (g *RedisReplayGuard) Claim(ctx context.Context, keyID, nonce string, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		// Without an expiry the key would stay forever.
		return false, errors.New("replay guard: ttl must be positive")
	}
	fresh, err := g.rdb.SetNX(ctx, g.key(keyID, nonce), 1, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("replay guard: %w", err)
	}
	return fresh, nil
}
