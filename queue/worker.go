package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/providers"
)

// Sender delivers one message to a batch of devices of one platform:
// providers.FCMSender and providers.APNsSender. Send returns one result
// per token, in order, only once every call it started has returned;
// per-device failures are results, not errors. Every call is admitted by
// gate first, so that a kill stops a batch between any two calls.
type Sender interface {
	Platform() providers.Platform
	Send(ctx context.Context, gate providers.Gate, msg *providers.Message, tokens []string) []providers.Result
}

var (
	_ Sender = (*providers.FCMSender)(nil)
	_ Sender = (*providers.APNsSender)(nil)
)

// WorkerConfig configures a worker process's pool.
type WorkerConfig struct {
	Config
	// Senders deliver per platform; a platform without one is refused.
	Senders map[providers.Platform]Sender
	// Concurrency is how many tasks run at once (each task sends its batch
	// with the sender's own concurrency).
	Concurrency int
	// ID names the worker in heartbeats and kill acknowledgements; empty
	// means host-pid.
	ID string
	// TaskCheckInterval is how often an idle worker looks for new tasks;
	// it bounds the latency of a small broadcast.
	TaskCheckInterval time.Duration
	// DelayedTaskCheckInterval is how often retries and deferred batches
	// that became due are moved to their queue.
	DelayedTaskCheckInterval time.Duration
	// ShutdownTimeout is how long Shutdown lets running tasks finish.
	ShutdownTimeout time.Duration
	// VerifyCacheSize is how many verified envelopes to remember.
	VerifyCacheSize int
	// ReapMargin is how long after another worker's heartbeat ran out
	// this worker takes the tasks it was running and enqueues them again
	// (docs/ARCHITECTURE.md, "Dead workers"); zero means
	// DefaultReapMargin. It must exceed how far apart workers' clocks may
	// be.
	ReapMargin time.Duration
	// SweepInterval is how often the worker looks for broadcasts stalled
	// with planned devices no batch claimed, and how long one must have
	// been still (queue/sweep.go); zero means DefaultSweepInterval.
	SweepInterval time.Duration
}

// Worker runs the planning, delivery and recall tasks on an asynq server,
// with a kill switch that follows the control log.
type Worker struct {
	*core
	senders     map[providers.Platform]Sender
	ks          *KillSwitch
	pauses      *pauses
	health      *providerHealth
	srv         *asynq.Server
	taskRetries int

	stopKS context.CancelFunc
	wg     sync.WaitGroup
	// sweepEvery is how often the sweeper runs.
	sweepEvery time.Duration

	// afterPlanPage, when set (by tests), runs after each planned page is
	// saved, with the broadcast's devices planned so far.
	afterPlanPage atomic.Pointer[func(planned int64)]
}

// NewWorker builds a worker; Start runs it.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	c, err := newCore(cfg.Config)
	if err != nil {
		return nil, err
	}
	if c.appSigning, err = cfg.AppSigning.prepared(true); err != nil {
		return nil, err
	}
	if len(cfg.Senders) == 0 {
		return nil, errors.New("queue: a worker needs at least one sender")
	}
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = host + "-" + strconv.Itoa(os.Getpid())
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 16
	}
	if cfg.TaskCheckInterval <= 0 {
		cfg.TaskCheckInterval = 20 * time.Millisecond
	}
	if cfg.DelayedTaskCheckInterval <= 0 {
		cfg.DelayedTaskCheckInterval = time.Second
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = DefaultSweepInterval
	}
	if cfg.ReapMargin <= 0 {
		cfg.ReapMargin = DefaultReapMargin
	}
	if cfg.VerifyCacheSize > 0 {
		c.verify = newEnvelopeVerifier(c.verifier, c.control.verifier, c.control, c.policy.EnvelopeMaxAge, c.policy.MaxTTL, cfg.VerifyCacheSize)
	}
	w := &Worker{
		core:        c,
		senders:     cfg.Senders,
		ks:          NewKillSwitch(c.control, c.rdb, c.keys, cfg.ID, c.logger.With("worker_id", cfg.ID)),
		pauses:      newPauses(c),
		health:      newProviderHealth(c, cfg.ID),
		taskRetries: 25,
		sweepEvery:  cfg.SweepInterval,
	}
	if c.metrics != nil {
		w.ks.applied = c.metrics.killsApplied
	}
	w.ks.reaper = &reaper{workers: w.ks.workers, self: cfg.ID, staleness: c.control.cfg.MaxStaleness,
		margin: cfg.ReapMargin, enqueue: c.enqueue, retries: w.taskRetries, logger: w.ks.logger,
		metrics: c.metrics, now: c.now}
	w.srv = asynq.NewServerFromRedisClient(c.rdb, asynq.Config{
		Concurrency: cfg.Concurrency,
		// Tasks run on a context that SIGTERM does not cancel, so in-flight
		// sends finish; Shutdown bounds how long that may take.
		BaseContext:              context.Background,
		Queues:                   map[string]int{QueueRecall: 6, QueuePlan: 3, QueueDeliver: 1},
		StrictPriority:           true,
		TaskCheckInterval:        cfg.TaskCheckInterval,
		DelayedTaskCheckInterval: cfg.DelayedTaskCheckInterval,
		ShutdownTimeout:          cfg.ShutdownTimeout,
		Logger:                   asynqLogger{c.logger},
		LogLevel:                 asynq.WarnLevel,
		// A refused (forged) task is a security event, already logged; a
		// task put off because this worker's view of the control log is
		// stale has not failed, and is tried again soon without spending
		// one of its retries.
		IsFailure: func(err error) bool { return !errors.Is(err, asynq.SkipRetry) && !putOff(err) },
		RetryDelayFunc: func(n int, err error, t *asynq.Task) time.Duration {
			if putOff(err) || soon(err) {
				return time.Second
			}
			return asynq.DefaultRetryDelayFunc(n, err, t)
		},
		ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
			if !errors.Is(err, asynq.SkipRetry) && !putOff(err) {
				c.logger.Warn("task failed; asynq will retry it", "task", t.Type(), "err", err)
			}
		}),
	})
	return w, nil
}

