package queue

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/providers/sim"
)

// pauseSim is an FCM simulator for the pause tests, with faults, and its
// sender of the given concurrency per batch.
func pauseSim(t *testing.T, faults sim.Faults, concurrency int) (*sim.Sim, *providers.FCMSender) {
	t.Helper()
	s, err := sim.New(sim.Config{Faults: faults})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	sender, err := providers.NewFCMSender(context.Background(), providers.FCMConfig{
		Credentials: s.ServiceAccountJSON(), Endpoint: s.FCMEndpoint(), RootCAs: s.CertPool(), Concurrency: concurrency,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sender.Close)
	return s, sender
}

// startSenderWorker starts a worker around its own view of the control log
// whose only sender is fcm, and waits until its view is fresh.
func (f *fixture) startSenderWorker(id string, fcm Sender) *Worker {
	f.t.Helper()
	c := f.newControl(false, "")
	waitFor(f.t, id+"'s view of the control log", c.Fresh)
	return f.startWorkerWith(id, c, map[providers.Platform]Sender{providers.FCM: fcm})
}

// registerPhones puts n FCM devices into topic, in the registry and as
// phones of every simulator given, and returns their tokens.
func (f *fixture) registerPhones(topic string, n int, sims ...*sim.Sim) []string {
	f.t.Helper()
	var devs []api.ImportDevice
	var tokens []string
	for i := range n {
		tok := fmt.Sprintf("pause-%s-%032d", topic, i)
		devs = append(devs, api.ImportDevice{Platform: string(providers.FCM), Token: tok, Topics: []string{topic}})
		tokens = append(tokens, tok)
		for _, s := range sims {
			if err := s.AddDevice(providers.FCM, tok); err != nil {
				f.t.Fatal(err)
			}
		}
	}
	if err := f.svc.Registry().Import(context.Background(), devs); err != nil {
		f.t.Fatal(err)
	}
	return tokens
}

// sharedPause reads the shared pause end of platform, zero when none.
func (f *fixture) sharedPause(platform providers.Platform) time.Time {
	f.t.Helper()
	v, err := f.rdb.Get(context.Background(), f.keys.ProviderPause(string(platform))).Result()
	if err != nil {
		return time.Time{}
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		f.t.Fatalf("pause key holds %q", v)
	}
	return time.UnixMilli(ms)
}

// waitStatus polls a broadcast's status until cond holds, failing if the
// broadcast finishes first.
func (f *fixture) waitStatus(id, what string, cond func(*api.Status) bool) *api.Status {
	f.t.Helper()
	var st *api.Status
	waitFor(f.t, what, func() bool {
		var err error
		if st, err = f.svc.Get(context.Background(), id); err != nil {
			f.t.Fatal(err)
		}
		if cond(st) {
			return true
		}
		if st.Finished() {
			f.t.Fatalf("broadcast %s finished (%s, %+v) before %s", id, st.State, st.Counters, what)
		}
		return false
	})
	return st
}

// refusals returns every request the simulator refused, with the phone's
// token, from the phones' own records.
func refusals(s *sim.Sim, tokens []string) (first sim.Attempt, all []sim.Attempt, devices int) {
	for _, tok := range tokens {
		v, _ := s.Device(tok)
		refused := false
		for _, a := range v.Attempts {
			if a.Status != 429 {
				continue
			}
			refused = true
			all = append(all, a)
			if first.Answered.IsZero() || a.Answered.Before(first.Answered) {
				first = a
			}
		}
		if refused {
			devices++
		}
	}
	return first, all, devices
}

// TestProviderPauseIsSharedAndDefersUntried refuses a whole FCM project
// (429 QUOTA_EXCEEDED with Retry-After) and checks, from the simulator's
// own clock, that after the first refusal no more requests arrived inside
// its Retry-After than the calls already in flight; that a second worker,
// whose own provider never refused anything, learns the pause from Redis
// and sends nothing before it ends; that the status shows paused_until
// meanwhile; and that every device is then delivered exactly once, with
// only the refused devices counted as retried.
func TestProviderPauseIsSharedAndDefersUntried(t *testing.T) {
	const devices, senderConcurrency, tasks, retryAfter = 2000, 8, 4, 8
	f := newFixture(t, nil)
	simA, senderA := pauseSim(t, sim.Faults{QuotaOutage: time.Hour, RetryAfter: retryAfter}, senderConcurrency)
	simB, senderB := pauseSim(t, sim.Faults{}, senderConcurrency)
	tokens := f.registerPhones("citizens", devices, simA, simB)

	a := f.startSenderWorker("wa", senderA)
	first := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "first"))
	waitFor(t, "worker A to share a pause", func() bool { return !f.sharedPause(providers.FCM).IsZero() })
	paused := f.sharedPause(providers.FCM)
	st := f.waitStatus(first.ID, "the status to show the pause", func(st *api.Status) bool {
		_, ok := st.PausedUntil[providers.FCM]
		return ok
	})
	if until := st.PausedUntil[providers.FCM]; until.Before(paused) {
		t.Errorf("status paused_until %s, before the shared pause end %s", until, paused)
	}
	a.Shutdown()

	// Worker B's provider never refuses: it can only know of the pause
	// through Redis.
	f.startSenderWorker("wb", senderB)
	second := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "second"))
	f.waitStatus(second.ID, "worker B to defer the second broadcast", func(st *api.Status) bool {
		return st.Counters.ProviderPaused > 0
	})
	simA.SetFaults(sim.Faults{}) // nobody calls it any more; the outage ends with the pause

	for _, id := range []string{first.ID, second.ID} {
		done := f.waitState(id, api.StateCompleted)
		if done.Counters.Sent != devices || done.Counters.Failed != 0 {
			t.Errorf("broadcast %s: counters %+v, want all %d sent", id, done.Counters, devices)
		}
		if done.PausedUntil != nil {
			t.Errorf("broadcast %s completed and still shows paused_until %v", id, done.PausedUntil)
		}
	}

	firstRefusal, refused, refusedDevices := refusals(simA, tokens)
	if firstRefusal.RetryAfter != retryAfter {
		t.Fatalf("first refusal %+v, want Retry-After %d", firstRefusal, retryAfter)
	}
	end := firstRefusal.Answered.Add(retryAfter * time.Second)
	inside := 0
	for _, r := range refused {
		if r.Arrived.After(firstRefusal.Answered) && r.Arrived.Before(end) {
			inside++
		}
	}
	t.Logf("%d requests reached the refusing project within the Retry-After after its first refusal (%d in all, to %d devices)",
		inside, len(refused), refusedDevices)
	if inside > tasks*senderConcurrency {
		t.Errorf("%d requests arrived within the Retry-After after the first refusal, want at most the %d calls in flight",
			inside, tasks*senderConcurrency)
	}
	if n := len(simA.Deliveries(nil)); n != 0 {
		t.Errorf("the refusing project delivered %d messages", n)
	}
	for _, b := range []*api.Status{first, second} {
		got := map[string]int{}
		for _, d := range simB.Deliveries(func(d sim.Delivery) bool { return d.CollapseID == CollapseID(b.ID) }) {
			if d.Time.Before(paused) {
				t.Errorf("worker B delivered at %s, before the shared pause ended at %s", d.Time, paused)
			}
			got[d.Token]++
		}
		for _, tok := range tokens {
			if got[tok] != 1 {
				t.Errorf("broadcast %s reached %s %d times, want once", b.ID, tok, got[tok])
			}
		}
	}
	done, err := f.svc.Get(context.Background(), first.ID)
	if err != nil {
		t.Fatal(err)
	}
	// One retry per refusal; a slow machine may see the pause run out
	// before the outage was lifted, and a second round of refusals.
	if done.Counters.Retries != int64(len(refused)) {
		t.Errorf("retries = %d, want the %d refusals: devices stopped by the pause are no attempts", done.Counters.Retries, len(refused))
	}
	if done.Counters.ProviderPaused == 0 {
		t.Error("no deferral counted")
	}
	// One provider_paused event per pause: each later one after the
	// previous pause had ended.
	var events []api.Event
	for _, ev := range done.Timeline {
		if ev.Event == "provider_paused" {
			events = append(events, ev)
		}
	}
	if len(events) == 0 {
		t.Fatal("no provider_paused event in the timeline")
	}
	for i, ev := range events[1:] {
		_, until, _ := strings.Cut(events[i].Detail, " until ")
		end, err := time.Parse(time.RFC3339Nano, until)
		if err != nil {
			t.Fatalf("event detail %q: %v", events[i].Detail, err)
		}
		if time.UnixMilli(ev.At).Before(end) {
			t.Errorf("provider_paused noted again at %d, during the pause it noted until %s", ev.At, end)
		}
	}
}

