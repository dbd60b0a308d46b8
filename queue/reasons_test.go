package queue

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/providers"
)

// TestStatusCountsReasons sends to devices that FCM refuses in different
// ways: the status counts failures, invalid tokens, expiries and retries
// by the provider's reason, and a reason FCM never documented is counted
// as other, not under whatever the answer said.
func TestStatusCountsReasons(t *testing.T) {
	// Retries end a minute after signing: a device asked to wait two
	// minutes expires then, whatever the machine's load.
	f := newFixture(t, func(p *Policy) { p.RetryBase = 20 * time.Millisecond; p.RetryFor = time.Minute })
	f.register("citizens", 30, 0)
	f.fcm.script = func(tok string, call int) providers.Result {
		switch tok[len(tok)-1] {
		case '1':
			return providers.Result{Class: providers.Permanent, Reason: "THIRD_PARTY_AUTH_ERROR", Credential: true}
		case '2':
			return providers.Result{Class: providers.InvalidToken, Reason: "UNREGISTERED"}
		case '3':
			if call == 1 {
				return providers.Result{Class: providers.Retryable, Reason: "QUOTA_EXCEEDED"}
			}
		case '4':
			// Retried once with the others, then asked to wait past the
			// retry window.
			r := providers.Result{Class: providers.Retryable, Reason: "UNAVAILABLE"}
			if call > 1 {
				r.RetryAfter = 2 * time.Minute
			}
			return r
		case '5':
			if call == 1 {
				return providers.Result{Class: providers.Retryable, Reason: "transport: connection reset by peer"}
			}
		case '6':
			return providers.Result{Class: providers.Permanent, Reason: "A_REASON_NOBODY_DOCUMENTED " + strings.Repeat("x", 100)}
		}
		return providers.Result{Class: providers.Sent}
	}
	f.startWorker("w1")
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "reasons"))
	done := f.waitState(st.ID, api.StateCompleted)
	c := done.Counters
	if c.Sent != 18 || c.Failed != 6 || c.InvalidToken != 3 || c.Expired != 3 {
		t.Errorf("counters = %+v, want 18 sent, 6 failed, 3 invalid, 3 expired", c)
	}
	r := done.Reasons
	if r == nil {
		t.Fatal("no reasons in the status")
	}
	if want := map[string]int64{"fcm/THIRD_PARTY_AUTH_ERROR": 3, "fcm/other": 3}; !maps.Equal(r.Failed, want) {
		t.Errorf("failed by reason = %v, want %v", r.Failed, want)
	}
	if want := map[string]int64{"fcm/UNREGISTERED": 3}; !maps.Equal(r.InvalidToken, want) {
		t.Errorf("invalid tokens by reason = %v, want %v", r.InvalidToken, want)
	}
	if want := map[string]int64{"fcm/UNAVAILABLE": 3}; !maps.Equal(r.Expired, want) {
		t.Errorf("expired by reason = %v, want %v", r.Expired, want)
	}
	if want := map[string]int64{"fcm/QUOTA_EXCEEDED": 3, "fcm/transport": 3, "fcm/UNAVAILABLE": 3}; !maps.Equal(r.Retried, want) || c.Retries != 9 {
		t.Errorf("retries by reason = %v (%d retries), want %v", r.Retried, c.Retries, want)
	}
	// 9 of 30 devices failed or expired: the worker's summary line of the
	// broadcast is a warning that names the top reasons.
	// The worker writes the line after the state it reports: wait for it.
	summary := func() []string {
		return f.lines.matching("level=WARN", "broadcast ended with 30.0% of its devices failed or expired",
			"broadcast_id="+st.ID, "state=completed", "sent=18", "failed=6", "expired=3", "duration=",
			`top_reasons="fcm/THIRD_PARTY_AUTH_ERROR failed=3, fcm/UNAVAILABLE expired=3, fcm/UNREGISTERED invalid_token=3"`)
	}
	waitFor(t, "the broadcast's summary line", func() bool { return len(summary()) > 0 })
	if lines := summary(); len(lines) != 1 {
		t.Errorf("%d summary warnings, want 1: %q", len(lines), f.lines.matching("broadcast ended"))
	}
}

// TestRateLimitedDevicesCountOnce sends 100 devices with a key limited to
// 20 a second: most are deferred many times, but rate_limited_retries
// counts devices held back, not deferrals, and the status names the
// limit that held them.
func TestRateLimitedDevicesCountOnce(t *testing.T) {
	f := newFixture(t, nil)
	f.register("citizens", 100, 0)
	f.startWorker("w1")
	sub, err := f.submit(f.signers["slow"], broadcastBody(`{"topic":"citizens"}`, "slow"))
	if err != nil {
		t.Fatal(err)
	}
	done := f.waitState(sub.Status.ID, api.StateCompleted)
	c := done.Counters
	if c.Sent != 100 {
		t.Fatalf("counters = %+v, want 100 sent", c)
	}
	// The first call takes the key's burst of 20; every other device was
	// deferred at least once, and counts once.
	if c.RateLimitedRetries < 1 || c.RateLimitedRetries > 80 {
		t.Errorf("rate_limited_retries = %d, want 1 to 80 (devices held back, each once)", c.RateLimitedRetries)
	}
	if want := "sender key slow at 20/1s"; done.LimitedBy != want || done.LimitedAt.IsZero() {
		t.Errorf("limited_by %q at %v, want %q with a time", done.LimitedBy, done.LimitedAt, want)
	}
}
