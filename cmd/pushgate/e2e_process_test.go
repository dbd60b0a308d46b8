package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/internal/stack"
	"github.com/pushgate/pushgate/providers/sim"
	"github.com/pushgate/pushgate/queue"
)

// binaryOnce builds the pushgate binary once per test run, for tests that
// run workers as separate processes. It is built without the race
// detector: those processes are load, and the in-process tests already run
// the same code with -race.
var binaryOnce struct {
	sync.Once
	path string
	err  error
	out  []byte
}

func pushgateBinary(t testing.TB) string {
	t.Helper()
	binaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pushgate-bin-")
		if err != nil {
			binaryOnce.err = err
			return
		}
		binaryOnce.path = filepath.Join(dir, "pushgate")
		cmd := exec.Command("go", "build", "-o", binaryOnce.path, ".")
		binaryOnce.out, binaryOnce.err = cmd.CombinedOutput()
	})
	if binaryOnce.err != nil {
		t.Fatalf("build pushgate: %v\n%s", binaryOnce.err, binaryOnce.out)
	}
	return binaryOnce.path
}

// process is a pushgate child process.
type process struct {
	t    testing.TB
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startProcess runs `pushgate args...` and stops it (SIGTERM, then wait)
// at cleanup, logging its output if the test failed.
func startProcess(t testing.TB, args ...string) *process {
	t.Helper()
	p := &process{t: t, out: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(pushgateBinary(t), args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("output of pushgate %v:\n%s", args, p.out.String())
		}
	})
	return p
}

// stop signals the process and waits for it to exit.
func (p *process) stop(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(hangGuard):
		p.cmd.Process.Kill()
		<-p.done
		p.t.Errorf("hung: pushgate did not exit within %s of %v", hangGuard, sig)
	}
}

// startWorkers starts n worker processes on the stack's configuration and
// waits until each has registered its heartbeat.
func (e *e2e) startWorkers(n int) []*process {
	e.t.Helper()
	var ps []*process
	for range n {
		ps = append(ps, startProcess(e.t, "worker", "--config", e.st.ConfigPath))
	}
	e.waitWorkers(n)
	return ps
}

