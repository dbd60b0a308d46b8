package queue

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/providers"
)

// errKilled is the cause of a flight's context when a kill stops it.
var errKilled = errors.New("killed")

// KillSwitch is a worker's in-memory view of the kill state and its guard
// over provider calls.
//
// The view is refreshed by the kill channel and, in case a message was
// missed, by polling the kill version every second. Applying a new view
// stops every running flight in a killed scope (no further provider call
// of it is admitted), waits for it to end (its admitted calls returned —
// cancelled through their context if they outlast a short grace — and its
// outcomes recorded), and only then acknowledges the version. So once
// every live worker has acknowledged a kill, no provider call in its scope
// can start, and the ledger holds every device it reached.
type KillSwitch struct {
	kills    *Kills
	workerID string
	logger   *slog.Logger
	now      func() time.Time

	state atomic.Pointer[killState]

	mu      sync.Mutex // guards flights
	flights map[*flight]struct{}

	applyMu sync.Mutex // serialises apply

	// applied counts acknowledged versions; nil when metrics are off.
	applied prometheus.Counter
}

// drainTimeout bounds each wait of applying a kill — for committed calls to
// be answered, then for the flight to end — before acknowledging anyway
// (and logging it): a provider that never answers must not block kills.
const drainTimeout = 10 * time.Second

// NewKillSwitch returns a kill switch for the worker workerID. Run must be
// running for it to follow changes.
func NewKillSwitch(kills *Kills, workerID string, logger *slog.Logger) *KillSwitch {
	return &KillSwitch{
		kills:    kills,
		workerID: workerID,
		logger:   logger,
		now:      kills.now,
		flights:  map[*flight]struct{}{},
	}
}

// Killed reports whether work in sc is stopped, and by which scope. It
// reads memory only.
func (ks *KillSwitch) Killed(sc Scope) (string, bool) {
	return ks.state.Load().match(sc)
}

// Version is the kill version this worker has applied.
func (ks *KillSwitch) Version() int64 {
	if st := ks.state.Load(); st != nil {
		return st.version
	}
	return 0
}

// Run follows the kill state and keeps the worker's heartbeat until ctx is
// cancelled. It loads the state before returning from its first iteration,
// so a worker should call Sync before taking tasks.
func (ks *KillSwitch) Run(ctx context.Context) error {
	ps := ks.kills.subscribe(ctx)
	defer ps.Close()
	msgs := ps.Channel(redis.WithChannelSize(64))
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	ks.heartbeat(ctx)
	for {
		select {
		case <-ctx.Done():
			ks.leave()
			return nil
		case m := <-msgs:
			v, scope, err := parseKillEvent(m.Payload)
			if err == nil && v <= ks.Version() {
				continue
			}
			if scope != "" {
				ks.stopNow(scope)
			}
			ks.refresh(ctx)
		case <-poll.C:
			ks.heartbeat(ctx)
			v, err := ks.kills.version(ctx)
			if err != nil {
				ks.logger.Warn("kill switch: poll failed", "err", err)
				continue
			}
			if v != ks.Version() {
				ks.refresh(ctx)
			}
		}
	}
}

// stopNow applies an announced kill before the state that holds it is
// loaded, sparing the kill a Redis round trip (slow on a busy Redis) while
// sends go on: it installs the current view plus the kill, at the current
// version, and stops the flights in its scope. The loaded state then
// replaces that view, and only it is acknowledged. An announcement is made
// by the script that makes its kill durable, so stopping early stops only
// what that kill stops.
func (ks *KillSwitch) stopNow(scope string) {
	ks.applyMu.Lock()
	defer ks.applyMu.Unlock()
	st := ks.state.Load().with(scope)
	ks.state.Store(st)
	ks.mu.Lock()
	defer ks.mu.Unlock()
	for f := range ks.flights {
		if by, ok := st.match(f.scope); ok {
			f.stop(by)
		}
	}
}

// Sync loads and applies the current kill state once.
func (ks *KillSwitch) Sync(ctx context.Context) error {
	st, err := ks.kills.load(ctx)
	if err != nil {
		return err
	}
	ks.apply(ctx, st)
	return nil
}

func (ks *KillSwitch) refresh(ctx context.Context) {
	if err := ks.Sync(ctx); err != nil && ctx.Err() == nil {
		ks.logger.Warn("kill switch: refresh failed", "err", err)
	}
}