// TestKillDuringProviderPause kills a broadcast whose devices wait for a
// paused provider: the kill is acknowledged, the waiting devices are
// recorded cancelled, and the provider hears nothing more.
func TestKillDuringProviderPause(t *testing.T) {
	const devices = 600
	f := newFixture(t, nil)
	s, sender := pauseSim(t, sim.Faults{QuotaOutage: time.Hour, RetryAfter: 2}, 8)
	f.registerPhones("citizens", devices, s)
	f.startSenderWorker("w1", sender)
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "kill me"))
	f.waitStatus(st.ID, "the broadcast to wait for the pause", func(st *api.Status) bool {
		return st.Counters.ProviderPaused > 0
	})
	res, err := f.kill("admin", api.BroadcastScope(st.ID), "wrong text", true)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Ack.Acknowledged {
		t.Fatalf("kill not acknowledged: %+v", res.Ack)
	}
	before := s.Stats().Requests[providers.FCM][429]
	// The waiting batches record their devices cancelled when they come
	// due, at the pause's end, without a call.
	f.waitState(st.ID, api.StateKilled)
	var done *api.Status
	waitFor(t, "the killed broadcast to finish", func() bool {
		done, err = f.svc.Get(context.Background(), st.ID)
		return err == nil && !done.FinishedAt.IsZero()
	})
	c := done.Counters
	if c.Sent != 0 || c.Cancelled != devices || c.Targeted != devices {
		t.Errorf("counters %+v, want all %d cancelled", c, devices)
	}
	if after := s.Stats().Requests[providers.FCM][429]; after != before {
		t.Errorf("%d requests reached the provider after the kill was acknowledged", after-before)
	}
}

