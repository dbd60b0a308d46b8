package queue

import (
	"context"
	"errors"
	"log/slog"
	"strings"
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
// The view is the control log's fold (Control), refreshed whenever the log
// grows, plus the stops announced on the stop channel that the log has
// not integrated yet: a kill, revocation, cancel or recall whose signed
// request this worker verified itself stops at once (stops act on one
// signature), and stands until the log holds it or, if it never does,
// for provisionalHold. Applying a new view stops every running flight in
// a killed scope (no further provider call of it is admitted), waits for
// it to end (its admitted calls returned — cancelled through their
// context if they outlast a short grace — and its outcomes recorded), and
// only then acknowledges the log size it applied. So once every live
// worker has acknowledged the size that holds a kill, no provider call in
// its scope can start, and the ledger holds every device it reached.
//
// A worker whose view of the log is not fresh (Control.Fresh) admits no
// provider call at all, and heartbeats no more: the API drops it from the
// live set once it must have stopped itself. A task the worker recorded
// in flight also sends only while the session it started under holds and
// its last heartbeat is current (holds), so that once a reaper may have
// resumed the task elsewhere this copy sends nothing (docs/ARCHITECTURE.md,
// "Dead workers").
type KillSwitch struct {
	control  *Control
	workers  *workerSet
	workerID string
	logger   *slog.Logger
	now      func() time.Time

	state atomic.Pointer[killState]

	mu      sync.Mutex // guards flights
	flights map[*flight]struct{}

	applyMu sync.Mutex // serialises apply, which waits for flights to end
	// stateMu guards announced and every store of state, so that an
	// announcement verified while a sync installs the log's state is never
	// lost. It is held only briefly: an announcement must not wait for a
	// sync's round trips or for flights to drain.
	stateMu sync.Mutex
	// announced holds the stops verified from announcements and not yet
	// seen in the log, by request id.
	announced map[string]announcedStop

	// applied counts acknowledged sizes; nil when metrics are off.
	applied prometheus.Counter

	beatMu sync.Mutex // serialises heartbeats, joins and reaps; guards liveSince, lastReap
	// session is this worker's membership of the live set, nil until it
	// joined; leaseUntil (unix ns) is the freshness its last accepted
	// heartbeat announced.
	session    atomic.Pointer[session]
	leaseUntil atomic.Int64
	// reaper resumes dead workers' tasks on heartbeats; nil reaps nothing.
	reaper *reaper
	// liveSince is when this worker's heartbeats last began again after
	// its own ran out (or it joined).
	liveSince, lastReap time.Time
	// lastReconcile is when this worker last compared its in-flight record
	// with the tasks it runs; guarded by beatMu.
	lastReconcile time.Time
	// running holds the ids of the tasks this worker runs now, added before
	// they are recorded in flight and removed after they are cleared.
	runningMu sync.Mutex
	running   map[string]bool
}

// announcedStop is a stop this worker verified from its announcement.
type announcedStop struct {
	keyID, nonce, scope string
	// revokes is the key a revocation revokes.
	revokes string
	until   time.Time
}

// provisionalHold is how long an announced stop stands without the log
// integrating it: a genuine one is integrated within milliseconds, so
// one that is not was never recorded (a replayed announcement).
const provisionalHold = 30 * time.Second

// drainTimeout bounds each wait of applying a kill — for committed calls to
// be answered, then for the flight to end — before acknowledging anyway
// (and logging it): a provider that never answers must not block kills.
const drainTimeout = 10 * time.Second

// NewKillSwitch returns a kill switch for the worker workerID over the
// control log's view. Run must be running for it to follow changes.
func NewKillSwitch(control *Control, rdb redis.UniversalClient, keys Keys, workerID string, logger *slog.Logger) *KillSwitch {
	return &KillSwitch{
		control:   control,
		workers:   &workerSet{rdb: rdb, keys: keys, now: control.now},
		workerID:  workerID,
		logger:    logger,
		now:       control.now,
		flights:   map[*flight]struct{}{},
		announced: map[string]announcedStop{},
	}
}

// Killed reports whether work in sc is stopped, and by which scope. It
// reads memory only.
func (ks *KillSwitch) Killed(sc Scope) (string, bool) {
	return ks.state.Load().match(sc)
}

// Version is the control log size this worker has applied.
func (ks *KillSwitch) Version() int64 {
	if st := ks.state.Load(); st != nil {
		return st.version
	}
	return 0
}

// Run follows the control log and the stop announcements, and keeps the
// worker's heartbeat, until ctx is cancelled.
//
// Announcements are handled on a goroutine of their own: a sync makes
// Redis round trips (heartbeat, reaping) and waits for killed flights to
// end, which on a loaded Redis takes tens of milliseconds, and a stop
// must not wait behind that.
func (ks *KillSwitch) Run(ctx context.Context) error {
	ps := ks.workers.rdb.Subscribe(ctx, ks.workers.keys.StopChannel())
	defer ps.Close()
	msgs := ps.Channel(redis.WithChannelSize(64))
	var announcing sync.WaitGroup
	defer announcing.Wait()
	announcing.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-msgs:
				if !ok {
					return
				}
				ks.announce(ctx, m.Payload)
			}
		}
	})
	tick := time.NewTicker(ks.control.interval())
	defer tick.Stop()
	for {
		changed := ks.control.Changed()
		ks.Sync(ctx)
		select {
		case <-ctx.Done():
			ks.leave()
			return nil
		case <-changed:
		case <-tick.C:
		}
	}
}

