package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/client"
	"github.com/pushgate/pushgate/internal/stack"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/providers/sim"
	"github.com/pushgate/pushgate/queue"
	"github.com/pushgate/pushgate/signing"
	"github.com/redis/go-redis/v9"
)

// The scripted story: four steps, each a list of checked outcomes.

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
	fmt.Fprintf(w, "all %d steps ok in %s\n\n", len(steps), time.Since(start).Round(time.Millisecond))
	return nil
}

// stepDeliver sends a signed broadcast to the topic and checks that every
// phone got it exactly once. It returns the signed request, for step 2 to
// replay, and the broadcast's id.
func (d *demo) stepDeliver(ctx context.Context, s *demoStep) (*client.Signed, string) {
	n := len(d.st.Devices)
	req, err := d.sender.Sign(ctx, http.MethodPost, api.PathBroadcasts, nil, demoBroadcast(demoFirstTitle, demoFirstBody))
	if err != nil {
		s.check(false, "sign the broadcast: %v", err)
		return nil, ""
	}
	start := time.Now()
	var sub struct {
		ID string `json:"id"`
	}
	if _, err := req.Send(ctx, &sub); err != nil {
		s.check(false, "submit the broadcast: %v", err)
		return nil, ""
	}
	s.note("broadcast %s accepted in %s, signed by %s", sub.ID, time.Since(start).Round(time.Millisecond), d.sender.KeyID())
	st, err := d.waitStatus(ctx, sub.ID, time.Minute, func(st *api.Status) bool { return !st.FinishedAt.IsZero() })
	elapsed := time.Since(start)
	if err != nil {
		s.check(false, "the broadcast did not finish: %v", err)
		return req, sub.ID
	}
	got := d.perPhone(queue.CollapseID(sub.ID), demoFirstTitle)
	once, missed, more := 0, 0, 0
	for _, dev := range d.st.Devices {
		switch got[dev.Token] {
		case 0:
			missed++
		case 1:
			once++
		default:
			more++
		}
	}
	s.check(st.State == api.StateCompleted, "the broadcast %s in %s", st.State, elapsed.Round(time.Millisecond))
	s.check(once == n, "%d of %d phones got it exactly once (counted at the simulators: %d missed, %d more than once)",
		once, n, missed, more)
	s.figures = fmt.Sprintf("%d of %d phones reached, each once, in %s", once, n, elapsed.Round(time.Millisecond))
	return req, sub.ID
}

