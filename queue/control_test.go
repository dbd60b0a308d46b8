package queue

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/signing"
)

// These tests play someone who can write anything to Redis but holds no
// key against the control log, and the failures an engineer on call
// meets: a Redis flushed or restarted without persistence, a worker cut
// off from Redis.

// failClosedStaleness keeps the fail-closed tests short: every view reads
// the log four times in it.
const failClosedStaleness = 400 * time.Millisecond

// checkpointBefore returns the signed checkpoint the log stored at the
// largest size below size.
func (f *fixture) checkpointBefore(size int64) []byte {
	f.t.Helper()
	all, err := f.control.store.checkpoints(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	best := int64(-1)
	for n := range all {
		if n < size && n > best {
			best = n
		}
	}
	if best < 0 {
		f.t.Fatalf("no checkpoint stored below size %d", size)
	}
	return all[best]
}

// startedAfter counts the sends of title that started after t.
func startedAfter(s *fakeSender, title string, t time.Time) int {
	n := 0
	for _, r := range s.records() {
		if r.msg.Title == title && r.started.After(t) {
			n++
		}
	}
	return n
}

// dropLog deletes the integrated log from Redis, as `pushgate log
// restore` requires.
func (f *fixture) dropLog() {
	f.t.Helper()
	k := f.keys
	if err := f.rdb.Del(context.Background(), k.LogEntries(), k.LogHashes(), k.LogCheckpoint(), k.LogCheckpoints()).Err(); err != nil {
		f.t.Fatal(err)
	}
}

// TestRolledBackLogFailsClosed rolls the log back to before a kill — the
// checkpoint of a smaller size put back, the kill's entry deleted, the
// killed broadcast re-queued and its planning re-enqueued — as the
// version rollback of the old kill state did. Every view fails closed, a
// restarted worker remembers, nothing of the killed broadcast is sent, and
// restoring the log brings delivery back with the kill standing.
func TestRolledBackLogFailsClosed(t *testing.T) {
	f := newFixtureStaleness(t, func(p *Policy) { p.KillWait = hangGuard }, failClosedStaleness)
	f.fcm.latency = 20 * time.Millisecond
	f.register("citizens", 3000, 0)
	dir := t.TempDir()
	wc := f.newControl(false, dir)
	f.startWorkerOn("w1", wc, f.fcm, f.apns)
	ctx := context.Background()
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "bad"))
	waitFor(t, "first deliveries", func() bool { return len(f.fcm.sent("bad")) > 50 })
	res, err := f.kill("admin", api.BroadcastScope(st.ID), "wrong text", true)
	if err != nil || !res.Ack.Acknowledged {
		t.Fatalf("kill = %+v, %v; want acknowledged", res, err)
	}
	acked := time.Now()
	var export bytes.Buffer
	if _, err := ExportLog(ctx, f.rdb, f.keys, f.logKey, &export); err != nil {
		t.Fatal(err)
	}

	f.rdb.Set(ctx, f.keys.LogCheckpoint(), f.checkpointBefore(res.Version), 0)
	f.rdb.HDel(ctx, f.keys.LogEntries(), strconv.FormatInt(res.Version-1, 10))
	f.rdb.HSet(ctx, f.keys.Broadcast(st.ID), "state", api.StateQueued)
	f.forgePlan(st.ID)

	waitFor(t, "the API's view to fail closed", func() bool { return f.control.Err() != nil })
	waitFor(t, "the worker's view to fail closed", func() bool { return wc.Err() != nil })
	if _, err := f.submit(f.sender, broadcastBody(`{"topic":"citizens"}`, "more")); api.CodeOf(err) != api.CodeControlLogInconsistent {
		t.Errorf("submission on a rolled-back log: %v, want %s", err, api.CodeControlLogInconsistent)
	}
	if _, err := f.kill("admin", api.ScopeGlobal, "x", false); api.CodeOf(err) != api.CodeControlLogInconsistent {
		t.Errorf("kill on a rolled-back log: %v, want %s", err, api.CodeControlLogInconsistent)
	}
	if again := f.newControl(false, dir); again.Err() == nil || again.Fresh() {
		t.Error("a restarted worker accepted the rolled-back log: its state directory should remember")
	}

	f.dropLog()
	if _, err := RestoreLog(ctx, f.rdb, f.keys, f.logKey, f.control.verifier, f.control.window, &export); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every view to be consistent and fresh again", func() bool {
		return f.control.Err() == nil && wc.Err() == nil && f.control.Fresh() && wc.Fresh()
	})
	if !f.control.IsActive(api.BroadcastScope(st.ID)) || !wc.IsActive(api.BroadcastScope(st.ID)) {
		t.Error("the restored log lost the kill")
	}
	f.register("t-after", 5, 0)
	after := f.mustSubmit(broadcastBody(`{"topic":"t-after"}`, "after"))
	f.waitState(after.ID, api.StateCompleted)
	// The forged plan task ran into the kill: the plan queue is empty.
	insp := asynq.NewInspectorFromRedisClient(f.rdb)
	waitFor(t, "the forged plan task to run", func() bool {
		info, err := insp.GetQueueInfo(QueuePlan)
		return err == nil && info.Pending+info.Active+info.Scheduled+info.Retry == 0
	})
	if n := startedAfter(f.fcm, "bad", acked); n != 0 {
		t.Errorf("%d sends of the killed broadcast started after its kill was acknowledged", n)
	}
}

