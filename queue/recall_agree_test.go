package queue

import (
	"context"
	"testing"
	"time"

	"github.com/pushgate/pushgate/api"
)

// retractionBody is a recall with the policy's standard retraction, which
// one admin may send at once.
func (f *fixture) retractionBody() string {
	return `{"mode":"replace","replacement":{"title":"` + f.policy.RetractionTitle + `","body":"` + f.policy.RetractionBody + `"}}`
}

// recallDelivered submits a broadcast to 3 FCM and 2 APNs devices, waits
// until it completed, and returns its id.
func recallDelivered(t *testing.T, f *fixture) string {
	t.Helper()
	f.register("citizens", 3, 2)
	st := f.mustSubmit(`{"audience":{"topic":"citizens"},"message":{"title":"Wrong","body":"b","ttl":"1h"}}`)
	f.waitState(st.ID, api.StateCompleted)
	return st.ID
}

// assertRecalled waits until broadcast id is recalled and checks that
// every device got the retraction.
func assertRecalled(t *testing.T, f *fixture, id string) {
	t.Helper()
	f.waitState(id, api.StateRecalled)
	fcm, apns := f.fcm.sent(f.policy.RetractionTitle), f.apns.sent(f.policy.RetractionTitle)
	if len(fcm) != 3 || len(apns) != 2 {
		t.Errorf("retraction reached %d FCM and %d APNs devices, want 3 and 2", len(fcm), len(apns))
	}
}

// TestRecallOfBroadcastOlderThanEnvelopeAge recalls, on a worker that
// never saw it, a broadcast signed longer ago than the workers' envelope
// age (24 h), well within the record's retention: the API accepts it, so
// the worker must run it, not leave the broadcast recalling for good.
func TestRecallOfBroadcastOlderThanEnvelopeAge(t *testing.T) {
	clk := &offsetClock{}
	f := newFixtureClock(t, nil, clk.now)
	first := f.startWorker("w1")
	id := recallDelivered(t, f)
	first.Shutdown() // the next worker verifies afresh, as after a restart

	clk.advance(f.policy.EnvelopeMaxAge + time.Hour)
	f.startWorker("w2")
	if _, _, err := f.recall("admin", id, f.retractionBody()); err != nil {
		t.Fatalf("recall of a broadcast signed %s ago: %v", f.policy.EnvelopeMaxAge+time.Hour, err)
	}
	assertRecalled(t, f, id)
}

// TestRecallOfRevokedSendersBroadcast recalls a broadcast whose key was
// revoked after it was sent — a stolen key, the case a recall is for.
func TestRecallOfRevokedSendersBroadcast(t *testing.T) {
	f := newFixture(t, nil)
	f.startWorker("w1")
	id := recallDelivered(t, f)
	if _, _, err := f.revoke("admin", "sender", "stolen"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.recall("admin", id, f.retractionBody()); err != nil {
		t.Fatalf("recall of a revoked key's broadcast: %v", err)
	}
	assertRecalled(t, f, id)
}

// TestRecallAfterTheWindowIsRefused checks that a recall the workers would
// not run is refused by the API, and changes nothing.
func TestRecallAfterTheWindowIsRefused(t *testing.T) {
	clk := &offsetClock{}
	f := newFixtureClock(t, nil, clk.now)
	f.startWorker("w1")
	id := recallDelivered(t, f)

	clk.advance(recallWindow + time.Hour)
	_, _, err := f.recall("admin", id, f.retractionBody())
	if api.CodeOf(err) != api.CodeNotRecallable {
		t.Fatalf("recall %s after the window: %v, want %s", recallWindow+time.Hour, err, api.CodeNotRecallable)
	}
	st, err := f.svc.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != api.StateCompleted || len(f.control.Active()) != 0 {
		t.Errorf("after the refused recall the broadcast is %s with kills %v; want completed and none", st.State, f.control.Active())
	}
}
