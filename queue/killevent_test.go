package queue

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/signing"
)

// announcement returns the stop announcement of a request signed by key
// by, as the API publishes it.
func (f *fixture) announcement(by, path, body string) string {
	f.t.Helper()
	_, env := f.as(by, "POST", path, body)
	kind, target, _ := controllog.KindOf("POST", path)
	leaf, err := controllog.Encode(&controllog.Entry{Time: time.Now(), Request: env, Decision: controllog.Decision{Kind: kind, Target: target}})
	if err != nil {
		f.t.Fatal(err)
	}
	return string(leaf)
}

// TestAnnouncedStopActsBeforeIntegration checks the early stop of an
// announced kill: a worker that verifies the announcement's signature
// stops the flights in its scope, running or new, before the log holds
// the kill; flights of other scopes go on; announcements that do not
// verify, or come from a key that may not stop, stop nothing.
func TestAnnouncedStopActsBeforeIntegration(t *testing.T) {
	f := newFixture(t, nil)
	// A view that never integrates: nothing announced here reaches the log.
	ks := NewKillSwitch(f.newControl(false, ""), f.rdb, f.keys, "w1", slog.New(slog.DiscardHandler))
	waitFor(t, "a fresh view", ks.control.Fresh)
	ctx := context.Background()
	hit := ks.begin(ctx, Scope{BroadcastID: "b1", KeyID: "k1"})
	other := ks.begin(ctx, Scope{BroadcastID: "b2", KeyID: "k1"})
	defer hit.end()
	defer other.end()

	kill := func(scope string) string { return fmt.Sprintf(`{"scope":%q,"reason":"test"}`, scope) }
	refused := []string{
		f.announcement("sender", api.PathKill, kill(api.BroadcastScope("b1"))), // a sender may not kill
		`{"time":"2026-12-01T00:00:00Z","request":{"method":"POST","path":"/v1/kill","header":{},"body":null},"decision":{"kind":"kill"}}`,
		"not an entry",
	}
	for _, a := range refused {
		ks.announce(ctx, a)
	}
	if !hit.Enter() {
		t.Fatal("an announcement that does not verify stopped a flight")
	}
	hit.Leave(0)

	ks.announce(ctx, f.announcement("admin", api.PathKill, kill(api.BroadcastScope("b1"))))
	if hit.Enter() || hit.Commit() {
		t.Error("a running flight of the announced scope still admits calls")
	}
	if got := hit.killed(); got != api.BroadcastScope("b1") {
		t.Errorf("flight killed by %q, want %q", got, api.BroadcastScope("b1"))
	}
	if !other.Enter() || !other.Commit() {
		t.Error("a flight of another broadcast was stopped")
	}
	other.Leave(1)
	late := ks.begin(ctx, Scope{BroadcastID: "b1", KeyID: "k1"})
	defer late.end()
	if late.Enter() {
		t.Error("a flight begun after the announcement admits calls")
	}
	// The stop stands across syncs of a log that does not hold it yet.
	ks.Sync(ctx)
	if _, ok := ks.Killed(Scope{BroadcastID: "b1"}); !ok {
		t.Error("a sync of the log lifted an announced stop before it expired")
	}
}

// TestReplayedAnnouncementStopsNothing replays an announcement signed
// longer ago than the signing skew: it is refused.
func TestReplayedAnnouncementStopsNothing(t *testing.T) {
	f := newFixture(t, nil)
	ks := NewKillSwitch(f.control, f.rdb, f.keys, "w1", slog.New(slog.DiscardHandler))
	old := time.Now().Add(-signing.DefaultSkew - time.Minute)
	f.signers["admin"].Now = func() time.Time { return old }
	f.verifier = signing.NewVerifier(signing.VerifierConfig{Profile: signing.DefaultProfile(), Keys: f.keyring,
		Now: func() time.Time { return old }})
	a := f.announcement("admin", api.PathKill, `{"scope":"global","reason":"old"}`)
	ks.announce(context.Background(), a)
	if by, ok := ks.Killed(Scope{BroadcastID: "b1"}); ok {
		t.Errorf("a replayed announcement stopped work (by %s)", by)
	}
}

// eventLog records, in order, the messages logged through it and the
// events a test adds.
type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (l *eventLog) add(e string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

func (l *eventLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *eventLog) Handle(_ context.Context, r slog.Record) error {
	l.add(r.Message)
	return nil
}
func (l *eventLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *eventLog) WithGroup(string) slog.Handler      { return l }

func (l *eventLog) index(e string) int { return slices.Index(l.all(), e) }

func (l *eventLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

// TestAnnouncementDoesNotWaitForASync checks that a stop announcement is
// acted on while a sync is still waiting for an earlier kill's calls to be
// answered. A sync makes Redis round trips and waits for killed flights to
// end; an announcement handled behind it reached the flights tens of
// milliseconds late on a loaded machine.
func TestAnnouncementDoesNotWaitForASync(t *testing.T) {
	f := newFixture(t, nil)
	events := &eventLog{}
	ks := NewKillSwitch(f.newControl(false, ""), f.rdb, f.keys, "w1", slog.New(events))
	waitFor(t, "a fresh view", ks.control.Fresh)
	ctx := context.Background()
	kill := func(id string) string { return fmt.Sprintf(`{"scope":%q,"reason":"test"}`, api.BroadcastScope(id)) }

	// b1's flight has a call on the wire that is never answered, so a
	// sync that applies b1's kill waits for it until drainTimeout.
	first := ks.begin(ctx, Scope{BroadcastID: "b1", KeyID: "k1"})
	if !first.Enter() || !first.Commit() {
		t.Fatal("a fresh flight refused a call")
	}
	second := ks.begin(ctx, Scope{BroadcastID: "b2", KeyID: "k1"})
	defer second.end()
	ks.announce(ctx, f.announcement("admin", api.PathKill, kill("b1")))
	synced := make(chan struct{})
	go func() {
		defer close(synced)
		ks.Sync(ctx)
	}()
	// Wait until the sync is applying (it holds applyMu while it waits).
	waitFor(t, "the sync to start applying", func() bool {
		if ks.applyMu.TryLock() {
			ks.applyMu.Unlock()
			return false
		}
		return true
	})

	ks.announce(ctx, f.announcement("admin", api.PathKill, kill("b2")))
	events.add("b2 announced")
	if second.Enter() {
		t.Error("the announced kill of b2 did not stop its flight")
	}
	first.Leave(1)
	first.end()
	select {
	case <-synced:
	case <-time.After(time.Minute):
		t.Fatal("hung: the sync did not end after b1's call was answered")
	}
	timedOut := events.index("kill switch: provider calls did not stop in time; acknowledging anyway")
	if announced := events.index("b2 announced"); timedOut >= 0 && timedOut < announced {
		t.Errorf("the announcement of b2 was handled only after the sync gave up waiting for b1's calls: %q", events.all())
	}
}
