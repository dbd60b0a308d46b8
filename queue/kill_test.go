package queue

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/signing"
)

func TestValidateScope(t *testing.T) {
	tests := []struct {
		give string
		want bool
	}{
		{"global", true},
		{"key:city-alerts", true},
		{"broadcast:b0123", true},
		{"topic:citizens", true},
		{"topic:bad topic", false},
		{"key:", false},
		{"everything", false},
		{"region:north", false},
		{"", false},
	}
	for _, tt := range tests {
		err := api.ValidateScope(tt.give)
		if got := err == nil; got != tt.want {
			t.Errorf("api.ValidateScope(%q) = %v, want ok=%v", tt.give, err, tt.want)
		}
	}
}

func TestKillStateMatch(t *testing.T) {
	st := &killState{
		kills: map[string]api.Kill{
			api.KeyScope("k1"):       {Scope: api.KeyScope("k1")},
			api.BroadcastScope("b1"): {Scope: api.BroadcastScope("b1")},
			api.TopicScope("news"):   {Scope: api.TopicScope("news")},
		},
		revoked: map[string]bool{"k9": true},
	}
	tests := []struct {
		give Scope
		want string
	}{
		{Scope{BroadcastID: "b2", KeyID: "k2", Topic: "sports"}, ""},
		{Scope{BroadcastID: "b2", KeyID: "k1"}, api.KeyScope("k1")},
		{Scope{BroadcastID: "b1", KeyID: "k2"}, api.BroadcastScope("b1")},
		{Scope{BroadcastID: "b2", KeyID: "k2", Topic: "news"}, api.TopicScope("news")},
		{Scope{BroadcastID: "b2", KeyID: "k9"}, api.KeyScope("k9")},
	}
	for _, tt := range tests {
		got, _ := st.match(tt.give)
		if got != tt.want {
			t.Errorf("match(%+v) = %q, want %q", tt.give, got, tt.want)
		}
	}
	st.kills[api.ScopeGlobal] = api.Kill{Scope: api.ScopeGlobal}
	if got, _ := st.match(Scope{BroadcastID: "b2"}); got != api.ScopeGlobal {
		t.Errorf("with a global kill, match = %q", got)
	}
}

// TestKillAcknowledgedStopsEveryCall kills a broadcast that two workers
// are sending slowly and checks that no provider call of it starts after
// the kill is acknowledged, and that the broadcast ends killed with every
// targeted device accounted for.
func TestKillAcknowledgedStopsEveryCall(t *testing.T) {
	f := newFixture(t, nil)
	f.fcm.latency = 20 * time.Millisecond
	f.apns.latency = 20 * time.Millisecond
	f.register("citizens", 1500, 1000)
	f.startWorker("w1")
	f.startWorker("w2")
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "bad"))
	waitFor(t, "first deliveries", func() bool { return len(f.fcm.sent("bad"))+len(f.apns.sent("bad")) > 100 })

	res, err := f.kill("admin", api.BroadcastScope(st.ID), "wrong text", true)
	if err != nil {
		t.Fatal(err)
	}
	acked := time.Now()
	if !res.Ack.Acknowledged || res.Ack.Workers != 2 {
		t.Fatalf("ack = %+v, want acknowledged by 2 workers", res.Ack)
	}
	done := f.waitState(st.ID, api.StateKilled)
	waitFor(t, "the killed broadcast to finish", func() bool {
		s, _ := f.svc.Get(context.Background(), st.ID)
		return !s.FinishedAt.IsZero()
	})
	done, _ = f.svc.Get(context.Background(), st.ID)
	for _, r := range append(f.fcm.records(), f.apns.records()...) {
		// A call that completed after the acknowledgement would have
		// started after it.
		if r.msg.Title == "bad" && r.at.After(acked) {
			t.Errorf("a provider call completed %s after the kill was acknowledged", r.at.Sub(acked))
		}
	}
	c := done.Counters
	if c.Sent+c.Cancelled+c.Uncertain+c.Failed != c.Targeted || c.Cancelled+c.Uncertain == 0 {
		t.Errorf("counters %+v: want sent + cancelled + uncertain + failed = targeted, some cancelled or uncertain", c)
	}
	if c.Sent != int64(len(f.fcm.sent("bad"))+len(f.apns.sent("bad"))) {
		t.Errorf("ledger says %d sent, providers saw %d", c.Sent, len(f.fcm.sent("bad"))+len(f.apns.sent("bad")))
	}
	t.Logf("kill acknowledged after %.1fms; %d sent before it", res.Ack.WaitedMS, c.Sent)
}

