package queue

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/providers/sim"
)

// These tests send through the real FCM and APNs SDK senders to the
// simulators, whose faults play a provider that fails transiently.

// simKeys are generated once per test binary: RSA key generation would
// dominate the tests' time if every simulator made its own.
var simKeys = sync.OnceValues(func() (*rsa.PrivateKey, *ecdsa.PrivateKey) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return rk, ek
})

// newSimSenders starts the simulators with faults and returns the real
// senders to them; both are closed at cleanup, after any worker started
// later.
func newSimSenders(t *testing.T, faults sim.Faults) (*sim.Sim, map[providers.Platform]Sender) {
	t.Helper()
	cfg := sim.Config{Topic: "org.pushgate.test", TeamID: "TEAMTEST01", KeyID: "KEYTEST001"}
	cfg.ServiceAccountKey, cfg.APNsKey = simKeys()
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("sim close: %v", err)
		}
	})
	if err := s.SetFaults(faults); err != nil {
		t.Fatal(err)
	}
	fcm, err := providers.NewFCMSender(context.Background(), providers.FCMConfig{
		Credentials: s.ServiceAccountJSON(), Endpoint: s.FCMEndpoint(), RootCAs: s.CertPool(), Concurrency: 32})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fcm.Close)
	tok, err := providers.NewAPNsToken(providers.APNsTokenConfig{Key: s.APNsKeyPEM(), KeyID: cfg.KeyID, TeamID: cfg.TeamID})
	if err != nil {
		t.Fatal(err)
	}
	apns, err := providers.NewAPNsSender(providers.APNsConfig{Token: tok, Topic: cfg.Topic, Host: s.APNsHost(),
		RootCAs: s.CertPool(), Concurrency: 32})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(apns.Close)
	return s, map[providers.Platform]Sender{providers.FCM: fcm, providers.APNs: apns}
}

// simDevices returns nFCM and nAPNs devices with tokens of the shapes the
// simulators accept; prefix (hexadecimal, for APNs) lets a fault plan
// single them out.
func simDevices(prefix string, nFCM, nAPNs int) []api.Device {
	var out []api.Device
	for i := range nFCM {
		out = append(out, api.Device{Platform: providers.FCM, Token: fmt.Sprintf("%sfcm-device-%032d", prefix, i)})
	}
	for i := range nAPNs {
		tok := fmt.Sprintf("%064x", i+1)
		out = append(out, api.Device{Platform: providers.APNs, Token: prefix + tok[len(prefix):]})
	}
	return out
}

// importDevices registers devs in topic.
func (f *fixture) importDevices(topic string, devs []api.Device) {
	f.t.Helper()
	in := make([]api.ImportDevice, len(devs))
	for i, d := range devs {
		in[i] = api.ImportDevice{Platform: string(d.Platform), Token: d.Token, Topics: []string{topic}}
	}
	if err := f.svc.Registry().Import(context.Background(), in); err != nil {
		f.t.Fatal(err)
	}
}

// simRequests counts the provider requests the simulators answered with
// status (0 for any), both platforms together.
func simRequests(s *sim.Sim, status int) int64 {
	var n int64
	for _, byStatus := range s.Stats().Requests {
		for code, c := range byStatus {
			if status == 0 || code == status {
				n += c
			}
		}
	}
	return n
}

// signedCreated reads the signature's created time from a broadcast's
// stored envelope: the start of its TTL.
func signedCreated(t *testing.T, f *fixture, id string) time.Time {
	t.Helper()
	return storedEnvelope(t, f, id).Created
}

