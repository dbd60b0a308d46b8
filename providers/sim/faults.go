package sim

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"
)

// Outcome is what a provider answers for one device. Each outcome maps to
// one FCM error code and one APNs status and reason (see the table on each
// constant), so the same fault plan drives both simulators.
type Outcome string

// The outcomes a fault can produce.
const (
	// OutcomeDeliver accepts the message and delivers it. For a token the
	// simulator does not know, it first creates the phone.
	OutcomeDeliver Outcome = "deliver"
	// OutcomeUnregistered: FCM 404 UNREGISTERED; APNs 410 Unregistered.
	OutcomeUnregistered Outcome = "unregistered"
	// OutcomeExpiredToken: FCM 404 UNREGISTERED; APNs 410 ExpiredToken.
	OutcomeExpiredToken Outcome = "expired_token"
	// OutcomeBadToken: FCM 400 INVALID_ARGUMENT; APNs 400 BadDeviceToken.
	OutcomeBadToken Outcome = "bad_token"
	// OutcomeMismatch: FCM 403 SENDER_ID_MISMATCH; APNs 400
	// DeviceTokenNotForTopic.
	OutcomeMismatch Outcome = "mismatch"
	// OutcomeQuota: FCM 429 QUOTA_EXCEEDED; APNs 429 TooManyRequests.
	OutcomeQuota Outcome = "quota"
	// OutcomeUnavailable: FCM 503 UNAVAILABLE; APNs 503 ServiceUnavailable.
	OutcomeUnavailable Outcome = "unavailable"
	// OutcomeShutdown: FCM 503 UNAVAILABLE; APNs 503 Shutdown.
	OutcomeShutdown Outcome = "shutdown"
	// OutcomeInternal: FCM 500 INTERNAL; APNs 500 InternalServerError.
	OutcomeInternal Outcome = "internal"
	// OutcomeThirdPartyAuth: FCM 401 THIRD_PARTY_AUTH_ERROR; APNs 403
	// Forbidden.
	OutcomeThirdPartyAuth Outcome = "third_party_auth"
	// OutcomeCredential refuses the sender's own credential, not the
	// device: APNs 429 TooManyProviderTokenUpdates; FCM 401
	// UNAUTHENTICATED (the OAuth2 access token refused, no FcmError).
	OutcomeCredential Outcome = "credential"
	// OutcomeDrop closes the TCP connection without answering, as a
	// network failure would; every request in flight on it fails.
	OutcomeDrop Outcome = "drop"
)

// valid reports whether o is one of the outcomes above.
func (o Outcome) valid() bool {
	switch o {
	case OutcomeDeliver, OutcomeUnregistered, OutcomeExpiredToken, OutcomeBadToken,
		OutcomeMismatch, OutcomeQuota, OutcomeUnavailable, OutcomeShutdown,
		OutcomeInternal, OutcomeThirdPartyAuth, OutcomeCredential, OutcomeDrop:
		return true
	}
	return false
}

// retryable reports whether the outcome is a transient provider failure,
// the kind that carries Retry-After.
func (o Outcome) retryable() bool {
	return o == OutcomeQuota || o == OutcomeUnavailable || o == OutcomeShutdown
}

// DefaultPrefixes returns the token prefixes a simulator honours when
// Faults.Prefixes is nil, so that a test can make a failing device by
// naming it, without registering anything:
//
//	unreg-     unregistered       expired-   expired_token
//	badtoken-  bad_token          mismatch-  mismatch
//	quota-     quota              unavail-   unavailable
//	shutdown-  shutdown           internal-  internal
//	3pauth-    third_party_auth   drop-      drop
//	cred-      credential         auto-      deliver (the phone is created on first use)
func DefaultPrefixes() map[string]Outcome {
	return map[string]Outcome{
		"unreg-":    OutcomeUnregistered,
		"expired-":  OutcomeExpiredToken,
		"badtoken-": OutcomeBadToken,
		"mismatch-": OutcomeMismatch,
		"quota-":    OutcomeQuota,
		"unavail-":  OutcomeUnavailable,
		"shutdown-": OutcomeShutdown,
		"internal-": OutcomeInternal,
		"3pauth-":   OutcomeThirdPartyAuth,
		"cred-":     OutcomeCredential,
		"drop-":     OutcomeDrop,
		"auto-":     OutcomeDeliver,
	}
}