// apply installs st, stops the flights it kills, waits for them to end and
// acknowledges st's version.
//
// A stopped flight admits no new call and lets no request body leave. Its
// committed calls — requests already sent whole — are left to finish,
// because a request cancelled after it was written may still be delivered
// and its outcome would be unknown. Once none is left, the calls that had
// not committed are cancelled through the flight's context: they cannot
// reach a provider whole any more.
func (ks *KillSwitch) apply(ctx context.Context, st *killState) {
	ks.applyMu.Lock()
	defer ks.applyMu.Unlock()
	if cur := ks.state.Load(); cur != nil && st.version < cur.version {
		return
	}
	ks.state.Store(st)

	var hit []*flight
	ks.mu.Lock()
	for f := range ks.flights {
		if scope, ok := st.match(f.scope); ok {
			f.stop(scope)
			hit = append(hit, f)
		}
	}
	ks.mu.Unlock()

	quiet := ks.wait(ctx, hit, func(f *flight) <-chan struct{} { return f.quiet }, drainTimeout)
	for _, f := range hit {
		f.cancel(errKilled)
	}
	ended := ks.wait(ctx, hit, func(f *flight) <-chan struct{} { return f.ended }, drainTimeout)
	if ctx.Err() != nil {
		return
	}
	if !quiet || !ended {
		ks.logger.Error("kill switch: provider calls did not stop in time; acknowledging anyway", "version", st.version)
	}
	ks.ack(ctx, st.version)
}

// wait waits up to timeout for the channel ch picks of every flight to
// close, and reports whether they all did.
func (ks *KillSwitch) wait(ctx context.Context, flights []*flight, ch func(*flight) <-chan struct{}, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for _, f := range flights {
		select {
		case <-ch(f):
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
	return true
}

func (ks *KillSwitch) ack(ctx context.Context, version int64) {
	if err := ks.kills.ack(ctx, ks.workerID, version); err != nil && ctx.Err() == nil {
		ks.logger.Warn("kill switch: acknowledge failed", "version", version, "err", err)
		return
	}
	if ks.applied != nil {
		ks.applied.Inc()
	}
}

// heartbeat records that this worker is live, and forgets workers gone
// for a minute.
func (ks *KillSwitch) heartbeat(ctx context.Context) {
	if err := ks.kills.heartbeat(ctx, ks.workerID); err != nil && ctx.Err() == nil {
		ks.logger.Warn("kill switch: heartbeat failed", "err", err)
	}
}

// leave removes this worker from the live set so kills stop waiting for it.
func (ks *KillSwitch) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := ks.kills.leave(ctx, ks.workerID); err != nil {
		ks.logger.Warn("kill switch: leaving the live set failed; kills wait for this worker until its heartbeat ages out", "err", err)
	}
}

// begin registers a flight: the provider calls of one task in scope sc.
// Its context is cancelled once a kill has let its committed calls finish;
// end must be called once its outcomes are recorded.
func (ks *KillSwitch) begin(ctx context.Context, sc Scope) *flight {
	fctx, cancel := context.WithCancelCause(ctx)
	f := &flight{ks: ks, scope: sc, ctx: fctx, cancel: cancel, ended: make(chan struct{}), quiet: make(chan struct{})}
	ks.mu.Lock()
	if scope, ok := ks.state.Load().match(sc); ok {
		f.stop(scope)
	}
	ks.flights[f] = struct{}{}
	ks.mu.Unlock()
	return f
}

// flight guards the provider calls of one task. It implements
// providers.Gate.
type flight struct {
	ks     *KillSwitch
	scope  Scope
	ctx    context.Context
	cancel context.CancelCauseFunc
	ended  chan struct{}
	// quiet is closed once the flight is stopped and none of its
	// committed calls is still waiting for its answer.
	quiet chan struct{}

	mu        sync.Mutex
	killedBy  string
	committed int // committed calls that have not left
}

var _ providers.Gate = (*flight)(nil)

// Enter admits a provider call unless the flight was stopped.
func (f *flight) Enter() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.killedBy == ""
}

// Commit lets a request's body leave unless the flight was stopped.
func (f *flight) Commit() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.killedBy != "" {
		return false
	}
	f.committed++
	return true
}

// Leave is called after an admitted call returns, with its commits.
func (f *flight) Leave(commits int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.committed -= commits
	f.signalQuietLocked()
}

// stop refuses every further call and request body of the flight.
func (f *flight) stop(scope string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.killedBy == "" {
		f.killedBy = scope
		f.signalQuietLocked()
	}
}

func (f *flight) signalQuietLocked() {
	if f.killedBy != "" && f.committed == 0 {
		select {
		case <-f.quiet:
		default:
			close(f.quiet)
		}
	}
}

// killed returns the scope that killed the flight, or "".
func (f *flight) killed() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.killedBy
}

// end unregisters the flight and releases anyone waiting for it.
func (f *flight) end() {
	f.ks.mu.Lock()
	delete(f.ks.flights, f)
	f.ks.mu.Unlock()
	f.cancel(nil)
	close(f.ended)
}
