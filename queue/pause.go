package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/providers"
)

// A provider pause stops every worker's calls to a provider that refused
// provider-wide (providers.Result.ProviderWide: FCM 429 and 503, APNs
// 503) until its Retry-After has passed (docs/ARCHITECTURE.md, "Provider
// pauses"). Each worker holds the pause end per platform in memory, which
// the gate of every call reads, so a batch in flight stops at the first
// refusal this worker sees; the end is shared through Redis
// (Keys.ProviderPause, only ever extended), which every batch reads before
// it sends. A batch that finds its provider paused, and the devices a
// pause stopped inside a batch, are deferred untried to the pause's end:
// their claims stay, no attempt is counted.

// pauses is one worker's view of the provider pauses.
type pauses struct {
	rdb  redis.UniversalClient
	keys Keys
	now  func() time.Time
	// def is the pause of a provider-wide refusal without Retry-After;
	// max caps every pause, whatever the provider or Redis says.
	def, max time.Duration
	logger   *slog.Logger
	metrics  *Metrics
	// until is the pause end per platform in Unix milliseconds; the map is
	// fixed at construction.
	until map[providers.Platform]*atomic.Int64
}

func newPauses(c *core) *pauses {
	return &pauses{
		rdb: c.rdb, keys: c.keys, now: c.now,
		def: c.policy.ProviderPause, max: c.policy.ProviderPauseMax,
		logger: c.logger, metrics: c.metrics,
		until: map[providers.Platform]*atomic.Int64{providers.FCM: {}, providers.APNs: {}},
	}
}

// pausedUntil reports, from memory, whether platform is paused and until
// when.
func (p *pauses) pausedUntil(platform providers.Platform) (time.Time, bool) {
	u := p.until[platform]
	if u == nil {
		return time.Time{}, false
	}
	end := u.Load()
	if end <= p.now().UnixMilli() {
		return time.Time{}, false
	}
	return time.UnixMilli(end), true
}

// extend moves platform's pause end to end if that is later, and reports
// whether it did and whether a pause was on before.
func (p *pauses) extend(platform providers.Platform, end time.Time) (extended, wasOn bool) {
	u := p.until[platform]
	if u == nil {
		return false, false
	}
	ms := end.UnixMilli()
	for {
		cur := u.Load()
		if ms <= cur {
			return false, true
		}
		if u.CompareAndSwap(cur, ms) {
			if p.metrics != nil {
				p.metrics.pausedUntil.WithLabelValues(string(platform)).Set(float64(ms) / 1000)
			}
			return true, cur > p.now().UnixMilli()
		}
	}
}

// refused pauses platform after a provider-wide refusal that asked for
// retryAfter (zero: none): for retryAfter, or the default, capped.
func (p *pauses) refused(platform providers.Platform, r providers.Result) {
	d := r.RetryAfter
	if d <= 0 {
		d = p.def
	}
	d = min(d, p.max)
	end := p.now().Add(d)
	if extended, wasOn := p.extend(platform, end); extended && !wasOn {
		if p.metrics != nil {
			p.metrics.pauses.WithLabelValues(string(platform)).Inc()
		}
		p.logger.Warn("provider refused provider-wide; pausing every call to it",
			"platform", string(platform), "reason", r.Reason, "retry_after", r.RetryAfter, "until", end.UTC())
	}
}

// pauseScript extends a provider's pause. KEYS[1] the pause key; ARGV[1]
// the pause end in Unix ms, ARGV[2] its expiry in ms. A later end already
// there is kept; anything the key holds that is not a number is
// overwritten. Returns 1 when it extended the pause, else 0.
var pauseScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '')
if cur and cur >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

// publish shares platform's pause end with every worker.
func (p *pauses) publish(ctx context.Context, platform providers.Platform) error {
	end, on := p.pausedUntil(platform)
	if !on {
		return nil
	}
	ttl := max(end.Sub(p.now()).Milliseconds(), 1)
	if err := pauseScript.Run(ctx, p.rdb, []string{p.keys.ProviderPause(string(platform))}, end.UnixMilli(), ttl).Err(); err != nil {
		return fmt.Errorf("share provider pause: %w", err)
	}
	return nil
}

// sync learns platform's pause from Redis, where other workers share
// theirs, and reports whether platform is paused and until when. A value
// that is not a time, or is further off than the longest pause, is not
// trusted beyond that longest pause.
func (p *pauses) sync(ctx context.Context, platform providers.Platform) (time.Time, bool, error) {
	if p.until[platform] == nil {
		return time.Time{}, false, nil
	}
	v, err := p.rdb.Get(ctx, p.keys.ProviderPause(string(platform))).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return time.Time{}, false, fmt.Errorf("read provider pause: %w", err)
	}
	if ms, perr := strconv.ParseInt(v, 10, 64); err == nil && perr == nil {
		now := p.now()
		if end := time.UnixMilli(min(ms, now.Add(p.max).UnixMilli())); end.After(now) {
			p.extend(platform, end)
		}
	}
	end, on := p.pausedUntil(platform)
	return end, on, nil
}

// gate returns the gate of a batch's calls to platform under flight f.
func (p *pauses) gate(f *flight, platform providers.Platform) *pauseGate {
	return &pauseGate{f: f, p: p, platform: platform}
}

