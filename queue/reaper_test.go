package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/providers"
)

// These tests kill and freeze workers in the middle of a batch and check
// that another worker resumes the batch through the reaper
// (docs/ARCHITECTURE.md, "Dead workers"), that a frozen worker that wakes
// up sends nothing of what was resumed, and that whatever Redis holds in
// an in-flight record runs only as a task in the queue would.

// testReapMargin is worker.reap_margin in these tests: shorter than the
// default to keep them short, far longer than a heartbeat interval, so
// that a worker that is only slow under load is not reaped.
const testReapMargin = 2 * time.Second

// stallingSender sends the first half of every batch, then hangs, as a
// worker that died or froze in the middle of it, until release is closed;
// then it tries the rest through the same gate — or, with failAfter, fails
// them as calls cut off by the freeze would.
type stallingSender struct {
	inner     *fakeSender
	release   chan struct{}
	failAfter bool
	received  atomic.Int64 // devices of the batches it was handed
	stalled   atomic.Int32 // batches hanging
	returned  atomic.Int32 // batches that went on after release and returned
}

var _ Sender = (*stallingSender)(nil)

func newStallingSender() *stallingSender {
	return &stallingSender{inner: newFakeSender(providers.FCM), release: make(chan struct{})}
}

func (s *stallingSender) Platform() providers.Platform { return s.inner.Platform() }

func (s *stallingSender) Send(ctx context.Context, gate providers.Gate, msg *providers.Message, tokens []string) []providers.Result {
	s.received.Add(int64(len(tokens)))
	h := (len(tokens) + 1) / 2
	out := s.inner.Send(ctx, gate, msg, tokens[:h])
	s.stalled.Add(1)
	select {
	case <-s.release:
	case <-ctx.Done():
	}
	if s.failAfter {
		// Calls in flight when the worker froze fail when it wakes.
		for range tokens[h:] {
			out = append(out, providers.Result{Class: providers.Retryable, Reason: "transport error"})
		}
	} else {
		out = append(out, s.inner.Send(ctx, gate, msg, tokens[h:])...)
	}
	s.returned.Add(1)
	return out
}

// taskSender is a fakeSender that remembers which asynq task sent each
// device, from the task's context.
type taskSender struct {
	*fakeSender
	mu sync.Mutex
	by map[string][]string // token → ids of the tasks that sent it
}

func newTaskSender() *taskSender {
	return &taskSender{fakeSender: newFakeSender(providers.FCM), by: map[string][]string{}}
}

func (s *taskSender) Send(ctx context.Context, gate providers.Gate, msg *providers.Message, tokens []string) []providers.Result {
	id, _ := asynq.GetTaskID(ctx)
	out := s.fakeSender.Send(ctx, gate, msg, tokens)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, r := range out {
		if r.Class == providers.Sent {
			s.by[tokens[i]] = append(s.by[tokens[i]], id)
		}
	}
	return out
}