func TestTransientErrorsAreRetriedUntilSent(t *testing.T) {
	// A provider that fails 30% of requests transiently, as an emergency
	// with overloaded providers may: every phone must still get the alert.
	const nFCM, nAPNs = 1200, 1200
	s, senders := newSimSenders(t, sim.Faults{Prefixes: map[string]sim.Outcome{}, UnknownToken: sim.OutcomeDeliver,
		ErrorRate: 0.3, Seed: 1})
	f := newFixture(t, func(p *Policy) { p.RetryBase, p.RetryMax = 10*time.Millisecond, 100*time.Millisecond })
	f.importDevices("citizens", simDevices("", nFCM, nAPNs))
	f.startWorkerWith("w1", f.newControl(false, ""), senders)

	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "banjir"))
	done := f.waitState(st.ID, api.StateCompleted)
	n := done.Counters
	t.Logf("%d phones, 30%% transient errors: %d sent, %d failed, %d expired, %d retries, %d provider requests",
		nFCM+nAPNs, n.Sent, n.Failed, n.Expired, n.Retries, simRequests(s, 0))
	if n.Sent != nFCM+nAPNs || n.Failed != 0 || n.Expired != 0 {
		t.Errorf("counters = %+v, want all %d sent, none failed or expired", n, nFCM+nAPNs)
	}
	refused := simRequests(s, http.StatusServiceUnavailable)
	if refused == 0 || n.Retries < refused {
		t.Errorf("%d retries for %d refused requests, want one retry per refusal at least", n.Retries, refused)
	}
	// Each phone got it once: a retry goes only to devices not yet sent.
	stats := s.Stats()
	if stats.Deliveries != nFCM+nAPNs || stats.PhonesReached != nFCM+nAPNs {
		t.Errorf("%d deliveries to %d phones, want one to each of %d", stats.Deliveries, stats.PhonesReached, nFCM+nAPNs)
	}
}

func TestDevicesExpireWhenTransientErrorsOutlastTheTTL(t *testing.T) {
	// Devices whose provider answers 503 every time end expired once no
	// retry is due before the broadcast's TTL runs out; the others are
	// sent, and the broadcast completes.
	s, senders := newSimSenders(t, sim.Faults{Prefixes: map[string]sim.Outcome{"dead": sim.OutcomeUnavailable},
		UnknownToken: sim.OutcomeDeliver})
	f := newFixture(t, func(p *Policy) { p.RetryBase, p.RetryMax = 100*time.Millisecond, 400*time.Millisecond })
	f.importDevices("citizens", append(simDevices("", 20, 20), simDevices("dead", 5, 5)...))
	f.startWorkerWith("w1", f.newControl(false, ""), senders)

	st := f.mustSubmit(`{"audience":{"topic":"citizens"},"message":{"title":"gempa","body":"b","ttl":"3s"}}`)
	done := f.waitState(st.ID, api.StateCompleted)
	n := done.Counters
	if n.Sent != 40 || n.Expired != 10 || n.Failed != 0 || n.Targeted != 50 {
		t.Errorf("counters = %+v, want 40 sent, 10 expired, none failed, of 50", n)
	}
	if got := n.Done(); got != n.Targeted {
		t.Errorf("%d devices have a final outcome, want all %d targeted", got, n.Targeted)
	}
	if refused := simRequests(s, http.StatusServiceUnavailable); refused < 10 {
		t.Errorf("the simulators refused %d requests, want each of the 10 failing devices tried", refused)
	}
	// The status read from the record shows them apart from failures.
	got, err := f.svc.Get(context.Background(), st.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Counters.Expired != 10 || got.Counters.Failed != 0 {
		t.Errorf("status counters = %+v, want expired 10, failed 0", got.Counters)
	}
}

// fakeClock is a clock a test sets.
type fakeClock struct{ now atomic.Int64 }

func (c *fakeClock) Now() time.Time       { return time.Unix(0, c.now.Load()) }
func (c *fakeClock) Set(t time.Time)      { c.now.Store(t.UnixNano()) }
func newFakeClock(t time.Time) *fakeClock { c := &fakeClock{}; c.Set(t); return c }

func TestRetryBatchAfterExpiryMakesNoProviderCall(t *testing.T) {
	s, senders := newSimSenders(t, sim.Faults{Prefixes: map[string]sim.Outcome{}, UnknownToken: sim.OutcomeDeliver})
	f := newFixture(t, nil)
	devs := simDevices("", 4, 4)
	f.importDevices("citizens", devs)
	// No worker is started: the test runs batches itself, as asynq would
	// run retries that became due, at times its clock says.
	clock := newFakeClock(time.Now())
	cfg := f.config(f.control)
	cfg.Now = clock.Now
	w, err := NewWorker(WorkerConfig{Config: cfg, Senders: senders})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "late"))
	expires := signedCreated(t, f, st.ID).Add(15 * time.Minute)

	retry := func(seq int64, d api.Device) *asynq.Task {
		b, err := json.Marshal(batchPayload{Broadcast: st.ID, Seq: seq, Gen: 1, Attempt: 1, Platform: d.Platform,
			Tokens: []string{d.Token}})
		if err != nil {
			t.Fatal(err)
		}
		return asynq.NewTask(TypeDeliver, b)
	}
	// Before the expiry a retry sends...
	if err := w.deliver(ctx, retry(0, devs[0])); err != nil {
		t.Fatal(err)
	}
	if n := simRequests(s, 0); n != 1 {
		t.Fatalf("a retry before the expiry made %d provider requests, want 1", n)
	}
	// ...and from the expiry on it does not.
	clock.Set(expires)
	for i, d := range devs[1:] {
		if err := w.deliver(ctx, retry(int64(i+1), d)); err != nil {
			t.Fatal(err)
		}
	}
	if n := simRequests(s, 0); n != 1 {
		t.Errorf("retries after the expiry made %d provider requests, want none", n-1)
	}
	got, err := f.svc.Get(ctx, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Counters.Expired != int64(len(devs)-1) || got.Counters.Sent != 1 {
		t.Errorf("counters = %+v, want 1 sent and %d expired", got.Counters, len(devs)-1)
	}
}

