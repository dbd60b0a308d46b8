package queue

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// This file is how a dead worker's tasks are resumed within seconds
// instead of after asynq's lease and recoverer (docs/ARCHITECTURE.md,
// "Dead workers"):
//
//   - Each worker records the tasks it runs in its in-flight hash
//     (Keys.Inflight) before their handler runs and clears them when it
//     returns, under a session token the hash holds.
//   - Each heartbeat renews the hash only while it still holds the
//     worker's session; a tracked task sends only under the current
//     session and until the freshness its last accepted heartbeat
//     announced (KillSwitch.holds).
//   - On its heartbeat ticks every worker reaps the workers whose
//     heartbeat ran out ReapMargin ago: one script takes a dead worker out
//     of the live set and takes its in-flight hash, leaving a tombstone,
//     so one reaper gets its tasks; it enqueues each again under a task id
//     derived from the old one.
//   - A reaped worker that was only frozen finds its session gone at its
//     next heartbeat: its old tasks send nothing more, drop what they did
//     not send and let asynq forget them, and it joins again.
//
// The hash's contents come from Redis and are trusted no further than a
// task in the queue: resumed tasks go through the same handlers, which
// verify every task's envelope and audience.

// DefaultReapMargin is how long after a worker's heartbeat ran out (its
// view of the control log must have gone stale) another worker resumes
// its tasks, unless configured. With the default control.max_staleness
// (2 s) and heartbeats every quarter of it, a dead worker's tasks are
// resumed at most 2 s + 5 s + 0.5 s after its death, by a worker that has
// been live for 5 s.
const DefaultReapMargin = 5 * time.Second

// The in-flight hash's own fields start with "~", which no asynq task id
// pushgate makes does: "~session" names the owner's session, and
// "~reaped" is the tombstone a reaper leaves for the owner to find, should
// it only have been frozen.
const (
	sessionField = "~session"
	reapedField  = "~reaped"
)

// Answers of the in-flight scripts about a session.
const (
	sessionLost   = 0 // gone without a reaper: the record expired
	sessionHeld   = 1
	sessionReaped = 2 // a reaper took its tasks
)

// maxInflightEntry bounds one encoded in-flight entry: a batch is at most
// MaxBatch tokens of at most api.MaxTokenLen bytes, base64-encoded.
const maxInflightEntry = 4 << 20

// maxResumed bounds how many tasks one reap resumes: a worker runs its
// concurrency's worth, so more is tampering.
const maxResumed = 4096

// maxReapsPerTick bounds how many dead workers one tick reaps; the next
// tick takes the rest.
const maxReapsPerTick = 64

// untrackTimeout bounds clearing a finished task, which runs on a context
// asynq may have cancelled.
const untrackTimeout = 5 * time.Second

// session is one membership of a worker in the live set: the token its
// in-flight hash holds while no one has reaped it. reaped is set once the
// worker learned that a reaper took the session's tasks: only then may
// its tasks drop what they did not do, since a copy does it.
type session struct {
	token  string
	reaped atomic.Bool
}

func newSession() *session {
	return &session{token: rand.Text()}
}

// trackedTask is a running task recorded in its worker's in-flight hash,
// as the task's context carries it.
type trackedTask struct {
	id      string
	session *session
}

type trackedKey struct{}

// trackedFrom returns the tracked task ctx runs, or nil for a handler run
// outside the worker's middleware.
func trackedFrom(ctx context.Context) *trackedTask {
	t, _ := ctx.Value(trackedKey{}).(*trackedTask)
	return t
}

// inflightEntry is a task as its worker's in-flight hash holds it.
type inflightEntry struct {
	Type    string `json:"t"`
	Queue   string `json:"q"`
	Payload []byte `json:"p"`
}

// taskQueues is the queue of each task type.
var taskQueues = map[string]string{
	TypePlan:           QueuePlan,
	TypeApprovalExpiry: QueuePlan,
	TypeDeliver:        QueueDeliver,
	TypeRecallPlan:     QueueRecall,
	TypeRecallDeliver:  QueueRecall,
}