// waitWorkers waits until n workers have a live heartbeat, so that a kill
// with wait=true waits for all of them.
func (e *e2e) waitWorkers(n int) {
	e.t.Helper()
	opts, err := redis.ParseURL(e.st.RedisURL)
	if err != nil {
		e.t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	keys := queue.NewKeys("")
	waitUntil(e.t, "workers to start", func() bool {
		since := strconv.FormatInt(time.Now().Add(-2*time.Second).UnixMilli(), 10)
		live, err := rdb.ZCount(context.Background(), keys.Workers(), since, "+inf").Result()
		return err == nil && live >= int64(n)
	})
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("hung: still waiting for %s after %s", what, hangGuard)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRateLimitHoldsAcrossWorkerProcesses runs two worker processes under
// one provider rate and checks, from the simulator's delivery times, that
// they shared it: had each process its own limit, the broadcast would end
// in half the time the shared limit allows.
func TestRateLimitHoldsAcrossWorkerProcesses(t *testing.T) {
	const rate, devices = 300, 3000
	e := newE2E(t, stack.Options{Devices: devices, AndroidShare: 1, Seed: 2, Settings: map[string]string{
		"limits.fcm_rate": "300/s",
	}}, app.Roles{API: true})
	e.startWorkers(2)
	ctx := context.Background()
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
		t.Fatal(err)
	}
	// The simulator stamps deliveries with this process's clock.
	submitted := time.Now()
	id := e.submit(e.owner, topicBroadcast("citizens", "paced"))
	st := e.waitFinished(id)
	if st.Counters.Sent != devices {
		t.Fatalf("sent %d, want %d", st.Counters.Sent, devices)
	}
	var times []time.Time
	for _, d := range e.st.Sim.Deliveries(func(d sim.Delivery) bool { return d.CollapseID == queue.CollapseID(id) }) {
		times = append(times, d.Time)
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	// GCRA grants a burst of one second's worth at once and then one token
	// every 1/rate s, so the last of the devices cannot be sent before
	// (devices - burst) / rate after the first grant, which came after the
	// submission. A slow machine only makes it later. (1% slack for the
	// limiter's microsecond arithmetic.)
	least := time.Duration(float64(devices-rate) / rate * 0.99 * float64(time.Second))
	took := times[len(times)-1].Sub(submitted)
	t.Logf("%d deliveries, the last %s after submission; the shared limit of %d/s allows it no sooner than %s",
		len(times), took.Round(time.Millisecond), rate, least)
	if took < least {
		t.Errorf("the last delivery came %s after submission, sooner than the %s a shared %d/s limit allows", took, least, rate)
	}
}

// TestRetryAfterDelaysOnlyAffectedDevices makes the providers answer 429
// and 503 with Retry-After for some devices and checks, from the
// simulator's own stamps, that each refused device was tried again no
// sooner than its Retry-After after the refusal, and that every device
// never refused was sent exactly one request. APNs 429 TooManyRequests is
// about its device only; a 503 pauses the whole provider as well
// (TestProviderPauseAcrossWorkerProcesses), and the devices it holds back
// wait untried.
func TestRetryAfterDelaysOnlyAffectedDevices(t *testing.T) {
	tests := []struct {
		name         string
		outcome      sim.Outcome
		androidShare float64
	}{
		{"apns quota 429", sim.OutcomeQuota, 0},
		{"unavailable 503", sim.OutcomeUnavailable, 0.6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newE2E(t, stack.Options{Devices: 1000, AndroidShare: tt.androidShare, Seed: 3}, app.Roles{API: true, Worker: true})
			ctx := context.Background()
			if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
				t.Fatal(err)
			}
			if err := e.st.Sim.SetFaults(sim.Faults{ErrorRate: 0.1, ErrorOutcome: tt.outcome, RetryAfter: 2, Seed: 7}); err != nil {
				t.Fatal(err)
			}
			id := e.submit(e.owner, topicBroadcast("citizens", "retry-after"))
			st := e.waitFinished(id)
			if st.Counters.Sent != 1000 {
				t.Fatalf("counters %+v, want all 1000 sent", st.Counters)
			}
			delayed := 0
			for _, d := range e.st.Devices {
				v, _ := e.st.Sim.Device(d.Token)
				if len(v.Attempts) == 0 {
					if v.Requests != 1 {
						t.Errorf("%s device never refused got %d requests, want 1", d.Platform, v.Requests)
					}
					continue
				}
				delayed++
				for i, a := range v.Attempts {
					if a.Status == 200 {
						continue
					}
					if a.RetryAfter != 2 {
						t.Errorf("%s device refused with %d and Retry-After %d, want 2", d.Platform, a.Status, a.RetryAfter)
					}
					if i+1 == len(v.Attempts) {
						t.Errorf("%s device refused with %d was never tried again", d.Platform, a.Status)
						continue
					}
					if gap := v.Attempts[i+1].Arrived.Sub(a.Answered); gap < time.Duration(a.RetryAfter)*time.Second {
						t.Errorf("%s device refused with Retry-After: %d was tried again %s after the refusal", d.Platform, a.RetryAfter, gap)
					}
				}
			}
			if delayed == 0 {
				t.Fatal("no device was refused: the fault plan did not apply")
			}
			if st.Counters.Retries < int64(delayed) {
				t.Errorf("retries = %d, want at least the %d delayed devices", st.Counters.Retries, delayed)
			}
			t.Logf("%d of 1000 devices delayed by Retry-After; %d retries", delayed, st.Counters.Retries)
		})
	}
}

// TestKillWithThreeWorkerProcesses kills a broadcast to 200,000 phones
// midway and checks that no delivery of it happened after every worker
// acknowledged the kill.
func TestKillWithThreeWorkerProcesses(t *testing.T) {
	const devices = 200000
	e := newE2E(t, stack.Options{Devices: devices, AndroidShare: 0.6, Seed: 4, Latency: 3 * time.Millisecond},
		app.Roles{API: true})
	e.startWorkers(3)
	ctx := context.Background()
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
		t.Fatal(err)
	}
	id := e.submit(e.owner, topicBroadcast("citizens", "bad text"))
	collapse := queue.CollapseID(id)
	waitUntil(t, "the broadcast to reach phones", func() bool {
		return e.st.Sim.DeliveriesAfter(time.Time{}, collapse) >= 5000
	})
	start := time.Now()
	res, err := e.admin.Kill(ctx, api.BroadcastScope(id), "wrong text", true)
	if err != nil {
		t.Fatal(err)
	}
	acked := time.Now()
	if !res.Ack.Acknowledged || res.Ack.Workers != 3 {
		t.Fatalf("ack = %+v, want acknowledged by 3 workers", res.Ack)
	}
	st := e.waitFinished(id)
	if after := e.st.Sim.DeliveriesAfter(acked, collapse); after != 0 {
		t.Errorf("%d deliveries after the kill was acknowledged", after)
	}
	c := st.Counters
	if st.State != api.StateKilled || c.Sent+c.Cancelled+c.Uncertain+c.Failed != c.Targeted || c.Sent >= devices {
		t.Errorf("state %s, counters %+v: want killed with sent + cancelled + uncertain + failed = targeted", st.State, c)
	}
	reached := e.st.Sim.DeliveriesAfter(time.Time{}, collapse)
	if int64(reached) > c.Sent+c.Uncertain {
		t.Errorf("simulators saw %d deliveries, the ledger %d sent (+%d uncertain: cut short in flight)", reached, c.Sent, c.Uncertain)
	}
	t.Logf("killed after %d deliveries; acknowledged after waiting %.1fms for workers (request to answer %s)", c.Sent, res.Ack.WaitedMS, acked.Sub(start))
}