func (s *taskSender) senders() map[string][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]string, len(s.by))
	for k, v := range s.by {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// logLines keeps a worker's log lines, and writes them into the test's
// output.
type logLines struct {
	t     testing.TB
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Write(b []byte) (int, error) {
	l.mu.Lock()
	l.lines = append(l.lines, string(b))
	l.mu.Unlock()
	l.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// count returns how many lines hold every one of parts.
func (l *logLines) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

// reapWorker is a started worker with its own metrics and log.
type reapWorker struct {
	*Worker
	reg *prometheus.Registry
	log *logLines
}

// counter reads one of the worker's counters.
func (w *reapWorker) counter(name string) float64 {
	w.log.t.Helper()
	fams, err := w.reg.Gather()
	if err != nil {
		w.log.t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	w.log.t.Fatalf("no counter %s", name)
	return 0
}

// startReapWorker starts worker id around its own view of the control
// log, with fcm as its FCM sender, and stops it at cleanup.
func (f *fixture) startReapWorker(id string, c *Control, fcm Sender) *reapWorker {
	f.t.Helper()
	rw := &reapWorker{reg: prometheus.NewRegistry(), log: &logLines{t: f.t}}
	cfg := f.config(c)
	cfg.Metrics = NewMetrics(rw.reg)
	cfg.Logger = slog.New(slog.NewTextHandler(rw.log, &slog.HandlerOptions{Level: slog.LevelWarn}))
	w, err := NewWorker(WorkerConfig{
		Config:                   cfg,
		Senders:                  map[providers.Platform]Sender{providers.FCM: fcm, providers.APNs: newFakeSender(providers.APNs)},
		ID:                       id,
		Concurrency:              8,
		TaskCheckInterval:        10 * time.Millisecond,
		DelayedTaskCheckInterval: 100 * time.Millisecond,
		ShutdownTimeout:          5 * time.Second,
		ReapMargin:               testReapMargin,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(w.Shutdown)
	rw.Worker = w
	return rw
}

// switchProxy forwards TCP to Redis until it is switched off, which
// closes every connection and refuses new ones, and again once it is
// switched on: a process frozen and thawed, as Redis sees it.
type switchProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	off    bool
	conns  []net.Conn
}

func startSwitchProxy(t *testing.T, target string) *switchProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &switchProxy{ln: ln, target: target}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.off {
				p.mu.Unlock()
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})
	return p
}

// set switches the proxy off (closing every connection) or on.
func (p *switchProxy) set(off bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.off = off
	if off {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

// client is a Redis client that reaches Redis through the proxy.
func (p *switchProxy) client(t *testing.T, base *redis.Client) *redis.Client {
	opts := *base.Options()
	opts.Addr = p.ln.Addr().String()
	c := redis.NewClient(&opts)
	t.Cleanup(func() { c.Close() })
	return c
}

// inflight reads a worker's in-flight record: its tasks by id, and its own
// fields.
func (f *fixture) inflight(worker string) (tasks map[string]*inflightEntry, own map[string]string) {
	f.t.Helper()
	h, err := f.rdb.HGetAll(context.Background(), f.keys.Inflight(worker)).Result()
	if err != nil {
		f.t.Fatal(err)
	}
	tasks, own = map[string]*inflightEntry{}, map[string]string{}
	for k, v := range h {
		if strings.HasPrefix(k, "~") {
			own[k] = v
			continue
		}
		e, err := decodeInflight(v)
		if err != nil {
			f.t.Fatalf("in-flight entry %s: %v", k, err)
		}
		tasks[k] = e
	}
	return tasks, own
}

// doomedBatches starts a worker "doomed" on Redis through the returned
// proxy, submits a broadcast to n FCM devices, and waits until the worker
// holds every batch of it hung halfway. It returns the broadcast and the
// deliver tasks in flight by id.
func (f *fixture) doomedBatches(n int, title string) (*api.Status, *switchProxy, *reapWorker, *stallingSender, map[string]*inflightEntry) {
	f.t.Helper()
	t := f.t.(*testing.T)
	f.register("citizens", n, 0)
	p := startSwitchProxy(t, f.rdb.Options().Addr)
	cut := p.client(t, f.rdb)
	stall := newStallingSender()
	doomed := f.startReapWorker("doomed", f.newControlOn(cut, false, ""), stall)
	// Registered after the worker, so it runs before its shutdown: the
	// hung sends return and the worker can stop.
	t.Cleanup(func() {
		select {
		case <-stall.release:
		default:
			close(stall.release)
		}
	})
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, title))
	waitFor(t, "every batch to hang on the doomed worker", func() bool {
		if stall.received.Load() != int64(n) {
			return false
		}
		tasks, _ := f.inflight("doomed")
		return len(tasks) > 0 && int(stall.stalled.Load()) == len(tasks)
	})
	tasks, own := f.inflight("doomed")
	if own[sessionField] == "" {
		t.Fatalf("the doomed worker's in-flight record has no session: %v", own)
	}
	for id, e := range tasks {
		if e.Type != TypeDeliver || e.Queue != QueueDeliver {
			t.Fatalf("in flight: task %s of type %s on %s, want only deliver tasks", id, e.Type, e.Queue)
		}
	}
	return st, p, doomed, stall, tasks
}

// TestReaperResumesADeadWorkersBatches kills a worker in the middle of its
// batches — cut off from Redis with its sends hung, as a SIGKILL leaves
// it: no heartbeat, no cleanup — and checks that another worker reaps it
// and completes the broadcast. Causality: every device was sent by a task
// whose id the reaper derived from one the dead worker held; asynq's
// recoverer would have run the old ids. Nothing in asynq is shortened.
// The devices the dead worker reached before it died are sent again (raw
// duplicates the collapse identity hides on the phone), each once; a later
// re-run of the original tasks, as asynq's recoverer makes, sends nothing.
func TestReaperResumesADeadWorkersBatches(t *testing.T) {
	f := newFixture(t, nil)
	const n = 1200
	st, p, _, stall, orig := f.doomedBatches(n, "hello")
	p.set(true) // the doomed worker is dead to Redis from here on

	healthy := newTaskSender()
	h := f.startReapWorker("healthy", f.newControl(false, ""), healthy)
	done := f.waitState(st.ID, api.StateCompleted)
	if done.Counters.Sent != n {
		t.Errorf("counters %+v: want all %d sent", done.Counters, n)
	}

	resumed := map[string]bool{}
	for id := range orig {
		resumed[resumedTaskID(id)] = true
	}
	bySender := healthy.senders()
	for i := range n {
		tok := fmt.Sprintf("fcm-citizens-%05d", i)
		ids := bySender[tok]
		if len(ids) != 1 || !resumed[ids[0]] {
			t.Fatalf("%s sent by the healthy worker's tasks %v, want once by a copy the reaper made of the dead worker's tasks", tok, ids)
		}
	}
	if got := h.counter("pushgate_workers_reaped_total"); got != 1 {
		t.Errorf("workers reaped = %v, want 1", got)
	}
	if got := h.counter("pushgate_tasks_resumed_total"); got != float64(len(orig)) {
		t.Errorf("tasks resumed = %v, want the %d the dead worker held", got, len(orig))
	}
	if c := h.log.count("level=WARN", "worker_reaped", "dead_worker=doomed", fmt.Sprintf("tasks=%d", len(orig))); c != 1 {
		t.Errorf("%d WARN lines reporting the reap, want 1", c)
	}
	tasks, own := f.inflight("doomed")
	if len(tasks) != 0 || own[reapedField] != "1" || own[sessionField] != "" {
		t.Errorf("the dead worker's in-flight record after the reap: tasks %v, own fields %v; want only the tombstone", tasks, own)
	}
	if _, err := f.rdb.ZScore(context.Background(), f.keys.Workers(), "doomed").Result(); err != redis.Nil {
		t.Errorf("the dead worker is still in the live set (err %v)", err)
	}

	// Raw duplicates: the devices the dead worker reached and never
	// recorded, each sent once more. Every copy carries the broadcast's
	// collapse identity, so the phone shows it once.
	dups := 0
	for tok, k := range stall.inner.sent("hello") {
		dups += k
		if len(bySender[tok]) != 1 {
			t.Errorf("%s: reached by the dead worker, then sent %d times by the healthy one", tok, len(bySender[tok]))
		}
	}
	for _, s := range append(stall.inner.records(), healthy.records()...) {
		if s.msg.CollapseID != CollapseID(st.ID) {
			t.Fatalf("a copy went out under collapse id %q, want %q", s.msg.CollapseID, CollapseID(st.ID))
		}
	}
	t.Logf("%d devices, %d batches resumed; %d raw duplicates (the dead worker's unrecorded sends), none shown twice", n, len(orig), dups)

	// asynq's recoverer runs the original tasks again once their lease
	// expires: the ledger makes that a no-op. Run them as it would.
	sentBefore := len(healthy.records())
	ctx := context.Background()
	for id, e := range orig {
		if err := h.deliver(ctx, asynq.NewTask(e.Type, e.Payload)); err != nil {
			t.Fatalf("re-run of %s: %v", id, err)
		}
	}
	if err := h.plan(ctx, PlanTask(st.ID)); err != nil {
		t.Fatalf("re-run of the plan: %v", err)
	}
	if got := len(healthy.records()); got != sentBefore {
		t.Errorf("re-running the original tasks sent %d more", got-sentBefore)
	}
	after, err := f.svc.Get(ctx, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.Counters != done.Counters || after.State != api.StateCompleted {
		t.Errorf("after the re-runs: %s %+v, want %s %+v", after.State, after.Counters, done.State, done.Counters)
	}
	insp := asynq.NewInspectorFromRedisClient(f.rdb)
	if pending, _ := insp.ListPendingTasks(QueueDeliver); len(pending) != 0 {
		t.Errorf("the plan's re-run enqueued %d batches", len(pending))
	}
}

// TestReapedWorkerThatWakesSendsNothingMore freezes a worker in the middle
// of its batches (Redis cannot reach it and its sends hang), lets another
// worker reap it and complete the broadcast, then thaws it: its hung
// batches go on as soon as its view of the control log is fresh again,
// racing its first heartbeat. Their session is gone, so they send
// nothing; the worker learns that its tasks were resumed, hands none of
// them on as follow-ups, lets asynq forget them, and joins again under a
// new session.
func TestReapedWorkerThatWakesSendsNothingMore(t *testing.T) {
	t.Run("its sends refused", func(t *testing.T) { testReapedWorkerWakes(t, false) })
	// Calls in flight when it froze fail when it wakes: they are no
	// retries of the broadcast, which the copies completed.
	t.Run("its calls in flight failing", func(t *testing.T) { testReapedWorkerWakes(t, true) })
}

func testReapedWorkerWakes(t *testing.T, failing bool) {
	f := newFixture(t, nil)
	const n = 1200
	st, p, doomed, stall, orig := f.doomedBatches(n, "hello")
	stall.failAfter = failing
	oldSession := doomed.ks.session.Load()
	p.set(true)

	healthy := newTaskSender()
	f.startReapWorker("healthy", f.newControl(false, ""), healthy)
	done := f.waitState(st.ID, api.StateCompleted)
	callsBefore := stall.inner.records()

	// Thawed, the worker reads the log again at once; its hung batches go
	// on with a fresh view, before or after its heartbeat finds that it
	// was reaped.
	p.set(false)
	waitFor(t, "the thawed worker's view to be fresh again", doomed.control.Fresh)
	thawed := time.Now()
	close(stall.release)
	waitFor(t, "the thawed worker's hung batches to return", func() bool {
		return int(stall.returned.Load()) == len(orig)
	})
	waitFor(t, "the thawed worker to drop its resumed tasks", func() bool {
		return doomed.log.count("event=task_resumed_elsewhere") == len(orig)
	})
	waitFor(t, "the thawed worker to join again", func() bool {
		s := doomed.ks.session.Load()
		return s != oldSession && doomed.ks.holds(s)
	})

	if n := startedAfter(stall.inner, "hello", thawed); n != 0 {
		t.Errorf("the thawed worker started %d sends of its resumed batches", n)
	}
	if got := len(stall.inner.records()); got != len(callsBefore) {
		t.Errorf("the thawed worker sent %d more", got-len(callsBefore))
	}
	if !oldSession.reaped.Load() || doomed.log.count("level=WARN", "worker_session_reaped") != 1 {
		t.Errorf("the thawed worker did not learn that it was reaped")
	}
	// No follow-up of the resumed batches was queued. (The original tasks
	// themselves asynq forgets, or, had their lease run out meanwhile, runs
	// again harmlessly, as TestReaperResumesADeadWorkersBatches shows.)
	insp := asynq.NewInspectorFromRedisClient(f.rdb)
	for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		insp.ListPendingTasks, insp.ListScheduledTasks, insp.ListRetryTasks,
	} {
		tasks, err := list(QueueDeliver)
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			if orig[task.ID] == nil {
				t.Errorf("deliver task %s queued after the thaw: the thawed worker handed on what the copies did", task.ID)
			}
		}
	}
	after, err := f.svc.Get(context.Background(), st.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.Counters != done.Counters {
		t.Errorf("counters changed after the thaw: %+v, were %+v", after.Counters, done.Counters)
	}
	if tasks, own := f.inflight("doomed"); len(tasks) != 0 || own[sessionField] != doomed.ks.session.Load().token {
		t.Errorf("the thawed worker's in-flight record: tasks %v, own %v; want its new session and no task", tasks, own)
	}
	t.Logf("%d raw duplicates from the frozen worker's unrecorded sends; %d sends after the thaw", len(callsBefore), startedAfter(stall.inner, "hello", thawed))
}

// TestInflightRecordIsTrustedLikeTheQueue writes the in-flight record of a
// worker that never existed, as someone who can write to Redis can: the
// entries that are not pushgate tasks are skipped with a warning, and a
// well-formed task naming a broadcast that does not exist runs like a
// task written to the queue: its handler refuses it as a security event,
// and nothing is sent.
func TestInflightRecordIsTrustedLikeTheQueue(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	forged, err := json.Marshal(batchPayload{Broadcast: "bforged", Platform: providers.FCM, Tokens: []string{"fcm-x"}})
	if err != nil {
		t.Fatal(err)
	}
	entry := func(typ, queue string, payload []byte) string {
		b, _ := json.Marshal(inflightEntry{Type: typ, Queue: queue, Payload: payload})
		return string(b)
	}
	if err := f.rdb.HSet(ctx, f.keys.Inflight("ghost"),
		sessionField, "whatever",
		"not-json", "{",
		"unknown-type", entry("evil:run", QueueDeliver, []byte("{}")),
		"wrong-queue", entry(TypeDeliver, QueueRecall, forged),
		"empty", entry(TypePlan, QueuePlan, nil),
		"huge", strings.Repeat("x", maxInflightEntry+1),
		"forged", entry(TypeDeliver, QueueDeliver, forged),
	).Err(); err != nil {
		t.Fatal(err)
	}
	if err := f.rdb.ZAdd(ctx, f.keys.Workers(), redis.Z{Score: float64(time.Now().Add(-time.Hour).UnixMilli()), Member: "ghost"}).Err(); err != nil {
		t.Fatal(err)
	}
	fcm := newTaskSender()
	w := f.startReapWorker("w1", f.newControl(false, ""), fcm)
	waitFor(t, "the forged task to be refused", func() bool {
		ev, err := w.store.securityEvents(ctx)
		return err == nil && ev[TypeDeliver+":envelope"] == 1
	})
	if got := w.counter("pushgate_tasks_resumed_total"); got != 1 {
		t.Errorf("tasks resumed = %v, want 1 (the well-formed one)", got)
	}
	if c := w.log.count("level=WARN", "not pushgate tasks", "dead_worker=ghost", "skipped=5"); c != 1 {
		t.Errorf("%d WARN lines about the skipped entries, want 1", c)
	}
	if len(fcm.records()) != 0 {
		t.Errorf("a forged in-flight entry sent %d pushes", len(fcm.records()))
	}
	// The refused task left no trace in the worker's own record either.
	waitFor(t, "the refused task to leave the in-flight record", func() bool {
		tasks, _ := f.inflight("w1")
		return len(tasks) == 0
	})
}

// TestReapTakesADeadWorkerOnce has several reapers race for one dead
// worker: exactly one takes its tasks, and enqueuing them again (a repeat)
// collides with the copies already queued instead of doubling them.
func TestReapTakesADeadWorkerOnce(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	const tasks = 5
	fields := []any{sessionField, "s"}
	for i := range tasks {
		p, _ := json.Marshal(planPayload{Broadcast: fmt.Sprintf("b%d", i)})
		b, _ := json.Marshal(inflightEntry{Type: TypePlan, Queue: QueuePlan, Payload: p})
		fields = append(fields, fmt.Sprintf("plan:b%d", i), string(b))
	}
	if err := f.rdb.HSet(ctx, f.keys.Inflight("dead"), fields...).Err(); err != nil {
		t.Fatal(err)
	}
	if err := f.rdb.ZAdd(ctx, f.keys.Workers(), redis.Z{Score: float64(time.Now().Add(-time.Minute).UnixMilli()), Member: "dead"}).Err(); err != nil {
		t.Fatal(err)
	}
	ws := &workerSet{rdb: f.rdb, keys: f.keys, now: time.Now}
	var enqueued atomic.Int32
	var wg sync.WaitGroup
	var reapers []*reaper
	for i := range 8 {
		r := &reaper{workers: ws, self: fmt.Sprintf("r%d", i), margin: time.Second, retries: 25,
			logger: slog.New(slog.DiscardHandler), now: time.Now,
			enqueue: func(ctx context.Context, typ string, payload []byte, opts ...asynq.Option) error {
				enqueued.Add(1)
				return f.svc.enqueue(ctx, typ, payload, opts...)
			}}
		reapers = append(reapers, r)
		wg.Go(func() { r.reapDead(ctx) })
	}
	wg.Wait()
	if got := enqueued.Load(); got != tasks {
		t.Fatalf("%d tasks enqueued by 8 racing reapers, want %d", got, tasks)
	}
	insp := asynq.NewInspectorFromRedisClient(f.rdb)
	pending, err := insp.ListPendingTasks(QueuePlan)
	if err != nil || len(pending) != tasks {
		t.Fatalf("%d plan tasks pending (err %v), want %d", len(pending), err, tasks)
	}
	// A repeat of the resume (say, by a reaper that crashed after
	// enqueuing and is run again) adds nothing.
	h := map[string]string{}
	for i := 2; i < len(fields); i += 2 {
		h[fields[i].(string)] = fields[i+1].(string)
	}
	reapers[0].resume(ctx, "dead", h)
	if again, _ := insp.ListPendingTasks(QueuePlan); len(again) != tasks {
		t.Errorf("%d plan tasks pending after a repeated resume, want %d", len(again), tasks)
	}
	for _, p := range pending {
		if !strings.HasPrefix(p.ID, "resumed:") || p.MaxRetry != 25 {
			t.Errorf("resumed task %s with max retry %d, want a resumed: id and 25", p.ID, p.MaxRetry)
		}
	}
}

// TestPlanWhoseSessionIsGoneSavesNothing runs a plan as a task of a
// session this worker no longer holds — it was frozen, and a reaper may
// have resumed the plan elsewhere: it stops before it enqueues a batch or
// saves progress, so two planners never count a page twice.
func TestPlanWhoseSessionIsGoneSavesNothing(t *testing.T) {
	f := newFixture(t, nil)
	f.register("citizens", 50, 0)
	// No worker runs: the test runs the handler itself.
	w, err := NewWorker(WorkerConfig{Config: f.config(f.control),
		Senders: map[providers.Platform]Sender{providers.FCM: f.fcm, providers.APNs: f.apns}})
	if err != nil {
		t.Fatal(err)
	}
	id := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "x")).ID
	ctx := context.WithValue(context.Background(), trackedKey{}, &trackedTask{id: "plan:" + id, session: newSession()})
	if err := w.plan(ctx, PlanTask(id)); err != errStale {
		t.Fatalf("plan under a lost session = %v, want errStale", err)
	}
	if prog, err := w.store.loadProgress(context.Background(), id, ledgerDelivery); err != nil || prog.planned != 0 || prog.seq != 0 {
		t.Errorf("progress %+v (err %v) saved by a plan under a lost session", prog, err)
	}
}

// TestRestartedWorkerResumesItsPredecessorsTasks starts a worker under the
// id of one that died running a plan (its in-flight record is still
// there, under the dead process's session): joining, it takes the record
// over and runs the plan again, and the broadcast completes.
func TestRestartedWorkerResumesItsPredecessorsTasks(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	f.register("citizens", 30, 0)
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "x"))
	// The dead process had taken the plan task off the queue.
	insp := asynq.NewInspectorFromRedisClient(f.rdb)
	if err := insp.DeleteTask(QueuePlan, "plan:"+st.ID); err != nil {
		t.Fatal(err)
	}
	task := PlanTask(st.ID)
	entry, err := encodeInflight(task.Type(), QueuePlan, task.Payload())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.rdb.HSet(ctx, f.keys.Inflight("w1"), sessionField, "the dead process's", "plan:"+st.ID, entry).Err(); err != nil {
		t.Fatal(err)
	}
	w := f.startReapWorker("w1", f.newControl(false, ""), newTaskSender())
	if done := f.waitState(st.ID, api.StateCompleted); done.Counters.Sent != 30 {
		t.Errorf("counters %+v: want 30 sent", done.Counters)
	}
	if got := w.counter("pushgate_tasks_resumed_total"); got != 1 {
		t.Errorf("tasks resumed = %v, want the predecessor's plan", got)
	}
	if c := w.log.count("level=WARN", "worker_reaped", "dead_worker=w1", "tasks=1"); c != 1 {
		t.Errorf("%d WARN lines reporting the predecessor's tasks resumed, want 1", c)
	}
}

