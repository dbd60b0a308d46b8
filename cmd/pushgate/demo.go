package main

// pushgate demo: the whole story on one machine with nothing but Go
// installed. An in-process Redis (miniredis, unless --redis names a real
// one), the FCM and APNs simulators with their phones, freshly generated
// keys, and the gateway's API and worker pool, all in this process and on
// 127.0.0.1 only. Interactive by default; --script runs the story —
// delivery, refused attacks, kill, recall — and checks every outcome.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"golang.org/x/term"

	"github.com/pushgate/pushgate/gateway"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/providers/sim"
	"github.com/pushgate/pushgate/queue"
	"github.com/pushgate/pushgate/signing"
)

// The demo's fixed parts.
const (
	demoTopic        = "citizens"
	demoAndroidShare = 0.6
	demoSeed         = 7
	// demoLatency and demoJitter make the providers slow for the kill
	// step (40–80 ms a push), so that a broadcast is still under way when
	// the admin stops it.
	demoLatency = 40 * time.Millisecond
	demoJitter  = 40 * time.Millisecond
	// demoMinScriptDevices is the smallest audience the kill step can stop
	// part-way.
	demoMinScriptDevices = 100
)

// The texts of the story.
const (
	demoFirstTitle  = "Flood warning"
	demoFirstBody   = "Water is rising in Manggarai. Avoid the area until 18:00."
	demoForgedTitle = "Evacuate now"
	demoForgedBody  = "All bridges are closed. Leave the city immediately."
	demoBadTitle    = "Dam failure"
	demoBadBody     = "The Katulampa dam has failed. Evacuate at once."
	demoFixTitle    = "Correction"
	demoFixBody     = "The previous alert was sent in error. There is no danger."
)

func runDemo(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "demo", "[--script] [--devices N] [--redis URL] [--dir DIR] [--keep] [--verbose]")
	script := fs.Bool("script", false, "run the story without input (delivery, refused attacks, kill, recall); exit 0 only if every check holds")
	redisURL := fs.String("redis", "", "use this Redis (a database of its own) instead of the embedded, in-process one")
	devices := fs.Int("devices", 1000, "number of simulated phones, about 60% Android")
	dir := fs.String("dir", "", "write keys, keyring and configuration into this new or empty directory, and keep it (default: a new temporary directory, removed on exit)")
	keep := fs.Bool("keep", false, "keep the temporary directory on exit")
	verbose := fs.Bool("verbose", false, "log at info level (default: warnings and errors only)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return usagef("demo: unexpected arguments %q", fs.Args())
	case *devices < 1 || *devices > 1_000_000:
		return usagef("demo: --devices must be 1 to 1000000")
	case *script && *devices < demoMinScriptDevices:
		return usagef("demo: --script needs at least %d devices, to stop a broadcast part-way", demoMinScriptDevices)
	}
	if *redisURL != "" {
		if _, err := redis.ParseURL(*redisURL); err != nil {
			return usagef("demo: --redis: %v", err)
		}
	}
	if *dir != "" {
		if err := checkEmptyDir(*dir); err != nil {
			return &usageError{fmt.Errorf("demo: --dir: %w", err)}
		}
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))

	d, err := startDemo(ctx, demoOptions{redisURL: *redisURL, devices: *devices, dir: *dir, keep: *keep, logger: logger})
	if err != nil {
		return err
	}
	d.printIntro(e.stdout)
	var runErr error
	if *script {
		runErr = d.script(ctx, e.stdout)
	} else {
		runErr = d.interactive(ctx, e)
	}
	return errors.Join(runErr, d.close(e.stdout))
}

// checkEmptyDir refuses a directory that holds anything: the demo writes
// private keys and a keyring there and must not overwrite someone's files.
func checkEmptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("%s is not empty", dir)
	}
	return nil
}

// demoOptions shape a demo.
type demoOptions struct {
	redisURL string // empty: the embedded Redis
	devices  int
	dir      string // empty: a new temporary directory
	keep     bool
	logger   *slog.Logger
}

