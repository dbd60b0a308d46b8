package signing

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/internal/redistest"
)

func nonceKey(keyID, nonce string) string { return "test:nonce:" + keyID + ":" + nonce }

func TestRedisReplayGuard(t *testing.T) {
	rdb := redistest.Client(t)
	g := NewRedisReplayGuard(rdb, nonceKey)
	ctx := context.Background()

	tests := []struct {
		name  string
		keyID string
		nonce string
		want  bool
	}{
		{"first use", "a", "n1", true},
		{"second use", "a", "n1", false},
		{"same nonce, other key", "b", "n1", true},
		{"other nonce", "a", "n2", true},
	}
	for _, tt := range tests {
		fresh, err := g.Claim(ctx, tt.keyID, tt.nonce, 10*time.Minute)
		if err != nil || fresh != tt.want {
			t.Errorf("%s: Claim = %v, %v, want %v", tt.name, fresh, err, tt.want)
		}
	}
	ttl, err := rdb.PTTL(ctx, nonceKey("a", "n1")).Result()
	if err != nil || ttl <= 0 || ttl > 10*time.Minute {
		t.Errorf("PTTL = %v, %v, want within (0, 10m]", ttl, err)
	}
	if _, err := g.Claim(ctx, "a", "n3", 0); err == nil {
		t.Error("Claim with no ttl succeeded")
	}
}

func TestVerifyReplayWithRedis(t *testing.T) {
	rdb := redistest.Client(t)
	f := newFixture(t)
	v := NewVerifier(VerifierConfig{
		Profile: DefaultProfile(),
		Keys:    f.keys,
		Replay:  NewRedisReplayGuard(rdb, nonceKey),
		Now:     func() time.Time { return t0 },
	})
	req := f.post(t)
	got, err := v.Verify(context.Background(), req)
	if err != nil {
		t.Fatalf("first Verify: %v", err)
	}
	// The nonce is kept for twice the skew.
	ttl, err := rdb.PTTL(context.Background(), nonceKey("sender", got.Nonce)).Result()
	if err != nil || ttl <= 9*time.Minute || ttl > 10*time.Minute {
		t.Errorf("nonce PTTL = %v, %v, want about 10m", ttl, err)
	}
	if _, err := v.Verify(context.Background(), req); codeOf(err) != CodeReplayedNonce {
		t.Fatalf("second Verify = %v, want %s", err, CodeReplayedNonce)
	}
}

func TestVerifyRedisDownIsNotARefusal(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	f := newFixture(t)
	v := NewVerifier(VerifierConfig{
		Profile: DefaultProfile(),
		Keys:    f.keys,
		Replay:  NewRedisReplayGuard(rdb, nonceKey),
		Now:     func() time.Time { return t0 },
	})
	_, err := v.Verify(context.Background(), f.post(t))
	var se *Error
	if err == nil || errors.As(err, &se) {
		t.Fatalf("Verify = %v, want a plain error", err)
	}
}