// announce verifies an announced stop and applies it before the log holds
// it. An announcement that does not verify is a security event, and stops
// nothing.
func (ks *KillSwitch) announce(ctx context.Context, payload string) {
	stop, err := ks.control.verifyStop(ctx, []byte(payload))
	if err != nil {
		ks.logger.Error("security: stop announcement refused", "event", "stop_refused", "err", err)
		return
	}
	if stop == nil {
		return
	}
	ks.stateMu.Lock()
	stop.until = ks.now().Add(provisionalHold)
	ks.announced[requestID(stop.keyID, stop.nonce)] = *stop
	st := ks.state.Load().with(*stop)
	ks.state.Store(st)
	ks.stateMu.Unlock()
	ks.mu.Lock()
	defer ks.mu.Unlock()
	for f := range ks.flights {
		if by, ok := st.match(f.scope); ok {
			f.stop(by)
		}
	}
}

// Sync applies the control log's current view once, with the announced
// stops it does not hold yet, and heartbeats while the view is fresh.
func (ks *KillSwitch) Sync(ctx context.Context) {
	now := ks.now()
	ks.apply(ctx, ks.control.killState())
	if until := ks.control.FreshUntil(); until.After(now) {
		ks.heartbeat(ctx, until)
	}
}

// install stores the log's state st with the announced stops it does not
// hold yet, dropping the ones it holds and the ones that were never
// integrated, and returns what it stored.
func (ks *KillSwitch) install(st *killState) *killState {
	now := ks.now()
	ks.stateMu.Lock()
	defer ks.stateMu.Unlock()
	for id, a := range ks.announced {
		_, inLog := ks.control.seen(a.keyID, a.nonce)
		switch {
		case inLog:
			delete(ks.announced, id)
		case now.After(a.until):
			ks.logger.Warn("an announced stop was never integrated into the control log; lifting it", "scope", a.scope, "key_id", a.keyID)
			delete(ks.announced, id)
		default:
			st = st.with(a)
		}
	}
	ks.state.Store(st)
	return st
}

// apply installs the log's state st (with the announced stops), stops the
// flights it kills, waits for them to end and acknowledges st's version.
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
	st = ks.install(st)

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
	if err := ks.workers.ack(ctx, ks.workerID, version); err != nil && ctx.Err() == nil {
		ks.logger.Warn("kill switch: acknowledge failed", "version", version, "err", err)
		return
	}
	if ks.applied != nil {
		ks.applied.Inc()
	}
}

