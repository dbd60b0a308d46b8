package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/signing"
)

func broadcastBody(audience, title string) string {
	return fmt.Sprintf(`{"audience":%s,"message":{"title":%q,"body":"b","ttl":"15m"}}`, audience, title)
}

func TestTopicBroadcastReachesEveryDeviceOnce(t *testing.T) {
	f := newFixture(t, nil)
	devs := f.register("citizens", 700, 550)
	f.register("other", 10, 10)
	f.startWorker("w1")

	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "hello"))
	done := f.waitState(st.ID, api.StateCompleted)

	got := map[string]int{}
	for tok, n := range f.fcm.sent("hello") {
		got["fcm:"+tok] += n
	}
	for tok, n := range f.apns.sent("hello") {
		got["apns:"+tok] += n
	}
	if len(got) != len(devs) {
		t.Errorf("%d devices received it, want %d", len(got), len(devs))
	}
	for _, d := range devs {
		if got[member(d)] != 1 {
			t.Errorf("%s received it %d times, want 1", member(d), got[member(d)])
		}
	}
	want := api.Counters{Targeted: 1250, Planned: 1250, Sent: 1250}
	if done.Counters != want {
		t.Errorf("counters = %+v, want %+v", done.Counters, want)
	}
	// Every copy carries the broadcast's collapse identity.
	for _, r := range f.fcm.records() {
		if r.msg.CollapseID != CollapseID(st.ID) || r.msg.BroadcastID != st.ID || r.msg.TTL != 15*time.Minute {
			t.Fatalf("message = %+v, want collapse %s, ttl 15m", r.msg, CollapseID(st.ID))
		}
	}
}

func TestTokenBroadcastAndInvalidTokensArePruned(t *testing.T) {
	f := newFixture(t, nil)
	f.register("citizens", 3, 0)
	f.fcm.script = func(tok string, _ int) providers.Result {
		if strings.HasPrefix(tok, "gone-") {
			return providers.Result{Class: providers.InvalidToken, Reason: "UNREGISTERED"}
		}
		return providers.Result{Class: providers.Sent}
	}
	if err := f.svc.Registry().Put(context.Background(), api.Device{Platform: providers.FCM, Token: "gone-1"}, []string{"citizens"}); err != nil {
		t.Fatal(err)
	}
	f.startWorker("w1")
	st := f.mustSubmit(broadcastBody(`{"tokens":[{"platform":"fcm","token":"gone-1"},{"platform":"fcm","token":"fcm-citizens-00000"}]}`, "direct"))
	done := f.waitState(st.ID, api.StateCompleted)
	if want := (api.Counters{Targeted: 2, Planned: 2, Sent: 1, InvalidToken: 1}); done.Counters != want {
		t.Errorf("counters = %+v, want %+v", done.Counters, want)
	}
	n, err := f.svc.Registry().Count(context.Background(), "citizens")
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("citizens has %d devices after pruning, want 3 (gone-1 removed)", n)
	}
	if got := f.fcm.sent("direct"); got["fcm-citizens-00001"] != 0 || got["fcm-citizens-00000"] != 1 {
		t.Errorf("sent = %v, want only the listed token", got)
	}
}

func TestRetryableDevicesAreRetriedAfterRetryAfter(t *testing.T) {
	f := newFixture(t, nil)
	f.register("citizens", 20, 0)
	f.fcm.script = func(tok string, call int) providers.Result {
		if strings.HasSuffix(tok, "3") && call == 1 {
			return providers.Result{Class: providers.Retryable, RetryAfter: time.Second, Reason: "QUOTA_EXCEEDED"}
		}
		return providers.Result{Class: providers.Sent}
	}
	f.startWorker("w1")
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "retry"))
	done := f.waitState(st.ID, api.StateCompleted)
	if want := (api.Counters{Targeted: 20, Planned: 20, Sent: 20, Retries: 2}); done.Counters != want {
		t.Errorf("counters = %+v, want %+v", done.Counters, want)
	}
	f.fcm.mu.Lock()
	defer f.fcm.mu.Unlock()
	// Both times come from the fake provider: the refusal when it was
	// answered, the re-send when it arrived.
	refusedAt := map[string]time.Time{}
	for _, r := range f.fcm.refused {
		refusedAt[r.token] = r.at
	}
	if len(refusedAt) != 2 {
		t.Fatalf("%d devices refused, want 2", len(refusedAt))
	}
	for _, r := range f.fcm.sends {
		if at, ok := refusedAt[r.token]; ok && r.at.Before(at.Add(time.Second)) {
			t.Errorf("%s re-sent %s after its refusal, before the Retry-After of 1s", r.token, r.at.Sub(at))
		}
	}
	for tok, n := range f.fcm.calls {
		want := 1
		if strings.HasSuffix(tok, "3") {
			want = 2
		}
		if n != want {
			t.Errorf("%s was called %d times, want %d", tok, n, want)
		}
	}
}