func TestRevokedKeyIsRefusedAndItsBroadcastsKilled(t *testing.T) {
	f := newFixture(t, nil)
	f.fcm.latency = 20 * time.Millisecond
	f.register("citizens", 2000, 0)
	f.startWorker("w1")
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "stolen"))
	waitFor(t, "first deliveries", func() bool { return len(f.fcm.sent("stolen")) > 0 })
	if _, _, err := f.revoke("admin", "sender", "key leaked"); err != nil {
		t.Fatal(err)
	}
	done := f.waitState(st.ID, api.StateKilled)
	if done.KilledBy != api.KeyScope("sender") {
		t.Errorf("killed_by = %q, want %q", done.KilledBy, api.KeyScope("sender"))
	}
	_, _, err := f.signed(f.sender, "POST", api.PathBroadcasts, []byte(broadcastBody(`{"topic":"citizens"}`, "again")))
	var se *signing.Error
	if !errors.As(err, &se) || se.Code != "revoked_key" {
		t.Errorf("request after revocation: err = %v, want revoked_key", err)
	}
	if _, _, err := f.resume("admin", api.KeyScope("sender"), ""); api.CodeOf(err) != api.CodeNotResumable {
		t.Errorf("resume of a revoked key: err = %v, want %s", err, api.CodeNotResumable)
	}
}

func TestForgedTasksDeliverNothing(t *testing.T) {
	f := newFixture(t, nil)
	f.register("citizens", 5, 0)
	f.register("t-small", 1, 0)
	w := f.startWorker("w1")
	ctx := context.Background()
	genuine := f.mustSubmit(broadcastBody(`{"topic":"t-small"}`, "genuine"))
	f.waitState(genuine.ID, api.StateCompleted)

	// 1. Someone with Redis access alters a stored envelope's body to reach
	// a bigger topic with their own text, then enqueues a plan task.
	raw, err := f.rdb.Get(ctx, f.keys.Envelope(genuine.ID)).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	var env signing.Request
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	env.Body = []byte(strings.Replace(string(env.Body), "genuine", "forged", 1))
	altered, _ := json.Marshal(env)
	forgedID := "bforged000000000000000000"
	f.rdb.Set(ctx, f.keys.Envelope(forgedID), altered, 0)
	f.rdb.HSet(ctx, f.keys.Broadcast(forgedID), "state", api.StateQueued)
	plan := func(id string) {
		b, _ := json.Marshal(planPayload{Broadcast: id})
		if _, err := w.enqueuer.Enqueue(asynq.NewTask(TypePlan, b), asynq.Queue(QueuePlan)); err != nil {
			t.Fatal(err)
		}
	}
	plan(forgedID)

	// 2. The genuine envelope copied under another broadcast id.
	copyID := "bc0ffee00000000000000000"
	f.rdb.Set(ctx, f.keys.Envelope(copyID), raw, 0)
	plan(copyID)

	// 3. A deliver task for the genuine broadcast naming devices outside
	// its audience.
	b, _ := json.Marshal(batchPayload{Broadcast: genuine.ID, Seq: 99, Platform: providers.FCM,
		Tokens: []string{"fcm-citizens-00000", "fcm-citizens-00001"}})
	if _, err := w.enqueuer.Enqueue(asynq.NewTask(TypeDeliver, b), asynq.Queue(QueueDeliver)); err != nil {
		t.Fatal(err)
	}

	waitFor(t, "three refusals", func() bool {
		n, _ := f.rdb.HGet(ctx, f.keys.SecurityEvents(), TypePlan+":envelope").Int()
		return n == 2
	})
	insp := asynq.NewInspectorFromRedisClient(f.rdb)
	waitFor(t, "the deliver queue to drain", func() bool {
		info, err := insp.GetQueueInfo(QueueDeliver)
		return err == nil && info.Pending+info.Active+info.Scheduled+info.Retry == 0
	})
	for tok := range f.fcm.sent("") {
		if tok != "fcm-t-small-00000" {
			t.Errorf("a forged task reached %s", tok)
		}
	}
	if n := len(f.fcm.sent("forged")); n != 0 {
		t.Errorf("forged text reached %d devices", n)
	}
}

