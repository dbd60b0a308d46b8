package main

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/controllog"
	"golang.org/x/mod/sumdb/note"
)

// describeKill says how far a kill got: durable, or acknowledged by which
// workers. It reports false when it waited and a worker did not answer.
func describeKill(k *api.KillResponse) (string, bool) {
	if !k.Waited || k.Ack == nil {
		return "durable; every worker applies it within a second", true
	}
	if k.Ack.Acknowledged {
		return fmt.Sprintf("acknowledged by %d workers", k.Ack.Workers), true
	}
	return fmt.Sprintf("NOT acknowledged by %d of %d workers: %s", len(k.Ack.Missing), k.Ack.Workers,
		strings.Join(k.Ack.Missing, ", ")), false
}

func runKill(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "kill", "--scope global|key:ID|broadcast:ID|topic:NAME --reason R [--wait]")
	cf := addClientFlags(fs, e)
	scope := fs.String("scope", "", "what to stop: global, key:ID, broadcast:ID or topic:NAME")
	reason := fs.String("reason", "", "why, for the audit log (required)")
	wait := fs.Bool("wait", false, "return only when every live worker has acknowledged the kill")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(rest) > 0:
		return usagef("kill: unexpected argument %q", rest[0])
	case strings.TrimSpace(*scope) == "":
		return usagef("kill: --scope is required")
	case strings.TrimSpace(*reason) == "":
		return usagef("kill: --reason is required")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	k, err := c.Kill(ctx, *scope, *reason, *wait)
	if err != nil {
		return err
	}
	what, ok := describeKill(k)
	fmt.Fprintf(e.stdout, "killed scope %s in %s: %s\n", *scope, took(time.Since(start)), what)
	if !ok {
		return fmt.Errorf("the kill is durable, but not every worker acknowledged it")
	}
	return nil
}

func runResume(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "resume", "--scope global|key:ID|topic:NAME [--reason R]")
	cf := addClientFlags(fs, e)
	scope := fs.String("scope", "", "the kill to lift: global, key:ID or topic:NAME")
	reason := fs.String("reason", "", "why, for the audit log")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(rest) > 0:
		return usagef("resume: unexpected argument %q", rest[0])
	case strings.TrimSpace(*scope) == "":
		return usagef("resume: --scope is required")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	r, pending, err := c.Resume(ctx, *scope, *reason)
	if err != nil {
		return err
	}
	if pending != nil {
		printPending(e, pending)
		return nil
	}
	fmt.Fprintf(e.stdout, "resumed scope %s in %s (control log entry %d)\n", *scope, took(time.Since(start)), r.Version-1)
	return nil
}

func runKeys(ctx context.Context, e *env, args []string) error {
	return runVerb(ctx, e, "keys", args, []verb{
		{"list", "[--json]", "the keyring: roles, topics, limits and budgets, public key fingerprints, and which keys are revoked, when, by whom", runKeysList},
		{"revoke", "ID [--reason R]", "revoke a key and kill its running broadcasts", runKeysRevoke},
	})
}

func runKeysRevoke(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "keys revoke", "ID [--reason R]")
	cf := addClientFlags(fs, e)
	reason := fs.String("reason", "", "why, for the audit log")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 || strings.TrimSpace(rest[0]) == "" {
		return usagef("keys revoke: want one key id")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	r, pending, err := c.Revoke(ctx, rest[0], *reason)
	if err != nil {
		return err
	}
	if pending != nil {
		printPending(e, pending)
		return nil
	}
	what, ok := describeKill(&r.Kill)
	fmt.Fprintf(e.stdout, "revoked key %s in %s; its running broadcasts are killed (%s)\n", rest[0], took(time.Since(start)), what)
	if !ok {
		return fmt.Errorf("the revocation is durable, but not every worker acknowledged it")
	}
	return nil
}

func runAudit(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 && args[0] == "verify" {
		return runAuditVerify(ctx, e, args[1:])
	}
	fs := newFlagSet(e, "audit", "[--limit N] [--json] [--log-key KEY] | audit verify FILE")
	cf := addClientFlags(fs, e)
	limit := fs.Int("limit", 50, "how many entries, newest first (at most 1000)")
	raw := fs.Bool("json", false, "print the entries as the API returns them")
	logKey := fs.String("log-key", e.getenv("PUSHGATE_CONTROL_LOG_PUBLIC_KEY"), "the control log's public key: check every entry's inclusion proof against the signed checkpoint (env PUSHGATE_CONTROL_LOG_PUBLIC_KEY)")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(rest) > 0:
		return usagef("audit: unexpected argument %q", rest[0])
	case *limit < 1 || *limit > api.MaxAuditLimit:
		return usagef("audit: --limit must be 1 to %d", api.MaxAuditLimit)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	var page api.AuditPage
	if printed, err := getJSON(ctx, e, c, api.PathAudit, url.Values{"limit": {strconv.Itoa(*limit)}}, *raw, &page); printed || err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tAT\tACTOR\tACTION\tTARGET\tREASON\tOUTCOME")
	for _, a := range page.Entries {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Index, a.At.Format(time.RFC3339), a.Actor, a.Action, a.Target, a.Reason, a.Outcome)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%d entries, read in %s\n", len(page.Entries), took(time.Since(start)))
	if *logKey == "" {
		fmt.Fprintln(e.stdout, "not verified: pass --log-key to check each entry against the log's signed checkpoint")
		return nil
	}
	v, err := note.NewVerifier(*logKey)
	if err != nil {
		return usagef("audit: --log-key: %v", err)
	}
	var cp *controllog.Checkpoint
	for _, a := range page.Entries {
		if cp, err = controllog.CheckInclusion([]byte(page.Checkpoint), v, a.Index, a.Entry, a.Proof); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
	}
	if cp != nil {
		fmt.Fprintf(e.stdout, "every entry is in the log of %d entries that %s signed at %s\n", cp.Size, cp.Origin, cp.Time.Format(time.RFC3339))
	}
	return nil
}
