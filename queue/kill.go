package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/redis/go-redis/v9"
)

// Scope says what a piece of work belongs to, for matching kills.
type Scope struct {
	BroadcastID string
	KeyID       string
	Topic       string
}

// killState is an immutable snapshot of every active kill and revoked key.
type killState struct {
	version int64
	kills   map[string]api.Kill
	revoked map[string]bool
}

// with returns a copy of s (which may be nil) that also kills scope, at
// s's version.
func (s *killState) with(scope string) *killState {
	next := &killState{kills: map[string]api.Kill{scope: {Scope: scope, Reason: "announced"}}, revoked: map[string]bool{}}
	if s != nil {
		next.version = s.version
		maps.Copy(next.revoked, s.revoked)
		for k, v := range s.kills {
			next.kills[k] = v
		}
	}
	return next
}

// match returns the kill scope that stops work in sc, if any.
func (s *killState) match(sc Scope) (string, bool) {
	if s == nil {
		return "", false
	}
	if _, ok := s.kills[api.ScopeGlobal]; ok {
		return api.ScopeGlobal, true
	}
	if sc.KeyID != "" {
		ks := api.KeyScope(sc.KeyID)
		if _, ok := s.kills[ks]; ok || s.revoked[sc.KeyID] {
			return ks, true
		}
	}
	if sc.BroadcastID != "" {
		if bs := api.BroadcastScope(sc.BroadcastID); s.kills[bs].Scope != "" {
			return bs, true
		}
	}
	if sc.Topic != "" {
		if ts := api.TopicScope(sc.Topic); s.kills[ts].Scope != "" {
			return ts, true
		}
	}
	return "", false
}

// Kills is the durable kill state in Redis: active kills, revoked keys, a
// version bumped on every change and announced on a channel, and the
// acknowledgements workers give for the versions they applied.
type Kills struct {
	rdb  redis.UniversalClient
	keys Keys
	now  func() time.Time
}

// NewKills returns the kill state store on rdb.
func NewKills(rdb redis.UniversalClient, keys Keys, now func() time.Time) *Kills {
	return &Kills{rdb: rdb, keys: keys, now: now}
}

// changeScript applies one change to the kill state, bumps the version and
// announces it. KEYS[1] kills, KEYS[2] version, KEYS[3] revoked; ARGV[1]
// channel, ARGV[2] "kill" or "resume", ARGV[3] scope, ARGV[4] kill JSON,
// ARGV[5] key id to revoke ("" for none), ARGV[6] revocation JSON.
// Returns {changed, version}. Only a change bumps and announces the
// version: killing a scope twice, or resuming one that is not killed,
// wakes no worker. A kill's announcement names its scope (see
// parseKillEvent), so that workers can stop it before they have loaded the
// new state.
var changeScript = redis.NewScript(`
local changed = 0
if ARGV[2] == 'kill' then
  if redis.call('HSET', KEYS[1], ARGV[3], ARGV[4]) == 1 then changed = 1 end
  if ARGV[5] ~= '' and redis.call('HSET', KEYS[3], ARGV[5], ARGV[6]) == 1 then changed = 1 end
else
  changed = redis.call('HDEL', KEYS[1], ARGV[3])
end
local v
if changed == 1 then
  v = redis.call('INCR', KEYS[2])
  local event = tostring(v)
  if ARGV[2] == 'kill' then event = event .. ' kill ' .. ARGV[3] end
  redis.call('PUBLISH', ARGV[1], event)
else
  v = tonumber(redis.call('GET', KEYS[2]) or '0')
end
return {changed, v}
`)

func (k *Kills) change(ctx context.Context, op, scope string, kill api.Kill, revokeKey string) (bool, int64, error) {
	kj, err := json.Marshal(kill)
	if err != nil {
		return false, 0, fmt.Errorf("encode kill: %w", err)
	}
	res, err := changeScript.Run(ctx, k.rdb, []string{k.keys.Kills(), k.keys.KillVersion(), k.keys.Revoked()},
		k.keys.KillChannel(), op, scope, kj, revokeKey, kj).Int64Slice()
	if err != nil {
		return false, 0, fmt.Errorf("change kill state: %w", err)
	}
	if len(res) != 2 {
		return false, 0, fmt.Errorf("change kill state: unexpected reply %v", res)
	}
	return res[0] == 1, res[1], nil
}