// demo is everything the demo runs. close stops it in order.
type demo struct {
	dir       string
	removeDir bool
	redis     *embeddedRedis // nil when --redis names a Redis
	redisURL  string
	st        *stack
	app       *runningApp
	sender    *apiClient
	admin     *apiClient
	imported  time.Duration
}

// startDemo starts Redis, the simulators and the gateway, and registers
// the phones through the API.
func startDemo(ctx context.Context, o demoOptions) (d *demo, err error) {
	d = &demo{dir: o.dir, redisURL: o.redisURL}
	defer func() {
		if err != nil {
			_ = d.close(io.Discard)
		}
	}()
	if d.dir == "" {
		if d.dir, err = os.MkdirTemp("", "pushgate-demo-"); err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
		d.removeDir = !o.keep
	}
	if d.redisURL == "" {
		if d.redis, err = startEmbeddedRedis(); err != nil {
			return nil, err
		}
		d.redisURL = d.redis.url()
	}
	d.st, err = newStack(stackOptions{dir: d.dir, redisURL: d.redisURL, devices: o.devices,
		androidShare: demoAndroidShare, seed: demoSeed, topic: demoTopic, logger: o.logger})
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	if d.app, err = startApp(ctx, d.st.configPath, roles{api: true, worker: true}, o.logger); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	if d.sender, err = d.st.client(keySender, d.app.url); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	if d.admin, err = d.st.client(keyAdmin, d.app.url); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	start := time.Now()
	if err := d.st.importDevices(ctx, d.sender, demoTopic); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	d.imported = time.Since(start)
	return d, nil
}

// close stops the gateway (its API, then its workers), then the
// simulators, then the embedded Redis, and removes the temporary
// directory. It reports what it removed on w.
func (d *demo) close(w io.Writer) error {
	var errs []error
	for _, c := range []*apiClient{d.sender, d.admin} {
		if c != nil {
			c.close()
		}
	}
	if d.app != nil {
		if err := d.app.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("demo: gateway: %w", err))
		}
	}
	if d.st != nil {
		if err := d.st.Close(); err != nil {
			errs = append(errs, fmt.Errorf("demo: simulators: %w", err))
		}
	}
	if d.redis != nil {
		d.redis.close()
		fmt.Fprintln(w, "The embedded Redis is gone, and with it every broadcast, device and nonce of this demo.")
	}
	if d.removeDir {
		if err := os.RemoveAll(d.dir); err != nil {
			errs = append(errs, fmt.Errorf("demo: %w", err))
		} else {
			fmt.Fprintf(w, "Removed %s (--keep keeps it).\n", d.dir)
		}
	}
	// Forget everything, so that a second close does nothing.
	*d = demo{}
	return errors.Join(errs...)
}

// printIntro says what runs where.
func (d *demo) printIntro(w io.Writer) {
	phones := d.st.countByPlatform()
	fmt.Fprintln(w, "pushgate demo: the gateway, its workers, Redis and simulated FCM and APNs, in this process, on 127.0.0.1 only")
	if d.redis != nil {
		fmt.Fprintf(w, "  redis:   embedded (miniredis) on %s. It keeps everything in memory and nothing after exit;\n", d.redis.addr())
		fmt.Fprintln(w, "           production uses a real Redis (redis_url in pushgate.yaml).")
	} else {
		fmt.Fprintf(w, "  redis:   %s\n", redactURL(d.redisURL))
	}
	fmt.Fprintf(w, "  phones:  %d simulated (%d Android via FCM, %d iPhone via APNs), registered in topic %s through the API in %s\n",
		len(d.st.devices), phones[providers.FCM], phones[providers.APNs], demoTopic, took(d.imported))
	fmt.Fprintf(w, "  gateway: %s\n", d.app.url)
	kept := "kept"
	if d.removeDir {
		kept = "removed on exit; --keep keeps them"
	}
	fmt.Fprintf(w, "  files:   %s (keys/, keyring.yaml, pushgate.yaml; %s)\n", d.dir, kept)
	fmt.Fprintf(w, "  keys:    %s signs broadcasts to %s; %s is an admin; %s is an attacker's, not in the keyring\n",
		d.st.keys[keySender].id, demoTopic, d.st.keys[keyAdmin].id, d.st.keys[keyAttacker].id)
	fmt.Fprintln(w)
}