// encodeInflight encodes a running task for the in-flight hash.
func encodeInflight(typ, queue string, payload []byte) (string, error) {
	b, err := json.Marshal(inflightEntry{Type: typ, Queue: queue, Payload: payload})
	if err != nil {
		return "", fmt.Errorf("encode task in flight: %w", err)
	}
	if len(b) > maxInflightEntry {
		return "", fmt.Errorf("task in flight of %d bytes is over %d", len(b), maxInflightEntry)
	}
	return string(b), nil
}

// errMalformedEntry marks an in-flight entry that is not a pushgate task.
var errMalformedEntry = errors.New("malformed in-flight entry")

// decodeInflight decodes an in-flight entry read from Redis, refusing
// anything that is not a task of a known type on its own queue.
func decodeInflight(raw string) (*inflightEntry, error) {
	if len(raw) > maxInflightEntry {
		return nil, fmt.Errorf("%w: %d bytes", errMalformedEntry, len(raw))
	}
	var e inflightEntry
	if err := json.Unmarshal([]byte(raw), &e); err != nil {
		return nil, fmt.Errorf("%w: not JSON", errMalformedEntry)
	}
	if q, ok := taskQueues[e.Type]; !ok || q != e.Queue || len(e.Payload) == 0 {
		return nil, fmt.Errorf("%w: not a task of a known type on its queue", errMalformedEntry)
	}
	return &e, nil
}

// resumedTaskID is the task id a reaped task is enqueued under: derived
// from its old id, so that enqueuing it again while the first copy is
// queued or running collides instead of doubling it, and of fixed size
// whatever the old id was.
func resumedTaskID(old string) string {
	sum := sha256.Sum256([]byte(old))
	return "resumed:" + hex.EncodeToString(sum[:12])
}

// joinScript makes a worker a member of the live set under a new session:
// it takes what an earlier session left in the worker's in-flight hash (a
// process that ran under the same worker id and died), starts the hash
// afresh with the session, and heartbeats.
// KEYS[1] live set, KEYS[2] in-flight hash; ARGV[1] worker, ARGV[2] fresh
// until (ms), ARGV[3] session, ARGV[4] the hash's TTL (ms). Returns the
// hash as it was.
var joinScript = redis.NewScript(`
local prev = redis.call('HGETALL', KEYS[2])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], '~session', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return prev
`)

// sessionLua is prepended to the scripts that act only for a session:
// session_state(hash, token) is 1 while hash holds the session, 2 when a
// reaper left its tombstone, 0 otherwise.
const sessionLua = `
local function session_state(hash, token)
  if redis.call('HGET', hash, '~session') == token then return 1 end
  if redis.call('HEXISTS', hash, '~reaped') == 1 then return 2 end
  return 0
end
`

// heartbeatScript records that a worker is live and fresh until a time,
// only while its in-flight hash still holds its session; it renews the
// hash's TTL. KEYS and ARGV as joinScript's. Returns the session's state.
var heartbeatScript = redis.NewScript(sessionLua + `
local st = session_state(KEYS[2], ARGV[3])
if st ~= 1 then return st end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
`)

// trackScript records a task in flight under a session. KEYS[1] in-flight
// hash; ARGV[1] session, ARGV[2] task id, ARGV[3] entry. Returns the
// session's state; the task is recorded only when it is held.
var trackScript = redis.NewScript(sessionLua + `
local st = session_state(KEYS[1], ARGV[1])
if st == 1 then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
return st
`)

// untrackScript clears a finished task. KEYS[1] in-flight hash; ARGV[1]
// session, ARGV[2] task id. Returns the session's state.
var untrackScript = redis.NewScript(sessionLua + `
local st = session_state(KEYS[1], ARGV[1])
if st == 1 then redis.call('HDEL', KEYS[1], ARGV[2]) end
return st
`)

// holdsScript reports the state of a task's session, as untrackScript
// does, without clearing it.
var holdsScript = redis.NewScript(sessionLua + `
return session_state(KEYS[1], ARGV[1])
`)

