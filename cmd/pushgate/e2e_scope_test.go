package main

import (
	"context"
	"strconv"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/client"
	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/internal/stack"
	"github.com/pushgate/pushgate/providers/sim"
	"github.com/pushgate/pushgate/queue"
)

// redisOf returns a client of the stack's Redis, as someone with write
// access to it would hold.
func (e *e2e) redisOf() *redis.Client {
	e.t.Helper()
	opts, err := redis.ParseURL(e.st.RedisURL)
	if err != nil {
		e.t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	e.t.Cleanup(func() { rdb.Close() })
	return rdb
}

// phonesWith counts the phones the simulators delivered a title to.
func phonesWith(s *sim.Sim, title string) map[string]bool {
	out := map[string]bool{}
	for _, d := range s.Deliveries(func(d sim.Delivery) bool { return d.Title == title }) {
		out[d.Token] = true
	}
	return out
}

// TestOneStolenKeyCannotReachEveryone plays, against the simulators' phones,
// a stolen district key sweeping the city with tokens audiences, a
// broadcast to everyone that needs two other owners' approvals, and an
// admin's recall with custom text that needs a second person.
func TestOneStolenKeyCannotReachEveryone(t *testing.T) {
	e := newE2E(t, stack.Options{Devices: 800, AndroidShare: 0.6, Seed: 13,
		Settings: map[string]string{"approval.above": "500"}}, app.Roles{API: true, Worker: true})
	ctx := context.Background()
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
		t.Fatal(err)
	}
	city, district := e.st.Devices[:500], e.st.Devices[500:]
	var into []api.ImportDevice
	for _, d := range district {
		into = append(into, api.ImportDevice{Platform: string(d.Platform), Token: d.Token, Topics: []string{"district-9a"}})
	}
	if _, err := e.owner.ImportDevices(ctx, into); err != nil {
		t.Fatal(err)
	}
	stolen := e.client(stack.KeyDistrict)
	tokens := func(ds []sim.Device) []api.Device {
		out := make([]api.Device, len(ds))
		for i, d := range ds {
			out[i] = api.Device{Platform: d.Platform, Token: d.Token}
		}
		return out
	}
	hacked := func(ds []sim.Device) *api.BroadcastRequest {
		return &api.BroadcastRequest{Audience: api.Audience{Tokens: tokens(ds)}, Message: api.MessageSpec{Title: "HACKED", Body: "b"}}
	}

	// 25 requests of 20 devices outside its topics: all refused.
	for i := range 25 {
		if _, err := stolen.Submit(ctx, hacked(city[i*20:(i+1)*20])); !client.IsProblem(err, api.CodeDeviceNotInScope) {
			t.Fatalf("sweep %d outside the key's topics: %v, want %s", i, err, api.CodeDeviceNotInScope)
		}
	}
	// Inside them, the reach budget of 100 ends the sweep.
	accepted := 0
	for i := range 15 {
		sub, err := stolen.Submit(ctx, hacked(district[i*20:(i+1)*20]))
		if client.IsProblem(err, api.CodeReachBudgetExceeded) {
			break
		}
		if err != nil {
			t.Fatalf("sweep %d inside the key's topics: %v", i, err)
		}
		accepted++
		e.waitFinished(sub.ID)
	}
	got := phonesWith(e.st.Sim, "HACKED")
	inDistrict := map[string]bool{}
	for _, d := range district {
		inDistrict[d.Token] = true
	}
	for tok := range got {
		if !inDistrict[tok] {
			t.Errorf("phone %s… outside the key's topics shows HACKED", tok[:12])
		}
	}
	if len(got) != 100 || accepted != 5 {
		t.Errorf("%d phones show HACKED after %d accepted sweeps; want the reach budget of 100, in 5", len(got), accepted)
	}

	// A broadcast to more than the gateway's approval.above of 500 devices
	// waits for two approvals of other owners.
	sub, err := e.owner.Submit(ctx, &api.BroadcastRequest{Audience: api.Audience{Topic: "citizens"},
		Message: api.MessageSpec{Title: "Everyone", Body: "b"}})
	if err != nil || sub.State != api.StateAwaitingApproval {
		t.Fatalf("broadcast to 800 devices = %+v, %v; want awaiting approval", sub, err)
	}
	approver, approver2 := e.client(stack.KeyApprover), e.client(stack.KeyApprover2)
	list, err := approver.Approvals(ctx)
	if err != nil || len(list.Broadcasts) != 1 {
		t.Fatalf("approvals = %+v, %v", list, err)
	}
	digest := api.Digest(list.Broadcasts[0].Body)
	if _, err := approver.Approve(ctx, sub.ID, digest); err != nil {
		t.Fatal(err)
	}
	// One approval, the state written into Redis, the approval's entry
	// appended again to the control log's pending list (a replay), and a
	// plan task in the queue: no phone gets it.
	rdb, keys := e.redisOf(), queue.NewKeys("")
	size := rdb.HLen(ctx, keys.LogEntries()).Val()
	one := rdb.HGet(ctx, keys.LogEntries(), strconv.FormatInt(size-1, 10)).Val()
	rdb.RPush(ctx, keys.LogPending(), one)
	rdb.HSet(ctx, keys.Broadcast(sub.ID), "state", api.StateQueued)
	if _, err := asynq.NewClientFromRedisClient(rdb).Enqueue(queue.PlanTask(sub.ID), asynq.Queue(queue.QueuePlan)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the forged plan task to be refused", func() bool {
		ev, _ := e.app.App.Service().SecurityEvents(ctx)
		return ev[queue.TypePlan+":approval"] > 0
	})
	if n := len(phonesWith(e.st.Sim, "Everyone")); n != 0 {
		t.Fatalf("%d phones got a broadcast over the threshold with one approval", n)
	}
	rdb.HSet(ctx, keys.Broadcast(sub.ID), "state", api.StateAwaitingApproval)
	if st, err := approver2.Approve(ctx, sub.ID, digest); err != nil || st.State == api.StateAwaitingApproval || st.State == api.StateExpired {
		t.Fatalf("second approval = %+v, %v", st, err)
	}
	if st := e.waitFinished(sub.ID); st.State != api.StateCompleted || len(phonesWith(e.st.Sim, "Everyone")) != 800 {
		t.Fatalf("approved broadcast ended %s on %d phones, want completed on 800", st.State, len(phonesWith(e.st.Sim, "Everyone")))
	}

	// An admin's custom recall text waits for a second person.
	_, pending, err := e.admin.Recall(ctx, sub.ID, &api.RecallRequest{Mode: api.RecallReplace,
		Replacement: &api.MessageSpec{Title: "Custom correction", Body: "x"}})
	if err != nil || pending == nil {
		t.Fatalf("custom recall = %+v, %v; want pending", pending, err)
	}
	if st := e.status(sub.ID); st.State != api.StateCompleted {
		t.Fatalf("a pending recall moved the broadcast to %s", st.State)
	}
	if _, err := e.client(stack.KeyAdmin2).ApproveAction(ctx, pending.ID, pending.RequestSHA256); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the approved recall", func() bool { return e.status(sub.ID).State == api.StateRecalled })
	for _, s := range e.st.Sim.Showing(queue.CollapseID(sub.ID)) {
		if s.Title != "Custom correction" {
			t.Errorf("%d phones show %q after the approved recall", s.Phones, s.Title)
		}
	}
}
