package queue

import (
	"context"
	"testing"
	"time"

	"github.com/pushgate/pushgate/internal/redistest"
)

func TestRedisReplayGuard(t *testing.T) {
	rdb := redistest.Client(t)
	g := NewReplayGuard(rdb, NewKeys("test"))
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
	ttl, err := rdb.PTTL(ctx, NewKeys("test").Nonce("a", "n1")).Result()
	if err != nil || ttl <= 0 || ttl > 10*time.Minute {
		t.Errorf("PTTL = %v, %v, want within (0, 10m]", ttl, err)
	}
	if _, err := g.Claim(ctx, "a", "n3", 0); err == nil {
		t.Error("Claim with no ttl succeeded")
	}
}
