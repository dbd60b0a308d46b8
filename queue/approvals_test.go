package queue

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/signing"
)

// forgePlan enqueues a plan task for broadcast id, as someone who can
// write to the queue could.
func (f *fixture) forgePlan(id string) {
	f.t.Helper()
	cl := asynq.NewClientFromRedisClient(f.rdb)
	if _, err := cl.Enqueue(PlanTask(id), asynq.Queue(QueuePlan)); err != nil {
		f.t.Fatal(err)
	}
}

// nonceOf reads the signature nonce of an encoded log entry.
func nonceOf(t *testing.T, leaf string) string {
	t.Helper()
	e, err := controllog.Decode([]byte(leaf))
	if err != nil {
		t.Fatal(err)
	}
	in := e.Request.Header.Get("Signature-Input")
	_, rest, ok := strings.Cut(in, `nonce="`)
	nonce, _, _ := strings.Cut(rest, `"`)
	if !ok || nonce == "" {
		t.Fatalf("no nonce in %q", in)
	}
	return nonce
}

// securityEvents reads one refused-task counter.
func (f *fixture) securityEvents(name string) int64 {
	f.t.Helper()
	ev, err := f.svc.SecurityEvents(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return ev[name]
}

// TestBroadcastOverThresholdNeedsTwoOwnersApprovals submits a broadcast of
// key gated (approval above 10 devices, owner city) to 50 devices and
// checks that nothing reaches a phone without two valid approvals of
// distinct owners other than city, however the approvals are faked.
func TestBroadcastOverThresholdNeedsTwoOwnersApprovals(t *testing.T) {
	f := newFixture(t, nil)
	f.register("citizens", 50, 0)
	f.startWorker("w1")
	ctx := context.Background()
	sub, err := f.submit(f.signers["gated"], broadcastBody(`{"topic":"citizens"}`, "big"))
	if err != nil {
		t.Fatal(err)
	}
	st := sub.Status
	if st.State != api.StateAwaitingApproval || st.ApprovalsRequired != 2 || st.ApprovalExpiresAt.IsZero() {
		t.Fatalf("status = %+v, want awaiting 2 approvals", st)
	}
	var env signing.Request
	raw, _ := f.rdb.Get(ctx, f.keys.Envelope(st.ID)).Bytes()
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	digest := api.Digest(env.Body)
	refused := func() int64 { return f.securityEvents(TypePlan + ":approval") }

	// No approval: a plan task forged into the queue is refused.
	f.forgePlan(st.ID)
	waitFor(t, "the forged plan task to be refused", func() bool { return refused() == 1 })

	// Approvals that do not count.
	if _, err := f.approve("approver-city", st.ID, digest); api.CodeOf(err) != api.CodeSelfApproval {
		t.Errorf("approval by the submitter's owner: %v, want %s", err, api.CodeSelfApproval)
	}
	if _, err := f.approve("approver-a", st.ID, strings.Repeat("0", 64)); api.CodeOf(err) != api.CodeApprovalMismatch {
		t.Errorf("approval of another body: %v, want %s", err, api.CodeApprovalMismatch)
	}
	if got, err := f.approve("approver-a", st.ID, digest); err != nil || got.State != api.StateAwaitingApproval || len(got.Approvals) != 1 {
		t.Fatalf("first approval = %+v, %v; want still awaiting with one approval", got, err)
	}
	if _, err := f.approve("approver-a2", st.ID, digest); api.CodeOf(err) != api.CodeDuplicateApproval {
		t.Errorf("a second key of the same owner: %v, want %s", err, api.CodeDuplicateApproval)
	}

	// One approval, the state written straight into Redis, the genuine
	// approval appended again for integration (a replay), a forged one
	// written past the signed end of the log, and a plan task: still
	// refused.
	f.rdb.HSet(ctx, f.keys.Broadcast(st.ID), "state", api.StateQueued)
	_, size := f.control.Head()
	first := f.rdb.HGet(ctx, f.keys.LogEntries(), strconv.FormatInt(size-1, 10)).Val()
	f.rdb.RPush(ctx, f.keys.LogPending(), first)
	f.rdb.HSet(ctx, f.keys.LogEntries(), strconv.FormatInt(size, 10), strings.Replace(first, "approver-a", "approver-b", -1))
	f.forgePlan(st.ID)
	waitFor(t, "the second forged plan task to be refused", func() bool { return refused() == 2 })
	if n := len(f.fcm.sent("big")); n != 0 {
		t.Fatalf("%d phones got a broadcast with one genuine approval", n)
	}
	waitFor(t, "the replayed approval to be refused as a replay", func() bool {
		why, _ := f.control.store.rejection(ctx, "approver-a "+nonceOf(t, first))
		return strings.Contains(why, "replayed")
	})
	f.rdb.HSet(ctx, f.keys.Broadcast(st.ID), "state", api.StateAwaitingApproval)

	// The second owner's approval completes it: every phone, once.
	got, err := f.approve("approver-b", st.ID, digest)
	// The worker may plan it before the status is read back.
	if err != nil || !slices.Contains([]string{api.StateQueued, api.StateSending, api.StateCompleted}, got.State) || len(got.Approvals) != 2 {
		t.Fatalf("second approval = %+v, %v; want it queued (or under way) with two approvals", got, err)
	}
	done := f.waitState(st.ID, api.StateCompleted)
	if done.Counters.Sent != 50 || len(f.fcm.sent("big")) != 50 {
		t.Errorf("sent %d to %d phones, want 50", done.Counters.Sent, len(f.fcm.sent("big")))
	}
}

// TestBroadcastToAllAlwaysNeedsApprovals checks that an audience of all
// waits for approvals with no threshold configured.
func TestBroadcastToAllAlwaysNeedsApprovals(t *testing.T) {
	f := newFixture(t, nil)
	f.register("citizens", 3, 0)
	f.startWorker("w1")
	sub, err := f.submit(f.signers["everyone"], broadcastBody(`{"all":true}`, "all"))
	if err != nil || sub.Status.State != api.StateAwaitingApproval {
		t.Fatalf("submit to all = %+v, %v; want awaiting approval", sub, err)
	}
	f.forgePlan(sub.Status.ID)
	waitFor(t, "the forged plan task to be refused", func() bool { return f.securityEvents(TypePlan+":approval") == 1 })
	if n := len(f.fcm.sent("all")); n != 0 {
		t.Fatalf("%d phones got a broadcast to all without approvals", n)
	}
}

// TestPendingBroadcastExpires lets a broadcast's approval window pass.
func TestPendingBroadcastExpires(t *testing.T) {
	f := newFixture(t, func(p *Policy) { p.ApprovalWindow = time.Second })
	f.register("citizens", 20, 0)
	f.startWorker("w1")
	sub, err := f.submit(f.signers["gated"], broadcastBody(`{"topic":"citizens"}`, "late"))
	if err != nil {
		t.Fatal(err)
	}
	f.waitState(sub.Status.ID, api.StateExpired)
	var env signing.Request
	raw, _ := f.rdb.Get(context.Background(), f.keys.Envelope(sub.Status.ID)).Bytes()
	json.Unmarshal(raw, &env)
	if _, err := f.approve("approver-a", sub.Status.ID, api.Digest(env.Body)); api.CodeOf(err) != api.CodeApprovalExpired {
		t.Errorf("approval after the window: %v, want %s", err, api.CodeApprovalExpired)
	}
	if n := len(f.fcm.sent("late")); n != 0 {
		t.Errorf("%d phones got an expired broadcast", n)
	}
}

// TestCustomRecallWaitsForASecondPerson checks the two-person rule on the
// recall that puts text on phones, and that the standard retraction does
// not wait.
func TestCustomRecallWaitsForASecondPerson(t *testing.T) {
	f := newFixture(t, nil)
	f.register("citizens", 20, 0)
	f.startWorker("w1")
	ctx := context.Background()
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "original"))
	f.waitState(st.ID, api.StateCompleted)

	custom := `{"mode":"replace","replacement":{"title":"Evacuate","body":"Leave now"}}`
	_, pending, err := f.recall("admin", st.ID, custom)
	if err != nil || pending == nil || pending.Kind != api.ActionRecall || pending.Done {
		t.Fatalf("custom recall = %+v, %v; want a pending action", pending, err)
	}
	if got, _ := f.svc.Get(ctx, st.ID); got.State != api.StateCompleted {
		t.Fatalf("a pending recall changed the broadcast to %s", got.State)
	}
	// Someone with write access to Redis marks the broadcast recalling and
	// enqueues its recall: the log holds the request only as a pending
	// action, so the workers find no recall to send.
	f.rdb.HSet(ctx, f.keys.Broadcast(st.ID), "state", api.StateRecalling)
	cl := asynq.NewClientFromRedisClient(f.rdb)
	task := PlanTask(st.ID)
	if _, err := cl.Enqueue(asynq.NewTask(TypeRecallPlan, task.Payload()), asynq.Queue(QueueRecall)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the forged recall to be refused", func() bool { return f.securityEvents(TypeRecallPlan+":envelope") == 1 })
	if n := len(f.fcm.sent("Evacuate")); n != 0 {
		t.Fatalf("%d phones got custom recall text nobody approved", n)
	}
	f.rdb.HSet(ctx, f.keys.Broadcast(st.ID), "state", api.StateCompleted)

	if _, err := f.approveAction("admin", pending); api.CodeOf(err) != api.CodeSelfApproval {
		t.Errorf("the requester approving its own recall: %v, want %s", err, api.CodeSelfApproval)
	}
	out, err := f.approveAction("approver-a", pending)
	if err != nil || !out.Action.Done || out.Recall == nil {
		t.Fatalf("second person's approval = %+v, %v; want the recall carried out", out, err)
	}
	f.waitState(st.ID, api.StateRecalled)
	if n := len(f.fcm.sent("Evacuate")); n != 20 {
		t.Errorf("the approved recall reached %d phones, want 20", n)
	}

	// The standard retraction goes at once.
	st2 := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "second"))
	f.waitState(st2.ID, api.StateCompleted)
	retraction := `{"mode":"replace","replacement":{"title":"` + f.policy.RetractionTitle + `","body":"` + f.policy.RetractionBody + `"}}`
	if got, pending, err := f.recall("admin", st2.ID, retraction); err != nil || pending != nil ||
		got.State != api.StateRecalling && got.State != api.StateRecalled {
		t.Fatalf("standard retraction = %+v, %+v, %v; want it under way at once", got, pending, err)
	}
	f.waitState(st2.ID, api.StateRecalled)
}

