package queue

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"golang.org/x/mod/sumdb/note"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/internal/redistest"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/signing"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// go-redis keeps a connection-pool reaper per client for its life;
		// clients are closed at cleanup, after goleak looks.
		goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"),
		goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/maintnotifications.(*CircuitBreakerManager).cleanupLoop"),
		// After failed dials (a test cuts a client off from Redis) go-redis
		// keeps trying in the background for a second after Close.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"),
	)
}

// fakeSender is a hand-written Sender that records what it was
// asked to send. script, when set, decides a device's result per attempt.
type fakeSender struct {
	platform providers.Platform
	latency  time.Duration

	mu      sync.Mutex
	sends   []sendRecord
	refused []sendRecord   // retryable answers, with the time they were given
	calls   map[string]int // token → calls made
	script  func(token string, call int) providers.Result
	// hold, when set, keeps every recall call waiting between its gate's
	// Enter and Commit until it is closed; held counts the calls that
	// reached it.
	hold chan struct{}
	held atomic.Int32
	// active counts calls that committed and have not finished.
	active atomic.Int32
}

type sendRecord struct {
	token string
	msg   providers.Message
	// started is when the gate let the request leave; at is when the
	// call completed.
	started, at time.Time
}

var _ Sender = (*fakeSender)(nil)

func newFakeSender(p providers.Platform) *fakeSender {
	return &fakeSender{platform: p, calls: map[string]int{}}
}

func (f *fakeSender) Platform() providers.Platform { return f.platform }

func (f *fakeSender) Send(ctx context.Context, gate providers.Gate, msg *providers.Message, tokens []string) []providers.Result {
	out := make([]providers.Result, len(tokens))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16) // like a sender's concurrency per batch
	for i, tok := range tokens {
		sem <- struct{}{}
		if ctx.Err() != nil || !gate.Enter() {
			out[i] = providers.Result{Class: providers.Cancelled}
			<-sem
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// As a real sender does, commit right before the request
			// leaves; a closed gate stops it unsent.
			commits := 0
			defer func() { gate.Leave(commits) }()
			if f.hold != nil && msg.RecallOf != "" {
				f.held.Add(1)
				select {
				case <-f.hold:
				case <-ctx.Done():
				}
			}
			if !gate.Commit() {
				out[i] = providers.Result{Class: providers.Cancelled}
				return
			}
			commits = 1
			started := time.Now()
			f.active.Add(1)
			defer f.active.Add(-1)
			if f.latency > 0 {
				select {
				case <-time.After(f.latency):
				case <-ctx.Done():
					out[i] = providers.Result{Class: providers.Cancelled, Latency: f.latency}
					return
				}
			}
			f.mu.Lock()
			f.calls[tok]++
			call := f.calls[tok]
			res := providers.Result{Class: providers.Sent, MessageID: "m"}
			if f.script != nil {
				res = f.script(tok, call)
			}
			switch res.Class {
			case providers.Sent:
				f.sends = append(f.sends, sendRecord{token: tok, msg: *msg, started: started, at: time.Now()})
			case providers.Retryable:
				f.refused = append(f.refused, sendRecord{token: tok, msg: *msg, started: started, at: time.Now()})
			}
			f.mu.Unlock()
			out[i] = res
		}()
	}
	wg.Wait()
	return out
}

// sent returns how many times each token was sent msg content matching
// title ("" for any).
func (f *fakeSender) sent(title string) map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for _, s := range f.sends {
		if title == "" || s.msg.Title == title {
			out[s.token]++
		}
	}
	return out
}

func (f *fakeSender) records() []sendRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sendRecord(nil), f.sends...)
}

