package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/signing"
)

// Policy is the set of limits and defaults of delivery.
type Policy struct {
	// MaxTTL caps a broadcast's TTL.
	MaxTTL time.Duration
	// EnvelopeMaxAge is how old a stored envelope a worker still accepts.
	EnvelopeMaxAge time.Duration
	// ProviderRates limit sends per platform across every process.
	ProviderRates map[providers.Platform]signing.Rate
	// DeviceLimit is how many pushes one device may get per DeviceWindow;
	// zero disables the limit. Recalls do not count.
	DeviceLimit  int
	DeviceWindow time.Duration
	// RetryFor bounds how long a device whose sends fail transiently is
	// tried again, from the moment the broadcast (or the recall) was
	// signed. A broadcast's own expiry, its signed creation plus its TTL,
	// ends its retries sooner: a retry is scheduled only when it is due
	// before both, and a device that cannot be retried in time counts as
	// expired. The default is as long as MaxTTL, so the TTL decides.
	RetryFor time.Duration
	// RetryBase and RetryMax shape the exponential backoff of retries:
	// RetryBase doubling per attempt, capped at RetryMax, less up to 20%
	// of jitter (see backoff in queue/deliver.go).
	RetryBase, RetryMax time.Duration
	// ProviderPause is how long every worker stops calling a provider that
	// refused provider-wide without a Retry-After; ProviderPauseMax caps
	// every pause, whatever Retry-After asks.
	ProviderPause, ProviderPauseMax time.Duration
	// IdempotencyTTL is how long an idempotency key is remembered.
	IdempotencyTTL time.Duration
	// KillWait bounds how long a kill with wait=true waits for workers. A
	// worker that stopped answering counts until it must have stopped
	// itself (control.max_staleness and a second after its last
	// heartbeat), so KillWait should be longer than that.
	KillWait time.Duration

	// ApprovalsRequired is M: how many approvals, from approve keys of
	// distinct public keys and owners other than the submitter's, a
	// broadcast over its approval threshold (or to all) needs.
	ApprovalsRequired int
	// ApprovalAbove is the audience, in devices, above which a broadcast
	// needs approvals when its key sets no approval_above; zero means only
	// audiences of all devices do.
	ApprovalAbove int
	// ApprovalWindow is how long a broadcast or an admin action waits for
	// its approvals before it expires.
	ApprovalWindow time.Duration
	// AdminApprovals is how many approvals, from admin or approve keys of
	// other owners, an admin action that puts text on phones or releases a
	// brake needs: a recall with custom text, a resume of a global or key
	// kill, the revocation of an admin key.
	AdminApprovals int
	// FailureWarnShare is the share of a broadcast's devices (0 to 1)
	// that, failed or expired, makes its summary line a warning; zero
	// means 5%, a negative value never warns.
	FailureWarnShare float64
	// Retraction is the standard retraction: a recall that replaces a
	// broadcast with exactly this title and body needs no approval.
	RetractionTitle, RetractionBody string
}

// DefaultPolicy returns the documented defaults.
func DefaultPolicy() Policy {
	return Policy{
		MaxTTL:         24 * time.Hour,
		EnvelopeMaxAge: 24 * time.Hour,
		ProviderRates: map[providers.Platform]signing.Rate{
			providers.FCM:  {Count: 600000, Per: time.Minute},
			providers.APNs: {Count: 600000, Per: time.Minute},
		},
		DeviceLimit:      10,
		DeviceWindow:     time.Hour,
		RetryFor:         24 * time.Hour,
		RetryBase:        time.Second,
		RetryMax:         5 * time.Minute,
		ProviderPause:    10 * time.Second,
		ProviderPauseMax: 5 * time.Minute,
		IdempotencyTTL:   24 * time.Hour,
		KillWait:         5 * time.Second,
		FailureWarnShare: defaultFailureWarnShare,

		ApprovalsRequired: 2,
		ApprovalWindow:    30 * time.Minute,
		AdminApprovals:    1,
		RetractionTitle:   "Koreksi",
		RetractionBody:    "Pesan sebelumnya dibatalkan.",
	}
}

// Config is what the API service and the workers are built from.
type Config struct {
	Redis redis.UniversalClient
	Keys  Keys
	// Verifier checks requests at ingress and stored envelopes again; its
	// Revocations should be Control.
	Verifier *signing.Verifier
	// Control is the process's view of the control log, shared by its API
	// service and its workers, and started by its owner.
	Control *Control
	Policy  Policy
	Logger  *slog.Logger
	Metrics *Metrics
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	// Deployment, when set, follows the deployment marker (started by its
	// owner): while it finds that Redis lost data, the service refuses new
	// work and workers put off every task.
	Deployment *Deployment

	// AppSigning signs pushes for the app; its zero value sends them
	// unsigned.
	AppSigning AppSigning
}