// interactive prints commands to try from another terminal and shows the
// deliveries live until ctx is cancelled (Ctrl-C).
func (d *demo) interactive(ctx context.Context, e *env) error {
	sender, admin := d.st.keys[keySender], d.st.keys[keyAdmin]
	w := e.stdout
	fmt.Fprintln(w, "Try it from another terminal, in this repository:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "  # as the sender: a signed broadcast to every phone in the topic")
	fmt.Fprintf(w, "  export PUSHGATE_URL=%s PUSHGATE_KEY=%s PUSHGATE_KEY_ID=%s\n", d.app.url, shellQuote(sender.file), sender.id)
	fmt.Fprintf(w, "  go run ./cmd/pushgate send --topic %s --title %s --body %s --wait\n",
		demoTopic, shellQuote(demoFirstTitle), shellQuote(demoFirstBody))
	fmt.Fprintln(w)
	fmt.Fprintln(w, "  # as the admin: stop a broadcast on every worker, then replace it on the phones it reached")
	fmt.Fprintf(w, "  export PUSHGATE_URL=%s PUSHGATE_KEY=%s PUSHGATE_KEY_ID=%s\n", d.app.url, shellQuote(admin.file), admin.id)
	fmt.Fprintln(w, "  go run ./cmd/pushgate kill --scope broadcast:ID --reason 'wrong text' --wait")
	fmt.Fprintf(w, "  go run ./cmd/pushgate recall ID --mode replace --title %s --body %s\n",
		shellQuote(demoFixTitle), shellQuote(demoFixBody))
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  (ID is the broadcast id that send prints. Phones: %s/sim/stats and /sim/devices/TOKEN.\n", d.st.sim.ControlURL())
	fmt.Fprintln(w, "   The whole story, checked: go run ./cmd/pushgate demo --script)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Deliveries are shown live below; Ctrl-C stops everything.")

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.showLive(ctx, e.stderr, isTerminal(e.stderr))
	}()
	<-ctx.Done()
	wg.Wait()
	fmt.Fprintln(w, "Stopping: the gateway, then the simulators, then Redis.")
	return nil
}

// showLive writes one line of deliveries per platform twice a second
// until ctx is cancelled: rewritten in place on a terminal, else as a new
// line whenever it changes.
func (d *demo) showLive(ctx context.Context, w io.Writer, tty bool) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	last := ""
	for {
		line := demoLiveLine(d.st.sim.Stats(), len(d.st.devices))
		switch {
		case tty:
			fmt.Fprintf(w, "\r%s\x1b[K", line)
		case line != last:
			fmt.Fprintln(w, line)
		}
		last = line
		select {
		case <-ctx.Done():
			if tty {
				fmt.Fprintln(w)
			}
			return
		case <-t.C:
		}
	}
}