// fixtureKeys is the test keyring, without public keys.
func fixtureKeys() []signing.KeyEntry {
	b, r := []string{"broadcast"}, []string{"register"}
	return []signing.KeyEntry{
		{ID: "sender", Roles: []string{"broadcast", "register"}, Topics: []string{"citizens", "t-*", "district-*"}, MaxAudience: 2000000, Owner: "city"},
		{ID: "small", Roles: b, Topics: []string{"citizens"}, MaxAudience: 5},
		// district-9 is scoped to district 9's topics, 20 devices a
		// broadcast and 100 distinct devices a day.
		{ID: "district-9", Roles: b, Topics: []string{"district-9*"}, MaxAudience: 20, Reach: "100/24h", Owner: "kelurahan-9"},
		// gated needs approvals above 10 devices; it shares sender's owner.
		{ID: "gated", Roles: b, Topics: []string{"citizens", "t-*"}, MaxAudience: 100000, ApprovalAbove: 10, Owner: "city"},
		{ID: "everyone", Roles: b, Topics: []string{"*"}, MaxAudience: 2000000, Owner: "city"},
		// slow may send 20 pushes a second.
		{ID: "slow", Roles: b, Topics: []string{"citizens"}, MaxAudience: 1000, Rate: "20/s", Owner: "city"},
		{ID: "reg-9", Roles: r, Topics: []string{"district-9*"}, MaxDevices: 50, Owner: "kelurahan-9"},
		{ID: "admin", Roles: []string{"admin"}, Owner: "ops-1"},
		{ID: "admin2", Roles: []string{"admin"}, Owner: "ops-2"},
		{ID: "approver-a", Roles: []string{"approve"}, Owner: "gov-a"},
		{ID: "approver-a2", Roles: []string{"approve"}, Owner: "gov-a"},
		{ID: "approver-b", Roles: []string{"approve"}, Owner: "gov-b"},
		{ID: "approver-city", Roles: []string{"approve"}, Owner: "city"},
	}
}

// fixture is a Service and its keys on a private Redis database.
type fixture struct {
	t        testing.TB
	rdb      *redis.Client
	keys     Keys
	svc      *Service
	verifier *signing.Verifier
	keyring  *signing.Keyring
	sender   *signing.Signer // key "sender": broadcast, register; topics citizens, t-*
	admin    *signing.Signer // key "admin"
	signers  map[string]*signing.Signer
	policy   Policy
	fcm      *fakeSender
	apns     *fakeSender
	// control is the API's view of the control log, which integrates;
	// logSigner and logKey are the log's key.
	control   *Control
	logSigner note.Signer
	logKey    note.Verifier
	// staleness is control.max_staleness for every view (0: default).
	staleness time.Duration
	// taskFailures counts tasks its processes logged as failed.
	taskFailures atomic.Int64
	// now is every process's clock, signers' and verifiers' included.
	now func() time.Time
	// lines keeps every line its processes logged.
	lines keptLog
}

// keptLog is a log kept for a test to read.
type keptLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *keptLog) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
}