// TestWorkerKilledMidBroadcastLosesNothing kills one of two worker
// processes with SIGKILL in the middle of a broadcast and checks that the
// other reaps it — takes the batches it was running and runs them again —
// and that every phone ends up showing the broadcast exactly once. Nothing
// in asynq is shortened: its own recovery would take a minute or more.
func TestWorkerKilledMidBroadcastLosesNothing(t *testing.T) {
	const devices = 20000
	e := newE2E(t, stack.Options{Devices: devices, AndroidShare: 0.6, Seed: 5, Latency: 2 * time.Millisecond},
		app.Roles{API: true})
	ps := e.startWorkers(2)
	ctx := context.Background()
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
		t.Fatal(err)
	}
	id := e.submit(e.owner, topicBroadcast("citizens", "crash"))
	collapse := queue.CollapseID(id)
	waitUntil(t, "the broadcast to be under way", func() bool {
		return e.st.Sim.DeliveriesAfter(time.Time{}, collapse) >= devices/4
	})
	host, _ := os.Hostname()
	dead := host + "-" + strconv.Itoa(ps[0].cmd.Process.Pid)
	killed := time.Now()
	ps[0].stop(syscall.SIGKILL)
	before := e.st.Sim.DeliveriesAfter(time.Time{}, collapse)
	st := e.waitFinished(id)
	if st.State != api.StateCompleted || st.Counters.Sent != devices {
		t.Fatalf("state %s, counters %+v: want completed with every device sent", st.State, st.Counters)
	}
	// The survivor's reaper resumed the dead worker's batches (asynq's
	// recoverer would have logged nothing of the kind).
	reaped, resumed := reapLine(t, ps[1].out.String(), dead)
	if resumed == 0 {
		t.Errorf("the survivor reaped %s but resumed none of its tasks; it was killed mid-broadcast", dead)
	}
	shown := e.st.Sim.Showing(collapse)
	total := 0
	for _, s := range shown {
		if s.Title != "crash" {
			t.Errorf("%d phones show %q under the broadcast's collapse id", s.Phones, s.Title)
		}
		total += s.Phones
	}
	if total != devices {
		t.Errorf("%d phones show the broadcast, want all %d", total, devices)
	}
	for _, d := range e.st.Devices[:2000] {
		v, _ := e.st.Sim.Device(d.Token)
		n := 0
		for _, s := range v.Screen {
			if s.CollapseID == collapse {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("phone %s… shows the broadcast %d times, want once", d.Token[:12], n)
		}
	}
	dups := e.st.Sim.Stats().RawDuplicates
	t.Logf("killed the worker after %d deliveries; %d raw duplicates re-sent from the crash window, none visible", before, dups)
	t.Logf("SIGKILL to reap (%d tasks resumed): %s; SIGKILL to completion: %s; whole broadcast: %s",
		resumed, reaped.Sub(killed).Round(time.Millisecond), st.FinishedAt.Sub(killed).Round(time.Millisecond),
		st.FinishedAt.Sub(st.CreatedAt).Round(time.Millisecond))
	// Duplicates come only from batches in flight at the crash: at most
	// the worker's concurrent batches, 500 devices each.
	if dups > 8*queue.MaxBatch {
		t.Errorf("%d raw duplicates: more than the batches in flight at the crash", dups)
	}
}