// demoLiveLine describes what the simulators have delivered. Every phone
// is online, so a push the provider accepted (200) is a delivery.
func demoLiveLine(s sim.Stats, phones int) string {
	accepted := func(p providers.Platform) int64 { return s.Requests[p][http.StatusOK] }
	return fmt.Sprintf("live: FCM %d delivered, APNs %d delivered, %d in flight; %d of %d phones reached; %d notifications recalled",
		accepted(providers.FCM), accepted(providers.APNs), s.InFlight[providers.FCM]+s.InFlight[providers.APNs],
		s.PhonesReached, phones, s.Recalled)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// embeddedRedis is an in-process Redis (miniredis) on a loopback port. It
// holds everything in memory: nothing survives the process.
type embeddedRedis struct {
	srv  *miniredis.Miniredis
	stop context.CancelFunc
	done chan struct{}
}

func startEmbeddedRedis() (*embeddedRedis, error) {
	srv := miniredis.NewMiniRedis()
	if err := srv.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("embedded redis: %w", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	r := &embeddedRedis{srv: srv, stop: stop, done: make(chan struct{})}
	go r.expire(ctx)
	return r, nil
}

// expire advances miniredis's key TTLs with the wall clock once a second,
// so that keys written with a TTL (replay-guard nonces, idempotency keys)
// expire as they would in Redis. miniredis freezes TTLs by default, and its
// ClockTTL mode re-sorts every key of every database on every command,
// which made a 10,000-device import time out.
func (r *embeddedRedis) expire(ctx context.Context) {
	defer close(r.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.srv.FastForward(now.Sub(last))
			last = now
		}
	}
}

func (r *embeddedRedis) addr() string { return r.srv.Addr() }
func (r *embeddedRedis) url() string  { return "redis://" + r.srv.Addr() + "/0" }

// close stops the TTL clock and the server, dropping every connection.
func (r *embeddedRedis) close() {
	r.stop()
	<-r.done
	r.srv.Close()
}

// demoStep is one step of the script: the checks it made and its figures
// for the summary.
type demoStep struct {
	w       io.Writer
	title   string
	failed  int
	figures string
}

func newDemoStep(w io.Writer, n int, title string) *demoStep {
	fmt.Fprintf(w, "%d. %s\n", n, title)
	return &demoStep{w: w, title: fmt.Sprintf("%d. %s", n, title)}
}

// note prints a line that is not a check.
func (s *demoStep) note(format string, args ...any) {
	fmt.Fprintf(s.w, "   %s\n", fmt.Sprintf(format, args...))
}

// check prints one checked outcome and remembers whether it held.
func (s *demoStep) check(ok bool, format string, args ...any) bool {
	mark := "ok"
	if !ok {
		mark = "FAILED"
		s.failed++
	}
	fmt.Fprintf(s.w, "   %-6s %s\n", mark, fmt.Sprintf(format, args...))
	return ok
}

func (s *demoStep) ok() bool { return s.failed == 0 }

// script runs the story and checks every outcome; it fails unless every
// check held.
func (d *demo) script(ctx context.Context, w io.Writer) error {
	start := time.Now()
	s1 := newDemoStep(w, 1, "signed broadcast to "+demoTopic)
	first, firstID := d.stepDeliver(ctx, s1)
	s2 := newDemoStep(w, 2, "attacker key, replay, forged task")
	d.stepAttacks(ctx, s2, first, firstID)
	s3 := newDemoStep(w, 3, "kill a bad broadcast")
	badID := d.stepKill(ctx, s3)
	s4 := newDemoStep(w, 4, "recall with a correction")
	d.stepRecall(ctx, s4, badID)

	steps := []*demoStep{s1, s2, s3, s4}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tOUTCOME\tFIGURES")
	failed := 0
	for _, s := range steps {
		outcome := "ok"
		if !s.ok() {
			outcome = "FAILED"
			failed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.title, outcome, s.figures)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("demo: %d of %d steps failed", failed, len(steps))
	}
	fmt.Fprintf(w, "all %d steps ok in %s\n\n", len(steps), took(time.Since(start)))
	return nil
}

// stepDeliver sends a signed broadcast to the topic and checks that every
// phone got it exactly once. It returns the signed request, for step 2 to
// replay, and the broadcast's id.
func (d *demo) stepDeliver(ctx context.Context, s *demoStep) (*signedRequest, string) {
	n := len(d.st.devices)
	req, err := newSignedRequest(ctx, d.sender, http.MethodPost, "/v1/broadcasts", demoBroadcast(demoFirstTitle, demoFirstBody))
	if err != nil {
		s.check(false, "sign the broadcast: %v", err)
		return nil, ""
	}
	start := time.Now()
	var sub struct {
		ID string `json:"id"`
	}
	if err := req.send(ctx, &sub); err != nil {
		s.check(false, "submit the broadcast: %v", err)
		return nil, ""
	}
	s.note("broadcast %s accepted in %s, signed by %s", sub.ID, took(time.Since(start)), d.sender.signer.KeyID)
	st, err := d.waitStatus(ctx, sub.ID, time.Minute, func(st *queue.Status) bool { return !st.FinishedAt.IsZero() })
	elapsed := time.Since(start)
	if err != nil {
		s.check(false, "the broadcast did not finish: %v", err)
		return req, sub.ID
	}
	got := d.perPhone(queue.CollapseID(sub.ID), demoFirstTitle)
	once, missed, more := 0, 0, 0
	for _, dev := range d.st.devices {
		switch got[dev.Token] {
		case 0:
			missed++
		case 1:
			once++
		default:
			more++
		}
	}
	s.check(st.State == queue.StateCompleted, "the broadcast %s in %s", st.State, took(elapsed))
	s.check(once == n, "%d of %d phones got it exactly once (counted at the simulators: %d missed, %d more than once)",
		once, n, missed, more)
	s.figures = fmt.Sprintf("%d of %d phones reached, each once, in %s", once, n, took(elapsed))
	return req, sub.ID
}

// stepAttacks checks three attacks: a key the gateway does not know, a
// replayed request, and a task forged by someone who can write to Redis.
func (d *demo) stepAttacks(ctx context.Context, s *demoStep, first *signedRequest, firstID string) {
	refused := 0
	attacker, err := d.st.client(keyAttacker, d.app.url)
	if err != nil {
		s.check(false, "attacker client: %v", err)
	} else {
		defer attacker.close()
		_, err := attacker.do(ctx, http.MethodPost, "/v1/broadcasts", nil, demoBroadcast(demoForgedTitle, demoForgedBody), nil)
		if s.check(isProblem(err, http.StatusUnauthorized, signing.CodeUnknownKey),
			"a broadcast signed by %s (a key not in the keyring): %s", attacker.signer.KeyID, demoOutcome(err)) {
			refused++
		}
	}

	if first == nil {
		s.check(false, "replay: step 1 sent no request to replay")
	} else {
		err := first.send(ctx, nil)
		if s.check(isProblem(err, http.StatusUnauthorized, signing.CodeReplayedNonce),
			"the step 1 request sent again, same headers and body: %s", demoOutcome(err)) {
			refused++
		}
	}

	forged, delivered, err := d.forgePlanTask(ctx, firstID)
	switch {
	case err != nil:
		s.check(false, "forged plan task: %v", err)
	default:
		if s.check(forged.refused && delivered == 0,
			"a plan task written straight into Redis, envelope body altered to %q: %s; %d deliveries in the %s after",
			demoForgedTitle, forged.outcome, delivered, took(demoForgeWatch)) {
			refused++
		}
	}
	s.figures = fmt.Sprintf("%d of 3 attacks refused; forged task delivered to %d phones", refused, delivered)
}

// demoForgeWatch is how long the script watches the simulators for a
// delivery of the forged task after the worker refused it.
const demoForgeWatch = 2 * time.Second

// forgeResult is what became of a forged task.
type forgeResult struct {
	refused bool
	outcome string
}

// forgePlanTask does what someone with write access to Redis could: copy
// a genuine broadcast's stored envelope under a new broadcast id with its
// body altered, and enqueue a plan task for it. The worker must refuse it
// (the envelope's signature no longer verifies) and count a security
// event. It returns what became of it and how many deliveries it caused.
func (d *demo) forgePlanTask(ctx context.Context, genuineID string) (forgeResult, int, error) {
	if genuineID == "" {
		return forgeResult{}, 0, errors.New("step 1 stored no envelope to alter")
	}
	opts, err := redis.ParseURL(d.redisURL)
	if err != nil {
		return forgeResult{}, 0, err
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	// The stack's configuration keeps the default key prefix.
	keys := queue.NewKeys("")
	raw, err := rdb.Get(ctx, keys.Envelope(genuineID)).Bytes()
	if err != nil {
		return forgeResult{}, 0, fmt.Errorf("read the envelope: %w", err)
	}
	var env signing.Request
	if err := json.Unmarshal(raw, &env); err != nil {
		return forgeResult{}, 0, fmt.Errorf("decode the envelope: %w", err)
	}
	env.Body = bytes.Replace(env.Body, []byte(demoFirstTitle), []byte(demoForgedTitle), 1)
	env.Body = bytes.Replace(env.Body, []byte(demoFirstBody), []byte(demoForgedBody), 1)
	altered, err := json.Marshal(env)
	if err != nil {
		return forgeResult{}, 0, err
	}
	id, err := demoBroadcastID()
	if err != nil {
		return forgeResult{}, 0, err
	}
	counter := queue.TypePlan + ":envelope"
	before, err := rdb.HGet(ctx, keys.SecurityEvents(), counter).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return forgeResult{}, 0, fmt.Errorf("read security events: %w", err)
	}
	if err := rdb.Set(ctx, keys.Envelope(id), altered, 0).Err(); err != nil {
		return forgeResult{}, 0, fmt.Errorf("write the forged envelope: %w", err)
	}
	if err := rdb.HSet(ctx, keys.Broadcast(id), "state", queue.StateQueued).Err(); err != nil {
		return forgeResult{}, 0, fmt.Errorf("write the forged record: %w", err)
	}
	payload, err := json.Marshal(map[string]string{"b": id})
	if err != nil {
		return forgeResult{}, 0, err
	}
	// A shared connection: this asynq client is not closed, rdb is.
	if _, err := asynq.NewClientFromRedisClient(rdb).EnqueueContext(ctx, asynq.NewTask(queue.TypePlan, payload),
		asynq.Queue(queue.QueuePlan)); err != nil {
		return forgeResult{}, 0, fmt.Errorf("enqueue the forged task: %w", err)
	}

	var now int64
	err = demoPoll(ctx, 20*time.Second, 10*time.Millisecond, func() (bool, error) {
		n, err := rdb.HGet(ctx, keys.SecurityEvents(), counter).Int64()
		if errors.Is(err, redis.Nil) {
			return false, nil
		}
		now = n
		return n > before, err
	})
	res := forgeResult{refused: err == nil}
	if res.refused {
		res.outcome = fmt.Sprintf("refused by the worker and counted as a security event (%s %s = %d)",
			keys.SecurityEvents(), counter, now)
	} else {
		res.outcome = fmt.Sprintf("no security event counted: %v", err)
	}
	// The refusal comes before planning, so nothing can be on its way;
	// watch the phones a little longer all the same.
	collapse := queue.CollapseID(id)
	delivered := 0
	for watchEnd := time.Now().Add(demoForgeWatch); delivered == 0 && time.Now().Before(watchEnd); {
		delivered = len(d.st.sim.Deliveries(func(dl sim.Delivery) bool {
			return dl.CollapseID == collapse || dl.Title == demoForgedTitle
		}))
		if err := demoPause(ctx, 50*time.Millisecond); err != nil {
			return res, delivered, err
		}
	}
	return res, delivered, nil
}

// stepKill starts a broadcast with a bad text under slow providers and,
// once some phones have it, has the admin kill it and wait for every
// worker to acknowledge. No phone may receive it after that. It returns
// the broadcast's id.
func (d *demo) stepKill(ctx context.Context, s *demoStep) string {
	n := len(d.st.devices)
	f := d.st.sim.Faults()
	f.Latency, f.Jitter = demoLatency, demoJitter
	if err := d.st.sim.SetFaults(f); err != nil {
		s.check(false, "slow the providers down: %v", err)
		return ""
	}
	s.note("the providers now take %s to %s a push", demoLatency, demoLatency+demoJitter)
	var sub struct {
		ID string `json:"id"`
	}
	if _, err := d.sender.do(ctx, http.MethodPost, "/v1/broadcasts", nil, demoBroadcast(demoBadTitle, demoBadBody), &sub); err != nil {
		s.check(false, "submit the bad broadcast: %v", err)
		return ""
	}
	collapse := queue.CollapseID(sub.ID)
	s.note("broadcast %s with the wrong text %q is under way", sub.ID, demoBadTitle)

	threshold := max(1, n/20)
	var atRequest int
	err := demoPoll(ctx, 30*time.Second, 2*time.Millisecond, func() (bool, error) {
		atRequest = d.st.sim.DeliveriesAfter(time.Time{}, collapse)
		return atRequest >= threshold, nil
	})
	if err != nil {
		s.check(false, "the bad broadcast reached no phone: %v", err)
		return sub.ID
	}
	start := time.Now()
	var k killAnswer
	_, err = d.admin.do(ctx, http.MethodPost, "/v1/kill", url.Values{"wait": {"true"}},
		map[string]string{"scope": queue.BroadcastScope(sub.ID), "reason": "wrong text"}, &k)
	ackAt := time.Now()
	stopIn := ackAt.Sub(start)
	before := len(d.perPhoneUntil(collapse, ackAt))
	if err != nil {
		s.check(false, "kill: %v", err)
		return sub.ID
	}
	acked := k.Waited && k.Ack != nil && k.Ack.Acknowledged
	what := "NOT acknowledged by every worker"
	if acked {
		what = fmt.Sprintf("acknowledged by every live worker (%d)", k.Ack.Workers)
	}
	s.check(acked, "the admin killed it when %d phones had it: %s, %s from request to answer",
		atRequest, what, took(stopIn))
	s.note("%d phones had it at the acknowledgement (pushes already in flight finished)", before)

	// Let everything in flight settle before counting what came after.
	st, err := d.waitStatus(ctx, sub.ID, time.Minute, func(st *queue.Status) bool { return !st.FinishedAt.IsZero() })
	if err == nil {
		err = demoPoll(ctx, 10*time.Second, 10*time.Millisecond, func() (bool, error) {
			in := d.st.sim.Stats().InFlight
			return in[providers.FCM]+in[providers.APNs] == 0, nil
		})
	}
	if err != nil {
		s.check(false, "the killed broadcast did not settle: %v", err)
		return sub.ID
	}
	after := d.st.sim.DeliveriesAfter(ackAt, collapse)
	reached := len(d.perPhone(collapse, demoBadTitle))
	s.check(after == 0, "no phone received it after the acknowledgement (%d deliveries after)", after)
	s.check(st.State == queue.StateKilled && reached < n, "it ended %s, on %d of %d phones", st.State, reached, n)
	s.figures = fmt.Sprintf("%d phones had it before the kill; stopped in %s; %d after", before, took(stopIn), after)
	return sub.ID
}

// stepRecall has the admin recall the bad broadcast with a correction and
// checks every phone that showed it now shows the correction instead.
func (d *demo) stepRecall(ctx context.Context, s *demoStep, id string) {
	if id == "" {
		s.check(false, "step 3 sent no broadcast to recall")
		return
	}
	collapse := queue.CollapseID(id)
	reached := d.perPhone(collapse, demoBadTitle)
	start := time.Now()
	req := queue.RecallRequest{Mode: queue.RecallReplace, Replacement: &queue.MessageSpec{Title: demoFixTitle, Body: demoFixBody}}
	if _, err := d.admin.do(ctx, http.MethodPost, "/v1/broadcasts/"+id+"/recall", nil, req, nil); err != nil {
		s.check(false, "recall: %v", err)
		return
	}
	st, err := d.waitStatus(ctx, id, time.Minute, func(st *queue.Status) bool { return st.State == queue.StateRecalled })
	recallIn := time.Since(start)
	if err != nil {
		s.check(false, "the recall did not finish: %v", err)
		return
	}
	s.check(true, "recalled in %s (request to state %s), %d corrections sent", took(recallIn), st.State, st.Counters.Recalled)
	corrected := 0
	for tok := range reached {
		v, _ := d.st.sim.Device(tok)
		for _, nt := range v.Screen {
			if nt.CollapseID == collapse && nt.Title == demoFixTitle {
				corrected++
				break
			}
		}
	}
	showingBad := 0
	for _, sh := range d.st.sim.Showing(collapse) {
		if sh.Title == demoBadTitle {
			showingBad += sh.Phones
		}
	}
	s.check(len(reached) > 0 && corrected == len(reached), "%d of the %d phones that showed %q now show %q",
		corrected, len(reached), demoBadTitle, demoFixTitle)
	s.check(showingBad == 0, "%d phones show the bad text", showingBad)
	s.figures = fmt.Sprintf("%d of %d phones corrected in %s; %d show the bad text", corrected, len(reached), took(recallIn), showingBad)
}

// perPhone counts deliveries of a collapse identity with a title, by
// phone token.
func (d *demo) perPhone(collapse, title string) map[string]int {
	out := map[string]int{}
	for _, dl := range d.st.sim.Deliveries(func(dl sim.Delivery) bool {
		return dl.CollapseID == collapse && dl.Title == title
	}) {
		out[dl.Token]++
	}
	return out
}

// perPhoneUntil counts deliveries of a collapse identity up to t, by
// phone token.
func (d *demo) perPhoneUntil(collapse string, t time.Time) map[string]int {
	out := map[string]int{}
	for _, dl := range d.st.sim.Deliveries(func(dl sim.Delivery) bool {
		return dl.CollapseID == collapse && !dl.Time.After(t)
	}) {
		out[dl.Token]++
	}
	return out
}

// waitStatus polls a broadcast's status until done accepts it.
func (d *demo) waitStatus(ctx context.Context, id string, within time.Duration, done func(*queue.Status) bool) (*queue.Status, error) {
	var st queue.Status
	err := demoPoll(ctx, within, 10*time.Millisecond, func() (bool, error) {
		st = queue.Status{}
		if _, err := d.admin.do(ctx, http.MethodGet, "/v1/broadcasts/"+id, nil, nil, &st); err != nil {
			return false, err
		}
		return done(&st), nil
	})
	if err != nil {
		return nil, fmt.Errorf("broadcast %s (%s): %w", id, st.State, err)
	}
	return &st, nil
}

// demoPoll calls cond every interval until it reports true, fails, ctx is
// cancelled or within has passed.
func demoPoll(ctx context.Context, within, every time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(within)
	for {
		ok, err := cond()
		switch {
		case err != nil:
			return err
		case ok:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("still not done after %s", within)
		}
		if err := demoPause(ctx, every); err != nil {
			return err
		}
	}
}

// demoPause waits for d or until ctx is cancelled.
func demoPause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// demoBroadcast is a broadcast to the demo's topic.
func demoBroadcast(title, body string) queue.BroadcastRequest {
	return queue.BroadcastRequest{
		Audience: queue.Audience{Topic: demoTopic},
		Message:  queue.MessageSpec{Title: title, Body: body, TTL: "15m"},
	}
}

// demoBroadcastID returns a fresh id of the form broadcast ids take.
func demoBroadcastID() (string, error) {
	const digits = "0123456789abcdefghijklmnopqrstuv"
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	for i := range b {
		b[i] = digits[int(b[i])%len(digits)]
	}
	return "b" + string(b), nil
}

// isProblem reports whether err is an API problem with this status and
// code.
func isProblem(err error, status int, code signing.Code) bool {
	var p *gateway.Problem
	return errors.As(err, &p) && p.Status == status && p.Code == string(code)
}

// demoOutcome says how the gateway answered an attack.
func demoOutcome(err error) string {
	var p *gateway.Problem
	switch {
	case err == nil:
		return "ACCEPTED"
	case errors.As(err, &p):
		return fmt.Sprintf("refused, %d %s", p.Status, p.Code)
	}
	return err.Error()
}

// signedRequest is a request signed once, so that it can be sent again
// byte for byte, as someone who captured it would.
type signedRequest struct {
	c    *apiClient
	req  *http.Request
	body []byte
}

func newSignedRequest(ctx context.Context, c *apiClient, method, path string, in any) (*signedRequest, error) {
	body, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path, nil), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, "+gateway.ProblemContentType)
	if err := c.signer.Sign(req, body); err != nil {
		return nil, err
	}
	return &signedRequest{c: c, req: req, body: body}, nil
}

// send sends the request with the headers it was signed with, and decodes
// a 2xx answer into out when out is not nil. An error answer is returned
// as a *gateway.Problem.
func (r *signedRequest) send(ctx context.Context, out any) error {
	req := r.req.Clone(ctx)
	req.Body = io.NopCloser(bytes.NewReader(r.body))
	req.ContentLength = int64(len(r.body))
	resp, err := r.c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode >= 300 {
		return answerError(resp, answer)
	}
	if out != nil {
		if err := json.Unmarshal(answer, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", req.Method, req.URL.Path, err)
		}
	}
	return nil
}