// ID is the worker's id.
func (w *Worker) ID() string { return w.ks.workerID }

// DegradedProviders returns the providers this worker last found refusing
// the deployment's credential, with the reason code; nil when none
// (docs/ARCHITECTURE.md, "Provider health"). It reads memory only.
func (w *Worker) DegradedProviders() map[api.Platform]string { return w.health.degraded() }

// errStale puts a task off because this worker's view of the control log
// is not fresh: nothing may be sent until it is.
var errStale = errors.New("the control log view is stale; sending waits until it is fresh")

// putOff reports whether a task's error only puts it off, without
// spending a retry: a stale view of the control log, or a Redis that lost
// data (ErrRedisDataLost), where nothing may count as done.
func putOff(err error) bool { return errors.Is(err, errStale) || errors.Is(err, ErrRedisDataLost) }

// soon reports whether a failed task should run again within a second
// rather than after asynq's growing delay (15 s and up): it met Redis going
// away or coming back (a refused or broken connection, a Redis still
// loading its AOF), or a Redis that came back from an older state (a moved
// plan position, lost claims). Waiting longer would only keep the
// broadcast's phones waiting; the retry still counts.
func soon(err error) bool {
	var op *net.OpError
	return errors.Is(err, errPlanMoved) || errors.Is(err, errClaimsLost) ||
		errors.As(err, &op) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, redis.ErrPoolTimeout) || redis.IsLoadingError(err) || redis.IsReadOnlyError(err) ||
		redis.IsMasterDownError(err)
}

// fresh returns errStale unless this worker's view of the control log is
// fresh, and a *DataLostError while Redis lost data.
func (w *Worker) fresh() error {
	if err := w.deployment.Err(); err != nil {
		return err
	}
	if !w.control.Fresh() {
		return errStale
	}
	return nil
}

// Start applies the control log's current view, joins the live set (and
// resumes what an earlier process under the same worker id left running),
// starts following the view, and starts taking tasks, each recorded in
// flight while it runs. The Control must be started.
func (w *Worker) Start(ctx context.Context) error {
	w.ks.Sync(ctx)
	ksCtx, cancel := context.WithCancel(context.Background())
	w.stopKS = cancel
	w.wg.Add(2)
	go func() {
		defer w.wg.Done()
		w.ks.Run(ksCtx)
	}()
	go func() {
		defer w.wg.Done()
		w.sweep(ksCtx, w.sweepEvery)
	}()
	mux := asynq.NewServeMux()
	mux.Use(w.track)
	mux.HandleFunc(TypePlan, w.plan)
	mux.HandleFunc(TypeDeliver, w.deliver)
	mux.HandleFunc(TypeRecallPlan, w.recallPlan)
	mux.HandleFunc(TypeRecallDeliver, w.recallDeliver)
	mux.HandleFunc(TypeApprovalExpiry, w.expireApproval)
	if err := w.srv.Start(mux); err != nil {
		cancel()
		w.wg.Wait()
		return fmt.Errorf("worker: %w", err)
	}
	return nil
}

// Shutdown stops taking tasks, lets running ones finish (up to the
// shutdown timeout), then stops following the kill state. Kills keep
// applying while tasks drain.
func (w *Worker) Shutdown() {
	w.srv.Shutdown()
	if w.stopKS != nil {
		w.stopKS()
	}
	w.wg.Wait()
}

// asynqLogger adapts slog to asynq's logger.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...), "component", "asynq") }

// Fatal logs; asynq calls it only for errors it cannot continue from, and
// the process's owner decides whether to exit.
func (a asynqLogger) Fatal(args ...any) {
	a.l.Error(fmt.Sprint(args...), "component", "asynq", "fatal", true)
}