// TestAlteredEntryFailsClosed rewrites the kill's entry in Redis into a
// "resume by admin2, false alarm", as the forged audit stream entry did:
// the audit trail refuses to serve it and fails the view closed, a process
// starting on the altered log refuses it, and the kill stands.
func TestAlteredEntryFailsClosed(t *testing.T) {
	f := newFixtureStaleness(t, nil, failClosedStaleness)
	ctx := context.Background()
	scope := api.TopicScope("floods")
	if _, err := f.kill("admin", scope, "wrong text", false); err != nil {
		t.Fatal(err)
	}
	_, size := f.control.Head()
	field := strconv.FormatInt(size-1, 10)
	leaf := f.rdb.HGet(ctx, f.keys.LogEntries(), field).Val()
	forged := strings.NewReplacer(`"kind":"kill"`, `"kind":"resume"`, `"outcome":"stop"`, `"outcome":"resumed by admin2: false alarm"`).Replace(leaf)
	if forged == leaf {
		t.Fatal("the forgery changed nothing")
	}
	f.rdb.HSet(ctx, f.keys.LogEntries(), field, forged)

	if _, err := f.svc.AuditLog(ctx, 10); api.CodeOf(err) != api.CodeControlLogInconsistent {
		t.Errorf("audit of an altered log: %v, want %s", err, api.CodeControlLogInconsistent)
	}
	if f.control.Err() == nil {
		t.Error("the view did not fail closed on an altered entry")
	}
	if fresh := f.newControl(false, ""); fresh.Err() == nil {
		t.Error("a process starting on the altered log accepted it")
	}
	if !f.control.IsActive(scope) {
		t.Error("the kill was lifted")
	}
	// Put right under the same checkpoint, the log is taken back.
	f.rdb.HSet(ctx, f.keys.LogEntries(), field, leaf)
	waitFor(t, "the view to be consistent again", func() bool { return f.control.Err() == nil && f.control.Fresh() })
	if _, err := f.svc.AuditLog(ctx, 10); err != nil {
		t.Errorf("audit of the repaired log: %v", err)
	}
}