// stepAttacks checks three attacks: a key the gateway does not know, a
// replayed request, and a task forged by someone who can write to Redis.
func (d *demo) stepAttacks(ctx context.Context, s *demoStep, first *client.Signed, firstID string) {
	refused := 0
	attacker, err := d.st.Client(stack.KeyAttacker, d.app.URL)
	if err != nil {
		s.check(false, "attacker client: %v", err)
	} else {
		defer attacker.Close()
		_, err := attacker.Submit(ctx, demoBroadcast(demoForgedTitle, demoForgedBody))
		if s.check(client.IsProblem(err, string(signing.CodeBadSignature)),
			"a broadcast signed by %s (a key not in the keyring): %s", attacker.KeyID(), demoOutcome(err)) {
			refused++
		}
	}

	if first == nil {
		s.check(false, "replay: step 1 sent no request to replay")
	} else {
		_, err := first.Send(ctx, nil)
		if s.check(client.IsProblem(err, string(signing.CodeReplayedNonce)),
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
			demoForgedTitle, forged.outcome, delivered, demoForgeWatch.Round(time.Millisecond)) {
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
	svc := d.app.App.Service()
	events, err := svc.SecurityEvents(ctx)
	if err != nil {
		return forgeResult{}, 0, err
	}
	before := events[counter]
	if err := rdb.Set(ctx, keys.Envelope(id), altered, 0).Err(); err != nil {
		return forgeResult{}, 0, fmt.Errorf("write the forged envelope: %w", err)
	}
	// Only the envelope and the task: a worker trusts nothing else in
	// Redis, so a forged record would change nothing. A shared connection:
	// this asynq client is not closed, rdb is.
	if _, err := asynq.NewClientFromRedisClient(rdb).EnqueueContext(ctx, queue.PlanTask(id), asynq.Queue(queue.QueuePlan)); err != nil {
		return forgeResult{}, 0, fmt.Errorf("enqueue the forged task: %w", err)
	}

	var now int64
	err = demoPoll(ctx, 20*time.Second, 10*time.Millisecond, func() (bool, error) {
		events, err := svc.SecurityEvents(ctx)
		now = events[counter]
		return now > before, err
	})
	res := forgeResult{refused: err == nil}
	if res.refused {
		res.outcome = fmt.Sprintf("refused by the worker and counted as a security event (%s = %d)", counter, now)
		if logged := d.waitLogged(ctx, "event=task_refused", "broadcast_id="+id); logged != "" {
			res.outcome += "; " + logged
		}
	} else {
		res.outcome = fmt.Sprintf("no security event counted: %v", err)
	}
	// The refusal comes before planning, so nothing can be on its way;
	// watch the phones a little longer all the same.
	collapse := queue.CollapseID(id)
	delivered := 0
	for watchEnd := time.Now().Add(demoForgeWatch); delivered == 0 && time.Now().Before(watchEnd); {
		delivered = len(d.st.Sim.Deliveries(func(dl sim.Delivery) bool {
			return dl.CollapseID == collapse || dl.Title == demoForgedTitle
		}))
		if err := stack.Pause(ctx, 50*time.Millisecond); err != nil {
			return res, delivered, err
		}
	}
	return res, delivered, nil
}

// waitLogged waits a little for a line of the log file holding every one
// of parts, and says where it is; "" when none came.
func (d *demo) waitLogged(ctx context.Context, parts ...string) string {
	var found bool
	_ = demoPoll(ctx, 5*time.Second, 20*time.Millisecond, func() (bool, error) {
		b, err := os.ReadFile(d.logPath)
		if err != nil {
			return false, err
		}
		for line := range strings.Lines(string(b)) {
			if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
				found = true
				return true, nil
			}
		}
		return false, nil
	})
	if !found {
		return ""
	}
	return fmt.Sprintf("logged as %s in %s", parts[0], LogName)
}

// stepKill starts a broadcast with a bad text under slow providers and,
// once some phones have it, has the admin kill it and wait for every
// worker to acknowledge. No phone may receive it after that. It returns
// the broadcast's id.
func (d *demo) stepKill(ctx context.Context, s *demoStep) string {
	n := len(d.st.Devices)
	f := d.st.Sim.Faults()
	f.Latency, f.Jitter = demoLatency, demoJitter
	if err := d.st.Sim.SetFaults(f); err != nil {
		s.check(false, "slow the providers down: %v", err)
		return ""
	}
	s.note("the providers now take %s to %s a push", demoLatency, demoLatency+demoJitter)
	sub, err := d.sender.Submit(ctx, demoBroadcast(demoBadTitle, demoBadBody))
	if err != nil {
		s.check(false, "submit the bad broadcast: %v", err)
		return ""
	}
	collapse := queue.CollapseID(sub.ID)
	s.note("broadcast %s with the wrong text %q is under way", sub.ID, demoBadTitle)

	threshold := max(1, n/20)
	var atRequest int
	err = demoPoll(ctx, 30*time.Second, 2*time.Millisecond, func() (bool, error) {
		atRequest = d.st.Sim.DeliveriesAfter(time.Time{}, collapse)
		return atRequest >= threshold, nil
	})
	if err != nil {
		s.check(false, "the bad broadcast reached no phone: %v", err)
		return sub.ID
	}
	start := time.Now()
	k, err := d.admin.Kill(ctx, api.BroadcastScope(sub.ID), "wrong text", true)
	ackAt := time.Now()
	stopIn := ackAt.Sub(start)
	before := len(d.perPhoneUntil(collapse, ackAt))
	if err != nil {
		s.check(false, "kill: %v", err)
		return sub.ID
	}
	acked := k.Acknowledged()
	what := "NOT acknowledged by every worker"
	if acked {
		what = fmt.Sprintf("acknowledged by every live worker (%d)", k.Ack.Workers)
	}
	s.check(acked, "the admin killed it when %d phones had it: %s, %s from request to answer",
		atRequest, what, stopIn.Round(time.Millisecond))
	s.note("%d phones had it at the acknowledgement (pushes already in flight finished)", before)

	// Let everything in flight settle before counting what came after.
	st, err := d.waitStatus(ctx, sub.ID, time.Minute, func(st *api.Status) bool { return !st.FinishedAt.IsZero() })
	if err == nil {
		err = demoPoll(ctx, 10*time.Second, 10*time.Millisecond, func() (bool, error) {
			in := d.st.Sim.Stats().InFlight
			return in[providers.FCM]+in[providers.APNs] == 0, nil
		})
	}
	if err != nil {
		s.check(false, "the killed broadcast did not settle: %v", err)
		return sub.ID
	}
	after := d.st.Sim.DeliveriesAfter(ackAt, collapse)
	reached := len(d.perPhone(collapse, demoBadTitle))
	s.check(after == 0, "no phone received it after the acknowledgement (%d deliveries after)", after)
	s.check(st.State == api.StateKilled && reached < n, "it ended %s, on %d of %d phones", st.State, reached, n)
	s.figures = fmt.Sprintf("%d phones had it before the kill; stopped in %s; %d after", before, stopIn.Round(time.Millisecond), after)
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
	req := api.RecallRequest{Mode: api.RecallReplace, Replacement: &api.MessageSpec{Title: demoFixTitle, Body: demoFixBody}}
	if _, _, err := d.admin.Recall(ctx, id, &req); err != nil {
		s.check(false, "recall: %v", err)
		return
	}
	st, err := d.waitStatus(ctx, id, time.Minute, func(st *api.Status) bool { return st.State == api.StateRecalled })
	recallIn := time.Since(start)
	if err != nil {
		s.check(false, "the recall did not finish: %v", err)
		return
	}
	s.check(true, "recalled in %s (request to state %s), %d corrections sent", recallIn.Round(time.Millisecond), st.State, st.Counters.Recalled)
	corrected := 0
	for tok := range reached {
		v, _ := d.st.Sim.Device(tok)
		for _, nt := range v.Screen {
			if nt.CollapseID == collapse && nt.Title == demoFixTitle {
				corrected++
				break
			}
		}
	}
	showingBad := 0
	for _, sh := range d.st.Sim.Showing(collapse) {
		if sh.Title == demoBadTitle {
			showingBad += sh.Phones
		}
	}
	s.check(len(reached) > 0 && corrected == len(reached), "%d of the %d phones that showed %q now show %q",
		corrected, len(reached), demoBadTitle, demoFixTitle)
	s.check(showingBad == 0, "%d phones show the bad text", showingBad)
	s.figures = fmt.Sprintf("%d of %d phones corrected in %s; %d show the bad text", corrected, len(reached), recallIn.Round(time.Millisecond), showingBad)
}

// perPhone counts deliveries of a collapse identity with a title, by
// phone token.
func (d *demo) perPhone(collapse, title string) map[string]int {
	out := map[string]int{}
	for _, dl := range d.st.Sim.Deliveries(func(dl sim.Delivery) bool {
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
	for _, dl := range d.st.Sim.Deliveries(func(dl sim.Delivery) bool {
		return dl.CollapseID == collapse && !dl.Time.After(t)
	}) {
		out[dl.Token]++
	}
	return out
}

// waitStatus polls a broadcast's status until done accepts it.
func (d *demo) waitStatus(ctx context.Context, id string, within time.Duration, done func(*api.Status) bool) (*api.Status, error) {
	st := &api.Status{}
	err := demoPoll(ctx, within, 10*time.Millisecond, func() (bool, error) {
		got, err := d.admin.Status(ctx, id)
		if err != nil {
			return false, err
		}
		st = got
		return done(st), nil
	})
	if err != nil {
		return nil, fmt.Errorf("broadcast %s (%s): %w", id, st.State, err)
	}
	return st, nil
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
		if err := stack.Pause(ctx, every); err != nil {
			return err
		}
	}
}

// demoBroadcast is a broadcast to the demo's topic.
func demoBroadcast(title, body string) *api.BroadcastRequest {
	return &api.BroadcastRequest{
		Audience: api.Audience{Topic: demoTopic},
		Message:  api.MessageSpec{Title: title, Body: body, TTL: "15m"},
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

// demoOutcome says how the gateway answered an attack.
func demoOutcome(err error) string {
	var p *api.Problem
	switch {
	case err == nil:
		return "ACCEPTED"
	case errors.As(err, &p):
		return fmt.Sprintf("refused, %d %s", p.Status, p.Code)
	}
	return err.Error()
}