// TestFrozenWorkerReapedSendsNothingAfterThaw freezes one of two worker
// processes with SIGSTOP in the middle of a broadcast until the other has
// reaped it and completed the broadcast, then thaws it. The thawed worker
// finds its tasks resumed elsewhere: it sends nothing more of them and
// joins the live set again; every phone shows the broadcast once.
func TestFrozenWorkerReapedSendsNothingAfterThaw(t *testing.T) {
	const devices = 20000
	e := newE2E(t, stack.Options{Devices: devices, AndroidShare: 0.6, Seed: 9, Latency: 2 * time.Millisecond},
		app.Roles{API: true})
	ps := e.startWorkers(2)
	ctx := context.Background()
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
		t.Fatal(err)
	}
	id := e.submit(e.owner, topicBroadcast("citizens", "frozen"))
	collapse := queue.CollapseID(id)
	waitUntil(t, "the broadcast to be under way", func() bool {
		return e.st.Sim.DeliveriesAfter(time.Time{}, collapse) >= devices/4
	})
	frozen := ps[0]
	host, _ := os.Hostname()
	worker := host + "-" + strconv.Itoa(frozen.cmd.Process.Pid)
	frozenAt := time.Now()
	if err := frozen.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			frozen.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	defer thaw()
	st := e.waitFinished(id)
	if st.State != api.StateCompleted || st.Counters.Sent != devices {
		t.Fatalf("state %s, counters %+v: want completed with every device sent", st.State, st.Counters)
	}
	reaped, resumed := reapLine(t, ps[1].out.String(), worker)

	thawedAt := time.Now()
	thaw()
	waitUntil(t, "the thawed worker to find that it was reaped", func() bool {
		return strings.Contains(frozen.out.String(), "event=worker_session_reaped")
	})
	waitUntil(t, "the thawed worker's resumed tasks to end", func() bool {
		return strings.Count(frozen.out.String(), "event=task_resumed_elsewhere") == resumed
	})
	if after := e.st.Sim.DeliveriesAfter(thawedAt, collapse); after != 0 {
		t.Errorf("%d deliveries after the reaped worker was thawed", after)
	}
	again := e.status(id)
	if again.Counters != st.Counters {
		t.Errorf("counters changed after the thaw: %+v, were %+v", again.Counters, st.Counters)
	}
	got := deliveriesPerPhone(e.st.Sim, id, "frozen")
	for _, d := range e.st.Devices {
		if got[d.Token] == 0 {
			t.Fatalf("phone %s… never got the broadcast", d.Token[:12])
		}
	}
	total := 0
	for _, s := range e.st.Sim.Showing(collapse) {
		total += s.Phones
	}
	if total != devices {
		t.Errorf("%d phones show the broadcast, want all %d, once each", total, devices)
	}
	e.waitWorkers(2) // the thawed worker joined again
	t.Logf("SIGSTOP to reap (%d tasks resumed): %s; SIGSTOP to completion: %s; %d raw duplicates, none visible; %d deliveries after the thaw",
		resumed, reaped.Sub(frozenAt).Round(time.Millisecond), st.FinishedAt.Sub(frozenAt).Round(time.Millisecond),
		e.st.Sim.Stats().RawDuplicates, e.st.Sim.DeliveriesAfter(thawedAt, collapse))
}

// reapLine finds the log line in which a worker reaped worker dead, and
// returns its time and how many tasks it resumed.
func reapLine(t *testing.T, log, dead string) (time.Time, int) {
	t.Helper()
	for line := range strings.Lines(log) {
		if !strings.Contains(line, "event=worker_reaped") || !strings.Contains(line, "dead_worker="+dead+" ") {
			continue
		}
		var at time.Time
		n := -1
		for field := range strings.FieldsSeq(line) {
			if v, ok := strings.CutPrefix(field, "time="); ok {
				at, _ = time.Parse(time.RFC3339Nano, v)
			}
			if v, ok := strings.CutPrefix(field, "tasks="); ok {
				n, _ = strconv.Atoi(v)
			}
		}
		if at.IsZero() || n < 0 {
			t.Fatalf("reap line without a time or a task count: %s", line)
		}
		return at, n
	}
	t.Fatalf("no worker reaped %s; the survivor's log:\n%s", dead, log)
	return time.Time{}, 0
}

