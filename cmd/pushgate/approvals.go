package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pushgate/pushgate/api"
)

// printPending says that an admin action waits for a second person, and
// how to give it.
func printPending(e *env, p *api.PendingAction) {
	fmt.Fprintf(e.stdout, "%s of %s awaits %d approval(s) from another admin or approver until %s (action %s)\n",
		p.Kind, p.Target, p.ApprovalsRequired-len(p.Approvals), p.ExpiresAt.Format(time.RFC3339), p.ID)
	fmt.Fprintf(e.stdout, "  they run: pushgate approve %s\n", p.ID)
}

// approvalsLine lists approvals for a status line.
func approvalsLine(as []api.Approval) string {
	if len(as) == 0 {
		return ""
	}
	var parts []string
	for _, a := range as {
		parts = append(parts, fmt.Sprintf("%s (%s) at %s", a.KeyID, a.Owner, a.At.Format(time.RFC3339)))
	}
	return ": " + strings.Join(parts, ", ")
}

func runApprovals(ctx context.Context, e *env, args []string) error {
	return runVerb(ctx, e, "approvals", args, []verb{
		{"list", "", "what waits for approvals, with the content to judge", runApprovalsList},
	})
}

func runApprovalsList(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "approvals list", "")
	cf := addClientFlags(fs, e)
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("approvals list: unexpected argument %q", rest[0])
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	l, err := c.Approvals(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tWHAT\tBY\tAPPROVALS\tEXPIRES\tCONTENT")
	for _, b := range l.Broadcasts {
		audience := b.Audience
		if b.Topic != "" {
			audience += " " + b.Topic
		}
		fmt.Fprintf(tw, "%s\tbroadcast to %s\t%s\t%d of %d\t%s\t%s\n", b.ID, audience, b.KeyID, len(b.Approvals),
			b.ApprovalsRequired, b.ApprovalExpiresAt.Format(time.RFC3339), oneLine(b.Body))
	}
	for _, a := range l.Actions {
		fmt.Fprintf(tw, "%s\t%s %s\t%s\t%d of %d\t%s\t%s\n", a.ID, a.Kind, a.Target, a.KeyID, len(a.Approvals),
			a.ApprovalsRequired, a.ExpiresAt.Format(time.RFC3339), oneLine(a.Body))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%d broadcasts and %d actions await approval\n", len(l.Broadcasts), len(l.Actions))
	return nil
}

// oneLine shows a signed body on one line, shortened.
func oneLine(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

func runApprove(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "approve", "ID   (a broadcast id b... or an action id a...)")
	cf := addClientFlags(fs, e)
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 || !api.ValidBroadcastID(rest[0]) && !api.ValidActionID(rest[0]) {
		return usagef("approve: want one broadcast id (b...) or action id (a...)")
	}
	id := rest[0]
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	l, err := c.Approvals(ctx)
	if err != nil {
		return err
	}
	// The approval names the digest of the body shown here, so it counts
	// only for exactly this content.
	for _, b := range l.Broadcasts {
		if b.ID == id {
			fmt.Fprintf(e.stdout, "approving broadcast %s by %s: %s\n", id, b.KeyID, b.Body)
			st, err := c.Approve(ctx, id, api.Digest(b.Body))
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "broadcast %s: %s, approvals %d of %d%s\n", id, st.State, len(st.Approvals),
				st.ApprovalsRequired, approvalsLine(st.Approvals))
			return nil
		}
	}
	for _, a := range l.Actions {
		if a.ID == id {
			fmt.Fprintf(e.stdout, "approving %s of %s requested by %s: %s\n", a.Kind, a.Target, a.KeyID, a.Body)
			p, err := c.ApproveAction(ctx, id, api.Digest(a.Body))
			if err != nil {
				return err
			}
			what := "waits for more approvals"
			if p.Done {
				what = "carried out"
			}
			fmt.Fprintf(e.stdout, "action %s: approvals %d of %d; %s\n", id, len(p.Approvals), p.ApprovalsRequired, what)
			return nil
		}
	}
	return fmt.Errorf("nothing awaits approval as %s (it may be done, expired, or not visible to this key)", id)
}