// TestPauseLengthAndSharedKey checks how long a provider-wide refusal
// pauses, and that the shared pause is only ever extended and never
// trusted beyond the longest pause.
func TestPauseLengthAndSharedKey(t *testing.T) {
	f := newFixture(t, func(p *Policy) { p.ProviderPause, p.ProviderPauseMax = 10*time.Second, 5*time.Minute })
	c, err := newCore(f.config(f.control))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	refusal := func(ra time.Duration) providers.Result {
		return providers.Result{Class: providers.Retryable, ProviderWide: true, RetryAfter: ra, Reason: "QUOTA_EXCEEDED"}
	}
	lengths := []struct {
		name       string
		retryAfter time.Duration
		want       time.Duration
	}{
		{"Retry-After", 30 * time.Second, 30 * time.Second},
		{"no Retry-After: the default", 0, 10 * time.Second},
		{"a huge Retry-After: capped", 24 * time.Hour, 5 * time.Minute},
	}
	for _, tt := range lengths {
		t.Run(tt.name, func(t *testing.T) {
			p := newPauses(c)
			before := time.Now()
			p.refused(providers.FCM, refusal(tt.retryAfter))
			after := time.Now()
			end, on := p.pausedUntil(providers.FCM)
			// Millisecond resolution: the end is stored in Unix ms.
			if !on || end.Before(before.Add(tt.want).Truncate(time.Millisecond)) || end.After(after.Add(tt.want)) {
				t.Errorf("paused %v until %s, want %s after the refusal", on, end, tt.want)
			}
			if _, on := p.pausedUntil(providers.APNs); on {
				t.Error("a refusal of FCM paused APNs")
			}
		})
	}

	key := f.keys.ProviderPause(string(providers.FCM))
	long, short := newPauses(c), newPauses(c)
	long.refused(providers.FCM, refusal(time.Minute))
	short.refused(providers.FCM, refusal(time.Second))
	for _, p := range []*pauses{long, short} {
		if err := p.publish(ctx, providers.FCM); err != nil {
			t.Fatal(err)
		}
	}
	want, _ := long.pausedUntil(providers.FCM)
	if got := f.sharedPause(providers.FCM); !got.Equal(want) {
		t.Errorf("shared pause ends %s after a shorter one was published, want the longer %s", got, want)
	}
	fresh := newPauses(c)
	if end, on, err := fresh.sync(ctx, providers.FCM); err != nil || !on || !end.Equal(want) {
		t.Errorf("a worker learned %v until %s (%v), want the shared %s", on, end, err, want)
	}

	untrusted := []struct {
		name, value string
		paused      bool
	}{
		{"not a number", "soon", false},
		{"in the past", "1000", false},
		{"far off", strconv.FormatInt(time.Now().Add(1000*time.Hour).UnixMilli(), 10), true},
	}
	for _, tt := range untrusted {
		t.Run(tt.name, func(t *testing.T) {
			if err := f.rdb.Set(ctx, key, tt.value, time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			p := newPauses(c)
			end, on, err := p.sync(ctx, providers.FCM)
			if err != nil || on != tt.paused {
				t.Fatalf("paused %v (%v), want %v", on, err, tt.paused)
			}
			if on && end.After(time.Now().Add(5*time.Minute)) {
				t.Errorf("paused until %s: beyond the longest pause", end)
			}
			// A worker that publishes over a value that is no time puts
			// its own end there.
			p.refused(providers.FCM, refusal(time.Second))
			if err := p.publish(ctx, providers.FCM); err != nil {
				t.Fatal(err)
			}
			if got := f.sharedPause(providers.FCM); got.IsZero() {
				t.Error("no pause shared")
			}
		})
	}
}
