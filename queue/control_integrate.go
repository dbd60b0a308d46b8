package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/signing"
)

// record appends a request the API accepted to the control log, as an
// entry with what the API decided, and wakes the integrators. A stop (a
// kill, revocation, cancel or recall that stops sending) is announced to
// the workers with it, so they stop on its signature before it is
// integrated. Nothing waits for integration; await does.
func (c *Control) record(ctx context.Context, req *signing.Request, d controllog.Decision, stop bool) error {
	if err := c.Err(); err != nil {
		return api.Errorf(api.CodeControlLogInconsistent, "the control log failed its checks; nothing is recorded until it is restored: %v", err)
	}
	leaf, err := controllog.Encode(&controllog.Entry{Time: c.now().UTC(), Request: req, Decision: d})
	if err != nil {
		return err
	}
	if err := c.store.appendPending(ctx, leaf, stop); err != nil {
		return err
	}
	c.Kick()
	return nil
}

// Kick wakes this process's integrator, if it has one.
func (c *Control) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// integrationWait bounds how long the API waits for a request it recorded
// to be integrated: longer means no integrator is running.
const integrationWait = 10 * time.Second

// await waits until the request signed by keyID with nonce is an
// integrated entry of this process's view, and returns its index. It
// fails when the integrator refused it or none integrates in time. A
// Redis error while it polls is not the answer: the request is recorded
// already, and Redis coming back (a restart, a failover) lets the wait
// see it integrated; the error is returned only if none integrates in
// time.
func (c *Control) await(ctx context.Context, keyID, nonce string) (int64, error) {
	deadline := time.NewTimer(integrationWait)
	defer deadline.Stop()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	rid := keyID + " " + nonce
	var lastErr error
	for {
		changed := c.Changed()
		if i, ok := c.seen(keyID, nonce); ok {
			return i, nil
		}
		if err := c.Err(); err != nil {
			return 0, api.Errorf(api.CodeControlLogInconsistent, "the control log failed its checks: %v", err)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-deadline.C:
			if lastErr != nil {
				return 0, fmt.Errorf("the request was not seen integrated into the control log within %s: %w", integrationWait, lastErr)
			}
			return 0, api.Errorf(api.CodeControlLogUnavailable,
				"the request was not integrated into the control log within %s: is a process with the log key (control.log_key) running?", integrationWait)
		case <-changed:
		case <-poll.C:
			why, err := c.store.rejection(ctx, rid)
			if err != nil {
				lastErr = err
				continue
			}
			if why != "" {
				return 0, api.Errorf(api.CodeControlLogUnavailable, "the control log's integrator refused the request: %s", why)
			}
			if err := c.refresh(ctx); err != nil && !errors.Is(err, errLogInconsistent) {
				lastErr = err
			}
		}
	}
}

// integrateLoop integrates whenever a request is appended (here or in any
// process) and signs a fresh checkpoint at every interval, so that readers
// can tell a current view from a stale one.
func (c *Control) integrateLoop(ctx context.Context) {
	ps := c.cfg.Redis.Subscribe(ctx, c.cfg.Keys.LogPendingChannel())
	defer ps.Close()
	msgs := ps.Channel(redis.WithChannelSize(16))
	tick := time.NewTicker(c.interval())
	defer tick.Stop()
	var warned time.Time
	for {
		if err := c.integrate(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, errLogInconsistent) {
			if c.now().Sub(warned) > 10*time.Second {
				warned = c.now()
				c.logger.Warn("control log: integration failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-msgs:
		case <-tick.C:
		}
	}
}

// maxIntegrate is how many requests one integration takes.
const maxIntegrate = 256

// integrate takes the pending requests into the log and signs a
// checkpoint of the result with the current time. Each request is checked
// first — signature, role, time, not revoked, not already in the log — and
// one that fails is left out and its refusal recorded. Another integrator
// integrating at the same moment makes this one read again.
func (c *Control) integrate(ctx context.Context) error {
	for range 8 {
		if err := c.refresh(ctx); err != nil {
			return err
		}
		b, err := c.store.readPending(ctx, maxIntegrate)
		if err != nil {
			return err
		}
		c.mu.Lock()
		tree := c.tree.Clone()
		head, base := c.head, c.read
		state := c.state
		c.mu.Unlock()
		now := c.now()
		// Nothing to take, and the checkpoint is young enough that the
		// next tick's re-signing keeps every view fresh.
		if len(b.items) == 0 && head != nil && now.Sub(head.Time) < c.interval()/2 {
			return nil
		}
		size := tree.Size()
		var leaves [][]byte
		var hashes []tlog.Hash
		rejected := map[string]string{}
		batch := map[string]bool{}
		for _, raw := range b.items {
			leaf, rid, err := c.admit(ctx, state, batch, raw, now)
			if err != nil {
				c.logger.Error("security: control log request refused at integration", "event", "control_log_refused", "err", err)
				if rid != "" {
					rejected[rid] = err.Error()
				}
				continue
			}
			hs, err := tree.Append(leaf)
			if err != nil {
				return err
			}
			leaves, hashes = append(leaves, leaf), append(hashes, hs...)
		}
		cp := &controllog.Checkpoint{Origin: c.cfg.Signer.Name(), Size: tree.Size(), Root: tree.Root(), Time: now.UTC()}
		signed, err := cp.Sign(c.cfg.Signer)
		if err != nil {
			return err
		}
		err = c.store.integrate(ctx, base, size, b, len(b.items), leaves, hashes, signed)
		if errors.Is(err, errIntegrateConflict) {
			continue
		}
		if err != nil {
			return err
		}
		if err := c.store.reject(ctx, rejected); err != nil {
			c.logger.Warn("control log: refusals not recorded", "err", err)
		}
		if len(b.items) == maxIntegrate {
			c.Kick()
		}
		return c.refresh(ctx)
	}
	return errIntegrateConflict
}

// admit checks one pending request for integration and returns its leaf,
// stamped with the integration time. state is read only.
func (c *Control) admit(ctx context.Context, state *controlState, batch map[string]bool, raw []byte, now time.Time) ([]byte, string, error) {
	e, err := controllog.Decode(raw)
	if err != nil {
		return nil, "", fmt.Errorf("pending entry: %w", err)
	}
	e.Time = now.UTC()
	ch, err := controllog.Check(ctx, state.verifier, e, c.window)
	if err != nil {
		return nil, "", err
	}
	k, nonce := ch.Verified.Key.ID, ch.Verified.Nonce
	rid := k + " " + nonce
	c.mu.Lock()
	_, revoked := state.revoked[k]
	_, dup := state.seen[requestID(k, nonce)]
	c.mu.Unlock()
	switch {
	case revoked:
		return nil, rid, fmt.Errorf("key %s is revoked", k)
	case dup || batch[rid]:
		return nil, rid, fmt.Errorf("request by %s is already in the log (replayed)", k)
	}
	batch[rid] = true
	leaf, err := controllog.Encode(e)
	return leaf, rid, err
}
