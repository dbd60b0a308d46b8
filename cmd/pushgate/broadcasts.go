package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/client"
	"github.com/pushgate/pushgate/signing"
)

func runSend(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "send", "(--topic T | --all | --tokens FILE) [--title TITLE] --body BODY [flags]")
	cf := addClientFlags(fs, e)
	cf.addKeyringFlag(fs)
	topic := fs.String("topic", "", "send to every device subscribed to this topic")
	all := fs.Bool("all", false, "send to every registered device")
	tokensFile := fs.String("tokens", "", `send to the devices listed in this JSON file: [{"platform":"fcm","token":"..."}]`)
	title := fs.String("title", "", "notification title")
	body := fs.String("body", "", "notification body (required)")
	data := keyValues{}
	fs.Var(data, "data", "KEY=VALUE data for the app; repeatable")
	ttl := fs.String("ttl", "", "how long providers keep it for offline phones, such as 15m (default 1h)")
	priority := fs.String("priority", "", "high or normal (default high)")
	idemKey := fs.String("idempotency-key", "", "key that makes a retried submission return the first broadcast")
	wait := fs.Bool("wait", false, "follow the broadcast with a progress bar until it ends; exit 0 only if it completed")
	poll := fs.Duration("poll", 500*time.Millisecond, "with --wait, how often to read the broadcast's status")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("send: unexpected argument %q", rest[0])
	}
	if err := refuseBlank(fs, "topic", "tokens", "ttl", "priority", "idempotency-key"); err != nil {
		return err
	}
	// A title alone once went to every phone of a topic: the body is what
	// the message says, so it is never left out.
	if err := required(fs, "body", *body); err != nil {
		return err
	}
	req := api.BroadcastRequest{
		IdempotencyKey: *idemKey,
		Message:        api.MessageSpec{Title: *title, Body: *body, TTL: *ttl, Priority: *priority},
	}
	if len(data) > 0 {
		req.Message.Data = data
	}
	audiences := 0
	if *topic != "" {
		audiences++
		req.Audience.Topic = *topic
	}
	if *all {
		audiences++
		req.Audience.All = true
	}
	if *tokensFile != "" {
		audiences++
		if req.Audience.Tokens, err = readDevices(*tokensFile); err != nil {
			return err
		}
	}
	switch {
	case audiences != 1:
		return usagef("send: give exactly one of --topic, --all, --tokens")
	case *poll <= 0:
		return usagef("send: --poll must be positive")
	}
	if *ttl != "" {
		if _, err := time.ParseDuration(*ttl); err != nil {
			return usagef("send: --ttl %q: want a duration such as 15m", *ttl)
		}
	}
	if err := checkSendScope(cf, req.Audience); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.Close()

	start := time.Now()
	sub, err := c.Submit(ctx, &req)
	if err != nil {
		return err
	}
	if !sub.Created {
		fmt.Fprintf(e.stdout, "broadcast %s was already submitted with idempotency key %q (%s), answered in %s\n",
			sub.ID, *idemKey, sub.State, took(time.Since(start)))
	} else {
		fmt.Fprintf(e.stdout, "broadcast %s %s in %s\n", sub.ID, sub.State, took(time.Since(start)))
	}
	fmt.Fprintf(e.stdout, "status: %s\n", c.URL(sub.StatusURL))
	if !*wait {
		return nil
	}
	return waitBroadcast(ctx, e, c, sub.ID, *poll, start)
}

// checkSendScope refuses, with the local keyring, an audience the key may
// not send to. A tokens audience is the gateway's to judge: only it knows
// the devices' topics.
func checkSendScope(cf *clientFlags, a api.Audience) error {
	k, err := cf.localKey()
	if err != nil || k == nil {
		return err
	}
	if err := checkRole("send", k, signing.RoleBroadcast); err != nil {
		return err
	}
	switch {
	case a.Topic != "" && !k.AllowsTopic(a.Topic):
		return usagef("send: --topic %s: key %s may not send to it (its topics: %s)", a.Topic, k.ID, topicsOf(k))
	case a.All && !k.AllowsAll():
		return usagef("send: --all: key %s may not send to every device (only a key with the topic \"*\" may)", k.ID)
	}
	return nil
}

