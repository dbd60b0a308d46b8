package redistest

import (
	"context"
	"strings"
	"testing"
)

func TestServerCrashKeepsAOF(t *testing.T) {
	ctx := context.Background()
	for _, aof := range []bool{true, false} {
		s := StartServer(t, aof)
		c := s.Client()
		if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		// appendfsync everysec: make sure the write is on disk before the crash.
		if aof {
			if err := c.Do(ctx, "BGREWRITEAOF").Err(); err != nil {
				t.Fatal(err)
			}
			for {
				info, err := c.Info(ctx, "persistence").Result()
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(info, "aof_rewrite_in_progress:0") && strings.Contains(info, "aof_rewrite_scheduled:0") {
					break
				}
			}
		}
		s.Crash()
		v, _ := c.Get(ctx, "k").Result()
		if aof && v != "v" || !aof && v != "" {
			t.Errorf("aof=%v: after a crash k = %q", aof, v)
		}
	}
}
