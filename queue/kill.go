package queue

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/redis/go-redis/v9"
)

// Scope says what a piece of work belongs to, for matching kills.
type Scope struct {
	BroadcastID string
	KeyID       string
	Topic       string
	// RecallBy, set for the sends of a recall, is the admin key that
	// signed it: kills do not stop a recall, revoking that key does.
	RecallBy string
}

// killState is an immutable snapshot of every active kill and revoked key:
// the control log's fold at a size (version), plus the stops workers
// were announced and have not seen integrated yet.
type killState struct {
	version int64
	kills   map[string]api.Kill
	revoked map[string]bool
}

// with returns a copy of s (which may be nil) that also applies an
// announced stop, at s's version.
func (s *killState) with(a announcedStop) *killState {
	next := &killState{kills: map[string]api.Kill{a.scope: {Scope: a.scope, Reason: "announced"}}, revoked: map[string]bool{}}
	if a.revokes != "" {
		next.revoked[a.revokes] = true
	}
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
	if sc.RecallBy != "" {
		if s.revoked[sc.RecallBy] {
			return api.KeyScope(sc.RecallBy), true
		}
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

// workerSet is the live set of workers in Redis: until when each one's
// view of the control log is fresh, and the log sizes they have applied,
// which a kill waits for, and the tasks each one runs, which a reaper
// resumes when it dies (queue/reaper.go). For kills it reports; it
// controls nothing: a worker stops on the log it verified whether or not
// anyone reads its acknowledgement.
type workerSet struct {
	rdb  redis.UniversalClient
	keys Keys
	now  func() time.Time
}

// clockMargin is how far apart the clocks of a worker and an API process
// may be for the live set: a worker counts as live until clockMargin
// after the moment its view goes stale, by which it has stopped itself.
const clockMargin = time.Second

// ack records and announces that worker has applied the control log up
// to size version.
func (k *workerSet) ack(ctx context.Context, worker string, version int64) error {
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

// leave removes worker from the live set, its acknowledgements and its
// in-flight record (asynq has put back what the worker did not finish).
func (k *workerSet) leave(ctx context.Context, worker string) error {
	_, err := k.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, k.keys.Workers(), worker)
		p.HDel(ctx, k.keys.WorkerAcks(), worker)
		p.Del(ctx, k.keys.Inflight(worker))
		return nil
	})
	if err != nil {
		return fmt.Errorf("leave the live set: %w", err)
	}
	return nil
}

// ackSubscription listens for worker acknowledgements, so that a wait ends
// as soon as the last one arrives rather than at the next poll.
type ackSubscription struct {
	ps *redis.PubSub
}

// subscribeAcks opens an acknowledgement subscription.
func (k *workerSet) subscribeAcks(ctx context.Context) (*ackSubscription, error) {
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
func (k *workerSet) waitAcks(ctx context.Context, sub *ackSubscription, version int64, timeout time.Duration) (api.AckReport, error) {
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
func (k *workerSet) ackReport(ctx context.Context, version int64) (api.AckReport, error) {
	rep := api.AckReport{Version: version}
	since := strconv.FormatInt(k.now().Add(-clockMargin).UnixMilli(), 10)
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
