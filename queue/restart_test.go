package queue

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/internal/redistest"
	"github.com/pushgate/pushgate/providers"
)

// syncAOF makes everything Redis holds durable (an AOF rewrite), so that a
// crash loses only what comes after: the devices and the submission
// survive, and what the crash hits is planning or delivery.
func syncAOF(t *testing.T, s *redistest.Server) {
	t.Helper()
	ctx := context.Background()
	c := s.Client()
	if err := c.Do(ctx, "BGREWRITEAOF").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the AOF rewrite", func() bool {
		info, err := c.Info(ctx, "persistence").Result()
		return err == nil && strings.Contains(info, "aof_rewrite_in_progress:0") &&
			strings.Contains(info, "aof_rewrite_scheduled:0")
	})
}

// waitSettled waits, through Redis restarts, until broadcast id has
// reached state, and returns its status.
func (f *fixture) waitSettled(id, state string) *api.Status {
	f.t.Helper()
	deadline := time.Now().Add(hangGuard)
	var last *api.Status
	for {
		st, err := f.svc.Get(context.Background(), id)
		if err == nil {
			if st.State == state {
				return st
			}
			last = st
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("hung: broadcast %s did not reach %s in %s; last status %+v, err %v", id, state, hangGuard, last, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRedisCrashDuringPlanningLosesNobody crashes Redis (SIGKILL, restart
// from its AOF with appendfsync everysec) while a broadcast to a topic is
// being planned, at several points: the planner's position is a device
// number, so planning resumes where Redis says it was, and the broadcast
// completes only when every device of the topic has an outcome. Before,
// an SSCAN cursor saved before the restart skipped devices, and duplicates
// counted towards completion.
//
// With back set, the crash also loses what Redis wrote since an earlier
// page (a power cut before the AOF was fsynced): the planner's next save
// finds the position moved back and plans again from there, and batches
// whose claims are gone run again.
func TestRedisCrashDuringPlanningLosesNobody(t *testing.T) {
	const n = 10000
	for _, c := range []struct {
		at   int64
		back bool
	}{{scanCount, false}, {3 * scanCount, false}, {3 * scanCount, true}} {
		t.Run(fmt.Sprintf("after %d planned, back %v", c.at, c.back), func(t *testing.T) {
			srv := redistest.StartServer(t, true)
			f := newFixtureOn(t, srv.Client(), nil, 0)
			devs := f.register("citizens", n*3/5, n*2/5)
			syncAOF(t, srv)
			var once, marked sync.Once
			var mark redistest.AOFMark
			crashed := make(chan struct{})
			hook := func(planned int64) {
				if planned >= scanCount {
					marked.Do(func() { mark = srv.Mark() })
				}
				if planned >= c.at {
					once.Do(func() {
						if c.back {
							srv.CrashBackTo(mark)
						} else {
							srv.Crash()
						}
						close(crashed)
					})
				}
			}
			for _, id := range []string{"w1", "w2"} {
				f.startWorker(id).afterPlanPage.Store(&hook)
			}
			st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "crash-plan"))
			waitClosed(t, crashed, "the crash during planning")
			done := f.waitSettled(st.ID, api.StateCompleted)
			checkEveryDeviceOnce(t, f, devs, "crash-plan", done)
		})
	}
}

// TestRedisCrashDuringDeliveryLosesNobody crashes Redis while batches are
// being sent: claims and outcomes of the last second may be gone, and
// batches that find their claims lost run again; every device ends with
// one outcome and shows the message once.
//
// With back set, the crash loses what Redis wrote since an earlier point
// of delivery: outcomes and claims of devices already sent are gone, and
// their batches send again (raw duplicates, under the same collapse
// identity).
func TestRedisCrashDuringDeliveryLosesNobody(t *testing.T) {
	// 8,000 devices are 17 batches, of which two workers run 8 at once:
	// the first outcomes are written at about half the sends, between the
	// mark (a quarter) and the crash (three quarters) of the cut-back case.
	const n = 8000
	for _, c := range []struct {
		at   int
		back bool
	}{{n / 4, false}, {n * 3 / 4, false}, {n * 3 / 4, true}} {
		t.Run(fmt.Sprintf("after %d sent, back %v", c.at, c.back), func(t *testing.T) {
			srv := redistest.StartServer(t, true)
			f := newFixtureOn(t, srv.Client(), nil, 0)
			devs := f.register("citizens", n*3/5, n*2/5)
			syncAOF(t, srv)
			crashed := make(chan struct{})
			var once sync.Once
			var mu sync.Mutex
			var mark redistest.AOFMark
			sent := 0
			hook := func(string, int) providers.Result {
				mu.Lock()
				sent++
				if sent == n/4 {
					mark = srv.Mark()
				}
				crash := sent == c.at
				m := mark
				mu.Unlock()
				if crash {
					once.Do(func() {
						if c.back {
							srv.CrashBackTo(m)
						} else {
							srv.Crash()
						}
						close(crashed)
					})
				}
				return providers.Result{Class: providers.Sent, MessageID: "m"}
			}
			f.fcm.script, f.apns.script = hook, hook
			f.fcm.latency, f.apns.latency = time.Millisecond, time.Millisecond
			f.startWorker("w1")
			f.startWorker("w2")
			st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "crash-send"))
			waitClosed(t, crashed, "the crash during delivery")
			done := f.waitSettled(st.ID, api.StateCompleted)
			checkEveryDeviceOnce(t, f, devs, "crash-send", done)
		})
	}
}

// waitClosed waits for ch to close, failing after the hang guard.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(hangGuard):
		t.Fatalf("hung: still waiting for %s after %s", what, hangGuard)
	}
}