// parseKillEvent reads an announcement on the kill channel: "<version>",
// or "<version> kill <scope>" for a kill. scope is empty when the event
// names none (or none that is valid); an event that does not start with a
// version is an error and names nothing.
func parseKillEvent(payload string) (version int64, scope string, err error) {
	v, rest, _ := strings.Cut(payload, " ")
	if version, err = strconv.ParseInt(v, 10, 64); err != nil {
		return 0, "", fmt.Errorf("kill event: %w", err)
	}
	if op, sc, ok := strings.Cut(rest, " "); ok && op == "kill" && api.ValidateScope(sc) == nil {
		scope = sc
	}
	return version, scope, nil
}

// Kill makes a scope's kill durable and announces it. It returns the new
// kill version, which workers acknowledge once applied.
func (k *Kills) Kill(ctx context.Context, scope, reason, by string) (int64, error) {
	_, v, err := k.change(ctx, "kill", scope, api.Kill{Scope: scope, Reason: reason, By: by, At: k.now().UTC()}, "")
	return v, err
}

// Resume lifts a kill. It reports whether the kill was active.
func (k *Kills) Resume(ctx context.Context, scope string) (bool, int64, error) {
	return k.change(ctx, "resume", scope, api.Kill{}, "")
}

// Revoke revokes a key and kills everything it submitted, in one change.
func (k *Kills) Revoke(ctx context.Context, keyID, reason, by string) (int64, error) {
	kill := api.Kill{Scope: api.KeyScope(keyID), Reason: reason, By: by, At: k.now().UTC()}
	_, v, err := k.change(ctx, "kill", kill.Scope, kill, keyID)
	return v, err
}

// Revoked reports whether a key is revoked. It implements
// signing.Revocations with one Redis round trip.
func (k *Kills) Revoked(ctx context.Context, keyID string) (bool, error) {
	ok, err := k.rdb.HExists(ctx, k.keys.Revoked(), keyID).Result()
	if err != nil {
		return false, fmt.Errorf("check revocation: %w", err)
	}
	return ok, nil
}

// Active returns the active kills, oldest first.
func (k *Kills) Active(ctx context.Context) ([]api.Kill, error) {
	st, err := k.load(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Kill, 0, len(st.kills))
	for _, kl := range st.kills {
		out = append(out, kl)
	}
	slices.SortFunc(out, func(a, b api.Kill) int { return a.At.Compare(b.At) })
	return out, nil
}

// IsActive reports whether a scope is killed right now.
func (k *Kills) IsActive(ctx context.Context, scope string) (bool, error) {
	ok, err := k.rdb.HExists(ctx, k.keys.Kills(), scope).Result()
	if err != nil {
		return false, fmt.Errorf("read kill state: %w", err)
	}
	return ok, nil
}

// version reads the current kill version.
func (k *Kills) version(ctx context.Context) (int64, error) {
	v, err := k.rdb.Get(ctx, k.keys.KillVersion()).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read kill version: %w", err)
	}
	return v, nil
}

// load reads a consistent snapshot of the kill state. Entries that do not
// parse are kept as kills of their scope: a corrupted entry must not
// silently lift a kill.
func (k *Kills) load(ctx context.Context) (*killState, error) {
	var ver *redis.StringCmd
	var kills, revoked *redis.MapStringStringCmd
	_, err := k.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		ver = p.Get(ctx, k.keys.KillVersion())
		kills = p.HGetAll(ctx, k.keys.Kills())
		revoked = p.HGetAll(ctx, k.keys.Revoked())
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read kill state: %w", err)
	}
	st := &killState{kills: map[string]api.Kill{}, revoked: map[string]bool{}}
	st.version, _ = strconv.ParseInt(ver.Val(), 10, 64)
	for scope, raw := range kills.Val() {
		var kl api.Kill
		if json.Unmarshal([]byte(raw), &kl) != nil {
			kl = api.Kill{Reason: "unreadable kill entry"}
		}
		kl.Scope = scope
		st.kills[scope] = kl
	}
	for id := range revoked.Val() {
		st.revoked[id] = true
	}
	return st, nil
}

