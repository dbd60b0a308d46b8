package main

// Following a broadcast to its end: --wait's progress, its ETA, the limit
// holding deliveries back, and the exit code that tells how it ended.

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/client"
	"github.com/schollz/progressbar/v3"
)

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
	p := newFollowProgress(e)
	var eta etaEstimate
	st, err := c.Wait(ctx, id, poll, func(st *api.Status) {
		n := st.Counters
		done := n.Done()
		total := max(n.Targeted, n.Planned, done, 1)
		desc := fmt.Sprintf("%s: %d sent, %d failed, %d expired", st.State, n.Sent, n.Failed+n.InvalidToken, n.Expired)
		if left := eta.update(time.Now(), done, total); left > 0 {
			desc += ", ETA " + left.Round(time.Second).String()
		}
		// what is the state and whatever holds the broadcast back: a
		// plain line is written at once when it changes.
		what := st.State
		if by := limitedNow(st); by != "" {
			desc += "; held back by " + by
			what += "; " + by
		}
		if len(st.PausedUntil) > 0 {
			desc += " (provider paused)"
			what += "; paused"
		}
		for _, p := range []api.Platform{api.FCM, api.APNs} {
			if why, ok := st.ProviderDegraded[p]; ok {
				desc += fmt.Sprintf(" (%s refuses our credential: %s)", p, why)
				what += "; degraded " + string(p)
			}
		}
		p.update(time.Now(), what, desc, done, total)
	})
	p.finish()
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

// followProgress shows a followed broadcast's progress on e.stderr: a bar
// on a terminal; elsewhere (a pipe, a file) a plain line, without
// carriage returns or escape sequences, at once when the state or what
// holds the broadcast back changes, and at most every e.plainEvery in
// between.
type followProgress struct {
	bar *progressbar.ProgressBar // nil off a terminal

	w        io.Writer
	every    time.Duration
	lastWhat string
	lastAt   time.Time
}

func newFollowProgress(e *env) *followProgress {
	p := &followProgress{w: e.stderr, every: e.plainEvery}
	if e.stderrTerminal {
		p.bar = newProgressBar(e.stderr)
	}
	return p
}

// update shows that done of total devices are done, described by desc,
// at now; what is the state and whatever holds the broadcast back.
func (p *followProgress) update(now time.Time, what, desc string, done, total int64) {
	if p.bar != nil {
		p.bar.Describe(desc)
		if p.bar.GetMax64() != total {
			p.bar.ChangeMax64(total)
		}
		_ = p.bar.Set64(done)
		return
	}
	if p.lastAt.IsZero() || what != p.lastWhat || now.Sub(p.lastAt) >= p.every {
		fmt.Fprintf(p.w, "%s (%d of %d devices done)\n", desc, done, total)
		p.lastWhat, p.lastAt = what, now
	}
}

// finish ends the bar, so that what follows starts on a line of its own.
func (p *followProgress) finish() {
	if p.bar != nil {
		_ = p.bar.Exit()
		fmt.Fprintln(p.w)
	}
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

// newProgressBar returns the progress bar of --wait on w, a terminal.
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