func TestRetryCarriesTheTTLLeft(t *testing.T) {
	// Every phone's first request is refused with a Retry-After of 2s: its
	// retry, 2s or more later, must keep the first send's expiry rather
	// than start the TTL again.
	const retryAfter = 2
	s, senders := newSimSenders(t, sim.Faults{Prefixes: map[string]sim.Outcome{}, UnknownToken: sim.OutcomeDeliver,
		FailFirst: 1, RetryAfter: retryAfter})
	f := newFixture(t, func(p *Policy) { p.RetryBase = 10 * time.Millisecond })
	devs := simDevices("", 3, 3)
	f.importDevices("citizens", devs)
	f.startWorkerWith("w1", f.newControl(false, ""), senders)

	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "ttl"))
	done := f.waitState(st.ID, api.StateCompleted)
	if done.Counters.Sent != int64(len(devs)) || done.Counters.Retries != int64(len(devs)) {
		t.Fatalf("counters = %+v, want every device sent after one retry", done.Counters)
	}
	const ttl = 15 * time.Minute
	expires := signedCreated(t, f, st.ID).Add(ttl)
	for _, d := range devs {
		v, ok := s.Device(d.Token)
		if !ok || len(v.Attempts) != 2 || v.Attempts[0].Status != http.StatusServiceUnavailable || v.Attempts[1].Status != http.StatusOK {
			t.Fatalf("%s: attempts %+v, want a refusal then a delivery", d.Platform, v.Attempts)
		}
		first, again := v.Attempts[0], v.Attempts[1]
		if d.Platform == providers.APNs {
			// apns-expiration is absolute: the broadcast's expiry, both times.
			if !first.Expires.Equal(expires) || !again.Expires.Equal(expires) {
				t.Errorf("apns-expiration %s then %s, want the broadcast's expiry %s both times",
					first.Expires, again.Expires, expires)
			}
			continue
		}
		// android.ttl is relative: the retry asks for less, by at least
		// the Retry-After it waited.
		ttl0, ttl1 := first.Expires.Sub(first.Arrived), again.Expires.Sub(again.Arrived)
		if ttl0 > ttl || ttl1 > ttl0-retryAfter*time.Second {
			t.Errorf("android.ttl %s then %s: want at most %s, then at least %ds less", ttl0, ttl1, ttl, retryAfter)
		}
	}
}