// TestWorkerDrainsOnSIGTERM stops a worker process with SIGTERM in the
// middle of a broadcast: it finishes the batches it holds and exits
// cleanly, and a new worker completes the broadcast with every phone
// reached exactly once — no loss, and no duplicate even at the raw level.
func TestWorkerDrainsOnSIGTERM(t *testing.T) {
	const devices = 20000
	e := newE2E(t, stack.Options{Devices: devices, AndroidShare: 0.6, Seed: 8, Latency: 2 * time.Millisecond},
		app.Roles{API: true})
	ps := e.startWorkers(1)
	ctx := context.Background()
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
		t.Fatal(err)
	}
	id := e.submit(e.owner, topicBroadcast("citizens", "drain"))
	collapse := queue.CollapseID(id)
	waitUntil(t, "the broadcast to be under way", func() bool {
		return e.st.Sim.DeliveriesAfter(time.Time{}, collapse) >= devices/4
	})
	ps[0].stop(syscall.SIGTERM)
	if code := ps[0].cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("worker exited with status %d after SIGTERM, want 0", code)
	}
	if !strings.Contains(ps[0].out.String(), "stopped") {
		t.Errorf("worker did not log a clean stop:\n%s", ps[0].out.String())
	}
	e.startWorkers(1)
	st := e.waitFinished(id)
	if st.State != api.StateCompleted || st.Counters.Sent != devices {
		t.Fatalf("state %s, counters %+v: want completed with every device sent", st.State, st.Counters)
	}
	got := deliveriesPerPhone(e.st.Sim, id, "drain")
	for _, d := range e.st.Devices {
		if got[d.Token] != 1 {
			t.Fatalf("phone %s… got the broadcast %d times, want 1", d.Token[:12], got[d.Token])
		}
	}
	if dups := e.st.Sim.Stats().RawDuplicates; dups != 0 {
		t.Errorf("%d raw duplicates after a graceful stop, want 0", dups)
	}
}

// TestRecallReplaceAndRemove recalls broadcasts that reached online and
// offline phones.
func TestRecallReplaceAndRemove(t *testing.T) {
	e := newE2E(t, stack.Options{Devices: 2000, AndroidShare: 0.6, Seed: 6}, app.Roles{API: true, Worker: true})
	ctx := context.Background()
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
		t.Fatal(err)
	}
	offline := e.st.Devices[:400]
	for _, d := range offline {
		e.st.Sim.SetOnline(d.Token, false)
	}
	recall := func(id string, req *api.RecallRequest) *api.Status {
		t.Helper()
		if _, _, err := e.admin.Recall(ctx, id, req); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the recall", func() bool { return e.status(id).State == api.StateRecalled })
		return e.status(id)
	}

	id := e.submit(e.owner, topicBroadcast("citizens", "wrong"))
	e.waitFinished(id)
	st := recall(id, retraction())
	if st.Counters.Recalled != 2000 {
		t.Errorf("recalled %d, want 2000 (offline phones' held copies included)", st.Counters.Recalled)
	}
	for _, d := range offline {
		e.st.Sim.SetOnline(d.Token, true)
	}
	collapse := queue.CollapseID(id)
	for _, s := range e.st.Sim.Showing(collapse) {
		if s.Title != retraction().Replacement.Title {
			t.Errorf("%d phones show %q; after a replace every phone shows the correction", s.Phones, s.Title)
		}
	}
	for _, d := range offline[:50] {
		v, _ := e.st.Sim.Device(d.Token)
		for _, l := range v.Log {
			if l.CollapseID == collapse && l.Title == "wrong" {
				t.Fatalf("offline phone %s… received the original when it came online", d.Token[:12])
			}
		}
	}

	id2 := e.submit(e.owner, topicBroadcast("citizens", "remove me"))
	e.waitFinished(id2)
	st2 := recall(id2, &api.RecallRequest{Mode: api.RecallRemove})
	if st2.Counters.Recalled != 2000 {
		t.Errorf("remove: recalled %d, want 2000", st2.Counters.Recalled)
	}
	silent := map[string]bool{}
	for _, d := range e.st.Sim.Deliveries(func(d sim.Delivery) bool {
		// FCM data-only messages carry no notification tag; both carry
		// the recall instruction in their pushgate data.
		return d.Silent && strings.Contains(d.Data["pushgate"], `"recall":"`+id2+`"`)
	}) {
		silent[d.Token] = true
	}
	if len(silent) != 2000 {
		t.Errorf("%d phones got the silent recall, want 2000", len(silent))
	}
	if n := len(e.st.Sim.Showing(queue.CollapseID(id2))); n != 0 {
		t.Errorf("after remove, phones still show the broadcast: %+v", e.st.Sim.Showing(queue.CollapseID(id2)))
	}
}
