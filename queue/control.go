package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/signing"
)

// ControlConfig configures a process's Control.
type ControlConfig struct {
	Redis redis.UniversalClient
	Keys  Keys
	// Keyring is who may sign; Profile is the signing profile.
	Keyring signing.KeyLookup
	Profile signing.Profile
	Policy  Policy
	// LogKey is the log's public key; it is required.
	LogKey note.Verifier
	// Signer is the log's private key. A process that has it integrates:
	// it takes appended requests into the log and signs checkpoints.
	Signer note.Signer
	// StateDir keeps the newest verified checkpoint across restarts; ""
	// keeps it in memory only.
	StateDir string
	// MirrorFile, when set, is kept as an export of the log (see
	// controllog), rewritten at start and appended as the log grows.
	MirrorFile string
	// MaxStaleness is how old a process's view of the log may be while
	// its workers send: a view is fresh while both the newest checkpoint's
	// time and the last successful refresh are younger than this.
	MaxStaleness time.Duration
	Logger       *slog.Logger
	Metrics      *Metrics
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DefaultMaxStaleness is control.max_staleness unless configured.
const DefaultMaxStaleness = 2 * time.Second

// errLogInconsistent marks a log that fails its checks: smaller than one
// this process verified, forked, altered, or signed by another key.
var errLogInconsistent = errors.New("control log inconsistent")

// Control is a process's view of the control log (docs/ARCHITECTURE.md,
// "The control log"): it follows the log in Redis, checks each new
// checkpoint's signature and that it extends the one before (recomputing
// the tree from the new entries), folds the verified entries into the
// kill, revocation and approval state, and — in a process that holds the
// log key — integrates appended requests and signs checkpoints.
//
// It fails closed. A log that is smaller than the newest checkpoint this
// process verified (remembered in memory and in StateDir), forked, altered
// or badly signed puts it in a failed state that Err reports: workers
// start no provider call, the API refuses what changes state, and readiness
// fails, until the log in Redis is consistent again (pushgate log
// restore). A view older than MaxStaleness is not Fresh: workers stop
// sending until it is.
type Control struct {
	cfg    ControlConfig
	store  *controlStore
	logger *slog.Logger
	now    func() time.Time
	window controllog.Window
	// verifier checks entries' requests against the keyring, without
	// revocations: the fold applies them in log order.
	verifier *signing.Verifier

	refreshMu sync.Mutex // serialises refresh and rebuild

	mu     sync.Mutex // guards what follows
	state  *controlState
	tree   controllog.Tree
	head   *controllog.Checkpoint
	signed []byte // head as signed
	// read is the checkpoint the last refresh read, verified: what an
	// integration builds on.
	read        []byte
	refreshedAt time.Time
	failure     error
	// tried and triedAt are the checkpoint a failed view last tried to
	// rebuild from, and when.
	tried     []byte
	triedAt   time.Time
	changed   chan struct{}
	lastPrune time.Time

	// freshUntil is when the current view stops being fresh (unix ns;
	// zero: not fresh).
	freshUntil atomic.Int64
	mirror     *mirror

	kick chan struct{}
	stop context.CancelFunc
	wg   sync.WaitGroup
}

// NewControl returns a Control; Start loads the log.
func NewControl(cfg ControlConfig) (*Control, error) {
	if cfg.Redis == nil || cfg.LogKey == nil || cfg.Keyring == nil {
		return nil, errors.New("queue: control log needs Redis, a log key and a keyring")
	}
	if cfg.Signer != nil && cfg.Signer.Name() != cfg.LogKey.Name() {
		return nil, fmt.Errorf("queue: control log: private key %q is not the log key %q", cfg.Signer.Name(), cfg.LogKey.Name())
	}
	if cfg.Keys == (Keys{}) {
		cfg.Keys = NewKeys("")
	}
	if cfg.MaxStaleness <= 0 {
		cfg.MaxStaleness = DefaultMaxStaleness
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Profile.Skew <= 0 {
		cfg.Profile.Skew = signing.DefaultSkew
	}
	if cfg.Policy.EnvelopeMaxAge <= 0 {
		return nil, errors.New("queue: control log needs a policy (start from DefaultPolicy)")
	}
	c := &Control{
		cfg:      cfg,
		store:    &controlStore{rdb: cfg.Redis, keys: cfg.Keys},
		logger:   cfg.Logger.With("component", "control-log"),
		now:      cfg.Now,
		window:   controllog.Window{Skew: cfg.Profile.Skew, MaxAge: cfg.Policy.EnvelopeMaxAge},
		changed:  make(chan struct{}),
		kick:     make(chan struct{}, 1),
		verifier: signing.NewVerifier(signing.VerifierConfig{Profile: cfg.Profile, Keys: cfg.Keyring}),
	}
	c.state = c.newState()
	return c, nil
}

func (c *Control) newState() *controlState {
	return newControlState(c.cfg.Policy, c.cfg.Keyring, c.verifier, c.window)
}

// interval is how often the log is read (and, by an integrator, a fresh
// checkpoint signed): four times per MaxStaleness.
func (c *Control) interval() time.Duration { return max(c.cfg.MaxStaleness/4, 10*time.Millisecond) }

// Start loads the newest checkpoint remembered in StateDir, reads and
// verifies the whole log, and starts following it (and integrating, with
// a Signer). A log that fails its checks does not stop Start: the process
// runs failed closed and says so. An error is returned only for what
// the process cannot run with, such as an unreadable state file.
func (c *Control) Start(ctx context.Context) error {
	if err := c.loadState(); err != nil {
		return err
	}
	if err := c.rebuild(ctx); err != nil && !errors.Is(err, errLogInconsistent) {
		return fmt.Errorf("control log: %w", err)
	}
	if c.cfg.MirrorFile != "" && c.Err() == nil {
		m, err := c.openMirror(ctx)
		if err != nil {
			return err
		}
		c.mirror = m
	}
	ctx, c.stop = context.WithCancel(context.Background())
	c.wg.Go(func() { c.follow(ctx) })
	if c.cfg.Signer != nil {
		c.wg.Go(func() { c.integrateLoop(ctx) })
	}
	return nil
}

// Close stops following the log.
func (c *Control) Close() {
	if c.stop != nil {
		c.stop()
	}
	c.wg.Wait()
	if c.mirror != nil {
		c.mirror.close()
	}
}

// follow refreshes the view whenever the log grows and at every interval.
func (c *Control) follow(ctx context.Context) {
	ps := c.cfg.Redis.Subscribe(ctx, c.cfg.Keys.LogChannel())
	defer ps.Close()
	msgs := ps.Channel(redis.WithChannelSize(16))
	tick := time.NewTicker(c.interval())
	defer tick.Stop()
	var warned time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-msgs:
		case <-tick.C:
		}
		if err := c.refresh(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, errLogInconsistent) {
			if c.now().Sub(warned) > 10*time.Second {
				warned = c.now()
				c.logger.Warn("control log: refresh failed; this process sends nothing once its view is older than control.max_staleness",
					"max_staleness", c.cfg.MaxStaleness, "err", err)
			}
		}
	}
}