// heartbeat records that this worker is live and fresh until until, then
// reaps dead workers. A worker that finds its session gone — a reaper took
// its tasks, or its record expired while it was frozen or cut off — stops
// its running tasks' sends for good and joins again under a new session.
func (ks *KillSwitch) heartbeat(ctx context.Context, until time.Time) {
	ks.beatMu.Lock()
	defer ks.beatMu.Unlock()
	s := ks.session.Load()
	if s != nil {
		st, err := ks.workers.heartbeat(ctx, ks.workerID, s.token, until, ks.inflightTTL())
		if err != nil {
			if ctx.Err() == nil {
				ks.logger.Warn("kill switch: heartbeat failed", "err", err)
			}
			return
		}
		if st == sessionHeld {
			if now := ks.now(); now.UnixNano() >= ks.leaseUntil.Swap(until.UnixNano()) {
				ks.liveSince = now // this worker's own heartbeat had run out
			}
			ks.reap(ctx)
			return
		}
		ks.leaseUntil.Store(0)
		if st == sessionReaped {
			s.reaped.Store(true)
			ks.logger.Warn("this worker's heartbeat ran out and another worker resumed its tasks: the ones still running here send nothing more; joining again",
				"event", "worker_session_reaped")
		} else {
			ks.logger.Warn("this worker's heartbeat ran out and its in-flight record expired: the tasks still running here send nothing more and hand on what they did not send; joining again",
				"event", "worker_session_expired")
		}
	}
	next := newSession()
	prev, err := ks.workers.join(ctx, ks.workerID, next.token, until, ks.inflightTTL())
	if err != nil {
		if ctx.Err() == nil {
			ks.logger.Warn("kill switch: joining the live set failed; tasks wait until it succeeds", "err", err)
		}
		return
	}
	ks.session.Store(next)
	ks.leaseUntil.Store(until.UnixNano())
	ks.liveSince = ks.now()
	if taskFields(prev) && ks.reaper != nil {
		// An earlier process under this worker id died running these.
		ks.reaper.resumeDead(ctx, ks.workerID, prev)
	}
}

// reap reaps dead workers, at most once per heartbeat interval (Sync also
// runs on every change of the view), and only once this worker has itself
// heartbeat without a gap for the reap margin: a worker whose own
// heartbeat ran out — as everyone's does when no fresh checkpoint is
// signed — cannot tell a dead worker from one coming back with it, and
// gives them that long. beatMu is held.
func (ks *KillSwitch) reap(ctx context.Context) {
	if ks.reaper == nil {
		return
	}
	now := ks.now()
	if now.Sub(ks.lastReconcile) >= ks.control.interval() {
		ks.lastReconcile = now
		ks.reconcile(ctx)
	}
	if now.Sub(ks.liveSince) < ks.reaper.margin || now.Sub(ks.lastReap) < ks.control.interval() {
		return
	}
	ks.lastReap = now
	ks.reaper.reapDead(ctx)
}

// inflightTTL is how long this worker's in-flight record outlives its last
// heartbeat.
func (ks *KillSwitch) inflightTTL() time.Duration {
	if ks.reaper == nil {
		return time.Minute
	}
	return ks.reaper.ttl()
}

// holds reports whether a task that started under session s may still
// act: s is still this worker's session and its last heartbeat is
// current. A task not recorded in flight (s nil) is bound by the view's
// freshness only.
func (ks *KillSwitch) holds(s *session) bool {
	return s == nil || ks.session.Load() == s && ks.now().UnixNano() < ks.leaseUntil.Load()
}

// leave removes this worker from the live set so kills stop waiting for it.
func (ks *KillSwitch) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := ks.workers.leave(ctx, ks.workerID); err != nil {
		ks.logger.Warn("kill switch: leaving the live set failed; kills wait for this worker until its heartbeat ages out", "err", err)
	}
}

