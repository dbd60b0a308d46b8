// Package redistest hands each test a private, empty database on the
// throwaway redis-server that ./scripts/test starts.
//
// The server's address comes from the PUSHGATE_TEST_REDIS environment
// variable. When it is unset, a test that needs Redis is skipped with a
// message saying how to run it, or fails when CI is set, so that CI can never
// pass by skipping.
//
// Databases are leased, not shared: a lease is a SET NX key in database 0
// (redistest:lease:<n>) held for the life of the test, so tests in different
// packages, which go test runs in parallel processes, never see each other's
// keys.
package redistest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// EnvAddr names the environment variable that holds the host:port of the
// test Redis server.
const EnvAddr = "PUSHGATE_TEST_REDIS"

// leaseTTL bounds how long a crashed test can hold a database.
const leaseTTL = 15 * time.Minute

// Addr returns the test Redis address, or skips (fails under CI) the test
// when none is configured.
func Addr(tb testing.TB) string {
	tb.Helper()
	addr := os.Getenv(EnvAddr)
	if addr != "" {
		return addr
	}
	msg := EnvAddr + " is not set: run the suite with ./scripts/test, which starts a throwaway redis-server"
	if os.Getenv("CI") != "" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

// Options leases an empty database for the test and returns client options
// for it. The database is flushed when leased and released at cleanup.
func Options(tb testing.TB) *redis.Options {
	tb.Helper()
	addr := Addr(tb)
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: addr, DB: 0})
	tb.Cleanup(func() { _ = admin.Close() })

	n, err := databases(ctx, admin)
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	owner := fmt.Sprintf("%d:%s", os.Getpid(), tb.Name())
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		for db := 1; db < n; db++ {
			lease := "redistest:lease:" + strconv.Itoa(db)
			ok, err := admin.SetNX(ctx, lease, owner, leaseTTL).Result()
			if err != nil {
				tb.Fatalf("redistest: lease database: %v", err)
			}
			if !ok {
				continue
			}
			opts := &redis.Options{Addr: addr, DB: db}
			c := redis.NewClient(opts)
			err = c.FlushDB(ctx).Err()
			_ = c.Close()
			if err != nil {
				tb.Fatalf("redistest: flush database %d: %v", db, err)
			}
			tb.Cleanup(func() {
				rel := redis.NewClient(&redis.Options{Addr: addr, DB: 0})
				defer rel.Close()
				if v, _ := rel.Get(context.Background(), lease).Result(); v == owner {
					rel.Del(context.Background(), lease)
				}
			})
			return opts
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.Fatalf("redistest: no free database on %s after a minute", addr)
	return nil
}

// Client returns a client on a freshly leased database, closed at cleanup.
func Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(Options(tb))
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// URL returns a redis:// URL for a freshly leased database, for code and
// child processes configured by URL.
func URL(tb testing.TB) string {
	tb.Helper()
	o := Options(tb)
	return fmt.Sprintf("redis://%s/%d", o.Addr, o.DB)
}

func databases(ctx context.Context, c *redis.Client) (int, error) {
	v, err := c.ConfigGet(ctx, "databases").Result()
	if err != nil {
		return 0, fmt.Errorf("read databases setting: %w", err)
	}
	n, err := strconv.Atoi(v["databases"])
	if err != nil || n < 2 {
		return 0, fmt.Errorf("server has %q databases; need at least 2", v["databases"])
	}
	return n, nil
}