// Faults is the fault plan of both simulators. It can be replaced while
// they run (Sim.SetFaults, PUT /sim/faults). The zero value means: default
// prefixes, unknown tokens unregistered, no latency, no random errors.
//
// A request that passed authentication and validation is decided in this
// order: a matching token prefix; an unknown token (UnknownToken); the
// first FailFirst requests of a phone (FailOutcome); a random error
// (ErrorRate, ErrorOutcome); otherwise delivery.
type Faults struct {
	// Prefixes maps a token prefix to the outcome of every request for a
	// token with that prefix; the longest matching prefix wins. Nil means
	// DefaultPrefixes; an empty map disables prefixes.
	Prefixes map[string]Outcome
	// UnknownToken is the outcome for a well-formed token that is not a
	// registered phone. Empty means OutcomeUnregistered, as a real
	// provider answers for a token it never issued. OutcomeDeliver
	// creates the phone instead.
	UnknownToken Outcome

	// ErrorRate is the probability, from 0 to 1, that a request which
	// would be delivered fails with ErrorOutcome instead. Draws come from
	// a generator seeded with Seed, one per such request, so a run is
	// reproducible given the order of requests.
	ErrorRate float64
	// ErrorOutcome is the outcome of a random error; empty means
	// OutcomeUnavailable.
	ErrorOutcome Outcome
	// Seed seeds the error-rate generator.
	Seed int64

	// FailFirst makes the first FailFirst requests for each phone fail
	// with FailOutcome; later ones proceed. It models a transient failure
	// that a retry overcomes.
	FailFirst int
	// FailOutcome is the outcome of those failures; empty means
	// OutcomeUnavailable.
	FailOutcome Outcome

	// RetryAfter, in seconds, is sent as Retry-After on every 429 and 503
	// answer when positive. When zero, only the FCM quota answers carry
	// one (the seconds left in the quota minute, or in the outage).
	RetryAfter int

	// QuotaOutage, when positive, refuses the whole FCM project for that
	// long, as FCM does once a project's quota is spent: every message
	// request in the window is answered 429 QUOTA_EXCEEDED, whatever its
	// token. The window opens at the first message request after the plan
	// is installed (Sim.QuotaOutage reports it). Each refusal carries
	// Retry-After: RetryAfter when set, else the whole seconds left in the
	// window (at least 1), and is recorded in the phone's Attempts.
	QuotaOutage time.Duration

	// Latency is added to every provider request before it is answered,
	// plus a uniformly random extra of up to Jitter.
	Latency time.Duration
	Jitter  time.Duration

	// DropEvery closes the connection of every DropEvery-th request of a
	// simulator without answering it.
	DropEvery int
	// GoAwayEvery answers every GoAwayEvery-th request of a simulator and
	// then shuts its connection down gracefully (HTTP/2 GOAWAY), so
	// clients must open a new one.
	GoAwayEvery int
}

// faultsJSON is the wire form of Faults: durations as Go duration strings
// ("5ms") so that people can write them by hand.
type faultsJSON struct {
	Prefixes     map[string]Outcome `json:"prefixes,omitempty"`
	UnknownToken Outcome            `json:"unknown_token,omitempty"`
	ErrorRate    float64            `json:"error_rate,omitempty"`
	ErrorOutcome Outcome            `json:"error_outcome,omitempty"`
	Seed         int64              `json:"seed,omitempty"`
	FailFirst    int                `json:"fail_first,omitempty"`
	FailOutcome  Outcome            `json:"fail_outcome,omitempty"`
	RetryAfter   int                `json:"retry_after,omitempty"`
	Latency      string             `json:"latency,omitempty"`
	Jitter       string             `json:"jitter,omitempty"`
	DropEvery    int                `json:"drop_every,omitempty"`
	GoAwayEvery  int                `json:"goaway_every,omitempty"`
	QuotaOutage  string             `json:"quota_outage,omitempty"`
}

