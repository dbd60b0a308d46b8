package queue

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/providers"
)

// TestCredentialRefusalMarksProviderDegraded has FCM refuse the
// deployment's access token for every device: while it does, the worker
// finds FCM degraded, reports it in Redis for the status, and logs one
// error line naming the reason however many calls it refuses; once FCM
// accepts again the report is gone and the broadcast completes, its
// retries counted under the reason.
func TestCredentialRefusalMarksProviderDegraded(t *testing.T) {
	f := newFixture(t, nil)
	f.register("citizens", 10, 0)
	var fixed atomic.Bool
	refusals := make(chan struct{}, 1000)
	f.fcm.script = func(tok string, call int) providers.Result {
		if fixed.Load() {
			return providers.Result{Class: providers.Sent}
		}
		refusals <- struct{}{}
		return providers.Result{Class: providers.Retryable, Reason: "UNAUTHENTICATED", Credential: true}
	}
	w := f.startWorker("w1")
	st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "creds"))
	// Three rounds of refusals (the first send and two retries): the
	// third begins after the worker observed the second.
	for range 30 {
		<-refusals
	}
	ctx := context.Background()
	if got := w.DegradedProviders(); got[api.FCM] != "UNAUTHENTICATED" || len(got) != 1 {
		t.Errorf("worker finds %v degraded, want fcm: UNAUTHENTICATED", got)
	}
	health, err := f.svc.ProviderHealth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h := health[api.FCM]; h.Reason != "UNAUTHENTICATED" || h.Worker != "w1" || h.Since.IsZero() || len(health) != 1 {
		t.Errorf("provider health = %+v, want fcm UNAUTHENTICATED reported by w1", health)
	}
	got, err := f.svc.Get(ctx, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ProviderDegraded[api.FCM] != "UNAUTHENTICATED" {
		t.Errorf("status of a broadcast still sending: provider_degraded %v, want fcm: UNAUTHENTICATED (state %s)",
			got.ProviderDegraded, got.State)
	}
	if n := len(f.lines.matching("level=ERROR", "provider refuses the deployment's credential: UNAUTHENTICATED",
		"event=provider_degraded", "platform=fcm")); n != 1 {
		t.Errorf("%d error lines for rounds of refusals within a minute, want 1", n)
	}

	fixed.Store(true)
	done := f.waitState(st.ID, api.StateCompleted)
	if done.Counters.Sent != 10 || done.Reasons.Retried["fcm/UNAUTHENTICATED"] < 10 {
		t.Errorf("counters %+v, reasons %+v: want 10 sent and at least 10 retries under fcm/UNAUTHENTICATED", done.Counters, done.Reasons)
	}
	if got := w.DegradedProviders(); got != nil {
		t.Errorf("worker still finds %v degraded after FCM accepted", got)
	}
	if health, err := f.svc.ProviderHealth(ctx); err != nil || health != nil {
		t.Errorf("provider health after FCM accepted = %v, %v; want none", health, err)
	}
}