// Exit codes of a broadcast followed with --wait (README, "Exit codes").
const (
	// exitNotAllSent: the broadcast completed, but devices failed,
	// expired, may not have been reached (uncertain), or were held back
	// by a limit (held, throttled, capped).
	exitNotAllSent = 3
	// exitStopped: the broadcast was killed or cancelled, or expired
	// waiting for its approvals.
	exitStopped = 4
)

// outcomeError is a followed broadcast that did not end with every device
// sent (or found gone: an invalid token is a phone without the app).
type outcomeError struct {
	code int
	msg  string
}

func (o *outcomeError) Error() string { return o.msg }

// outcome judges a broadcast that ended: nil when every device was sent
// or found gone.
func outcome(st *api.Status) error {
	n := st.Counters
	stopped := st.KilledBy != "" || n.Cancelled > 0
	switch {
	case st.State == api.StateCompleted,
		(st.State == api.StateRecalling || st.State == api.StateRecalled) && !stopped:
		notSent := n.Failed + n.Expired + n.Uncertain + n.Held + n.Throttled + n.Capped
		if notSent == 0 {
			return nil
		}
		msg := fmt.Sprintf("broadcast %s %s with %d of %d devices not sent (%d failed, %d expired, %d uncertain, %d held, %d throttled, %d capped)",
			st.ID, st.State, notSent, n.Targeted, n.Failed, n.Expired, n.Uncertain, n.Held, n.Throttled, n.Capped)
		if top := st.Reasons.Top(3); top != "" {
			msg += "; top reasons: " + top
		}
		return &outcomeError{code: exitNotAllSent, msg: msg}
	}
	msg := fmt.Sprintf("broadcast %s did not complete: it ended %s", st.ID, st.State)
	if st.KilledBy != "" {
		msg += " (kill " + st.KilledBy + ")"
	}
	return &outcomeError{code: exitStopped, msg: msg}
}

// printReasons prints a status's reasons, one line per kind, most
// frequent first.
func printReasons(w io.Writer, r *api.Reasons) {
	if r.Empty() {
		return
	}
	for _, g := range []struct {
		name string
		m    map[string]int64
	}{{"failed", r.Failed}, {"expired", r.Expired}, {"invalid_token", r.InvalidToken}, {"retried", r.Retried}} {
		if len(g.m) == 0 {
			continue
		}
		keys := slices.Collect(maps.Keys(g.m))
		slices.SortFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(g.m[b], g.m[a]), strings.Compare(a, b)) })
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s %d", k, g.m[k])
		}
		fmt.Fprintf(w, "  %s by reason: %s\n", g.name, strings.Join(parts, ", "))
	}
}

// limitedNow returns the rate limit holding st's deliveries back, "" when
// none did in the last few seconds of the broadcast's own updates (both
// times are the server's).
func limitedNow(st *api.Status) string {
	if st.LimitedBy == "" || st.LimitedAt.IsZero() || st.UpdatedAt.Sub(st.LimitedAt) > 5*time.Second {
		return ""
	}
	return st.LimitedBy
}