// TestFlushedRedisFailsClosedUntilRestored flushes Redis — a restart
// without persistence — after a revocation and a kill. Every view fails
// closed, a restarted one too; restoring the API's mirror of the log
// brings delivery back with the revocation and the kill intact.
func TestFlushedRedisFailsClosedUntilRestored(t *testing.T) {
	f := newFixtureStaleness(t, nil, failClosedStaleness)
	ctx := context.Background()
	dir := t.TempDir()
	mirror := filepath.Join(dir, "control.log")
	mc := f.newControlWith(f.rdb, false, func(c *ControlConfig) { c.MirrorFile = mirror })
	wc := f.newControl(false, dir)
	f.startWorkerOn("w1", wc, f.fcm, f.apns)
	f.register("citizens", 5, 0)
	if _, _, err := f.revoke("admin", "small", "leaked"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.kill("admin", api.TopicScope("closed"), "closed", false); err != nil {
		t.Fatal(err)
	}
	_, size := f.control.Head()
	waitFor(t, "the mirror to hold the log", func() bool {
		n, err := countExportEntries(mirror, f.logKey)
		return err == nil && n == size
	})

	if err := f.rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*Control{"api": f.control, "worker": wc, "mirroring": mc} {
		waitFor(t, "the "+name+" view to fail closed", func() bool { return c.Err() != nil })
	}
	if again := f.newControl(false, dir); again.Err() == nil {
		t.Error("a restarted worker accepted the empty log: its state directory should remember")
	}
	if _, err := f.submit(f.sender, broadcastBody(`{"topic":"citizens"}`, "x")); api.CodeOf(err) != api.CodeControlLogInconsistent {
		t.Errorf("submission after the flush: %v, want %s", err, api.CodeControlLogInconsistent)
	}

	file, err := os.Open(mirror)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if _, err := RestoreLog(ctx, f.rdb, f.keys, f.logKey, f.control.verifier, f.control.window, file); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every view to be consistent and fresh again", func() bool {
		return f.control.Err() == nil && wc.Err() == nil && mc.Err() == nil && f.control.Fresh() && wc.Fresh()
	})
	for name, c := range map[string]*Control{"api": f.control, "worker": wc} {
		if revoked, _ := c.Revoked(ctx, "small"); !revoked {
			t.Errorf("the %s view un-revoked small", name)
		}
		if !c.IsActive(api.TopicScope("closed")) {
			t.Errorf("the %s view lost the kill", name)
		}
	}
	f.register("citizens", 5, 0) // the flush took the registry too
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "back"))
	f.waitState(st.ID, api.StateCompleted)
	if _, _, err := f.signed(f.signers["small"], "POST", api.PathBroadcasts, []byte(broadcastBody(`{"topic":"citizens"}`, "x"))); err == nil ||
		!strings.Contains(err.Error(), "revoked") {
		t.Errorf("the revoked key after the restore: %v, want revoked_key", err)
	}
}

// TestRecallVerdictIsBoundToItsBroadcast copies broadcast x's recall to
// broadcast y: y is marked recalling and its recall enqueued, and the
// cached verdict of x's recall envelope is asked about y. Nothing replaces
// y's message on its phones.
func TestRecallVerdictIsBoundToItsBroadcast(t *testing.T) {
	f := newFixture(t, nil)
	f.register("citizens", 5, 0)
	w := f.startWorker("w1")
	ctx := context.Background()
	x := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "x"))
	y := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "Evacuate now"))
	f.waitState(x.ID, api.StateCompleted)
	f.waitState(y.ID, api.StateCompleted)
	retraction := `{"mode":"replace","replacement":{"title":"` + f.policy.RetractionTitle + `","body":"` + f.policy.RetractionBody + `"}}`
	if _, _, err := f.recall("admin", x.ID, retraction); err != nil {
		t.Fatal(err)
	}
	f.waitState(x.ID, api.StateRecalled)

	f.rdb.HSet(ctx, f.keys.Broadcast(y.ID), "state", api.StateRecalling)
	task := PlanTask(y.ID)
	if _, err := asynq.NewClientFromRedisClient(f.rdb).Enqueue(asynq.NewTask(TypeRecallPlan, task.Payload()), asynq.Queue(QueueRecall)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the recall of y to be refused", func() bool { return f.securityEvents(TypeRecallPlan+":envelope") == 1 })
	for _, r := range f.fcm.records() {
		if r.msg.CollapseID == CollapseID(y.ID) && r.msg.Title != "Evacuate now" {
			t.Errorf("%s: y's message replaced by %q", r.token, r.msg.Title)
		}
	}

	rec, ok := w.control.recallOf(x.ID)
	if !ok {
		t.Fatal("the worker's view holds no recall of x")
	}
	if _, err := w.verify.recall(ctx, x.ID, []byte(rec.envelope)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.verify.recall(ctx, y.ID, []byte(rec.envelope)); err == nil {
		t.Error("the cached verdict of x's recall was good for y")
	}
}

// TestRevokedAdminsRecallStops revokes the admin whose recall is being
// sent: no recall call starts once the revocation is acknowledged, and the
// batches still to come refuse the cached verdict.
func TestRevokedAdminsRecallStops(t *testing.T) {
	f := newFixture(t, func(p *Policy) { p.KillWait = hangGuard })
	f.register("citizens", 1500, 0)
	f.startWorker("w1")
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "wrong"))
	f.waitState(st.ID, api.StateCompleted)
	f.fcm.hold = make(chan struct{})
	if _, _, err := f.recall("admin", st.ID, `{"mode":"remove"}`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "recall calls to begin", func() bool { return f.fcm.held.Load() > 0 })

	// One admin cannot revoke another alone: admin2 asks, approver-b agrees.
	_, pending, err := f.revoke("admin2", "admin", "key stolen")
	if err != nil || pending == nil {
		t.Fatalf("revoke admin = %+v, %v; want it pending", pending, err)
	}
	out, err := f.approveAction("approver-b", pending)
	if err != nil || out.Kill == nil || !out.Kill.Ack.Acknowledged {
		t.Fatalf("approved revocation = %+v, %v; want it acknowledged", out, err)
	}
	close(f.fcm.hold)
	waitFor(t, "the held recall calls to be refused", func() bool {
		s, _ := f.svc.Get(context.Background(), st.ID)
		return s.Counters.RecallFailed > 0
	})
	recalled := 0
	for _, r := range f.fcm.records() {
		if r.msg.RecallOf == st.ID {
			recalled++
		}
	}
	if recalled != 0 {
		t.Errorf("%d recall messages of the revoked admin were sent after the revocation", recalled)
	}
}

