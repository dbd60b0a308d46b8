package api

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Broadcast states.
const (
	// StateAwaitingApproval: the broadcast waits for approvals from other
	// owners before anything is planned (see Approval).
	StateAwaitingApproval = "awaiting_approval"
	// StateExpired: its approval window passed without enough approvals;
	// nothing was sent.
	StateExpired   = "expired"
	StateQueued    = "queued"
	StateSending   = "sending"
	StateCompleted = "completed"
	StateCancelled = "cancelled"
	StateKilled    = "killed"
	StateRecalling = "recalling"
	StateRecalled  = "recalled"
)

// States lists every broadcast state, in the order a broadcast can pass
// through them.
func States() []string {
	return []string{StateAwaitingApproval, StateExpired, StateQueued, StateSending, StateCompleted, StateCancelled,
		StateKilled, StateRecalling, StateRecalled}
}

// ValidState reports whether s is a broadcast state.
func ValidState(s string) bool {
	for _, st := range States() {
		if s == st {
			return true
		}
	}
	return false
}

// Counters are a broadcast's delivery figures. When a broadcast ends,
// Targeted = Sent + Failed + Expired + InvalidToken + Cancelled +
// Uncertain + Throttled + Held + Capped.
type Counters struct {
	Targeted int64 `json:"targeted"`
	Planned  int64 `json:"planned"`
	Sent     int64 `json:"sent"`
	// Failed counts devices the provider refused for good (a permanent
	// error).
	Failed int64 `json:"failed"`
	// Expired counts devices not reached before the broadcast expired:
	// their sends failed transiently until no retry was due before the
	// expiry (or limits.retry_for), or their batch ran after it.
	Expired          int64 `json:"expired"`
	InvalidToken     int64 `json:"invalid_token"`
	SkippedDuplicate int64 `json:"skipped_duplicate"`
	// RateLimitedRetries counts devices a rate limit (the provider's or
	// the sender key's) held back at least once; each counts once however
	// often it was deferred.
	RateLimitedRetries int64 `json:"rate_limited_retries"`
	// Retries counts sends retried after a transient refusal (a device
	// retried twice counts twice).
	Retries int64 `json:"retries"`
	// Cancelled counts devices a kill stopped before their call left.
	Cancelled int64 `json:"cancelled"`
	// Uncertain counts devices whose outcome is unknown: a kill cut their
	// call short in flight, or a batch run again after a crash found them
	// claimed by an earlier run that recorded nothing. They may show the
	// message, so a recall includes them.
	Uncertain int64 `json:"uncertain"`
	Throttled int64 `json:"throttled"`
	// Held counts devices not sent because the sender key's reach budget
	// was spent.
	Held int64 `json:"held"`
	// Capped counts devices not sent because the broadcast had reached
	// its key's max_audience, or the audience a broadcast without
	// approvals may reach.
	Capped       int64 `json:"capped"`
	Recalled     int64 `json:"recalled"`
	RecallFailed int64 `json:"recall_failed"`
	// ProviderPaused counts devices deferred untried because their
	// provider was paused after a provider-wide 429 or 503 (a device
	// deferred twice counts twice); it is not an outcome.
	ProviderPaused int64 `json:"provider_paused"`
}

// Done is how many targeted devices have a final outcome.
func (c *Counters) Done() int64 {
	return c.Sent + c.Failed + c.Expired + c.InvalidToken + c.Cancelled + c.Uncertain + c.Throttled + c.Held + c.Capped
}

// Reasons counts a broadcast's devices by what their provider answered,
// under keys "<platform>/<code>" such as "apns/Unregistered" or
// "fcm/QUOTA_EXCEEDED" (codes are bounded: Apple's and FCM's reasons,
// google.rpc statuses, "HTTP <status>", transport, oauth2_refused,
// oauth2_unavailable, sdk, message_refused, empty_token, other). Failed,
// InvalidToken and Expired count devices by the answer that ended them;
// Retried counts retries by the refusal that caused them.
type Reasons struct {
	Failed       map[string]int64 `json:"failed,omitempty"`
	InvalidToken map[string]int64 `json:"invalid_token,omitempty"`
	Expired      map[string]int64 `json:"expired,omitempty"`
	Retried      map[string]int64 `json:"retried,omitempty"`
}