// reapScript takes a dead worker: if its heartbeat is still no later than
// the cutoff, it leaves the live set, and its in-flight hash is returned
// and replaced by a tombstone, in one step, so that two reapers never both
// take it and the worker, should it come back, knows its tasks were
// resumed. KEYS[1] live set, KEYS[2] in-flight hash; ARGV[1] worker,
// ARGV[2] cutoff (ms), ARGV[3] the tombstone's TTL (ms). Returns the hash,
// or nil when the worker heartbeat again or another reaper took it.
var reapScript = redis.NewScript(`
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) > tonumber(ARGV[2]) then return false end
redis.call('ZREM', KEYS[1], ARGV[1])
local h = redis.call('HGETALL', KEYS[2])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], '~reaped', '1')
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return h
`)

func ms(t time.Time) int64 { return t.UnixMilli() }

// join makes worker a member under session token and returns what an
// earlier session left in its in-flight hash.
func (k *workerSet) join(ctx context.Context, worker, token string, freshUntil time.Time, ttl time.Duration) (map[string]string, error) {
	res, err := joinScript.Run(ctx, k.rdb, []string{k.keys.Workers(), k.keys.Inflight(worker)},
		worker, ms(freshUntil), token, ttl.Milliseconds()).Slice()
	if err != nil {
		return nil, fmt.Errorf("join the live set: %w", err)
	}
	return pairs(res), nil
}

// heartbeat records that worker is live and sends nothing after
// freshUntil unless it heartbeats again, while its session holds; it
// returns the session's state.
func (k *workerSet) heartbeat(ctx context.Context, worker, token string, freshUntil time.Time, ttl time.Duration) (int, error) {
	n, err := heartbeatScript.Run(ctx, k.rdb, []string{k.keys.Workers(), k.keys.Inflight(worker)},
		worker, ms(freshUntil), token, ttl.Milliseconds()).Int()
	if err != nil {
		return 0, fmt.Errorf("heartbeat: %w", err)
	}
	return n, nil
}

// track records task id as running under session token, if the session
// holds; it returns the session's state.
func (k *workerSet) track(ctx context.Context, worker, token, id, entry string) (int, error) {
	n, err := trackScript.Run(ctx, k.rdb, []string{k.keys.Inflight(worker)}, token, id, entry).Int()
	if err != nil {
		return 0, fmt.Errorf("record task in flight: %w", err)
	}
	return n, nil
}

// untrack clears task id, if its session holds; it returns the session's
// state.
func (k *workerSet) untrack(ctx context.Context, worker, token, id string) (int, error) {
	n, err := untrackScript.Run(ctx, k.rdb, []string{k.keys.Inflight(worker)}, token, id).Int()
	if err != nil {
		return 0, fmt.Errorf("clear task in flight: %w", err)
	}
	return n, nil
}

// inflight reads a worker's in-flight record: task id → entry, and the
// record's own "~" fields.
func (k *workerSet) inflight(ctx context.Context, worker string) (map[string]string, error) {
	m, err := k.rdb.HGetAll(ctx, k.keys.Inflight(worker)).Result()
	if err != nil {
		return nil, fmt.Errorf("read in-flight record: %w", err)
	}
	return m, nil
}

// sessionState reads the state of session token.
func (k *workerSet) sessionState(ctx context.Context, worker, token string) (int, error) {
	n, err := holdsScript.Run(ctx, k.rdb, []string{k.keys.Inflight(worker)}, token).Int()
	if err != nil {
		return 0, fmt.Errorf("read in-flight record: %w", err)
	}
	return n, nil
}

// expired returns up to n workers whose heartbeat ran out by cutoff.
func (k *workerSet) expired(ctx context.Context, cutoff time.Time, n int64) ([]string, error) {
	ids, err := k.rdb.ZRangeByScore(ctx, k.keys.Workers(), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(ms(cutoff), 10), Count: n}).Result()
	if err != nil {
		return nil, fmt.Errorf("read the live set: %w", err)
	}
	return ids, nil
}