// TestAdminActionsThatReleaseNeedASecondPerson covers resume of a key kill
// and revocation of an admin key.
func TestAdminActionsThatReleaseNeedASecondPerson(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	if _, err := f.kill("admin", api.KeyScope("small"), "drill", false); err != nil {
		t.Fatal(err)
	}
	_, pending, err := f.resume("admin", api.KeyScope("small"), "over")
	if err != nil || pending == nil {
		t.Fatalf("resume of a key kill = %+v, %v; want pending", pending, err)
	}
	if !f.control.IsActive(api.KeyScope("small")) {
		t.Fatal("a pending resume lifted the kill")
	}
	if _, err := f.approveAction("admin2", pending); err != nil {
		t.Fatal(err)
	}
	if f.control.IsActive(api.KeyScope("small")) {
		t.Fatal("the approved resume did not lift the kill")
	}
	if _, err := f.approveAction("approver-a", pending); api.CodeOf(err) != api.CodeInvalidState {
		t.Errorf("approving a done action: %v, want %s", err, api.CodeInvalidState)
	}

	// A topic kill is lifted at once.
	if _, err := f.kill("admin", api.TopicScope("floods"), "drill", false); err != nil {
		t.Fatal(err)
	}
	if _, pending, err := f.resume("admin", api.TopicScope("floods"), "over"); err != nil || pending != nil {
		t.Fatalf("resume of a topic kill = %+v, %v; want it done at once", pending, err)
	}

	// One admin cannot revoke another alone; a sender key it can.
	_, pending, err = f.revoke("admin", "admin2", "rogue")
	if err != nil || pending == nil {
		t.Fatalf("revoke of an admin = %+v, %v; want pending", pending, err)
	}
	if revoked, _ := f.control.Revoked(ctx, "admin2"); revoked {
		t.Fatal("a pending revocation revoked the key")
	}
	if res, pending, err := f.revoke("admin", "small", "leaked"); err != nil || pending != nil || res == nil {
		t.Fatalf("revoke of a sender key = %+v, %+v, %v; want it done at once", res, pending, err)
	}
	// The admin being revoked cannot approve its own revocation's undoing,
	// but another owner's approver can complete the revocation.
	out, err := f.approveAction("approver-b", pending)
	if err != nil || out.Kill == nil {
		t.Fatalf("approval of the revocation = %+v, %v", out, err)
	}
	if revoked, _ := f.control.Revoked(ctx, "admin2"); !revoked {
		t.Fatal("the approved revocation did not revoke the key")
	}
}
