package queue

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/api"
)

// failScriptOnce fails the first run of one script, as a Redis error or a
// lost connection would.
type failScriptOnce struct {
	sha  string
	done atomic.Bool
}

func (h *failScriptOnce) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *failScriptOnce) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *failScriptOnce) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		if cmd.Name() == "evalsha" && len(args) > 1 && args[1] == h.sha && h.done.CompareAndSwap(false, true) {
			err := errors.New("injected failure")
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

// TestRefusedSubmissionBindsNothing fails a submission after it claimed
// its idempotency key (the broadcast could not be stored). The key must
// bind nothing afterwards, so that the correct repeat creates and sends
// the broadcast instead of being answered with another one.
func TestRefusedSubmissionBindsNothing(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	f.register("citizens", 3, 0)
	body := `{"idempotency_key":"siren-2","audience":{"topic":"citizens"},"message":{"title":"a","body":"b"}}`
	hook := &failScriptOnce{sha: createScript.Hash()}
	f.rdb.AddHook(hook)

	if _, err := f.submit(f.sender, body); err == nil {
		t.Fatal("submission whose broadcast could not be stored was accepted")
	}
	if !hook.done.Load() {
		t.Fatal("the injected failure never ran: the test proves nothing")
	}
	n, err := f.rdb.Exists(ctx, f.keys.Idempotency("sender", "siren-2")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("the refused submission left its idempotency key bound")
	}
	page, err := f.svc.List(ctx, "", 10, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Broadcasts) != 0 {
		t.Errorf("the refused submission left %d broadcasts", len(page.Broadcasts))
	}

	sub, err := f.submit(f.sender, body)
	if err != nil {
		t.Fatalf("correct repeat: %v", err)
	}
	if !sub.Created {
		t.Errorf("correct repeat answered with the existing broadcast %s, want a new one", sub.Status.ID)
	}
}

// TestClaimOfAnUnfinishedSubmission covers a claim whose submission has
// not stored its broadcast (still running, or its process died): repeats
// are told to come back rather than sending a second broadcast, and the
// claim lapses by itself. A claim whose broadcast was stored before its
// process died is committed by the repeat, which gets that broadcast.
func TestClaimOfAnUnfinishedSubmission(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	f.register("citizens", 3, 0)
	body := `{"idempotency_key":"siren-3","audience":{"topic":"citizens"},"message":{"title":"a","body":"b"}}`
	key := f.keys.Idempotency("sender", "siren-3")
	claim := idempotency{id: "bc-elsewhere", bodyHash: bodyHash([]byte(body)), pending: true}
	if err := f.rdb.Set(ctx, key, claim.value(), idempotencyLease).Err(); err != nil {
		t.Fatal(err)
	}

	_, err := f.submit(f.sender, body)
	var e *api.Error
	if !errors.As(err, &e) || e.Code != api.CodeIdempotencyConflict || e.RetryAfter <= 0 {
		t.Fatalf("repeat during another submission: %v, want %s with a Retry-After", err, api.CodeIdempotencyConflict)
	}
	ttl, err := f.rdb.PTTL(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 0 || ttl > idempotencyLease {
		t.Errorf("a claim lives %v, want a lease of at most %v", ttl, idempotencyLease)
	}

	// The claiming process stored its broadcast, then died.
	first, err := f.submit(f.sender, `{"idempotency_key":"siren-4","audience":{"topic":"citizens"},"message":{"title":"a","body":"b"}}`)
	if err != nil {
		t.Fatal(err)
	}
	claim.id = first.Status.ID
	if err := f.rdb.Set(ctx, key, claim.value(), idempotencyLease).Err(); err != nil {
		t.Fatal(err)
	}
	again, err := f.submit(f.sender, body)
	if err != nil {
		t.Fatalf("repeat after a stored, uncommitted broadcast: %v", err)
	}
	if again.Created || again.Status.ID != first.Status.ID {
		t.Errorf("repeat: created=%v id=%s, want the stored broadcast %s", again.Created, again.Status.ID, first.Status.ID)
	}
	ttl, err = f.rdb.PTTL(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= idempotencyLease {
		t.Errorf("binding lives %v after the repeat, want it committed for the idempotency TTL", ttl)
	}

	// Redis contents are untrusted: a malformed binding is refused, not
	// guessed at.
	if err := f.rdb.Set(ctx, key, "garbage", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.submit(f.sender, body); err == nil {
		t.Error("a malformed binding in Redis was taken as a valid one")
	}
	// A lapsed claim binds nothing: the next repeat is a new broadcast.
	if err := f.rdb.Del(ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	sub, err := f.submit(f.sender, body)
	if err != nil || !sub.Created {
		t.Fatalf("after the claim lapsed: %+v, %v; want a new broadcast", sub, err)
	}
}