func TestRetriesEndAtRetryFor(t *testing.T) {
	// The TTL is 15m, but retries stop retry_for after the broadcast was
	// signed: the device that never gets through ends expired, not failed.
	f := newFixture(t, func(p *Policy) { p.RetryFor = 3 * time.Second; p.RetryBase = 50 * time.Millisecond })
	f.register("citizens", 2, 0)
	f.fcm.script = func(tok string, call int) providers.Result {
		if tok == "fcm-citizens-00000" {
			return providers.Result{Class: providers.Retryable, Reason: "UNAVAILABLE"}
		}
		return providers.Result{Class: providers.Sent}
	}
	f.startWorker("w1")
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "flaky"))
	done := f.waitState(st.ID, api.StateCompleted)
	got := done.Counters
	got.Retries = 0 // how many retries fit in the window depends on the clock
	if want := (api.Counters{Targeted: 2, Planned: 2, Sent: 1, Expired: 1}); got != want {
		t.Errorf("counters = %+v, want %+v", done.Counters, want)
	}
	f.fcm.mu.Lock()
	defer f.fcm.mu.Unlock()
	if n := f.fcm.calls["fcm-citizens-00000"]; n != int(done.Counters.Retries)+1 {
		t.Errorf("the failing device was called %d times, want one more than the %d retries", n, done.Counters.Retries)
	}
}