// waitBroadcast follows a broadcast, showing its progress on e.stderr,
// until it has ended. It succeeds only if every device was sent (or found
// gone); otherwise its error carries exit code 3 or 4 (outcome).
func waitBroadcast(ctx context.Context, e *env, c *client.Client, id string, poll time.Duration, start time.Time) error {
	bar := newProgressBar(e.stderr)
	var eta etaEstimate
	st, err := c.Wait(ctx, id, poll, func(st *api.Status) {
		n := st.Counters
		done := n.Done()
		total := max(n.Targeted, n.Planned, done, 1)
		desc := fmt.Sprintf("%s: %d sent, %d failed, %d expired", st.State, n.Sent, n.Failed+n.InvalidToken, n.Expired)
		if left := eta.update(time.Now(), done, total); left > 0 {
			desc += ", ETA " + left.Round(time.Second).String()
		}
		if by := limitedNow(st); by != "" {
			desc += "; held back by " + by
		}
		if len(st.PausedUntil) > 0 {
			desc += " (provider paused)"
		}
		for _, p := range []api.Platform{api.FCM, api.APNs} {
			if why, ok := st.ProviderDegraded[p]; ok {
				desc += fmt.Sprintf(" (%s refuses our credential: %s)", p, why)
			}
		}
		bar.Describe(desc)
		if bar.GetMax64() != total {
			bar.ChangeMax64(total)
		}
		_ = bar.Set64(done)
	})
	_ = bar.Exit()
	fmt.Fprintln(e.stderr)
	if err != nil {
		return err
	}
	n := st.Counters
	fmt.Fprintf(e.stdout, "broadcast %s %s after %s: %d sent, %d failed, %d expired, %d invalid tokens, %d cancelled of %d targeted\n",
		id, st.State, took(time.Since(start)), n.Sent, n.Failed, n.Expired, n.InvalidToken, n.Cancelled, n.Targeted)
	if top := st.Reasons.Top(3); top != "" {
		fmt.Fprintf(e.stdout, "  top reasons: %s\n", top)
	}
	return outcome(st)
}

// etaEstimate estimates the time left from the devices done since the
// first observation.
type etaEstimate struct {
	first     time.Time
	firstDone int64
}

// update records an observation and returns the estimated time left, zero
// while it cannot tell.
func (e *etaEstimate) update(now time.Time, done, total int64) time.Duration {
	if e.first.IsZero() {
		e.first, e.firstDone = now, done
		return 0
	}
	elapsed, progress := now.Sub(e.first), done-e.firstDone
	if progress <= 0 || elapsed <= 0 || done >= total {
		return 0
	}
	return time.Duration(float64(elapsed) * float64(total-done) / float64(progress))
}

// newProgressBar returns the progress bar of --wait on w.
func newProgressBar(w io.Writer) *progressbar.ProgressBar {
	return progressbar.NewOptions64(1,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("msg"),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetElapsedTime(true),
		// Without a spinner interval the bar starts no goroutine of its own.
		progressbar.OptionSetSpinnerChangeInterval(0),
		progressbar.OptionSetDescription("queued"),
	)
}