// reap takes worker out of the live set with its in-flight hash if its
// heartbeat ran out by cutoff; ok is false when it heartbeat again or
// another reaper took it first.
func (k *workerSet) reap(ctx context.Context, worker string, cutoff time.Time, ttl time.Duration) (entries map[string]string, ok bool, err error) {
	res, err := reapScript.Run(ctx, k.rdb, []string{k.keys.Workers(), k.keys.Inflight(worker)},
		worker, ms(cutoff), ttl.Milliseconds()).Slice()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reap worker: %w", err)
	}
	// Its acknowledgements go too; kills read only live workers', so one
	// left behind by a failed call is harmless.
	k.rdb.HDel(ctx, k.keys.WorkerAcks(), worker)
	return pairs(res), true, nil
}

// taskFields reports whether an in-flight hash holds any task.
func taskFields(h map[string]string) bool {
	for k := range h {
		if !strings.HasPrefix(k, "~") {
			return true
		}
	}
	return false
}

// pairs turns a flat HGETALL reply into a map; values that are not
// strings are dropped.
func pairs(flat []any) map[string]string {
	out := make(map[string]string, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		k, _ := flat[i].(string)
		v, ok := flat[i+1].(string)
		if ok {
			out[k] = v
		}
	}
	return out
}

// reaper resumes the tasks of dead workers; a worker's kill switch runs it
// on its heartbeat ticks.
type reaper struct {
	workers *workerSet
	self    string
	// staleness is control.max_staleness, which the in-flight TTL outlasts.
	staleness time.Duration
	// margin is how long after a worker's announced freshness ran out it
	// is reaped: more than the clocks of two workers may differ, so that
	// a worker that is only slow has stopped itself by then.
	margin  time.Duration
	enqueue func(ctx context.Context, typ string, payload []byte, opts ...asynq.Option) error
	retries int
	logger  *slog.Logger
	metrics *Metrics
	now     func() time.Time
}

// ttl is how long an in-flight hash outlives its worker's last heartbeat:
// long after any reaper would have taken it, so that it only goes unreaped
// when no worker lived to reap it (asynq's recoverer then runs its tasks
// again).
func (r *reaper) ttl() time.Duration {
	return max(time.Minute, 10*(r.staleness+r.margin))
}

// reapDead reaps every worker whose heartbeat ran out margin ago, other
// than this one, and resumes its tasks.
func (r *reaper) reapDead(ctx context.Context) {
	cutoff := r.now().Add(-r.margin)
	dead, err := r.workers.expired(ctx, cutoff, maxReapsPerTick)
	if err != nil {
		if ctx.Err() == nil {
			r.logger.Warn("reaper: reading the live set failed", "err", err)
		}
		return
	}
	for _, id := range dead {
		if id == r.self {
			continue // this worker is live: it heartbeats right after
		}
		entries, ok, err := r.workers.reap(ctx, id, cutoff, r.ttl())
		if err != nil {
			if ctx.Err() == nil {
				r.logger.Warn("reaper: reaping a dead worker failed", "dead_worker", id, "err", err)
			}
			continue
		}
		if ok {
			r.resumeDead(ctx, id, entries)
		}
	}
}

