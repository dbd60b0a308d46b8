package main

// What operators look up: the broadcasts, the active kills and the
// keyring. Each prints an aligned table, or with --json one JSON object a
// line as the API returns it, for jq.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/client"
)

// maxBroadcastsListed bounds broadcasts list --limit: the pages it reads
// are api.MaxListLimit broadcasts each.
const maxBroadcastsListed = 10000

func runBroadcasts(ctx context.Context, e *env, args []string) error {
	return runVerb(ctx, e, "broadcasts", args, []verb{
		{"list", "[--state S] [--limit N] [--json]", "the newest broadcasts the key may read, with their state and counters", runBroadcastsList},
	})
}

func runBroadcastsList(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "broadcasts list", "[--state S] [--limit N] [--json]")
	cf := addClientFlags(fs, e)
	state := fs.String("state", "", "only broadcasts in this state: "+strings.Join(api.States(), ", "))
	limit := fs.Int("limit", 100, fmt.Sprintf("at most this many broadcasts, newest first, read page by page (at most %d)", maxBroadcastsListed))
	raw := fs.Bool("json", false, "print one JSON object a line, each broadcast as the API returns it")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(rest) > 0:
		return usagef("broadcasts list: unexpected argument %q", rest[0])
	case *state != "" && !api.ValidState(*state):
		return usagef("broadcasts list: --state %q: want one of %s", *state, strings.Join(api.States(), ", "))
	case *limit < 1 || *limit > maxBroadcastsListed:
		return usagef("broadcasts list: --limit must be 1 to %d", maxBroadcastsListed)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	listed, more, err := listBroadcastPages(ctx, c, *state, *limit, api.MaxListLimit)
	if err != nil {
		return err
	}
	if *raw {
		return printJSONLines(e, listed)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tCREATED\tKEY\tAUDIENCE\tTARGETED\tSENT\tFAILED\tEXPIRED\tOTHER\tTITLE")
	for _, b := range listed {
		var st api.Status
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Errorf("decode %s: %w", api.PathBroadcasts, err)
		}
		audience := st.Audience
		if st.Topic != "" {
			audience += " " + st.Topic
		}
		n := st.Counters
		other := n.InvalidToken + n.Cancelled + n.Uncertain + n.Throttled + n.Held + n.Capped
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", st.ID, st.State, st.CreatedAt.Format(time.RFC3339),
			st.KeyID, audience, n.Targeted, n.Sent, n.Failed, n.Expired, other, shorten(oneLine([]byte(st.Title)), 40))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	what := count(len(listed), "broadcast", "broadcasts")
	if *state != "" {
		what += " " + *state
	}
	fmt.Fprintf(e.stdout, "%s, read in %s\n", what, took(time.Since(start)))
	if more {
		fmt.Fprintf(e.stdout, "the newest %d are shown; there may be more (--limit)\n", len(listed))
	}
	return nil
}

// listBroadcastPages reads up to limit broadcasts, newest first, in pages
// of at most pageSize, following their cursors; more reports that the
// gateway holds further ones.
func listBroadcastPages(ctx context.Context, c *client.Client, state string, limit, pageSize int) (listed []json.RawMessage, more bool, err error) {
	after := ""
	for len(listed) < limit {
		q := url.Values{"limit": {strconv.Itoa(min(limit-len(listed), pageSize))}}
		if state != "" {
			q.Set("state", state)
		}
		if after != "" {
			q.Set("after", after)
		}
		var page struct {
			Broadcasts []json.RawMessage `json:"broadcasts"`
			Next       string            `json:"next"`
		}
		if _, err := c.Do(ctx, http.MethodGet, api.PathBroadcasts, q, nil, &page); err != nil {
			return nil, false, err
		}
		listed = append(listed, page.Broadcasts...)
		if page.Next == "" || len(page.Broadcasts) == 0 {
			return listed, false, nil
		}
		after = page.Next
	}
	return listed, true, nil
}