// pauseGate admits a batch's provider calls: the flight's checks (kills,
// a fresh control log view) and the provider's pause, which it extends on
// every provider-wide refusal it observes.
type pauseGate struct {
	f        *flight
	p        *pauses
	platform providers.Platform
	// stopped is set once a call was refused because the provider is
	// paused; refused once a provider-wide refusal was observed.
	stopped, refused atomic.Bool
}

var _ providers.Observer = (*pauseGate)(nil)

// Enter admits a call unless the provider is paused or the flight refuses.
func (g *pauseGate) Enter() bool {
	if _, on := g.p.pausedUntil(g.platform); on {
		g.stopped.Store(true)
		return false
	}
	return g.f.Enter()
}

// Commit lets a request's body leave unless the provider is paused or the
// flight refuses.
func (g *pauseGate) Commit() bool {
	if _, on := g.p.pausedUntil(g.platform); on {
		g.stopped.Store(true)
		return false
	}
	return g.f.Commit()
}

// Leave is the flight's.
func (g *pauseGate) Leave(commits int) { g.f.Leave(commits) }

// Observe pauses the provider on a provider-wide refusal.
func (g *pauseGate) Observe(r providers.Result) {
	if r.Class == providers.Retryable && r.ProviderWide {
		g.p.refused(g.platform, r)
		g.refused.Store(true)
	}
}

// afterSend finishes a batch's calls under g: it shares a pause the batch
// started, and sets the end the batch's paused devices wait for.
func (w *Worker) afterSend(ctx context.Context, g *pauseGate, out *outcomes) {
	if g.refused.Load() {
		if err := w.pauses.publish(ctx, g.platform); err != nil {
			// This worker's own pause holds; others pause on their first
			// refusal instead of before it.
			w.logger.Warn("provider pause not shared", "platform", string(g.platform), "err", err)
		}
	}
	if len(out.paused) > 0 {
		until, on := w.pauses.pausedUntil(g.platform)
		if !on {
			until = w.now() // the pause ran out while the batch finished
		}
		out.pauseUntil = until
	}
}

// pauseNoteScript notes on a broadcast's record that devices of a batch
// were deferred by a provider pause: the pause end per platform, kept at
// its latest, and the count of deferrals; the timeline gets a
// provider_paused event once per pause (when the broadcast's previous
// pause of the platform had ended). KEYS[1] record, KEYS[2] timeline;
// ARGV[1] the record field of the pause end, ARGV[2] pause end in ms,
// ARGV[3] now in ms, ARGV[4] devices deferred, ARGV[5] event detail.
var pauseNoteScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local prev = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '') or 0
local want, now = tonumber(ARGV[2]), tonumber(ARGV[3])
if want > prev then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
redis.call('HINCRBY', KEYS[1], 'provider_paused', ARGV[4])
if prev > now then return 0 end
redis.call('RPUSH', KEYS[2], cjson.encode({at = now, event = 'provider_paused', detail = ARGV[5]}))
return 1
`)

// pausedField is the record field holding the end of the latest pause of
// platform that deferred devices of the broadcast, in Unix ms.
func pausedField(platform api.Platform) string { return "paused_until_" + string(platform) }

// notePaused counts a batch's deferrals by a provider pause on its
// broadcast's record and in the metrics.
func (w *Worker) notePaused(ctx context.Context, id string, platform providers.Platform, out *outcomes) error {
	if len(out.paused) == 0 {
		return nil
	}
	if w.metrics != nil {
		w.metrics.pauseDeferrals.WithLabelValues(string(platform)).Add(float64(len(out.paused)))
	}
	until, now := out.pauseUntil, w.now()
	detail := fmt.Sprintf("%s until %s", platform, until.UTC().Format(time.RFC3339Nano))
	err := pauseNoteScript.Run(ctx, w.rdb, []string{w.keys.Broadcast(id), w.keys.Timeline(id)},
		pausedField(platform), until.UnixMilli(), now.UnixMilli(), len(out.paused), detail).Err()
	if err != nil {
		return fmt.Errorf("note provider pause: %w", err)
	}
	return nil
}

// showPauses keeps in a broadcast's status only the pauses that are still
// on, with their current end: the later of the record's and the shared
// pause (capped at the longest pause), for a broadcast (or its recall)
// that has devices left to send.
func (c *core) showPauses(ctx context.Context, st *api.Status) error {
	if len(st.PausedUntil) == 0 {
		return nil
	}
	now := c.now()
	if st.Finished() {
		st.PausedUntil = nil
		return nil
	}
	longest := now.Add(c.policy.ProviderPauseMax)
	for p, end := range st.PausedUntil {
		if end.After(longest) {
			end = longest.UTC()
		}
		v, err := c.rdb.Get(ctx, c.keys.ProviderPause(string(p))).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("read provider pause: %w", err)
		}
		if ms, perr := strconv.ParseInt(v, 10, 64); err == nil && perr == nil {
			end = later(end, time.UnixMilli(min(ms, longest.UnixMilli())).UTC())
		}
		if end.After(now) {
			st.PausedUntil[p] = end
		} else {
			delete(st.PausedUntil, p)
		}
	}
	if len(st.PausedUntil) == 0 {
		st.PausedUntil = nil
	}
	return nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