// deliverTask builds a deliver task as the planner would.
func deliverTask(t *testing.T, id string, seq int64, platform providers.Platform, tokens ...string) *asynq.Task {
	t.Helper()
	b, err := json.Marshal(batchPayload{Broadcast: id, Seq: seq, Platform: platform, Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	return asynq.NewTask(TypeDeliver, b)
}

func TestBatchRetriedAfterPartialSuccessResendsToNobody(t *testing.T) {
	f := newFixture(t, nil)
	f.register("citizens", 6, 0)
	// No worker is started: the test drives the handlers itself, as asynq
	// would when it retries a task.
	w, err := NewWorker(WorkerConfig{Config: f.config(f.control),
		Senders: map[providers.Platform]Sender{providers.FCM: f.fcm, providers.APNs: f.apns}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "once"))
	toks := []string{"fcm-citizens-00000", "fcm-citizens-00001", "fcm-citizens-00002", "fcm-citizens-00003"}

	// The first run reaches two devices, then the worker dies before the
	// others: the ledger records two sent and two still claimed.
	f.fcm.script = func(tok string, _ int) providers.Result {
		if tok == toks[2] || tok == toks[3] {
			return providers.Result{Class: providers.Cancelled}
		}
		return providers.Result{Class: providers.Sent}
	}
	members := []string{"fcm:" + toks[0], "fcm:" + toks[1], "fcm:" + toks[2], "fcm:" + toks[3]}
	nums, err := w.registry.numbers(ctx, members)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = w.store.claim(ctx, st.ID, ledgerDelivery, 0, 0, members, nums); err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.recordOutcomes(ctx, st.ID, 0, time.Now(), "", []any{members[0], "s", nums[0], members[1], "s", nums[1]}, counts{}); err != nil {
		t.Fatal(err)
	}

	// asynq runs the task again: only the two unrecorded devices are sent.
	f.fcm.script = nil
	if err := w.deliver(ctx, deliverTask(t, st.ID, 0, providers.FCM, toks...)); err != nil {
		t.Fatal(err)
	}
	// And once more: nobody.
	if err := w.deliver(ctx, deliverTask(t, st.ID, 0, providers.FCM, toks...)); err != nil {
		t.Fatal(err)
	}
	got := f.fcm.sent("once")
	for i, tok := range toks {
		want := 1
		if i < 2 {
			want = 0 // sent before the crash, outside this fake's record
		}
		if got[tok] != want {
			t.Errorf("%s sent %d times by the retries, want %d", tok, got[tok], want)
		}
	}
	// Another batch naming the same devices is a duplicate, not a send.
	if err := w.deliver(ctx, deliverTask(t, st.ID, 7, providers.FCM, toks[2])); err != nil {
		t.Fatal(err)
	}
	if n := f.fcm.sent("once")[toks[2]]; n != 1 {
		t.Errorf("duplicate batch re-sent %s: %d sends", toks[2], n)
	}
	after, _ := f.svc.Get(ctx, st.ID)
	if after.Counters.Sent != 4 || after.Counters.SkippedDuplicate != 1 {
		t.Errorf("counters = %+v, want sent 4, skipped_duplicate 1", after.Counters)
	}
}

func TestAudienceCapStopsPlanning(t *testing.T) {
	f := newFixture(t, nil)
	f.register("citizens", 3, 0)
	f.startWorker("w1")
	// "small" may reach 5 devices: 3 is fine at submission...
	sub, err := f.submit(f.signers["small"], broadcastBody(`{"topic":"citizens"}`, "capped"))
	if err != nil {
		t.Fatal(err)
	}
	f.waitState(sub.Status.ID, api.StateCompleted)
	// ...but not once the topic has grown past the cap.
	f.register("citizens", 10, 0)
	_, err = f.submit(f.signers["small"], broadcastBody(`{"topic":"citizens"}`, "capped2"))
	if api.CodeOf(err) != api.CodeAudienceOverCap {
		t.Fatalf("submit over cap: err = %v, want %s", err, api.CodeAudienceOverCap)
	}
}

func TestIdempotencyKey(t *testing.T) {
	f := newFixture(t, nil)
	body := `{"idempotency_key":"k1","audience":{"topic":"citizens"},"message":{"title":"a","body":"b"}}`
	first, err := f.submit(f.sender, body)
	if err != nil || !first.Created {
		t.Fatalf("first submit: %+v, %v", first, err)
	}
	again, err := f.submit(f.sender, body)
	if err != nil {
		t.Fatal(err)
	}
	if again.Created || again.Status.ID != first.Status.ID {
		t.Errorf("repeat: created=%v id=%s, want the existing %s", again.Created, again.Status.ID, first.Status.ID)
	}
	changed := strings.Replace(body, `"b"}`, `"other"}`, 1)
	if _, err := f.submit(f.sender, changed); api.CodeOf(err) != api.CodeIdempotencyConflict {
		t.Errorf("changed body: err = %v, want %s", err, api.CodeIdempotencyConflict)
	}
	list, err := f.svc.List(context.Background(), "", 10, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Broadcasts) != 1 {
		t.Errorf("%d broadcasts stored, want 1", len(list.Broadcasts))
	}
}

func TestGlobalKillRefusesSubmissions(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	if _, err := f.kill("admin", api.ScopeGlobal, "drill", false); err != nil {
		t.Fatal(err)
	}
	if _, err := f.submit(f.sender, broadcastBody(`{"topic":"citizens"}`, "x")); api.CodeOf(err) != api.CodeKillSwitchActive {
		t.Fatalf("err = %v, want %s", err, api.CodeKillSwitchActive)
	}
	_, pending, err := f.resume("admin", api.ScopeGlobal, "over")
	if err != nil || pending == nil {
		t.Fatalf("resume global = %+v, %v; want it to wait for a second admin", pending, err)
	}
	if _, err := f.approveAction("admin2", pending); err != nil {
		t.Fatal(err)
	}
	sub, err := f.submit(f.sender, broadcastBody(`{"topic":"citizens"}`, "x"))
	if err != nil {
		t.Fatalf("after resume: %v", err)
	}
	if _, err := f.control.await(ctx, "sender", nonceOfBroadcast(t, f, sub.Status.ID)); err != nil {
		t.Fatal(err)
	}
	page, err := f.svc.AuditLog(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range page.Entries {
		actions = append(actions, e.Actor+" "+e.Action+" "+e.Target)
	}
	want := []string{"sender submit " + sub.Status.ID, "admin2 approve_action " + pending.ID, "admin resume global", "admin kill global"}
	if !slices.Equal(actions, want) {
		t.Errorf("audit, newest first = %q, want %q", actions, want)
	}
	// Each entry proves into the signed checkpoint.
	cp, err := controllog.OpenCheckpoint([]byte(page.Checkpoint), f.logKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range page.Entries {
		var proof tlog.RecordProof
		for _, p := range e.Proof {
			h, err := tlog.ParseHash(p)
			if err != nil {
				t.Fatal(err)
			}
			proof = append(proof, h)
		}
		if err := tlog.CheckRecord(proof, cp.Size, cp.Root, e.Index, tlog.RecordHash(e.Entry)); err != nil {
			t.Errorf("entry %d does not prove into the checkpoint: %v", e.Index, err)
		}
	}
}

// nonceOfBroadcast reads the nonce of a broadcast's stored envelope.
func nonceOfBroadcast(t *testing.T, f *fixture, id string) string {
	t.Helper()
	return storedEnvelope(t, f, id).Nonce
}

// storedEnvelope verifies a broadcast's stored envelope and returns what
// its signature says.
func storedEnvelope(t *testing.T, f *fixture, id string) *signing.Verified {
	t.Helper()
	raw, err := f.rdb.Get(context.Background(), f.keys.Envelope(id)).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	var env signing.Request
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	v, err := f.control.verifier.VerifyRecorded(context.Background(), &env)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestDeviceLimitThrottlesExcess(t *testing.T) {
	f := newFixture(t, func(p *Policy) { p.DeviceLimit = 2; p.DeviceWindow = time.Hour })
	f.register("citizens", 3, 0)
	f.startWorker("w1")
	var last *api.Status
	for i := range 3 {
		st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, fmt.Sprintf("n%d", i)))
		last = f.waitState(st.ID, api.StateCompleted)
	}
	if want := (api.Counters{Targeted: 3, Planned: 3, Throttled: 3}); last.Counters != want {
		t.Errorf("third broadcast counters = %+v, want %+v", last.Counters, want)
	}
	if n := len(f.fcm.sent("n2")); n != 0 {
		t.Errorf("third broadcast reached %d devices past the limit of 2/hour", n)
	}
}