// TestEveryViewStaleReapsNoLiveWorker stops the log's checkpoints until
// every worker's view is stale — no one heartbeats — then signs them
// again. Coming back together, the workers do not take each other for
// dead: only a worker that really died meanwhile is reaped.
func TestEveryViewStaleReapsNoLiveWorker(t *testing.T) {
	f := newFixtureStaleness(t, nil, failClosedStaleness)
	ctx := context.Background()
	a := f.startReapWorker("a", f.newControl(false, ""), newTaskSender())
	b := f.startReapWorker("b", f.newControl(false, ""), newTaskSender())
	sa, sb := a.ks.session.Load(), b.ks.session.Load()

	f.control.Close() // the only integrator: no checkpoint is signed any more
	waitFor(t, "every view to go stale", func() bool { return !a.control.Fresh() && !b.control.Fresh() })
	// Meanwhile a third worker died; nobody heartbeats, so nobody reaps.
	if err := f.rdb.ZAdd(ctx, f.keys.Workers(), redis.Z{Score: float64(time.Now().UnixMilli()), Member: "ghost"}).Err(); err != nil {
		t.Fatal(err)
	}
	// The outage lasts until every heartbeat is older than a dead
	// worker's would be when it is reaped.
	waitFor(t, "every heartbeat to run out by the reap margin", func() bool {
		cutoff := strconv.FormatInt(time.Now().Add(-testReapMargin-time.Second).UnixMilli(), 10)
		n, err := f.rdb.ZCount(ctx, f.keys.Workers(), cutoff, "+inf").Result()
		return err == nil && n == 0
	})
	f.newControl(true, "")
	waitFor(t, "the dead worker to be reaped", func() bool {
		_, err := f.rdb.ZScore(ctx, f.keys.Workers(), "ghost").Result()
		return err == redis.Nil
	})
	if a.ks.session.Load() != sa || b.ks.session.Load() != sb {
		t.Error("a live worker lost its session: another took it for dead when the views came back")
	}
	if got := a.counter("pushgate_workers_reaped_total") + b.counter("pushgate_workers_reaped_total"); got != 1 {
		t.Errorf("%v workers reaped, want only the dead one", got)
	}
}

