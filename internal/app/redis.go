package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/logging"

	"github.com/pushgate/pushgate/queue"
)

// The modes of redis.persistence_check.
const (
	// PersistenceWarn logs loudly what a Redis lacks to persist.
	PersistenceWarn = "warn"
	// PersistenceRefuse refuses to start on a Redis known not to persist.
	// A Redis that refuses CONFIG GET (as managed ones often do) is only
	// warned about: nothing is known to be missing.
	PersistenceRefuse = "refuse"
	// PersistenceOff skips the check, for an in-memory Redis on purpose.
	PersistenceOff = "off"
)

// Persistence is what a Redis says of its persistence (CONFIG GET).
type Persistence struct {
	AppendOnly, AppendFsync, Save string
	// Err, when set, is why it could not be read: most often a managed
	// Redis that refuses CONFIG.
	Err error
}

// ReadPersistence asks Redis for its persistence settings, one CONFIG
// GET each (Redis 6.2 takes one parameter per call).
func ReadPersistence(ctx context.Context, rdb redis.UniversalClient) *Persistence {
	p := &Persistence{}
	for _, f := range []struct {
		name string
		into *string
	}{{"appendonly", &p.AppendOnly}, {"appendfsync", &p.AppendFsync}, {"save", &p.Save}} {
		m, err := rdb.ConfigGet(ctx, f.name).Result()
		if err != nil {
			p.Err = fmt.Errorf("CONFIG GET %s: %w", f.name, err)
			return p
		}
		v, ok := m[f.name]
		if !ok {
			p.Err = fmt.Errorf("CONFIG GET %s answered nothing", f.name)
			return p
		}
		*f.into = v
	}
	return p
}

// Missing says what the Redis lacks to keep pushgate's data across a
// restart; empty when it persists, or when its settings could not be
// read.
func (p *Persistence) Missing() []string {
	if p.Err != nil {
		return nil
	}
	var out []string
	switch {
	case p.AppendOnly != "yes" && strings.TrimSpace(p.Save) == "":
		out = append(out, fmt.Sprintf("appendonly is %s and save is empty: nothing is persisted, a restart loses everything", p.AppendOnly))
	case p.AppendOnly != "yes":
		out = append(out, fmt.Sprintf("appendonly is %s: only RDB snapshots (save %q), so a restart loses everything written since the last one", p.AppendOnly, p.Save))
	case p.AppendFsync != "everysec" && p.AppendFsync != "always":
		out = append(out, fmt.Sprintf("appendfsync is %s: a crash of the host loses what the OS had not yet written", p.AppendFsync))
	}
	return out
}

// persistenceAdvice is what an operator sets.
const persistenceAdvice = "set appendonly yes and appendfsync everysec (in redis.conf, or CONFIG SET then CONFIG REWRITE)"

// checkPersistence is the start-up check of redis.persistence_check: it
// logs, or in refuse mode returns, what the Redis lacks.
func checkPersistence(ctx context.Context, rdb redis.UniversalClient, mode string, logger *slog.Logger) error {
	if mode == PersistenceOff {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	p := ReadPersistence(ctx, rdb)
	if p.Err != nil {
		logger.Warn("Redis persistence can not be verified (managed Redis often refuses CONFIG): make sure it runs with appendonly yes and appendfsync everysec, or a restart loses queued broadcasts, ledgers, the device registry and the control log",
			"event", "redis_persistence_unverified", "err", p.Err)
		return nil
	}
	missing := p.Missing()
	if len(missing) == 0 {
		return nil
	}
	if mode == PersistenceRefuse {
		return fmt.Errorf("redis persistence: %s: %s, or set redis.persistence_check to warn to start anyway", strings.Join(missing, "; "), persistenceAdvice)
	}
	logger.Error("Redis does not persist: a restart loses queued broadcasts, ledgers, the device registry and the control log; "+persistenceAdvice,
		"event", "redis_not_persistent", "missing", strings.Join(missing, "; "),
		"appendonly", p.AppendOnly, "appendfsync", p.AppendFsync, "save", p.Save)
	return nil
}

// openRedis returns a client of the configured Redis once it answers.
func openRedis(ctx context.Context, cfg *Config) (*redis.Client, error) {
	opts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, configErrorf("config: redis_url: %w", err)
	}
	rdb := redis.NewClient(opts)
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pingCtx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis %s: %w", RedactURL(cfg.RedisURL), err)
	}
	return rdb, nil
}

