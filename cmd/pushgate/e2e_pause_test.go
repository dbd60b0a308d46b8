package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/internal/stack"
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
	// pushgate status, as an operator would run it, prints the pause from
	// the status's paused_until.
	key := e.st.Keys[stack.KeySender]
	env := map[string]string{"PUSHGATE_URL": e.app.URL, "PUSHGATE_KEY": key.File, "PUSHGATE_KEY_ID": key.ID}
	pausedLine := regexp.MustCompile(`(?m)^  fcm paused until (\S+): `)
	var pausedUntil time.Time
	waitUntil(t, "pushgate status to show the pause", func() bool {
		var out, errOut bytes.Buffer
		if err := run(ctx, []string{"status", id}, func(k string) string { return env[k] }, strings.NewReader(""), &out, &errOut); err != nil {
			t.Fatalf("pushgate status: %v\n%s", err, errOut.String())
		}
		if m := pausedLine.FindStringSubmatch(out.String()); m != nil {
			var err error
			if pausedUntil, err = time.Parse(time.RFC3339, m[1]); err != nil {
				t.Fatalf("pushgate status printed %q: %v", m[0], err)
			}
			return true
		}
		if st := e.status(id); !st.FinishedAt.IsZero() {
			t.Fatalf("broadcast finished (%s, %+v) and its status never showed paused_until", st.State, st.Counters)
		}
		return false
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
	// A worker learns of the refusal after the simulator answered it; the
	// status prints whole seconds.
	if floor := end.Truncate(time.Second); pausedUntil.Before(floor) {
		t.Errorf("status showed paused_until %s, before the first refusal's Retry-After ran out at %s", pausedUntil, floor)
	}
	if st.Counters.Retries != int64(len(refused)) || st.Counters.ProviderPaused == 0 {
		t.Errorf("counters %+v: want one retry per refusal (%d) and some deferrals", st.Counters, len(refused))
	}
}