func TestRecallReplaceReachesExactlyTheReachedDevices(t *testing.T) {
	f := newFixture(t, nil)
	f.register("citizens", 30, 20)
	f.register("t-other", 5, 0)
	f.startWorker("w1")
	ctx := context.Background()
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "wrong"))
	f.waitState(st.ID, api.StateCompleted)

	// Custom text: the recall waits for a second admin, then runs.
	_, pending, err := f.recall("admin", st.ID, `{"mode":"replace","replacement":{"title":"corrected","body":"sorry"}}`)
	if err != nil || pending == nil {
		t.Fatalf("recall = %+v, %v; want it pending", pending, err)
	}
	if _, err := f.approveAction("admin2", pending); err != nil {
		t.Fatal(err)
	}
	done := f.waitState(st.ID, api.StateRecalled)
	if done.Counters.Recalled != 50 {
		t.Errorf("recalled = %d, want 50", done.Counters.Recalled)
	}
	// Every key of the broadcast, the recall's included, expires with it.
	for _, k := range []string{f.keys.Broadcast(st.ID), f.keys.Envelope(st.ID), f.keys.Ledger(st.ID),
		f.keys.RecallLedger(st.ID), f.keys.RecallPlan(st.ID)} {
		if ttl := f.rdb.TTL(ctx, k).Val(); ttl <= 0 {
			t.Errorf("%s has no expiry (TTL %v)", k, ttl)
		}
	}
	orig, fixed := f.fcm.sent("wrong"), f.fcm.sent("corrected")
	for tok := range orig {
		if fixed[tok] != 1 {
			t.Errorf("%s got the original but %d corrections", tok, fixed[tok])
		}
	}
	if len(fixed) != len(orig) {
		t.Errorf("%d corrections for %d originals", len(fixed), len(orig))
	}
	for _, r := range f.apns.records() {
		if r.msg.Title == "corrected" && (r.msg.CollapseID != CollapseID(st.ID) || r.msg.TTL != 15*time.Minute) {
			t.Errorf("correction %+v does not reuse the original's collapse id and TTL", r.msg)
		}
	}
}

func TestRecallRemoveSendsSilentMessage(t *testing.T) {
	f := newFixture(t, nil)
	f.register("citizens", 4, 3)
	f.startWorker("w1")
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "oops"))
	f.waitState(st.ID, api.StateCompleted)
	if _, pending, err := f.recall("admin", st.ID, `{"mode":"remove"}`); err != nil || pending != nil {
		t.Fatalf("recall remove = %+v, %v; want it under way at once", pending, err)
	}
	f.waitState(st.ID, api.StateRecalled)
	silent := 0
	for _, r := range append(f.fcm.records(), f.apns.records()...) {
		if r.msg.RecallOf == st.ID {
			if !r.msg.Silent || r.msg.Title != "" || r.msg.CollapseID != CollapseID(st.ID) {
				t.Errorf("recall message %+v is not a silent instruction under the original collapse id", r.msg)
			}
			silent++
		}
	}
	if silent != 7 {
		t.Errorf("%d silent recall messages, want 7", silent)
	}
}
