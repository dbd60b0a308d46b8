package main

import (
	"context"
	"testing"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/internal/stack"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/providers/sim"
)

// TestProviderPauseAcrossWorkerProcesses refuses the whole FCM project for
// a window with 429 QUOTA_EXCEEDED and Retry-After, under two worker
// processes, and checks from the simulator's own clock that once the first
// refusal was answered, no more requests arrived within its Retry-After
// than the calls the workers had in flight (workers × batches at once ×
// calls per batch); that the status showed paused_until meanwhile; and
// that every phone got the broadcast exactly once after the window.
// Without the pause, every worker kept sending through the window:
// thousands of refusals, each counted against the project.
func TestProviderPauseAcrossWorkerProcesses(t *testing.T) {
	const (
		devices, workers, tasks, calls = 20000, 2, 2, 16
		retryAfter                     = 3
	)
	// The stack writes the fcm section from the simulator; the worker
	// processes read the rest of their FCM settings from the environment,
	// as an operator's would.
	t.Setenv(app.EnvName("fcm.concurrency"), "16")
	e := newE2E(t, stack.Options{Devices: devices, AndroidShare: 1, Seed: 8, Settings: map[string]string{
		"worker.concurrency": "2",
	}}, app.Roles{API: true})
	e.startWorkers(workers)
	ctx := context.Background()
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
		t.Fatal(err)
	}
	// The window opens at the first request and outlasts no Retry-After.
	if err := e.st.Sim.SetFaults(sim.Faults{QuotaOutage: retryAfter * time.Second, RetryAfter: retryAfter}); err != nil {
		t.Fatal(err)
	}
	id := e.submit(e.owner, topicBroadcast("citizens", "quota"))
	var pausedUntil time.Time
	waitUntil(t, "the status to show the pause", func() bool {
		st := e.status(id)
		if !st.FinishedAt.IsZero() {
			t.Fatalf("broadcast finished (%s, %+v) and its status never showed paused_until", st.State, st.Counters)
		}
		pausedUntil = st.PausedUntil[providers.FCM]
		return !pausedUntil.IsZero()
	})
	st := e.waitFinished(id)
	if st.State != api.StateCompleted || st.Counters.Sent != devices {
		t.Fatalf("state %s, counters %+v: want completed with all %d sent", st.State, st.Counters, devices)
	}
	if st.PausedUntil != nil {
		t.Errorf("completed broadcast still shows paused_until %v", st.PausedUntil)
	}
	got := deliveriesPerPhone(e.st.Sim, id, "quota")
	var first sim.Attempt
	var refused []sim.Attempt
	for _, d := range e.st.Devices {
		if got[d.Token] != 1 {
			t.Errorf("phone %s… got the broadcast %d times, want 1", d.Token[:12], got[d.Token])
		}
		v, _ := e.st.Sim.Device(d.Token)
		for _, a := range v.Attempts {
			if a.Status == 429 {
				refused = append(refused, a)
				if first.Answered.IsZero() || a.Answered.Before(first.Answered) {
					first = a
				}
			}
		}
	}
	if first.Answered.IsZero() {
		t.Fatal("the simulator refused nothing: the outage did not apply")
	}
	end := first.Answered.Add(retryAfter * time.Second)
	inside := 0
	for _, a := range refused {
		if a.Arrived.After(first.Answered) && a.Arrived.Before(end) {
			inside++
		}
	}
	t.Logf("%d requests arrived within the %ds Retry-After after the first refusal (%d refused in all); the workers had at most %d calls in flight",
		inside, retryAfter, len(refused), workers*tasks*calls)
	if inside > workers*tasks*calls {
		t.Errorf("%d requests arrived within the Retry-After after the first refusal, want at most the %d calls in flight", inside, workers*tasks*calls)
	}
	// A worker learns of the refusal after the simulator answered it.
	if floor := end.Truncate(time.Millisecond); pausedUntil.Before(floor) {
		t.Errorf("status showed paused_until %s, before the first refusal's Retry-After ran out at %s", pausedUntil, floor)
	}
	if st.Counters.Retries != int64(len(refused)) || st.Counters.ProviderPaused == 0 {
		t.Errorf("counters %+v: want one retry per refusal (%d) and some deferrals", st.Counters, len(refused))
	}
}
