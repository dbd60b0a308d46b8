package main

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/internal/redistest"
	"github.com/pushgate/pushgate/internal/stack"
	"github.com/pushgate/pushgate/queue"
)

// restartDevices is how many phones TestRedisRestartMidBroadcast reaches;
// PUSHGATE_E2E_RESTART_DEVICES sets another number (the closing figures
// of the restart scenarios were measured with 50,000).
func restartDevices(t *testing.T) int {
	if v := os.Getenv("PUSHGATE_E2E_RESTART_DEVICES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("PUSHGATE_E2E_RESTART_DEVICES=%q: want a positive number", v)
		}
		return n
	}
	return 10000
}

// TestRedisRestartMidBroadcast is the operator's drill: one API, two
// worker processes, Redis with AOF (appendfsync everysec), simulators at
// 5 ms; Redis is killed with SIGKILL and started again from its AOF while
// a broadcast is being planned, and while it is being sent. Every phone
// ends up showing the broadcast exactly once, the broadcast completes only
// then, and its counters add up to the audience. Before, a planner that
// resumed an SSCAN cursor saved before the restart skipped thousands of
// devices and the broadcast still reported completed.
func TestRedisRestartMidBroadcast(t *testing.T) {
	devices := restartDevices(t)
	for _, c := range []struct {
		name string
		// crashWhen reports, from the broadcast's status and the
		// simulators' count of deliveries, when to crash Redis.
		crashWhen func(st *api.Status, delivered int) bool
	}{
		{"while planning", func(st *api.Status, _ int) bool { return st.Counters.Planned > 0 }},
		{"while sending", func(_ *api.Status, delivered int) bool { return delivered >= devices/3 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := redistest.StartServer(t, true)
			e := newE2E(t, stack.Options{Devices: devices, AndroidShare: 0.6, Seed: 7, Latency: 5 * time.Millisecond,
				RedisURL: srv.URL()}, app.Roles{API: true})
			e.startWorkers(2)
			ctx := context.Background()
			if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
				t.Fatal(err)
			}
			id := e.submit(e.owner, topicBroadcast("citizens", "restart"))
			collapse := queue.CollapseID(id)
			deadline := time.Now().Add(hangGuard)
			for {
				st, err := e.owner.Status(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if c.crashWhen(st, e.st.Sim.DeliveriesAfter(time.Time{}, collapse)) {
					t.Logf("crashing Redis with %d of %d planned, %d sent", st.Counters.Planned, devices, st.Counters.Sent)
					break
				}
				if !st.FinishedAt.IsZero() || time.Now().After(deadline) {
					t.Fatalf("the broadcast finished (or hung) before the crash point: %+v", st)
				}
				time.Sleep(time.Millisecond)
			}
			crashed := time.Now()
			srv.Crash()
			var st *api.Status
			for {
				s, err := e.owner.Status(ctx, id)
				if err == nil && !s.FinishedAt.IsZero() {
					st = s
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("hung: broadcast %s not finished %s after the crash: %+v, %v", id, hangGuard, s, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			per := deliveriesPerPhone(e.st.Sim, id, "restart")
			lost, raw := 0, 0
			for _, d := range e.st.Devices {
				switch n := per[d.Token]; {
				case n == 0:
					lost++
				case n > 1:
					raw += n - 1
				}
			}
			visible := 0
			for _, d := range e.st.Devices {
				v, _ := e.st.Sim.Device(d.Token)
				n := 0
				for _, s := range v.Screen {
					if s.CollapseID == collapse {
						n++
					}
				}
				if n > 1 {
					visible++
				}
			}
			n := st.Counters
			t.Logf("%d phones: lost %d, raw duplicates %d, visible duplicates %d; crash to completion %s, whole broadcast %s; counters planned %d sent %d targeted %d skipped_duplicate %d",
				devices, lost, raw, visible, st.FinishedAt.Sub(crashed).Round(time.Millisecond),
				st.FinishedAt.Sub(st.CreatedAt).Round(time.Millisecond), n.Planned, n.Sent, n.Targeted, n.SkippedDuplicate)
			if st.State != api.StateCompleted || lost != 0 || visible != 0 {
				t.Errorf("state %s: %d phones never got the broadcast, %d show it twice", st.State, lost, visible)
			}
			if n.Planned != int64(devices) || n.Sent != int64(devices) || n.Targeted != int64(devices) {
				t.Errorf("counters %+v: want planned, sent and targeted %d", n, devices)
			}
		})
	}
}
