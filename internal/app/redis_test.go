package app

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/internal/redistest"
)

// TestPersistenceCheck runs the start-up check against private Redis
// servers set up as operators leave them: persisting, without persistence,
// with only RDB snapshots, with appendfsync no, and one that refuses
// CONFIG as managed Redis does. Only a Redis known not to persist is
// refused, and only in refuse mode; warn mode logs what is missing and
// what to set.
func TestPersistenceCheck(t *testing.T) {
	tests := []struct {
		name string
		aof  bool
		// setup changes the server (CONFIG SET, ACL) and returns the
		// client the check runs with.
		setup      func(t *testing.T, srv *redistest.Server) redis.UniversalClient
		mode       string
		wantErr    string // "" for none
		wantLog    string // "" for no log line
		wantLevel  string
		notWantLog string
	}{
		{name: "aof, warn", aof: true, mode: PersistenceWarn},
		{name: "aof, refuse", aof: true, mode: PersistenceRefuse},
		{name: "no persistence, warn", mode: PersistenceWarn, wantLevel: "ERROR",
			wantLog: "appendonly is no and save is empty"},
		{name: "no persistence, refuse", mode: PersistenceRefuse, wantErr: "appendonly is no and save is empty"},
		{name: "no persistence, off", mode: PersistenceOff},
		{name: "rdb only, warn", mode: PersistenceWarn, wantLevel: "ERROR", wantLog: "only RDB snapshots",
			setup: configSet("save", "3600 1")},
		{name: "appendfsync no, refuse", aof: true, mode: PersistenceRefuse, wantErr: "appendfsync is no",
			setup: configSet("appendfsync", "no")},
		{name: "config refused, refuse", mode: PersistenceRefuse, wantLevel: "WARN", wantLog: "can not be verified",
			setup: withoutConfig},
		{name: "config refused, warn", mode: PersistenceWarn, wantLevel: "WARN", wantLog: "can not be verified",
			setup: withoutConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := redistest.StartServer(t, tt.aof)
			var rdb redis.UniversalClient = srv.Client()
			if tt.setup != nil {
				rdb = tt.setup(t, srv)
			}
			var logs bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			err := checkPersistence(context.Background(), rdb, tt.mode, logger)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("check refused: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("check = %v; want a refusal naming %q", err, tt.wantErr)
			case err != nil && (strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "appendonly yes and appendfsync everysec")):
				t.Errorf("refusal %q: want one line saying what to set", err)
			}
			got := logs.String()
			if tt.wantLog == "" {
				if got != "" {
					t.Errorf("logged %q, want nothing", got)
				}
				return
			}
			if !strings.Contains(got, "level="+tt.wantLevel) || !strings.Contains(got, tt.wantLog) || !strings.Contains(got, "appendfsync everysec") {
				t.Errorf("logged %q; want a %s line naming %q and what to set", got, tt.wantLevel, tt.wantLog)
			}
		})
	}
}

// configSet returns a setup that sets one parameter on the private server.
func configSet(param, value string) func(t *testing.T, srv *redistest.Server) redis.UniversalClient {
	return func(t *testing.T, srv *redistest.Server) redis.UniversalClient {
		c := srv.Client()
		if err := c.ConfigSet(context.Background(), param, value).Err(); err != nil {
			t.Fatal(err)
		}
		return c
	}
}

// withoutConfig returns a client of an ACL user that may do anything but
// CONFIG, as managed Redis hands out.
func withoutConfig(t *testing.T, srv *redistest.Server) redis.UniversalClient {
	ctx := context.Background()
	if err := srv.Client().Do(ctx, "ACL", "SETUSER", "managed", "on", ">pw", "~*", "&*", "+@all", "-config").Err(); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "managed", Password: "pw"})
	t.Cleanup(func() { c.Close() })
	if err := c.ConfigGet(ctx, "appendonly").Err(); err == nil {
		t.Fatal("the ACL user may run CONFIG")
	}
	return c
}

// TestRedisLogsAreStructured routes go-redis's log lines through a JSON
// logger: a pool that cannot dial logs one JSON line, a warning from
// component go-redis.
func TestRedisLogsAreStructured(t *testing.T) {
	var buf bytes.Buffer
	l := redisLogger{slog.New(slog.NewJSONHandler(&buf, nil))}
	l.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts: %s", 5, "connection refused")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not one JSON line: %q", buf.String())
	}
	if line["level"] != "WARN" || line["component"] != "go-redis" ||
		line["msg"] != "connection pool: failed to dial after 5 attempts: connection refused" {
		t.Errorf("line = %v", line)
	}
}