// core is what the service and the worker share.
type core struct {
	rdb      redis.UniversalClient
	keys     Keys
	policy   Policy
	logger   *slog.Logger
	metrics  *Metrics
	now      func() time.Time
	store    *store
	registry *Registry
	control  *Control
	workers  *workerSet
	verifier *signing.Verifier
	enqueuer *asynq.Client
	// verify re-verifies stored envelopes, remembering verdicts.
	verify *envelopeVerifier
	limits *limiter

	// deployment may be nil: no marker is followed.
	deployment *Deployment
	appSigning AppSigning
}

func newCore(cfg Config) (*core, error) {
	if cfg.Redis == nil || cfg.Verifier == nil || cfg.Control == nil {
		return nil, errors.New("queue: Redis, Verifier and Control are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Policy.FailureWarnShare == 0 {
		cfg.Policy.FailureWarnShare = defaultFailureWarnShare
	}
	if cfg.Keys == (Keys{}) {
		cfg.Keys = NewKeys("")
	}
	p := cfg.Policy
	if p.MaxTTL <= 0 || p.EnvelopeMaxAge <= 0 || p.RetryFor <= 0 || p.RetryBase <= 0 || p.RetryMax < p.RetryBase ||
		p.ProviderPause <= 0 || p.ProviderPauseMax < p.ProviderPause ||
		p.IdempotencyTTL <= 0 || p.KillWait <= 0 || p.ApprovalsRequired <= 0 || p.ApprovalAbove < 0 ||
		p.ApprovalWindow <= 0 || p.AdminApprovals <= 0 || p.RetractionTitle == "" && p.RetractionBody == "" {
		return nil, fmt.Errorf("queue: incomplete policy %+v (start from DefaultPolicy)", p)
	}
	c := &core{
		rdb:      cfg.Redis,
		keys:     cfg.Keys,
		policy:   p,
		logger:   cfg.Logger,
		metrics:  cfg.Metrics,
		now:      cfg.Now,
		store:    &store{rdb: cfg.Redis, keys: cfg.Keys},
		registry: NewRegistry(cfg.Redis, cfg.Keys),
		control:  cfg.Control,
		workers:  &workerSet{rdb: cfg.Redis, keys: cfg.Keys, now: cfg.Now},
		verifier: cfg.Verifier,
		enqueuer: asynq.NewClientFromRedisClient(cfg.Redis),
		verify:   newEnvelopeVerifier(cfg.Verifier, cfg.Control.verifier, cfg.Control, p.EnvelopeMaxAge, p.MaxTTL, defaultVerifyCacheSize),
	}
	c.limits = c.newLimiter()
	c.deployment = cfg.Deployment
	return c, nil
}

func (c *core) newLimiter() *limiter {
	return &limiter{
		rdb:          c.rdb,
		rl:           redis_rate.NewLimiter(c.rdb),
		keys:         c.keys,
		provider:     c.policy.ProviderRates,
		deviceMax:    c.policy.DeviceLimit,
		deviceWindow: c.policy.DeviceWindow,
		now:          c.now,
	}
}

// transition moves a broadcast to state to if it is in one of from,
// noting detail in the timeline and setting flag (when not "") to 1, and
// counts the change. It reports whether the broadcast moved.
func (c *core) transition(ctx context.Context, id, to, detail, flag string, from ...string) (bool, error) {
	ok, _, err := c.store.transition(ctx, id, to, detail, flag, c.now(), from...)
	if ok {
		c.noteTransition(ctx, id, to)
	}
	return ok, err
}

// defaultVerifyCacheSize is how many verified envelopes a process
// remembers unless its configuration says otherwise.
const defaultVerifyCacheSize = 1024

// enqueue adds a task, treating a task-id conflict as success: the task
// is already there.
func (c *core) enqueue(ctx context.Context, typ string, payload []byte, opts ...asynq.Option) error {
	_, err := c.enqueuer.EnqueueContext(ctx, asynq.NewTask(typ, payload), opts...)
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue %s: %w", typ, err)
	}
	return nil
}

// securityEvent counts and logs a refused task. It never logs device
// tokens or signatures.
func (c *core) securityEvent(ctx context.Context, task, broadcastID string, err error) {
	reason := "envelope"
	switch {
	case errors.Is(err, errOutsideAudience):
		reason = "audience"
	case errors.Is(err, errUnapproved):
		reason = "approval"
	}
	if c.metrics != nil {
		c.metrics.refused.WithLabelValues(task, reason).Inc()
	}
	if err := c.store.countSecurityEvent(ctx, task, reason); err != nil {
		c.logger.Warn("security event not counted in Redis", "task", task, "err", err)
	}
	c.logger.Error("security: task refused", "event", "task_refused", "task", task,
		"broadcast_id", broadcastID, "reason", reason, "err", err)
}

// errOutsideAudience marks devices of a batch that are not in the
// broadcast's audience: a forged or altered task.
var errOutsideAudience = errors.New("devices outside the broadcast's audience")