// checkEveryDeviceOnce checks that every device got the broadcast (a
// re-send after a crash is a raw duplicate, which the collapse identity
// keeps off the screen: one notification per phone), that the final
// counters add up to the audience, and logs the raw duplicates.
func checkEveryDeviceOnce(t *testing.T, f *fixture, devs []api.Device, title string, st *api.Status) {
	t.Helper()
	got := map[string]int{}
	collapse := map[string]map[string]bool{}
	for _, s := range []*fakeSender{f.fcm, f.apns} {
		s.mu.Lock()
		for _, r := range s.sends {
			if r.msg.Title != title {
				continue
			}
			got[r.token]++
			if collapse[r.token] == nil {
				collapse[r.token] = map[string]bool{}
			}
			collapse[r.token][r.msg.CollapseID] = true
		}
		s.mu.Unlock()
	}
	lost, raw, visible := 0, 0, 0
	for _, d := range devs {
		switch c := got[d.Token]; {
		case c == 0:
			lost++
		case c > 1:
			raw += c - 1
		}
		if len(collapse[d.Token]) > 1 {
			visible++
		}
	}
	c := st.Counters
	t.Logf("%d devices: lost %d, raw duplicates %d, visible duplicates %d; counters planned %d sent %d targeted %d skipped_duplicate %d",
		len(devs), lost, raw, visible, c.Planned, c.Sent, c.Targeted, c.SkippedDuplicate)
	if lost != 0 || visible != 0 {
		t.Errorf("lost %d devices, %d show the message twice", lost, visible)
	}
	if c.Planned != int64(len(devs)) || c.Sent != int64(len(devs)) {
		t.Errorf("counters planned %d, sent %d; want %d each (%+v)", c.Planned, c.Sent, len(devs), c)
	}
}