// MarshalJSON encodes f with durations as strings such as "5ms".
func (f Faults) MarshalJSON() ([]byte, error) {
	j := faultsJSON{
		Prefixes: f.Prefixes, UnknownToken: f.UnknownToken,
		ErrorRate: f.ErrorRate, ErrorOutcome: f.ErrorOutcome, Seed: f.Seed,
		FailFirst: f.FailFirst, FailOutcome: f.FailOutcome, RetryAfter: f.RetryAfter,
		DropEvery: f.DropEvery, GoAwayEvery: f.GoAwayEvery,
	}
	if f.Latency != 0 {
		j.Latency = f.Latency.String()
	}
	if f.Jitter != 0 {
		j.Jitter = f.Jitter.String()
	}
	if f.QuotaOutage != 0 {
		j.QuotaOutage = f.QuotaOutage.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes the form MarshalJSON writes and refuses unknown
// fields, so that a misspelt fault is an error rather than silently off.
func (f *Faults) UnmarshalJSON(b []byte) error {
	var j faultsJSON
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return err
	}
	out := Faults{
		Prefixes: j.Prefixes, UnknownToken: j.UnknownToken,
		ErrorRate: j.ErrorRate, ErrorOutcome: j.ErrorOutcome, Seed: j.Seed,
		FailFirst: j.FailFirst, FailOutcome: j.FailOutcome, RetryAfter: j.RetryAfter,
		DropEvery: j.DropEvery, GoAwayEvery: j.GoAwayEvery,
	}
	var err error
	if j.Latency != "" {
		if out.Latency, err = time.ParseDuration(j.Latency); err != nil {
			return fmt.Errorf("latency: %w", err)
		}
	}
	if j.Jitter != "" {
		if out.Jitter, err = time.ParseDuration(j.Jitter); err != nil {
			return fmt.Errorf("jitter: %w", err)
		}
	}
	if j.QuotaOutage != "" {
		if out.QuotaOutage, err = time.ParseDuration(j.QuotaOutage); err != nil {
			return fmt.Errorf("quota_outage: %w", err)
		}
	}
	*f = out
	return nil
}

// validate reports the first thing wrong with f.
func (f *Faults) validate() error {
	for p, o := range f.Prefixes {
		if p == "" {
			return fmt.Errorf("faults: empty token prefix")
		}
		if !o.valid() {
			return fmt.Errorf("faults: prefix %q: unknown outcome %q", p, o)
		}
	}
	for name, o := range map[string]Outcome{"unknown_token": f.UnknownToken, "error_outcome": f.ErrorOutcome, "fail_outcome": f.FailOutcome} {
		if o != "" && !o.valid() {
			return fmt.Errorf("faults: %s: unknown outcome %q", name, o)
		}
	}
	switch {
	case f.ErrorRate < 0 || f.ErrorRate > 1:
		return fmt.Errorf("faults: error_rate %v is outside [0, 1]", f.ErrorRate)
	case f.FailFirst < 0, f.RetryAfter < 0, f.DropEvery < 0, f.GoAwayEvery < 0:
		return fmt.Errorf("faults: counts must not be negative")
	case f.Latency < 0 || f.Jitter < 0 || f.QuotaOutage < 0:
		return fmt.Errorf("faults: latency, jitter and quota_outage must not be negative")
	}
	return nil
}

// faultPlan is a validated Faults ready for the request path: prefixes
// sorted longest first, defaults filled in, and the seeded generator.
type faultPlan struct {
	Faults
	prefixes []prefixRule

	mu  sync.Mutex // guards rng and outageStart
	rng *rand.Rand
	// outageStart is when the QuotaOutage window opened; zero until the
	// first message request.
	outageStart time.Time
}

type prefixRule struct {
	prefix  string
	outcome Outcome
}

func newFaultPlan(f Faults) (*faultPlan, error) {
	if err := f.validate(); err != nil {
		return nil, err
	}
	p := &faultPlan{Faults: f}
	prefixes := f.Prefixes
	if prefixes == nil {
		prefixes = DefaultPrefixes()
	}
	for pre, o := range prefixes {
		p.prefixes = append(p.prefixes, prefixRule{pre, o})
	}
	sort.Slice(p.prefixes, func(i, j int) bool {
		a, b := p.prefixes[i].prefix, p.prefixes[j].prefix
		if len(a) != len(b) {
			return len(a) > len(b)
		}
		return a < b
	})
	if p.UnknownToken == "" {
		p.UnknownToken = OutcomeUnregistered
	}
	if p.ErrorOutcome == "" {
		p.ErrorOutcome = OutcomeUnavailable
	}
	if p.FailOutcome == "" {
		p.FailOutcome = OutcomeUnavailable
	}
	p.rng = rand.New(rand.NewPCG(uint64(f.Seed), 0x9e3779b97f4a7c15))
	return p, nil
}

// prefixOutcome returns the outcome of the longest prefix of token, if any.
func (p *faultPlan) prefixOutcome(token string) (Outcome, bool) {
	for _, r := range p.prefixes {
		if strings.HasPrefix(token, r.prefix) {
			return r.outcome, true
		}
	}
	return "", false
}

// randomError draws from the seeded generator and reports whether this
// request fails.
func (p *faultPlan) randomError() bool {
	if p.ErrorRate <= 0 {
		return false
	}
	p.mu.Lock()
	x := p.rng.Float64()
	p.mu.Unlock()
	return x < p.ErrorRate
}

// latency returns how long to hold this request.
func (p *faultPlan) latency() time.Duration {
	d := p.Latency
	if p.Jitter > 0 {
		d += rand.N(p.Jitter + 1)
	}
	return d
}

// retryAfter returns the Retry-After seconds for a retryable outcome, or 0.
func (p *faultPlan) retryAfter(o Outcome) int {
	if o.retryable() {
		return p.RetryAfter
	}
	return 0
}

// outage reports whether a message request arriving at now falls in the
// quota outage, opening the window on the first one, and the whole
// seconds left in it (at least 1).
func (p *faultPlan) outage(now time.Time) (refused bool, secondsLeft int) {
	if p.QuotaOutage <= 0 {
		return false, 0
	}
	p.mu.Lock()
	if p.outageStart.IsZero() {
		p.outageStart = now
	}
	end := p.outageStart.Add(p.QuotaOutage)
	p.mu.Unlock()
	left := end.Sub(now)
	if left <= 0 {
		return false, 0
	}
	return true, max(1, int((left+time.Second-1)/time.Second))
}

// outageWindow returns the quota outage's window, zero until it opened.
func (p *faultPlan) outageWindow() (start, end time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.outageStart.IsZero() {
		return time.Time{}, time.Time{}
	}
	return p.outageStart, p.outageStart.Add(p.QuotaOutage)
}