func runKills(ctx context.Context, e *env, args []string) error {
	return runVerb(ctx, e, "kills", args, []verb{
		{"list", "[--json]", "the active kills: scope, reason, by which key, since when", runKillsList},
	})
}

func runKillsList(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "kills list", "[--json]")
	cf := addClientFlags(fs, e)
	raw := fs.Bool("json", false, "print one JSON object a line, each kill as the API returns it")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("kills list: unexpected argument %q", rest[0])
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	var l struct {
		Kills []json.RawMessage `json:"kills"`
	}
	if _, err := c.Do(ctx, http.MethodGet, api.PathKill, nil, nil, &l); err != nil {
		return err
	}
	if *raw {
		return printJSONLines(e, l.Kills)
	}
	if len(l.Kills) == 0 {
		fmt.Fprintln(e.stdout, "no active kills")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCOPE\tREASON\tBY\tSINCE")
	for _, b := range l.Kills {
		var k api.Kill
		if err := json.Unmarshal(b, &k); err != nil {
			return fmt.Errorf("decode %s: %w", api.PathKill, err)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Scope, shorten(oneLine([]byte(k.Reason)), 60), k.By, k.At.Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s\n", count(len(l.Kills), "active kill", "active kills"))
	return nil
}

func runKeysList(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "keys list", "[--json]")
	cf := addClientFlags(fs, e)
	raw := fs.Bool("json", false, "print one JSON object a line, each key as the API returns it")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("keys list: unexpected argument %q", rest[0])
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	var l struct {
		Keys    []json.RawMessage `json:"keys"`
		Version int64             `json:"version"`
	}
	if _, err := c.Do(ctx, http.MethodGet, api.PathKeys, nil, nil, &l); err != nil {
		return err
	}
	if *raw {
		return printJSONLines(e, l.Keys)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tOWNER\tROLES\tTOPICS\tLIMITS\tPUBLIC KEY SHA-256\tREVOKED")
	revoked := 0
	for _, b := range l.Keys {
		var k api.KeyInfo
		if err := json.Unmarshal(b, &k); err != nil {
			return fmt.Errorf("decode %s: %w", api.PathKeys, err)
		}
		topics := strings.Join(k.Topics, ",")
		if topics == "" {
			topics = "-"
		}
		state := "no"
		if k.Revoked {
			revoked++
			state = "REVOKED " + k.RevokedAt.Format(time.RFC3339) + " by " + k.RevokedBy
			if k.RevokedReason != "" {
				state += ": " + shorten(oneLine([]byte(k.RevokedReason)), 60)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Owner, strings.Join(k.Roles, ","), topics, keyLimits(&k),
			k.PublicKeySHA256[:min(16, len(k.PublicKeySHA256))], state)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s, %d revoked (control log of %s)\n", count(len(l.Keys), "key", "keys"), revoked, count(int(l.Version), "entry", "entries"))
	return nil
}

// keyLimits lists a key's limits for the keys table; "-" when it has none.
func keyLimits(k *api.KeyInfo) string {
	var parts []string
	add := func(name string, n int) {
		if n > 0 {
			parts = append(parts, name+"="+strconv.Itoa(n))
		}
	}
	add("max_audience", k.MaxAudience)
	if k.Reach != "" {
		parts = append(parts, "reach="+k.Reach)
	}
	if k.Rate != "" {
		parts = append(parts, "rate="+k.Rate)
	}
	add("approval_above", k.ApprovalAbove)
	add("max_devices", k.MaxDevices)
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

// printJSONLines prints each object compacted on a line of its own.
func printJSONLines(e *env, objects []json.RawMessage) error {
	for _, o := range objects {
		var b bytes.Buffer
		if err := json.Compact(&b, o); err != nil {
			return fmt.Errorf("compact answer: %w", err)
		}
		if _, err := fmt.Fprintln(e.stdout, b.String()); err != nil {
			return err
		}
	}
	return nil
}

// count says "1 key" or "2 keys": n with one or many.
func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// shorten cuts s to at most n characters, marking the cut.
func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-3]) + "..."
}