// Top lists the n reasons that counted the most devices, the reasons that
// ended devices (failed, expired, invalid_token) before those of retries,
// each kind most first: "apns/TooManyProviderTokenUpdates expired=30,
// fcm/UNAUTHENTICATED retried=60". It is "" when nothing was counted.
func (r *Reasons) Top(n int) string {
	if r.Empty() || n <= 0 {
		return ""
	}
	type entry struct {
		what  string
		final bool
		count int64
	}
	var all []entry
	for _, g := range []struct {
		name  string
		final bool
		m     map[string]int64
	}{{"failed", true, r.Failed}, {"expired", true, r.Expired}, {"invalid_token", true, r.InvalidToken}, {"retried", false, r.Retried}} {
		for reason, c := range g.m {
			all = append(all, entry{reason + " " + g.name + "=" + strconv.FormatInt(c, 10), g.final, c})
		}
	}
	slices.SortFunc(all, func(a, b entry) int {
		if a.final != b.final {
			if a.final {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(b.count, a.count), strings.Compare(a.what, b.what))
	})
	parts := make([]string, 0, n)
	for _, e := range all[:min(n, len(all))] {
		parts = append(parts, e.what)
	}
	return strings.Join(parts, ", ")
}

// Empty reports whether no reason was counted.
func (r *Reasons) Empty() bool {
	return r == nil || len(r.Failed)+len(r.InvalidToken)+len(r.Expired)+len(r.Retried) == 0
}

// Event is one entry of a broadcast's timeline.
type Event struct {
	At     int64  `json:"at"` // Unix milliseconds
	Event  string `json:"event"`
	Detail string `json:"detail,omitempty"`
}

// Status answers GET /v1/broadcasts/{id}: what pushgate knows of a
// broadcast. It describes; it never decides what reaches a phone.
type Status struct {
	ID         string    `json:"id"`
	State      string    `json:"state"`
	KeyID      string    `json:"key_id"`
	Audience   string    `json:"audience"`
	Topic      string    `json:"topic,omitempty"`
	Title      string    `json:"title,omitempty"`
	TTL        string    `json:"ttl"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	KilledBy   string    `json:"killed_by,omitempty"`
	RecallMode string    `json:"recall_mode,omitempty"`
	Counters   Counters  `json:"counters"`
	// Approvals are the approvals the API accepted, for a broadcast that
	// needed ApprovalsRequired of them; workers verify each again.
	Approvals         []Approval `json:"approvals,omitempty"`
	ApprovalsRequired int        `json:"approvals_required,omitempty"`
	// ApprovalExpiresAt is when a broadcast awaiting approval expires.
	ApprovalExpiresAt time.Time `json:"approval_expires_at,omitzero"`
	// PausedUntil is, per platform whose provider is paused while this
	// broadcast has devices waiting for it, when the pause ends; absent
	// when no pause holds the broadcast back.
	PausedUntil map[Platform]time.Time `json:"paused_until,omitempty"`
	// ProviderDegraded names, per platform, the reason a provider refuses
	// the deployment's own credential (its provider token, certificate,
	// OAuth2 token or service account), as some worker reported it in the
	// last two minutes: no device of that platform can be sent to until an
	// operator fixes it. Only in the status of one broadcast still
	// sending; absent when every provider accepts the credential.
	ProviderDegraded map[Platform]string `json:"provider_degraded,omitempty"`
	// Reasons says why devices failed, expired, were found invalid or
	// were retried; absent when nothing was refused.
	Reasons *Reasons `json:"reasons,omitempty"`
	// LimitedBy names the rate limit that last held deliveries back
	// ("sender key k1 at 20000/1m0s", "provider apns at 50000/1s"), and
	// LimitedAt when; absent when no limit did.
	LimitedBy string    `json:"limited_by,omitempty"`
	LimitedAt time.Time `json:"limited_at,omitzero"`
	Timeline  []Event   `json:"timeline,omitempty"`
}

// Terminal reports whether the broadcast will send nothing more (recall
// aside).
func (s *Status) Terminal() bool {
	switch s.State {
	case StateCompleted, StateCancelled, StateKilled, StateRecalling, StateRecalled, StateExpired:
		return true
	}
	return false
}

// Finished reports whether the broadcast has ended and any recall of it is
// done: nothing more will be sent for it.
func (s *Status) Finished() bool {
	return !s.FinishedAt.IsZero() && s.State != StateRecalling || s.State == StateExpired
}

// ListPage answers GET /v1/broadcasts: one page of broadcasts, newest
// first. Next, when not empty, is the cursor of the following page.
type ListPage struct {
	Broadcasts []*Status `json:"broadcasts"`
	Next       string    `json:"next,omitempty"`
}

// List limits of GET /v1/broadcasts.
const (
	DefaultListLimit = 50
	MaxListLimit     = 500
)