// matching returns the lines that contain every one of parts.
func (l *keptLog) matching(parts ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

func newFixture(t testing.TB, tune func(*Policy)) *fixture {
	t.Helper()
	return newFixtureStaleness(t, tune, 0)
}

// newFixtureStaleness is newFixture whose views of the control log have a
// control.max_staleness of staleness (0: the default).
func newFixtureStaleness(t testing.TB, tune func(*Policy), staleness time.Duration) *fixture {
	t.Helper()
	return newFixtureOn(t, redistest.Client(t), tune, staleness)
}

// newFixtureOn is newFixtureStaleness on the Redis of client rdb.
func newFixtureOn(t testing.TB, rdb *redis.Client, tune func(*Policy), staleness time.Duration) *fixture {
	t.Helper()
	return newFixtureAt(t, rdb, tune, staleness, time.Now)
}

// newFixtureClock is newFixture whose processes, signers and verifiers all
// read the clock now.
func newFixtureClock(t testing.TB, tune func(*Policy), now func() time.Time) *fixture {
	t.Helper()
	return newFixtureAt(t, redistest.Client(t), tune, 0, now)
}

// offsetClock is the real clock moved forward by what advance added, for
// tests that need hours to pass without waiting for them.
type offsetClock struct{ offset atomic.Int64 }

func (c *offsetClock) now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

func (c *offsetClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// newFixtureAt is newFixtureOn with the clock now.
func newFixtureAt(t testing.TB, rdb *redis.Client, tune func(*Policy), staleness time.Duration, now func() time.Time) *fixture {
	t.Helper()
	f := &fixture{t: t, rdb: rdb, keys: NewKeys("pgt"), policy: DefaultPolicy(), staleness: staleness,
		fcm: newFakeSender(providers.FCM), apns: newFakeSender(providers.APNs), now: now}
	f.policy.DeviceLimit = 0
	f.policy.RetryBase = 200 * time.Millisecond
	if tune != nil {
		tune(&f.policy)
	}
	var ring []signing.KeyEntry
	signers := map[string]*signing.Signer{}
	for _, e := range fixtureKeys() {
		pub, priv, err := signing.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		if e.PublicKey, err = signing.EncodePublicKey(pub); err != nil {
			t.Fatal(err)
		}
		ring = append(ring, e)
		signers[e.ID] = &signing.Signer{KeyID: e.ID, Key: priv, Now: now}
	}
	doc, err := signing.MarshalKeyring(ring)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := signing.ParseKeyring(doc)
	if err != nil {
		t.Fatalf("keyring: %v\n%s", err, doc)
	}
	f.keyring = kr
	f.sender, f.admin = signers["sender"], signers["admin"]
	skey, vkey, err := controllog.GenerateKey("pushgate.test/control")
	if err != nil {
		t.Fatal(err)
	}
	if f.logSigner, err = note.NewSigner(skey); err != nil {
		t.Fatal(err)
	}
	if f.logKey, err = note.NewVerifier(vkey); err != nil {
		t.Fatal(err)
	}
	f.control = f.newControl(true, "")
	waitFor(t, "the first checkpoint", f.control.Fresh)
	f.verifier = f.verifierFor(f.control)
	svc, err := NewService(f.config(f.control))
	if err != nil {
		t.Fatal(err)
	}
	f.svc = svc
	f.signers = signers
	return f
}

// newControl starts a view of the fixture's control log, as a process of
// its own would hold one: the integrator's when integrate is set. It
// remembers checkpoints in stateDir unless that is empty.
func (f *fixture) newControl(integrate bool, stateDir string) *Control {
	f.t.Helper()
	return f.newControlOn(f.rdb, integrate, stateDir)
}

// newControlOn is newControl of a process whose Redis client is rdb.
func (f *fixture) newControlOn(rdb *redis.Client, integrate bool, stateDir string) *Control {
	f.t.Helper()
	return f.newControlWith(rdb, integrate, func(c *ControlConfig) { c.StateDir = stateDir })
}

// newControlWith is newControlOn with the configuration edited by tune.
func (f *fixture) newControlWith(rdb *redis.Client, integrate bool, tune func(*ControlConfig)) *Control {
	f.t.Helper()
	cfg := ControlConfig{Redis: rdb, Keys: f.keys, Keyring: f.keyring, Profile: testProfile(),
		Policy: f.policy, LogKey: f.logKey, MaxStaleness: f.staleness,
		Metrics: NewMetrics(prometheus.NewRegistry()), Logger: f.logger(), Now: f.now}
	if integrate {
		cfg.Signer = f.logSigner
	}
	tune(&cfg)
	c, err := NewControl(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(c.Close)
	return c
}

func (f *fixture) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(testLog{f.t, &f.taskFailures, &f.lines}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// testAuthority is the authority the fixture's gateway answers to; its
// requests are signed for it.
const testAuthority = "gw.test"

// testProfile is the signing profile of the fixture's processes.
func testProfile() signing.Profile {
	p := signing.DefaultProfile()
	p.Authorities = []string{testAuthority}
	return p
}

// verifierFor is the ingress verifier of a process holding view c.
func (f *fixture) verifierFor(c *Control) *signing.Verifier {
	return signing.NewVerifier(signing.VerifierConfig{Profile: testProfile(), Keys: f.keyring,
		Revocations: c, Replay: NewReplayGuard(f.rdb, f.keys), Now: f.now})
}

// config is a process's configuration around its view of the log.
func (f *fixture) config(c *Control) Config {
	return Config{Redis: c.cfg.Redis, Keys: f.keys, Verifier: f.verifierFor(c), Control: c, Policy: f.policy,
		Metrics: NewMetrics(prometheus.NewRegistry()), Logger: f.logger(), Now: f.now}
}

// startWorker starts a worker with the fixture's fake senders and stops it
// at cleanup.
func (f *fixture) startWorker(id string) *Worker {
	f.t.Helper()
	return f.startWorkerOn(id, f.newControl(false, ""), f.fcm, f.apns)
}

// startWorkerOn starts a worker around its own view of the control log,
// with its own senders.
func (f *fixture) startWorkerOn(id string, c *Control, fcm, apns *fakeSender) *Worker {
	f.t.Helper()
	return f.startWorkerWith(id, c, map[providers.Platform]Sender{providers.FCM: fcm, providers.APNs: apns})
}

// startWorkerWith starts a worker around view c with the given senders
// (real ones, against simulators, or fakes), stopped at cleanup.
func (f *fixture) startWorkerWith(id string, c *Control, senders map[providers.Platform]Sender) *Worker {
	f.t.Helper()
	w, err := NewWorker(WorkerConfig{
		Config:                   f.config(c),
		Senders:                  senders,
		ID:                       id,
		Concurrency:              4,
		TaskCheckInterval:        10 * time.Millisecond,
		DelayedTaskCheckInterval: 100 * time.Millisecond,
		ShutdownTimeout:          5 * time.Second,
		SweepInterval:            500 * time.Millisecond,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(w.Shutdown)
	return w
}

// signed builds a signed request as a gateway would receive it and returns
// it verified, with its envelope.
func (f *fixture) signed(signer *signing.Signer, method, path string, body []byte) (*signing.Verified, *signing.Request, error) {
	f.t.Helper()
	r, err := http.NewRequest(method, "http://"+testAuthority+path, bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if len(body) > 0 {
		r.Header.Set("Content-Type", "application/json")
	}
	if err := signer.Sign(r, body); err != nil {
		f.t.Fatal(err)
	}
	req := signing.RequestFromHTTP(r, body)
	v, err := f.verifier.Verify(context.Background(), req)
	if err != nil {
		return nil, nil, err
	}
	return v, v.Envelope(req), nil
}

// as signs a request as key id and returns it verified, with its
// envelope, as the gateway hands them to the Service.
func (f *fixture) as(id, method, path, body string) (*signing.Verified, *signing.Request) {
	f.t.Helper()
	v, env, err := f.signed(f.signers[id], method, path, []byte(body))
	if err != nil {
		f.t.Fatalf("verify as %s: %v", id, err)
	}
	return v, env
}

// kill has key by kill a scope.
func (f *fixture) kill(by, scope, reason string, wait bool) (*KillResult, error) {
	f.t.Helper()
	body := fmt.Sprintf(`{"scope":%q,"reason":%q}`, scope, reason)
	v, env := f.as(by, "POST", api.PathKill, body)
	return f.svc.Kill(context.Background(), v, env, scope, reason, wait)
}

// cancel has key by cancel broadcast id.
func (f *fixture) cancel(by, id, reason string) (*KillResult, error) {
	f.t.Helper()
	body := fmt.Sprintf(`{"reason":%q}`, reason)
	v, env := f.as(by, "POST", api.CancelPath(id), body)
	return f.svc.Cancel(context.Background(), v, env, id, reason)
}

// revoke has key by revoke keyID.
func (f *fixture) revoke(by, keyID, reason string) (*KillResult, *api.PendingAction, error) {
	f.t.Helper()
	body := fmt.Sprintf(`{"reason":%q}`, reason)
	v, env := f.as(by, "POST", api.RevokePath(keyID), body)
	return f.svc.Revoke(context.Background(), v, env, keyID, reason)
}

// resume has key by lift a kill.
func (f *fixture) resume(by, scope, reason string) (int64, *api.PendingAction, error) {
	f.t.Helper()
	body := fmt.Sprintf(`{"scope":%q,"reason":%q}`, scope, reason)
	v, env := f.as(by, "POST", api.PathResume, body)
	return f.svc.Resume(context.Background(), v, env, scope, reason)
}

// recall has key by recall broadcast id with a body.
func (f *fixture) recall(by, id, body string) (*api.Status, *api.PendingAction, error) {
	f.t.Helper()
	rr, err := api.ParseRecallRequest([]byte(body))
	if err != nil {
		f.t.Fatal(err)
	}
	v, env := f.as(by, "POST", api.RecallPath(id), body)
	return f.svc.Recall(context.Background(), v, id, env, rr)
}

// approveAction has key by approve a pending action.
func (f *fixture) approveAction(by string, p *api.PendingAction) (*ActionOutcome, error) {
	f.t.Helper()
	body := fmt.Sprintf(`{"action_id":%q,"request_sha256":%q}`, p.ID, p.RequestSHA256)
	req, err := api.ParseActionApprovalRequest([]byte(body), p.ID)
	if err != nil {
		f.t.Fatal(err)
	}
	v, env := f.as(by, "POST", api.ActionApprovalsPath(p.ID), body)
	return f.svc.ApproveAction(context.Background(), v, env, req)
}

// approve has key by approve broadcast id, naming digest.
func (f *fixture) approve(by, id, digest string) (*api.Status, error) {
	f.t.Helper()
	body := fmt.Sprintf(`{"broadcast_id":%q,"envelope_sha256":%q}`, id, digest)
	req, err := api.ParseApprovalRequest([]byte(body), id)
	if err != nil {
		f.t.Fatal(err)
	}
	v, env := f.as(by, "POST", api.ApprovalsPath(id), body)
	return f.svc.Approve(context.Background(), v, env, req)
}

// submit signs and submits a broadcast body with signer.
func (f *fixture) submit(signer *signing.Signer, body string) (*Submission, error) {
	f.t.Helper()
	v, env, err := f.signed(signer, "POST", api.PathBroadcasts, []byte(body))
	if err != nil {
		f.t.Fatalf("verify: %v", err)
	}
	br, err := api.ParseBroadcastRequest([]byte(body), f.policy.MaxTTL)
	if err != nil {
		return nil, err
	}
	return f.svc.Submit(context.Background(), v, env, br)
}

func (f *fixture) mustSubmit(body string) *api.Status {
	f.t.Helper()
	s, err := f.submit(f.sender, body)
	if err != nil {
		f.t.Fatalf("submit: %v", err)
	}
	return s.Status
}

// register puts n devices per platform into topic and returns their
// members.
func (f *fixture) register(topic string, nFCM, nAPNs int) []api.Device {
	f.t.Helper()
	var devs []api.ImportDevice
	var out []api.Device
	for i := range nFCM {
		d := api.Device{Platform: providers.FCM, Token: fmt.Sprintf("fcm-%s-%05d", topic, i)}
		devs = append(devs, api.ImportDevice{Platform: "fcm", Token: d.Token, Topics: []string{topic}})
		out = append(out, d)
	}
	for i := range nAPNs {
		d := api.Device{Platform: providers.APNs, Token: fmt.Sprintf("%064x", i+1_000_000*len(topic))}
		devs = append(devs, api.ImportDevice{Platform: "apns", Token: d.Token, Topics: []string{topic}})
		out = append(out, d)
	}
	if err := f.svc.Registry().Import(context.Background(), devs); err != nil {
		f.t.Fatal(err)
	}
	return out
}

// hangGuard bounds every wait in these tests. It guards against a hang and
// is never the property under test: a busy machine may take many times as
// long as a quiet one, and no test here asserts how long a step took.
const hangGuard = 5 * time.Minute

// waitState polls a broadcast until it reaches state or the deadline.
func (f *fixture) waitState(id, state string) *api.Status {
	f.t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		st, err := f.svc.Get(context.Background(), id)
		if err != nil {
			f.t.Fatal(err)
		}
		if st.State == state {
			return st
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("hung: broadcast %s is %s after %s, want %s; counters %+v", id, st.State, hangGuard, state, st.Counters)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testLog writes log lines into the test's output.
// testLog writes log lines to the test's log; failed, when set, counts
// tasks that failed (asynq retries them).
type testLog struct {
	t      testing.TB
	failed *atomic.Int64
	lines  *keptLog // nil: not kept
}

func (l testLog) Write(b []byte) (int, error) {
	if l.failed != nil && bytes.Contains(b, []byte("task failed; asynq will retry it")) {
		l.failed.Add(1)
	}
	if l.lines != nil {
		l.lines.add(string(b))
	}
	l.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("hung: still waiting for %s after %s", what, hangGuard)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
