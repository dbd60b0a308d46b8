package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/providers"
)

// A provider is degraded while it refuses the deployment's own credential
// (providers.Result.Credential: the APNs provider token or certificate,
// FCM's OAuth2 token or service account): every device fails the same way
// until an operator acts (docs/ARCHITECTURE.md, "Provider health"). Each
// worker keeps its own view in memory, logs it at error level at most once
// a minute per provider with the reason, and reports it in Redis
// (Keys.ProviderHealth, expiring after healthReportTTL) so that every
// process's status and /readyz can say so. The report is only that: it
// never lets anything be sent, nor stops anything.

const (
	// healthLogEvery is how often a worker repeats the error line of a
	// provider that stays degraded.
	healthLogEvery = time.Minute
	// healthReportTTL is how long a degraded report lives in Redis after
	// the last refusal that renewed it.
	healthReportTTL = 2 * time.Minute
	// healthWriteEvery bounds how often one worker renews the report.
	healthWriteEvery = time.Second
)

// providerHealth is one worker's view of its providers' health.
type providerHealth struct {
	rdb     redis.UniversalClient
	keys    Keys
	worker  string
	now     func() time.Time
	logger  *slog.Logger
	metrics *Metrics // nil: none

	mu    sync.Mutex
	state map[providers.Platform]*platformHealth
}

// platformHealth is what a worker knows of one provider.
type platformHealth struct {
	degraded bool
	reason   string    // the code of the last credential refusal
	since    time.Time // the first refusal of this degraded spell
	refusals int64     // refusals since the last log line
	logged   time.Time // when the error line was last logged
	written  time.Time // when the Redis report was last renewed
}

func newProviderHealth(c *core, worker string) *providerHealth {
	return &providerHealth{rdb: c.rdb, keys: c.keys, worker: worker, now: c.now, logger: c.logger, metrics: c.metrics,
		state: map[providers.Platform]*platformHealth{providers.FCM: {}, providers.APNs: {}}}
}

// observe takes the results of one batch's calls: a credential refusal
// makes the provider degraded, a send it accepted makes it healthy again.
func (h *providerHealth) observe(ctx context.Context, platform providers.Platform, results []providers.Result) {
	refused, sent := "", false
	var n int64
	for _, r := range results {
		switch {
		case r.Credential:
			refused = r.Code()
			n++
		case r.Class == providers.Sent:
			sent = true
		}
	}
	if refused == "" && !sent {
		return
	}
	h.mu.Lock()
	ps := h.state[platform]
	if ps == nil {
		h.mu.Unlock()
		return
	}
	now := h.now()
	var logLine, write, clear bool
	var since time.Time
	var count int64
	switch {
	case refused != "":
		if !ps.degraded {
			ps.degraded, ps.since, ps.logged = true, now, time.Time{}
		}
		ps.reason = refused
		ps.refusals += n
		if ps.logged.IsZero() || now.Sub(ps.logged) >= healthLogEvery {
			logLine, ps.logged, count, ps.refusals = true, now, ps.refusals, 0
		}
		if now.Sub(ps.written) >= healthWriteEvery {
			write, ps.written = true, now
		}
		since = ps.since
	case ps.degraded:
		logLine, clear = true, true
		since = ps.since
		*ps = platformHealth{}
	}
	h.mu.Unlock()

	if h.metrics != nil {
		h.metrics.degraded.WithLabelValues(string(platform)).Set(map[bool]float64{true: 1}[refused != ""])
	}
	switch {
	case logLine && clear:
		h.logger.Info("provider accepts the credential again", "platform", platform,
			"degraded_for", now.Sub(since).Round(time.Second).String())
	case logLine:
		h.logger.Error(fmt.Sprintf("provider refuses the deployment's credential: %s; no device of %s can be sent to until it is fixed",
			refused, platform), "event", "provider_degraded", "platform", platform, "reason", refused,
			"refusals", count, "since", since.UTC().Format(time.RFC3339))
	}
	switch {
	case clear:
		if err := h.rdb.Del(ctx, h.keys.ProviderHealth(string(platform))).Err(); err != nil {
			h.logger.Warn("clear provider health report", "platform", platform, "err", err)
		}
	case write:
		err := h.rdb.HSet(ctx, h.keys.ProviderHealth(string(platform)), "reason", refused,
			"since", since.UnixMilli(), "at", now.UnixMilli(), "worker", h.worker).Err()
		if err == nil {
			err = h.rdb.PExpire(ctx, h.keys.ProviderHealth(string(platform)), healthReportTTL).Err()
		}
		if err != nil {
			h.logger.Warn("report provider health", "platform", platform, "err", err)
		}
	}
}

// degraded returns, from memory, the providers this worker finds
// degraded, with the reason.
func (h *providerHealth) degraded() map[api.Platform]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out map[api.Platform]string
	for p, ps := range h.state {
		if ps.degraded {
			if out == nil {
				out = map[api.Platform]string{}
			}
			out[api.Platform(p)] = ps.reason
		}
	}
	return out
}

// ProviderHealth is a provider some worker reported degraded.
type ProviderHealth struct {
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
	At     time.Time `json:"at"` // the latest refusal reported
	Worker string    `json:"worker"`
}

// readProviderHealth reads the degraded reports of every provider, as
// workers left them in Redis; a report in another shape is ignored.
func readProviderHealth(ctx context.Context, rdb redis.UniversalClient, keys Keys) (map[api.Platform]ProviderHealth, error) {
	platforms := []api.Platform{api.FCM, api.APNs}
	cmds := make([]*redis.MapStringStringCmd, len(platforms))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, pl := range platforms {
			cmds[i] = p.HGetAll(ctx, keys.ProviderHealth(string(pl)))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read provider health: %w", err)
	}
	var out map[api.Platform]ProviderHealth
	for i, pl := range platforms {
		f := cmds[i].Val()
		reason := f["reason"]
		if reason == "" || len(reason) > 64 {
			continue
		}
		ms := func(k string) time.Time {
			n, _ := strconv.ParseInt(f[k], 10, 64)
			if n <= 0 {
				return time.Time{}
			}
			return time.UnixMilli(n).UTC()
		}
		if out == nil {
			out = map[api.Platform]ProviderHealth{}
		}
		out[pl] = ProviderHealth{Reason: reason, Since: ms("since"), At: ms("at"), Worker: truncate(f["worker"], 128)}
	}
	return out, nil
}

// truncate cuts s to at most n bytes.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// ProviderHealth returns the providers some worker reported, in the last
// two minutes, as refusing the deployment's credential; nil when none.
func (s *Service) ProviderHealth(ctx context.Context) (map[api.Platform]ProviderHealth, error) {
	return readProviderHealth(ctx, s.rdb, s.keys)
}