// Err reports why the control log failed its checks, or nil.
func (c *Control) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failure
}

// Fresh reports whether this process's view of the log is current enough
// to send by: not failed, and younger than MaxStaleness.
func (c *Control) Fresh() bool { return c.now().UnixNano() < c.freshUntil.Load() }

// FreshUntil is when the current view stops being fresh; zero when it is
// not.
func (c *Control) FreshUntil() time.Time {
	if ns := c.freshUntil.Load(); ns > 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Changed returns a channel closed at the next change of the view.
func (c *Control) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// notifyLocked wakes everyone waiting on Changed. c.mu is held.
func (c *Control) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// updateFreshLocked recomputes freshUntil. c.mu is held.
func (c *Control) updateFreshLocked() {
	if c.failure != nil || c.head == nil {
		c.freshUntil.Store(0)
		return
	}
	from := c.refreshedAt
	if c.head.Time.Before(from) {
		from = c.head.Time
	}
	c.freshUntil.Store(from.Add(c.cfg.MaxStaleness).UnixNano())
}

// failLocked puts the view in the failed state. c.mu is held.
func (c *Control) failLocked(err error) error {
	err = fmt.Errorf("%w: %w", errLogInconsistent, err)
	if c.failure == nil {
		c.failure = err
		c.logger.Error("security: control log inconsistent; failing closed: no provider call starts and the API refuses changes until the log is restored",
			"event", "control_log_inconsistent", "err", err)
		if c.cfg.Metrics != nil {
			c.cfg.Metrics.controlFailures.Inc()
		}
		c.updateFreshLocked()
		c.notifyLocked()
	}
	return err
}

// retryRebuild is how often a failed view reads the whole log again when
// its checkpoint has not changed (entries may have been put right under
// the same checkpoint): five times control.max_staleness.
func (c *Control) retryRebuild() time.Duration { return 20 * c.interval() }

// refresh reads the newest checkpoint and, when the log grew, the new
// entries; it checks them and folds them in. A failed view tries a full
// rebuild whenever the checkpoint in Redis changes, and every
// retryRebuild.
func (c *Control) refresh(ctx context.Context) error {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	if c.Err() != nil {
		signed, err := c.store.head(ctx)
		if err != nil {
			return err
		}
		now := c.now()
		c.mu.Lock()
		again := !bytes.Equal(signed, c.tried) || now.Sub(c.triedAt) >= c.retryRebuild()
		if again {
			c.tried, c.triedAt = signed, now
		}
		failure := c.failure
		c.mu.Unlock()
		if !again {
			return failure
		}
		return c.rebuildLocked(ctx)
	}
	signed, err := c.store.head(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	have := c.tree.Size()
	root := c.tree.Root()
	tree := c.tree.Clone()
	c.mu.Unlock()
	if signed == nil {
		if have == 0 {
			return nil // a new log: the integrator has not signed yet
		}
		return c.fail(errGone(have))
	}
	cp, err := controllog.OpenCheckpoint(signed, c.cfg.LogKey)
	if err != nil {
		return c.fail(err)
	}
	switch {
	case cp.Size < have:
		return c.fail(errRolledBack(cp.Size, have))
	case cp.Size == have:
		if cp.Root != root {
			return c.fail(fmt.Errorf("the checkpoint of size %d has another root than the tree this process verified (forked)", cp.Size))
		}
		c.mu.Lock()
		if c.head == nil || cp.Time.After(c.head.Time) {
			c.head, c.signed = cp, signed
		}
		c.read = signed
		c.refreshedAt = c.now()
		c.updateFreshLocked()
		c.mu.Unlock()
		return nil
	}
	var leaves [][]byte
	var entries []*controllog.Entry
	err = c.store.entries(ctx, have, cp.Size, func(_ int64, ls [][]byte) error {
		for _, l := range ls {
			e, err := controllog.Decode(l)
			if err != nil {
				return fmt.Errorf("%w: entry %d: %v", errLogInconsistent, tree.Size(), err)
			}
			if _, err := tree.Append(l); err != nil {
				return err
			}
			leaves, entries = append(leaves, l), append(entries, e)
		}
		return nil
	})
	if errors.Is(err, errLogInconsistent) {
		return c.fail(err)
	}
	if err != nil {
		return err
	}
	if tree.Root() != cp.Root {
		return c.fail(fmt.Errorf("entries %d to %d do not hash to the checkpoint of size %d (altered, or forked)", have, cp.Size-1, cp.Size))
	}
	c.mu.Lock()
	for i, e := range entries {
		c.applyLocked(ctx, have+int64(i), e)
	}
	c.tree, c.head, c.signed, c.read, c.refreshedAt = *tree, cp, signed, signed, c.now()
	c.pruneLocked()
	c.updateFreshLocked()
	c.notifyLocked()
	c.mu.Unlock()
	c.saveState(signed)
	if c.mirror != nil {
		c.mirror.append(have, leaves, signed)
	}
	if c.cfg.Metrics != nil {
		c.cfg.Metrics.controlSize.Set(float64(cp.Size))
	}
	return nil
}

func errGone(verified int64) error {
	return fmt.Errorf("Redis holds no control log, and this process verified one of %d entries (Redis flushed, or restarted without persistence)", verified)
}

func errRolledBack(size, verified int64) error {
	return fmt.Errorf("the log in Redis has %d entries, fewer than the %d this process verified (rolled back)", size, verified)
}

func (c *Control) fail(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failLocked(err)
}

// applyLocked folds one verified entry. c.mu is held.
func (c *Control) applyLocked(ctx context.Context, index int64, e *controllog.Entry) {
	err := c.state.apply(ctx, index, e)
	if errors.Is(err, errIgnored) {
		c.logger.Warn("control log: entry changes nothing", "index", index, "kind", e.Decision.Kind, "why", err)
	} else if err != nil {
		c.logger.Error("control log: entry not folded", "index", index, "err", err)
	}
}

func (c *Control) pruneLocked() {
	if now := c.now(); now.Sub(c.lastPrune) > time.Minute {
		c.state.prune(now)
		c.lastPrune = now
	}
}

// rebuild reads and verifies the whole log and replaces the view with it.
func (c *Control) rebuild(ctx context.Context) error {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	return c.rebuildLocked(ctx)
}

// rebuildLocked is rebuild with refreshMu held. The log must extend the
// newest checkpoint this process verified: what it held before, or what
// its state file remembers.
func (c *Control) rebuildLocked(ctx context.Context) error {
	c.mu.Lock()
	remembered := c.head
	c.mu.Unlock()
	signed, err := c.store.head(ctx)
	if err != nil {
		return err
	}
	if signed == nil {
		if remembered != nil && remembered.Size > 0 {
			return c.fail(errGone(remembered.Size))
		}
		c.install(c.newState(), controllog.Tree{}, nil, nil)
		return nil
	}
	cp, err := controllog.OpenCheckpoint(signed, c.cfg.LogKey)
	if err != nil {
		return c.fail(err)
	}
	if remembered != nil && cp.Size < remembered.Size {
		return c.fail(errRolledBack(cp.Size, remembered.Size))
	}
	state := c.newState()
	var tree controllog.Tree
	var rootAtRemembered tlog.Hash
	err = c.store.entries(ctx, 0, cp.Size, func(first int64, ls [][]byte) error {
		for j, l := range ls {
			i := first + int64(j)
			e, err := controllog.Decode(l)
			if err != nil {
				return fmt.Errorf("%w: entry %d: %v", errLogInconsistent, i, err)
			}
			if _, err := tree.Append(l); err != nil {
				return err
			}
			if remembered != nil && tree.Size() == remembered.Size {
				rootAtRemembered = tree.Root()
			}
			if err := state.apply(ctx, i, e); err != nil && !errors.Is(err, errIgnored) {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, errLogInconsistent) {
		return c.fail(err)
	}
	if err != nil {
		return err
	}
	if tree.Root() != cp.Root {
		return c.fail(fmt.Errorf("the %d entries in Redis do not hash to its checkpoint (altered)", cp.Size))
	}
	if remembered != nil && remembered.Size > 0 && rootAtRemembered != remembered.Root {
		return c.fail(fmt.Errorf("the log in Redis does not extend the checkpoint of size %d this process verified (forked)", remembered.Size))
	}
	if ignoredN := sumValues(state.ignored); ignoredN > 0 {
		c.logger.Warn("control log: entries that change nothing", "count", ignoredN, "why", state.ignored)
	}
	c.install(state, tree, cp, signed)
	return nil
}

// install replaces the view with a verified one and clears a failure.
func (c *Control) install(state *controlState, tree controllog.Tree, cp *controllog.Checkpoint, signed []byte) {
	c.mu.Lock()
	recovered := c.failure != nil
	c.state, c.tree, c.head, c.signed, c.read, c.failure, c.tried, c.triedAt = state, tree, cp, signed, signed, nil, nil, time.Time{}
	c.refreshedAt = c.now()
	c.updateFreshLocked()
	c.notifyLocked()
	c.mu.Unlock()
	if recovered {
		c.logger.Warn("control log consistent again: resuming", "entries", tree.Size())
	}
	if signed != nil {
		c.saveState(signed)
	}
	if c.cfg.Metrics != nil {
		c.cfg.Metrics.controlSize.Set(float64(tree.Size()))
	}
}

func sumValues(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// stateFile is where the newest verified checkpoint is remembered.
func (c *Control) stateFile() string {
	if c.cfg.StateDir == "" {
		return ""
	}
	return filepath.Join(c.cfg.StateDir, "control-checkpoint")
}

// loadState reads the remembered checkpoint, if any.
func (c *Control) loadState() error {
	path := c.stateFile()
	if path == "" {
		c.logger.Warn("control.state_dir is not set: a restart forgets the newest verified checkpoint, so a log rolled back while this process was down would go unnoticed")
		return nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control log state: %w", err)
	}
	cp, err := controllog.OpenCheckpoint(b, c.cfg.LogKey)
	if err != nil {
		return fmt.Errorf("control log state %s: %w (is it another log's?)", path, err)
	}
	c.mu.Lock()
	c.head = cp
	c.mu.Unlock()
	return nil
}

// saveState remembers a verified checkpoint, never replacing a larger
// one. A failure is logged: the checkpoint is still remembered in memory.
func (c *Control) saveState(signed []byte) {
	path := c.stateFile()
	if path == "" {
		return
	}
	if err := writeCheckpointFile(path, signed, c.cfg.LogKey); err != nil {
		c.logger.Warn("control log state not saved", "path", path, "err", err)
	}
}

func writeCheckpointFile(path string, signed []byte, v note.Verifier) error {
	next, err := controllog.OpenCheckpoint(signed, v)
	if err != nil {
		return err
	}
	if old, err := os.ReadFile(path); err == nil {
		if cur, err := controllog.OpenCheckpoint(old, v); err == nil && cur.Size > next.Size {
			return nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp" + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, signed, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Head returns the newest verified checkpoint and the log's size.
func (c *Control) Head() (*controllog.Checkpoint, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.head, c.tree.Size()
}

// signedHead returns the newest verified checkpoint as signed.
func (c *Control) signedHead() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.signed
}

// killState returns the kill switch's snapshot of the log.
func (c *Control) killState() *killState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state.killState()
}

// seen returns the index of the entry holding a request, if the view has
// it.
func (c *Control) seen(keyID, nonce string) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.state.seen[requestID(keyID, nonce)]
	return r.index, ok
}

// Revoked reports whether the log revoked a key. It implements
// signing.Revocations.
func (c *Control) Revoked(_ context.Context, keyID string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.state.revoked[keyID]
	return ok, nil
}

// revocations returns the revoked keys, key id → the kill of its scope,
// and the size of the log they were folded from.
func (c *Control) revocations() (map[string]api.Kill, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.state.revoked), c.state.size
}

// IsActive reports whether a scope is killed.
func (c *Control) IsActive(scope string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.state.kills[scope]
	return ok
}

// Active returns the active kills, oldest first.
func (c *Control) Active() []api.Kill {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state.activeKills()
}

// broadcastApprovals returns the approval envelopes the log holds for a
// broadcast: approver key id → signed request.
func (c *Control) broadcastApprovals(id string) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return cloneMap(c.state.approvals[id])
}

// recallOf returns the recall the log carried out for a broadcast.
func (c *Control) recallOf(id string) (*controlRecall, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.state.recalls[id]
	if !ok {
		return nil, false
	}
	cp := *r
	cp.approvals = cloneMap(r.approvals)
	return &cp, true
}

// action returns a copy of an admin action the log holds.
func (c *Control) action(id string) (api.PendingAction, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.state.actions[id]
	if !ok {
		return api.PendingAction{}, false
	}
	p := a.PendingAction
	p.Approvals = append([]api.Approval{}, a.Approvals...)
	return p, true
}

// pendingActions lists the actions waiting for approvals.
func (c *Control) pendingActions() []api.PendingAction {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state.pendingActions(c.now())
}

// submitter returns the key that submitted a broadcast, if the view
// holds its submission.
func (c *Control) submitter(id string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state.submitters[id].keyID
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// verifyStop checks an announced stop as a worker must before acting on
// it: a request signed within the signing profile's skew of now, by a key
// of the keyring that may make it and is not revoked. It returns the scope
// the request stops, or nil for one that stops nothing by itself (a
// revocation of another admin or a recall with custom text, which wait
// for a second person).
func (c *Control) verifyStop(ctx context.Context, payload []byte) (*announcedStop, error) {
	e, err := controllog.Decode(payload)
	if err != nil {
		return nil, err
	}
	e.Time = c.now()
	ch, err := controllog.Check(ctx, c.verifier, e, controllog.Window{Skew: c.window.Skew, MaxAge: c.window.Skew})
	if err != nil {
		return nil, err
	}
	k := ch.Verified.Key
	c.mu.Lock()
	_, revoked := c.state.revoked[k.ID]
	submitter := c.state.submitters[ch.Target].keyID
	c.mu.Unlock()
	if revoked {
		return nil, fmt.Errorf("key %s is revoked", k.ID)
	}
	stop := &announcedStop{keyID: k.ID, nonce: ch.Verified.Nonce}
	body := e.Request.Body
	switch ch.Kind {
	case controllog.KindKill:
		r, err := api.ParseKillRequest(body)
		if err != nil {
			return nil, err
		}
		stop.scope = r.Scope
	case controllog.KindRevoke:
		if t, ok := c.cfg.Keyring.Lookup(ch.Target); ok && t.Has(signing.RoleAdmin) && t.ID != k.ID {
			return nil, nil
		}
		stop.scope, stop.revokes = api.KeyScope(ch.Target), ch.Target
	case controllog.KindCancel:
		if !k.Has(signing.RoleAdmin) && submitter != k.ID {
			return nil, fmt.Errorf("key %s did not submit broadcast %s", k.ID, ch.Target)
		}
		stop.scope = api.BroadcastScope(ch.Target)
	case controllog.KindRecall:
		r, err := api.ParseRecallRequest(body)
		if err != nil {
			return nil, err
		}
		if !c.cfg.Policy.isRetraction(r) {
			return nil, nil
		}
		stop.scope = api.BroadcastScope(ch.Target)
	default:
		return nil, fmt.Errorf("a %s is not a stop", ch.Kind)
	}
	return stop, nil
}