// proxy forwards TCP connections to a Redis until cut.
type proxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(p.cut)
	return p
}

// cut stops accepting and closes every forwarded connection.
func (p *proxy) cut() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// TestWorkerCutOffFromRedisStopsSending cuts a sending worker off from
// Redis. It cannot refresh its view of the log, so once the view is stale
// it starts no call; the kill that follows is acknowledged only once the
// cut worker must have stopped itself, and no call of the killed broadcast
// starts after that, on either worker.
func TestWorkerCutOffFromRedisStopsSending(t *testing.T) {
	f := newFixtureStaleness(t, func(p *Policy) { p.KillWait = hangGuard }, failClosedStaleness)
	f.fcm.latency = 20 * time.Millisecond
	f.register("citizens", 4000, 0)
	p := startProxy(t, f.rdb.Options().Addr)
	opts := *f.rdb.Options()
	opts.Addr = p.ln.Addr().String()
	cut := redis.NewClient(&opts)
	t.Cleanup(func() { cut.Close() })
	cutFCM := newFakeSender(providers.FCM)
	// Slow enough that its batch outlasts the kill, were nothing to stop it.
	cutFCM.latency = 100 * time.Millisecond
	wCut := f.startWorkerOn("cut", f.newControlOn(cut, false, ""), cutFCM, newFakeSender(providers.APNs))
	f.startWorker("healthy")
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "bad"))
	waitFor(t, "the doomed worker to send", func() bool { return len(cutFCM.sent("bad")) > 20 })

	p.cut()
	waitFor(t, "the cut worker's view to go stale", func() bool { return !wCut.control.Fresh() })
	res, err := f.kill("admin", api.BroadcastScope(st.ID), "wrong text", true)
	if err != nil || !res.Ack.Acknowledged {
		t.Fatalf("kill = %+v, %v; want acknowledged", res, err)
	}
	acked := time.Now()
	if slices.Contains(res.Ack.Missing, "cut") || res.Ack.Workers != 1 {
		t.Errorf("ack %+v: want the healthy worker only, the cut one dropped", res.Ack)
	}
	waitFor(t, "the calls in flight to finish", func() bool { return cutFCM.active.Load() == 0 && f.fcm.active.Load() == 0 })
	for name, s := range map[string]*fakeSender{"cut": cutFCM, "healthy": f.fcm} {
		if n := startedAfter(s, "bad", acked); n != 0 {
			t.Errorf("the %s worker started %d sends of the killed broadcast after its kill was acknowledged", name, n)
		}
	}
}