// FuzzDecodeInflight feeds arbitrary in-flight entries, as someone who can
// write to Redis could, to the reaper's decoder: it never panics, refuses
// everything malformed, and what it accepts is a task of a known type on
// that type's queue, which encodes back to an entry that decodes the same.
func FuzzDecodeInflight(f *testing.F) {
	for _, seed := range []string{
		`{"t":"pushgate:deliver","q":"pushgate-deliver","p":"e30="}`,
		`{"t":"pushgate:plan","q":"pushgate-plan","p":"eyJiIjoiYjAxMjMifQ=="}`,
		`{"t":"pushgate:deliver","q":"pushgate-recall","p":"e30="}`,
		`{"t":"pushgate:plan","q":"pushgate-plan","p":""}`,
		`{"t":"evil","q":"pushgate-plan","p":"e30="}`,
		`{"t":"pushgate:plan","q":"pushgate-plan","p":"not base64"}`,
		`[]`, `null`, ``, `{`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		e, err := decodeInflight(raw)
		if err != nil {
			if !errors.Is(err, errMalformedEntry) {
				t.Fatalf("refusal %v is not errMalformedEntry", err)
			}
			return
		}
		if q, ok := taskQueues[e.Type]; !ok || q != e.Queue || len(e.Payload) == 0 {
			t.Fatalf("accepted %+v", e)
		}
		again, err := encodeInflight(e.Type, e.Queue, e.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if e2, err := decodeInflight(again); err != nil || e2.Type != e.Type || string(e2.Payload) != string(e.Payload) {
			t.Fatalf("re-encoded entry %s: %+v, %v", again, e2, err)
		}
	})
}