// RedisReport is what pushgate redis status shows: the deployment
// marker, the id remembered in control.state_dir, and persistence.
type RedisReport struct {
	// Key is the marker's key.
	Key string
	// Marker is the marker in Redis; nil when missing or unreadable
	// (MarkerErr).
	Marker    *queue.Marker
	MarkerErr error
	// Remembered is the id remembered in StateDir; "" when none.
	Remembered  string
	StateDir    string
	Persistence *Persistence
}

// Lost reports whether a process that remembers Remembered finds that
// Redis lost data, and why; a process that remembers nothing adopts the
// marker, or creates one.
func (r *RedisReport) Lost() (bool, string) {
	switch {
	case r.Remembered == "":
		return false, "no deployment is remembered here: a process with this state directory adopts the marker (or creates one on an empty Redis)"
	case r.MarkerErr != nil:
		return true, "the marker is unreadable"
	case r.Marker == nil:
		return true, "the marker is missing"
	case r.Marker.ID == r.Remembered:
		return false, "the marker is the remembered deployment: Redis kept its data"
	case slices.Contains(r.Marker.Replaces, r.Remembered):
		return false, "the marker replaces the remembered deployment: processes adopt it"
	}
	return true, "the marker is another deployment's"
}

// RedisStatus reads the deployment marker, the remembered deployment id
// and the persistence settings of the configured Redis.
func RedisStatus(ctx context.Context, cfg *Config) (*RedisReport, error) {
	remembered, err := queue.RememberedDeployment(cfg.Control.StateDir)
	if err != nil {
		return nil, err
	}
	rdb, err := openRedis(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer rdb.Close()
	keys := queue.NewKeys(cfg.KeyPrefix)
	r := &RedisReport{Key: keys.Deployment(), Remembered: remembered, StateDir: cfg.Control.StateDir}
	r.Marker, r.MarkerErr = queue.ReadMarker(ctx, rdb, keys)
	if r.MarkerErr != nil && !errors.Is(r.MarkerErr, queue.ErrMarkerUnreadable) {
		return nil, r.MarkerErr
	}
	r.Persistence = ReadPersistence(ctx, rdb)
	return r, nil
}

// RestoreMarker puts a deployment id back as the marker (see
// queue.RestoreMarker): id, or the one remembered in control.state_dir.
// It reports whether it wrote anything.
func RestoreMarker(ctx context.Context, cfg *Config, id string) (*queue.Marker, bool, error) {
	if id == "" {
		var err error
		if id, err = queue.RememberedDeployment(cfg.Control.StateDir); err != nil {
			return nil, false, err
		}
		if id == "" {
			return nil, false, configErrorf("no deployment id: give --id (the \"expected\" id of the processes' redis_data_lost log line), or run this with their control.state_dir")
		}
	}
	rdb, err := openRedis(ctx, cfg)
	if err != nil {
		return nil, false, err
	}
	defer rdb.Close()
	return queue.RestoreMarker(ctx, rdb, queue.NewKeys(cfg.KeyPrefix), id, time.Now())
}

// AcceptLoss writes the marker of a new deployment that replaces
// replaces (or the id remembered in control.state_dir) and the marker
// Redis holds (see queue.AcceptLoss).
func AcceptLoss(ctx context.Context, cfg *Config, replaces string) (*queue.Marker, error) {
	if replaces == "" {
		var err error
		if replaces, err = queue.RememberedDeployment(cfg.Control.StateDir); err != nil {
			return nil, err
		}
	}
	rdb, err := openRedis(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer rdb.Close()
	return queue.AcceptLoss(ctx, rdb, queue.NewKeys(cfg.KeyPrefix), replaces, time.Now())
}

// RouteRedisLogs sends go-redis's own log lines (a pool that cannot dial, a
// failed reconnect) through logger, at warning level with
// component=go-redis, so they are structured like the rest in JSON mode.
// go-redis keeps one logger per process: call it once, from the process's
// entry point. The returned function gives go-redis back its default
// logger (standard error), for a caller whose logger ends before the
// process does (the demo's log file, closed on exit).
func RouteRedisLogs(logger *slog.Logger) (restore func()) {
	redis.SetLogger(redisLogger{logger})
	return logging.Enable
}

// redisLogger adapts a *slog.Logger to go-redis's logging interface.
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.l.WarnContext(ctx, strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: "), "component", "go-redis")
}
