package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/pushgate/pushgate/api"
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