// resume enqueues again the tasks a reap or a join took from worker dead's
// in-flight hash, each under a task id derived from its old one, on its
// queue and with the usual retries. Entries that are not pushgate tasks
// are skipped: the hash is Redis's word, no better than the queue's.
// It returns how many it enqueued.
func (r *reaper) resume(ctx context.Context, dead string, entries map[string]string) int {
	ids := make([]string, 0, len(entries))
	for id := range entries {
		if !strings.HasPrefix(id, "~") {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	resumed, failed, skipped := 0, 0, 0
	var reason error
	for _, id := range ids {
		if resumed+failed >= maxResumed {
			skipped++
			reason = fmt.Errorf("%w: more than %d tasks", errMalformedEntry, maxResumed)
			continue
		}
		e, err := decodeInflight(entries[id])
		if err != nil {
			skipped++
			reason = err
			continue
		}
		err = r.enqueue(ctx, e.Type, e.Payload, asynq.Queue(e.Queue), asynq.TaskID(resumedTaskID(id)), asynq.MaxRetry(r.retries))
		if err != nil {
			failed++
			reason = err
			continue
		}
		resumed++
	}
	if skipped > 0 {
		r.logger.Warn("reaper: a dead worker's in-flight record holds entries that are not pushgate tasks; skipped",
			"dead_worker", dead, "skipped", skipped, "err", reason)
	}
	if failed > 0 {
		r.logger.Warn("reaper: enqueuing a dead worker's task again failed; asynq's recoverer runs it again once its lease expires",
			"dead_worker", dead, "failed", failed, "err", reason)
	}
	if r.metrics != nil {
		r.metrics.tasksResumed.Add(float64(resumed))
	}
	return resumed
}

// resumeDead resumes the tasks of a dead worker and says so.
func (r *reaper) resumeDead(ctx context.Context, dead string, entries map[string]string) {
	resumed := r.resume(ctx, dead, entries)
	r.logger.Warn("reaper: a worker's heartbeat ran out; resumed the tasks it was running",
		"event", "worker_reaped", "dead_worker", dead, "tasks", resumed)
	if r.metrics != nil {
		r.metrics.workersReaped.Inc()
	}
}

// track is the worker's middleware: it records each task in the worker's
// in-flight hash before its handler runs and clears it when the handler
// returns, whatever the result (asynq itself schedules a retry). A task
// the session lost meanwhile — a reaper resumed it — returns nil: its
// copy does the work, and a retry of this one would only run it again.
func (w *Worker) track(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		id, ok := asynq.GetTaskID(ctx)
		queue, _ := asynq.GetQueueName(ctx)
		if !ok || strings.HasPrefix(id, "~") {
			// No pushgate task has such an id; it must not touch the
			// record's own fields. Its handler judges it as any other.
			return next.ProcessTask(ctx, t)
		}
		s := w.ks.session.Load()
		if s == nil {
			return errStale // not a member of the live set yet
		}
		entry, err := encodeInflight(t.Type(), queue, t.Payload())
		if err != nil {
			w.logger.Warn("task not recorded in flight: if this worker dies running it, asynq's recoverer resumes it",
				"task", t.Type(), "err", err)
			return next.ProcessTask(ctx, t)
		}
		w.ks.started(id)
		defer w.ks.finished(id) // after the entry is cleared below
		st, err := w.ks.workers.track(ctx, w.ks.workerID, s.token, id, entry)
		if err != nil {
			return err
		}
		if st != sessionHeld {
			return errStale // the session is gone; the worker joins again at its next heartbeat
		}
		herr := next.ProcessTask(context.WithValue(ctx, trackedKey{}, &trackedTask{id: id, session: s}), t)

		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), untrackTimeout)
		defer cancel()
		st, err = w.ks.workers.untrack(uctx, w.ks.workerID, s.token, id)
		switch {
		case err != nil:
			w.logger.Warn("a finished task stays in the in-flight record; if this worker dies, it runs again, harmlessly",
				"task", t.Type(), "err", err)
		case st == sessionReaped || s.reaped.Load():
			w.logger.Warn("this worker's heartbeat ran out while it ran a task, and another worker resumed it: what was not done here is left to that copy",
				"event", "task_resumed_elsewhere", "task", t.Type(), "result", herr)
			return nil
		}
		return herr
	})
}

// leased returns errStale when ctx's task may no longer act: its session
// was lost, or the freshness its last heartbeat announced ran out, after
// which a reaper may resume it. Planners check it before each page.
func (w *Worker) leased(ctx context.Context) error {
	if t := trackedFrom(ctx); t != nil && !w.ks.holds(t.session) {
		return errStale
	}
	return nil
}

// takenOver reports whether a reaper took ctx's task from this worker:
// the devices it did not send belong to the copy. A session lost without
// a reaper (its record expired) took nothing: its tasks go on handing
// their work to follow-ups.
func (w *Worker) takenOver(ctx context.Context) bool {
	t := trackedFrom(ctx)
	if t == nil {
		return false
	}
	if t.session.reaped.Load() {
		return true
	}
	// The task's own context may be cancelled by now (a worker that woke
	// from a freeze past its lease): the answer is still needed.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), untrackTimeout)
	defer cancel()
	st, err := w.ks.workers.sessionState(sctx, w.ks.workerID, t.session.token)
	return err == nil && st == sessionReaped
}