func runStatus(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "status", "ID [--json]")
	cf := addClientFlags(fs, e)
	raw := fs.Bool("json", false, "print the status as the API returns it")
	wait := fs.Bool("wait", false, "follow the broadcast with a progress bar until it ends; exit 0 only if every device was sent (3: some were not, 4: it was stopped)")
	poll := fs.Duration("poll", 500*time.Millisecond, "with --wait, how often to read the broadcast's status")
	id, err := parseBroadcastArgs(fs, args)
	if err != nil {
		return err
	}
	if *wait && *raw {
		return usagef("status: --wait and --json: choose one")
	}
	if *poll <= 0 {
		return usagef("status: --poll must be positive")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	if *wait {
		return waitBroadcast(ctx, e, c, id, *poll, start)
	}
	var st api.Status
	if printed, err := getJSON(ctx, e, c, api.BroadcastPath(id), nil, *raw, &st); printed || err != nil {
		return err
	}
	audience := st.Audience
	if st.Topic != "" {
		audience += " " + st.Topic
	}
	fmt.Fprintf(e.stdout, "broadcast %s: %s (read in %s)\n", st.ID, st.State, took(time.Since(start)))
	fmt.Fprintf(e.stdout, "  key %s, audience %s, ttl %s, created %s\n", st.KeyID, audience, st.TTL, st.CreatedAt.Format(time.RFC3339))
	n := st.Counters
	fmt.Fprintf(e.stdout, "  targeted %d  sent %d  failed %d  expired %d  invalid_token %d  cancelled %d  uncertain %d  throttled %d\n",
		n.Targeted, n.Sent, n.Failed, n.Expired, n.InvalidToken, n.Cancelled, n.Uncertain, n.Throttled)
	fmt.Fprintf(e.stdout, "  held %d  capped %d  skipped_duplicate %d  retries %d  rate_limited_retries %d  recalled %d  recall_failed %d\n",
		n.Held, n.Capped, n.SkippedDuplicate, n.Retries, n.RateLimitedRetries, n.Recalled, n.RecallFailed)
	if n.ProviderPaused > 0 {
		fmt.Fprintf(e.stdout, "  provider_paused %d\n", n.ProviderPaused)
	}
	for _, p := range []api.Platform{api.FCM, api.APNs} {
		if until, ok := st.PausedUntil[p]; ok {
			fmt.Fprintf(e.stdout, "  %s paused until %s: the provider refused provider-wide (429/503); its devices wait\n",
				p, until.Format(time.RFC3339))
		}
		if why, ok := st.ProviderDegraded[p]; ok {
			fmt.Fprintf(e.stdout, "  %s refuses the deployment's credential (%s): no %s device can be sent to until it is fixed; see the workers' error log\n",
				p, why, p)
		}
	}
	if by := limitedNow(&st); by != "" {
		fmt.Fprintf(e.stdout, "  held back by the rate limit of %s\n", by)
	}
	printReasons(e.stdout, st.Reasons)
	if st.ApprovalsRequired > 0 {
		fmt.Fprintf(e.stdout, "  approvals %d of %d%s\n", len(st.Approvals), st.ApprovalsRequired, approvalsLine(st.Approvals))
		if st.State == api.StateAwaitingApproval {
			fmt.Fprintf(e.stdout, "  awaiting approval until %s: pushgate approve %s (approve keys of other owners)\n",
				st.ApprovalExpiresAt.Format(time.RFC3339), st.ID)
		}
	}
	return nil
}

func runCancel(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "cancel", "ID [--reason R]")
	cf := addClientFlags(fs, e)
	reason := fs.String("reason", "", "why, for the audit log")
	id, err := parseBroadcastArgs(fs, args)
	if err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	st, err := c.Cancel(ctx, id, *reason)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "cancelled broadcast %s in %s: state %s\n", id, took(time.Since(start)), st.State)
	return nil
}

func runRecall(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "recall", "ID --mode replace [--title T] --body B | ID --mode remove")
	cf := addClientFlags(fs, e)
	mode := fs.String("mode", "", "replace (show a correction instead) or remove (delete it from the phones)")
	title := fs.String("title", "", "with --mode replace: the correction's title")
	body := fs.String("body", "", "with --mode replace: the correction's body (required)")
	id, err := parseBroadcastArgs(fs, args)
	if err != nil {
		return err
	}
	req := api.RecallRequest{Mode: *mode}
	switch *mode {
	case api.RecallReplace:
		if strings.TrimSpace(*body) == "" {
			return usagef("recall: --body is required with --mode replace")
		}
		req.Replacement = &api.MessageSpec{Title: *title, Body: *body}
	case api.RecallRemove:
		if *title != "" || *body != "" {
			return usagef("recall: --mode remove takes no --title or --body")
		}
	default:
		return usagef("recall: --mode must be replace or remove")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	st, pending, err := c.Recall(ctx, id, &req)
	if err != nil {
		return err
	}
	if pending != nil {
		printPending(e, pending)
		return nil
	}
	fmt.Fprintf(e.stdout, "recall (%s) of broadcast %s started in %s: state %s; pushgate status %s follows it\n",
		*mode, id, took(time.Since(start)), st.State, id)
	return nil
}