// subscribe opens a subscription to the kill channel.
func (k *Kills) subscribe(ctx context.Context) *redis.PubSub {
	return k.rdb.Subscribe(ctx, k.keys.KillChannel())
}

// ack records and announces that worker has applied kill version.
func (k *Kills) ack(ctx context.Context, worker string, version int64) error {
	_, err := k.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, k.keys.WorkerAcks(), worker, version)
		p.Publish(ctx, k.keys.AckChannel(), worker+" "+strconv.FormatInt(version, 10))
		return nil
	})
	if err != nil {
		return fmt.Errorf("acknowledge kill version %d: %w", version, err)
	}
	return nil
}

// heartbeat records that worker is live, and forgets workers gone for a
// minute.
func (k *Kills) heartbeat(ctx context.Context, worker string) error {
	now := k.now()
	_, err := k.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, k.keys.Workers(), redis.Z{Score: float64(now.UnixMilli()), Member: worker})
		p.ZRemRangeByScore(ctx, k.keys.Workers(), "-inf", strconv.FormatInt(now.Add(-time.Minute).UnixMilli(), 10))
		return nil
	})
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil
}

// leave removes worker from the live set and its acknowledgements.
func (k *Kills) leave(ctx context.Context, worker string) error {
	_, err := k.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, k.keys.Workers(), worker)
		p.HDel(ctx, k.keys.WorkerAcks(), worker)
		return nil
	})
	if err != nil {
		return fmt.Errorf("leave the live set: %w", err)
	}
	return nil
}

// liveWindow is how recent a heartbeat must be for a worker to count as
// live.
const liveWindow = 3 * time.Second

// ackSubscription listens for worker acknowledgements, so that a wait ends
// as soon as the last one arrives rather than at the next poll.
type ackSubscription struct {
	ps *redis.PubSub
}

// subscribeAcks opens an acknowledgement subscription.
func (k *Kills) subscribeAcks(ctx context.Context) (*ackSubscription, error) {
	ps := k.rdb.Subscribe(ctx, k.keys.AckChannel())
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return nil, fmt.Errorf("subscribe to acknowledgements: %w", err)
	}
	return &ackSubscription{ps: ps}, nil
}

// waitAcks waits until every live worker has applied version, or timeout;
// on timeout the report names the workers that did not answer. sub only
// hastens the wait; it may be nil.
func (k *Kills) waitAcks(ctx context.Context, sub *ackSubscription, version int64, timeout time.Duration) (api.AckReport, error) {
	start := k.now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTicker(25 * time.Millisecond)
	defer poll.Stop()
	var msgs <-chan *redis.Message // without a subscription, only the poll wakes the loop
	if sub != nil {
		msgs = sub.ps.Channel(redis.WithChannelSize(256))
	}
	for {
		rep, err := k.ackReport(ctx, version)
		rep.WaitedMS = float64(k.now().Sub(start).Microseconds()) / 1000
		if err != nil || rep.Acknowledged {
			return rep, err
		}
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-deadline.C:
			return rep, nil
		case <-msgs:
		case <-poll.C:
		}
	}
}

// ackReport compares live workers' acknowledged versions with version.
func (k *Kills) ackReport(ctx context.Context, version int64) (api.AckReport, error) {
	rep := api.AckReport{Version: version}
	since := strconv.FormatInt(k.now().Add(-liveWindow).UnixMilli(), 10)
	var live *redis.StringSliceCmd
	var acks *redis.MapStringStringCmd
	_, err := k.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		live = p.ZRangeByScore(ctx, k.keys.Workers(), &redis.ZRangeBy{Min: since, Max: "+inf"})
		acks = p.HGetAll(ctx, k.keys.WorkerAcks())
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("read acknowledgements: %w", err)
	}
	rep.Workers = len(live.Val())
	for _, w := range live.Val() {
		if v, _ := strconv.ParseInt(acks.Val()[w], 10, 64); v < version {
			rep.Missing = append(rep.Missing, w)
		}
	}
	rep.Acknowledged = len(rep.Missing) == 0
	return rep, nil
}

// Close closes the subscription.
func (s *ackSubscription) Close() error { return s.ps.Close() }