// TestRecallAfterRedisCrashLeavesNoPhoneShowingTheText crashes Redis while
// a broadcast is being sent, then kills and recalls it: every phone that
// got the broadcast gets the retraction after it. Before, devices claimed
// in the ledger without a recorded outcome (their batch's outcome write
// met the crash) were left out of the recall, which reported recalled
// while thousands of phones still showed the text.
func TestRecallAfterRedisCrashLeavesNoPhoneShowingTheText(t *testing.T) {
	const n = 3000
	srv := redistest.StartServer(t, true)
	f := newFixtureOn(t, srv.Client(), nil, 0)
	f.register("citizens", n*3/5, n*2/5)
	syncAOF(t, srv)
	// Redis goes down mid-broadcast and stays down while the batches in
	// flight finish their calls, so their outcome writes fail: the ledger
	// holds their devices claimed, with no outcome, when the admin acts.
	down, calledWhileDown := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	sent := 0
	hook := func(string, int) providers.Result {
		mu.Lock()
		sent++
		switch sent {
		case n / 2:
			srv.Kill()
			close(down)
		case n/2 + 200:
			close(calledWhileDown)
		}
		mu.Unlock()
		return providers.Result{Class: providers.Sent, MessageID: "m"}
	}
	f.fcm.script, f.apns.script = hook, hook
	f.fcm.latency, f.apns.latency = time.Millisecond, time.Millisecond
	f.startWorker("w1")
	f.startWorker("w2")
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "wrong"))
	waitClosed(t, down, "Redis to go down mid-broadcast")
	waitClosed(t, calledWhileDown, "calls made while Redis is down")
	waitFor(t, "a batch whose outcomes could not be written", func() bool { return f.taskFailures.Load() > 0 })
	srv.Restart()
	if _, err := f.kill("admin", api.BroadcastScope(st.ID), "wrong text", true); err != nil {
		t.Fatal(err)
	}
	retraction := `{"mode":"replace","replacement":{"title":"` + f.policy.RetractionTitle + `","body":"` + f.policy.RetractionBody + `"}}`
	if _, _, err := f.recall("admin", st.ID, retraction); err != nil {
		t.Fatal(err)
	}
	done := f.waitSettled(st.ID, api.StateRecalled)

	// What each phone shows last, by the order its sender made the calls.
	last := map[string]string{}
	shown := 0
	for _, s := range []*fakeSender{f.fcm, f.apns} {
		for _, r := range s.records() {
			if r.msg.Title == "wrong" && last[r.token] == "" {
				shown++
			}
			last[r.token] = r.msg.Title
		}
	}
	still := 0
	for _, title := range last {
		if title == "wrong" {
			still++
		}
	}
	c := done.Counters
	t.Logf("%d phones got the broadcast; after the recall %d still show it; counters sent %d uncertain %d cancelled %d recalled %d recall_failed %d",
		shown, still, c.Sent, c.Uncertain, c.Cancelled, c.Recalled, c.RecallFailed)
	if shown == 0 || still != 0 {
		t.Errorf("%d of %d phones that got the broadcast still show it after the recall", still, shown)
	}
}

// TestTasksMeetingRedisGoingAwayRunAgainSoon: a task that failed because
// Redis went away or came back older runs again within a second, not after
// asynq's growing delay (which kept a broadcast waiting 2 minutes after a
// restart of a few hundred milliseconds).
func TestTasksMeetingRedisGoingAwayRunAgainSoon(t *testing.T) {
	srv := redistest.StartServer(t, false)
	c := srv.Client()
	srv.Kill()
	_, refused := c.Ping(context.Background()).Result()
	for _, err := range []error{refused, fmt.Errorf("save: %w", errPlanMoved), fmt.Errorf("record: %w", errClaimsLost)} {
		if err == nil || !soon(err) {
			t.Errorf("%v: not retried soon", err)
		}
	}
	for _, err := range []error{errForged, fmt.Errorf("enqueue: %w", errOutsideAudience)} {
		if soon(err) {
			t.Errorf("%v: retried soon", err)
		}
	}
}

// TestSweeperEnqueuesPlannedDevicesNoBatchClaimed loses one planned batch
// from the queue, as a Redis that came back from an older state can (the
// cut-back crash above hit it about one run in four): the broadcast is
// planned, the batch never runs, and before the sweeper it stayed
// "sending" for good. A worker's sweeper finds the planned devices that no
// batch claimed and enqueues them again; every phone gets the broadcast
// once.
func TestSweeperEnqueuesPlannedDevicesNoBatchClaimed(t *testing.T) {
	f := newFixture(t, nil)
	devs := f.register("citizens", 1200, 0)
	ctx := context.Background()
	planner, err := NewWorker(WorkerConfig{Config: f.config(f.control),
		Senders: map[providers.Platform]Sender{providers.FCM: f.fcm, providers.APNs: f.apns}})
	if err != nil {
		t.Fatal(err)
	}
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "swept"))
	if err := planner.plan(ctx, PlanTask(st.ID)); err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspectorFromRedisClient(f.rdb)
	pending, err := insp.ListPendingTasks(QueueDeliver)
	if err != nil || len(pending) != 3 {
		t.Fatalf("%d batches pending (%v), want 3", len(pending), err)
	}
	if err := insp.DeleteTask(QueueDeliver, pending[1].ID); err != nil {
		t.Fatal(err)
	}
	f.startWorker("w1")
	done := f.waitState(st.ID, api.StateCompleted)
	got := f.fcm.sent("swept")
	for _, d := range devs {
		if got[d.Token] != 1 {
			t.Fatalf("phone %s got the broadcast %d times, want once", d.Token, got[d.Token])
		}
	}
	if c := done.Counters; c.Planned != 1200 || c.Sent != 1200 {
		t.Errorf("counters %+v: want planned and sent 1200", c)
	}
}