// begin registers a flight: the provider calls of one task in scope sc.
// Its context is cancelled once a kill has let its committed calls finish;
// end must be called once its outcomes are recorded.
func (ks *KillSwitch) begin(ctx context.Context, sc Scope) *flight {
	fctx, cancel := context.WithCancelCause(ctx)
	f := &flight{ks: ks, scope: sc, ctx: fctx, cancel: cancel, ended: make(chan struct{}), quiet: make(chan struct{})}
	if t := trackedFrom(ctx); t != nil {
		f.session = t.session
	}
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
	// stale is set once a call was refused because the worker's view of
	// the control log was not fresh; the calls it refused are tried again.
	stale bool

	// session is the session the flight's task started under; nil for an
	// untracked task.
	session *session
}

var _ providers.Gate = (*flight)(nil)

// Enter admits a provider call unless the flight was stopped, the
// worker's view of the control log is not fresh, or its task may have been
// resumed elsewhere.
func (f *flight) Enter() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.killedBy == "" && f.freshLocked()
}

// Commit lets a request's body leave unless the flight was stopped or the
// worker's view of the control log is not fresh.
func (f *flight) Commit() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.killedBy != "" || !f.freshLocked() {
		return false
	}
	f.committed++
	return true
}

func (f *flight) freshLocked() bool {
	if f.ks.control.Fresh() && f.ks.holds(f.session) {
		return true
	}
	f.stale = true
	return false
}

// stalled reports whether a call was refused for a stale view.
func (f *flight) stalled() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stale
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

// started and finished keep the set of tasks this worker runs.
func (ks *KillSwitch) started(id string) {
	ks.runningMu.Lock()
	defer ks.runningMu.Unlock()
	if ks.running == nil {
		ks.running = map[string]bool{}
	}
	ks.running[id] = true
}

func (ks *KillSwitch) finished(id string) {
	ks.runningMu.Lock()
	defer ks.runningMu.Unlock()
	delete(ks.running, id)
}

// reconcile resumes the tasks this worker's in-flight record lists but
// the worker does not run: Redis came back from an older state (a restart
// that lost its last writes, a failover to a replica that lagged), in
// which tasks this worker finished are still recorded in flight — and
// asynq still holds them active, to run them again only after their lease
// and its recoverer. Their copies run now; a re-run is harmless (the
// ledger skips every device with an outcome). beatMu is held.
func (ks *KillSwitch) reconcile(ctx context.Context) {
	s := ks.session.Load()
	if s == nil {
		return
	}
	recorded, err := ks.workers.inflight(ctx, ks.workerID)
	if err != nil {
		if ctx.Err() == nil {
			ks.logger.Warn("kill switch: reading this worker's in-flight record failed", "err", err)
		}
		return
	}
	stale := map[string]string{}
	ks.runningMu.Lock()
	for id, entry := range recorded {
		if !strings.HasPrefix(id, "~") && !ks.running[id] {
			stale[id] = entry
		}
	}
	ks.runningMu.Unlock()
	if len(stale) == 0 {
		return
	}
	// A task may have finished between the read and the check above (it
	// clears its entry, then leaves the running set): only an entry still
	// recorded, and still not running, is stale.
	again, err := ks.workers.inflight(ctx, ks.workerID)
	if err != nil {
		if ctx.Err() == nil {
			ks.logger.Warn("kill switch: reading this worker's in-flight record failed", "err", err)
		}
		return
	}
	ks.runningMu.Lock()
	for id := range stale {
		if _, ok := again[id]; !ok || ks.running[id] {
			delete(stale, id)
		}
	}
	ks.runningMu.Unlock()
	if len(stale) == 0 {
		return
	}
	for id := range stale {
		if _, err := ks.workers.untrack(ctx, ks.workerID, s.token, id); err != nil {
			ks.logger.Warn("kill switch: clearing a stale in-flight entry failed", "err", err)
			return
		}
	}
	n := ks.reaper.resume(ctx, ks.workerID, stale)
	ks.logger.Warn("this worker's in-flight record lists tasks it does not run: Redis came back from an older state; running them again",
		"event", "inflight_stale", "tasks", n)
}
