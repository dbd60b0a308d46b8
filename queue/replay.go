package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pushgate/pushgate/signing"
	"github.com/redis/go-redis/v9"
)

// ReplayGuard is the signature verifier's memory of nonces, in Redis: it
// claims each nonce with one SET key 1 NX PX ttl, so every gateway process
// sharing the Redis refuses a nonce any of them has seen, and Redis
// forgets it after ttl.
type ReplayGuard struct {
	rdb  redis.UniversalClient
	keys Keys
}

var _ signing.ReplayGuard = (*ReplayGuard)(nil)

// NewReplayGuard returns a guard on rdb whose keys keys names.
func NewReplayGuard(rdb redis.UniversalClient, keys Keys) *ReplayGuard {
	return &ReplayGuard{rdb: rdb, keys: keys}
}

// Claim reports whether nonce is fresh for keyID and, if so, remembers it
// for ttl.
func (g *ReplayGuard) Claim(ctx context.Context, keyID, nonce string, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		// Without an expiry the key would stay forever.
		return false, errors.New("replay guard: ttl must be positive")
	}
	fresh, err := g.rdb.SetNX(ctx, g.keys.Nonce(keyID, nonce), 1, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("replay guard: %w", err)
	}
	return fresh, nil
}