// TestKilledRerunCountsEarlierClaimsAsUnknown re-runs, after a kill, a
// batch whose first run claimed its devices and lost them before it could
// record what it sent: they may have reached their phones, so they count
// as unknown, which a recall includes.
func TestKilledRerunCountsEarlierClaimsAsUnknown(t *testing.T) {
	f := newFixture(t, nil)
	f.register("citizens", 3, 0)
	w, err := NewWorker(WorkerConfig{Config: f.config(f.control),
		Senders: map[providers.Platform]Sender{providers.FCM: f.fcm, providers.APNs: f.apns}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "x"))
	toks := []string{"fcm-citizens-00000", "fcm-citizens-00001", "fcm-citizens-00002"}
	// Delivery began under this Redis run (the planner notes it): only
	// earlier claims are uncertain.
	if err := w.store.markRun(ctx, st.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.claim(ctx, st.ID, ledgerDelivery, 0, 0, []string{"fcm:" + toks[0], "fcm:" + toks[1]}, []int64{-1, -1}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.kill("admin", api.BroadcastScope(st.ID), "stop", false); err != nil {
		t.Fatal(err)
	}
	w.ks.Sync(ctx)
	if err := w.deliver(ctx, deliverTask(t, st.ID, 0, providers.FCM, toks...)); err != nil {
		t.Fatal(err)
	}
	for i, tok := range toks {
		v := f.rdb.HGet(ctx, f.keys.Ledger(st.ID), "fcm:"+tok).Val()
		want := outUnknown
		if i == 2 {
			want = outCancelled // claimed by this run: never sent
		}
		if !strings.HasPrefix(v, want) {
			t.Errorf("%s recorded %q, want %q", tok, v, want)
		}
	}
	if n := len(f.fcm.sent("x")); n != 0 {
		t.Errorf("the killed broadcast was sent to %d devices", n)
	}
}

// TestRestoreVerifiesEveryEntry restores exports whose checkpoints the
// log key signed but whose entries are not all genuine: a forged request
// refuses the restore and names its entry; a request by a key since
// removed from the keyring is restored and reported.
func TestRestoreVerifiesEveryEntry(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	f.control.Close() // this test writes the log itself
	entry := func(by, body string) []byte {
		_, env := f.as(by, "POST", api.PathKill, body)
		leaf, err := controllog.Encode(&controllog.Entry{Time: time.Now(), Request: env, Decision: controllog.Decision{Kind: controllog.KindKill}})
		if err != nil {
			t.Fatal(err)
		}
		return leaf
	}
	export := func(leaves ...[]byte) *bytes.Buffer {
		var buf bytes.Buffer
		w := controllog.NewWriter(&buf, 0)
		var tree controllog.Tree
		for i, l := range leaves {
			w.Entry(int64(i), l)
			tree.Append(l)
		}
		cp := &controllog.Checkpoint{Origin: f.logSigner.Name(), Size: tree.Size(), Root: tree.Root(), Time: time.Now()}
		msg, err := cp.Sign(f.logSigner)
		if err != nil {
			t.Fatal(err)
		}
		w.Checkpoint(msg)
		w.Flush()
		return &buf
	}
	good := entry("admin", `{"scope":"global","reason":"a"}`)
	forged := []byte(strings.Replace(string(entry("admin", `{"scope":"topic:x","reason":"b"}`)), "topic:x", "topic:y", 1))
	forged = []byte(strings.Replace(string(forged), base64Of(`{"scope":"topic:x","reason":"b"}`), base64Of(`{"scope":"topic:y","reason":"b"}`), 1))
	f.dropLog()
	_, err := RestoreLog(ctx, f.rdb, f.keys, f.logKey, f.control.verifier, f.control.window, export(good, forged))
	if err == nil || !strings.Contains(err.Error(), "entry 1") {
		t.Fatalf("restore of a forged entry: %v, want a refusal naming entry 1", err)
	}
	if n := f.rdb.HLen(ctx, f.keys.LogEntries()).Val(); n != 0 {
		t.Fatalf("a refused restore wrote %d entries", n)
	}

	// A key rotated out of the keyring: its entry is restored and named.
	_, priv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"scope":"topic:z","reason":"c"}`)
	r, _ := http.NewRequest("POST", "http://gw.test"+api.PathKill, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if err := (&signing.Signer{KeyID: "retired-admin", Key: priv}).Sign(r, body); err != nil {
		t.Fatal(err)
	}
	gone, err := controllog.Encode(&controllog.Entry{Time: time.Now(), Request: signing.RequestFromHTTP(r, body),
		Decision: controllog.Decision{Kind: controllog.KindKill}})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := RestoreLog(ctx, f.rdb, f.keys, f.logKey, f.control.verifier, f.control.window, export(good, gone))
	if err != nil || len(sum.Unknown) != 1 || sum.Unknown[0] != 1 {
		t.Fatalf("restore with an entry of a key no longer in the keyring = %+v, %v; want it restored and reported", sum, err)
	}
}

func base64Of(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// goneKeyEntry returns an entry signed by a key that is not in the
// fixture's keyring (one rotated out since).
func goneKeyEntry(t *testing.T, path, body string) *controllog.Entry {
	t.Helper()
	_, priv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	r, _ := http.NewRequest("POST", "http://gw.test"+path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if err := (&signing.Signer{KeyID: "retired-admin", Key: priv}).Sign(r, []byte(body)); err != nil {
		t.Fatal(err)
	}
	kind, target, _ := controllog.KindOf("POST", path)
	return &controllog.Entry{Time: time.Now(), Request: signing.RequestFromHTTP(r, []byte(body)),
		Decision: controllog.Decision{Kind: kind, Target: target}}
}

// TestFoldKeepsStopsOfGoneKeys folds entries of a key rotated out of the
// keyring: its kill stands, its resume does not count.
func TestFoldKeepsStopsOfGoneKeys(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	s := f.control.newState()
	if err := s.apply(ctx, 0, goneKeyEntry(t, api.PathKill, `{"scope":"topic:floods","reason":"x"}`)); err != nil {
		t.Fatalf("kill of a gone key: %v", err)
	}
	if _, ok := s.kills[api.TopicScope("floods")]; !ok {
		t.Fatal("the kill of a key no longer in the keyring was lifted")
	}
	if err := s.apply(ctx, 1, goneKeyEntry(t, api.PathResume, `{"scope":"topic:floods","reason":"x"}`)); !errors.Is(err, errIgnored) {
		t.Fatalf("resume of a gone key: %v, want it ignored", err)
	}
	if _, ok := s.kills[api.TopicScope("floods")]; !ok {
		t.Fatal("a resume by a key no longer in the keyring lifted the kill")
	}
}

// TestFoldKeepsStopsOfUnlistedAuthorities folds entries signed for an
// authority since removed from public_authorities (a host renamed without
// keeping the old name): the kill stands, the resume does not count.
func TestFoldKeepsStopsOfUnlistedAuthorities(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	p := signing.DefaultProfile()
	p.Authorities = []string{"push.example.org"}
	s := newControlState(f.policy, f.keyring, signing.NewVerifier(signing.VerifierConfig{Profile: p, Keys: f.keyring}), f.control.window)
	entry := func(path, body string) *controllog.Entry {
		r, _ := http.NewRequest("POST", "http://push-old.example.org"+path, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		if err := f.admin.Sign(r, []byte(body)); err != nil {
			t.Fatal(err)
		}
		kind, target, _ := controllog.KindOf("POST", path)
		return &controllog.Entry{Time: time.Now(), Request: signing.RequestFromHTTP(r, []byte(body)),
			Decision: controllog.Decision{Kind: kind, Target: target}}
	}
	if err := s.apply(ctx, 0, entry(api.PathKill, `{"scope":"topic:floods","reason":"x"}`)); err != nil {
		t.Fatalf("kill signed for an unlisted authority: %v", err)
	}
	if _, ok := s.kills[api.TopicScope("floods")]; !ok {
		t.Fatal("the kill signed for an authority no longer listed was lifted")
	}
	if err := s.apply(ctx, 1, entry(api.PathResume, `{"scope":"topic:floods","reason":"x"}`)); !errors.Is(err, errIgnored) {
		t.Fatalf("resume signed for an unlisted authority: %v, want it ignored", err)
	}
	if _, ok := s.kills[api.TopicScope("floods")]; !ok {
		t.Fatal("a resume signed for an authority no longer listed lifted the kill")
	}
}

// TestUnrevokeByRollbackFailsClosed rolls the log back to before a
// revocation, as deleting the key from the old revoked hash did: the view
// fails closed instead of accepting the key again.
func TestUnrevokeByRollbackFailsClosed(t *testing.T) {
	f := newFixtureStaleness(t, nil, failClosedStaleness)
	f.register("citizens", 3, 0)
	f.startWorker("w1")
	ctx := context.Background()
	f.waitState(f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "before")).ID, api.StateCompleted)
	res, _, err := f.revoke("admin", "small", "leaked")
	if err != nil {
		t.Fatal(err)
	}
	f.rdb.Set(ctx, f.keys.LogCheckpoint(), f.checkpointBefore(res.Version), 0)
	f.rdb.HDel(ctx, f.keys.LogEntries(), strconv.FormatInt(res.Version-1, 10))
	waitFor(t, "the view to fail closed", func() bool { return f.control.Err() != nil })
	if revoked, _ := f.control.Revoked(ctx, "small"); !revoked {
		t.Error("the failed view forgot the revocation")
	}
	if _, _, err := f.signed(f.signers["small"], "POST", api.PathBroadcasts, []byte(broadcastBody(`{"topic":"citizens"}`, "x"))); err == nil {
		t.Error("the revoked key's request verified after the rollback")
	}
}
