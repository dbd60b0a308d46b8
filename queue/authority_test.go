package queue

import (
	"bytes"
	"context"
	"net/http"
	"testing"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/signing"
)

// TestEnvelopeSignedForAnotherAuthorityDeliversNothing plants in the
// queue a broadcast a staging gateway accepted (the same key, signed for
// staging's host): the worker's own verification refuses it, and nothing
// is sent.
func TestEnvelopeSignedForAnotherAuthorityDeliversNothing(t *testing.T) {
	f := newFixture(t, nil)
	f.register("citizens", 3, 0)
	f.startWorker("w1")
	ctx := context.Background()
	body := []byte(broadcastBody(`{"topic":"citizens"}`, "staging"))
	r, _ := http.NewRequest("POST", "http://staging.gw.test"+api.PathBroadcasts, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if err := f.sender.Sign(r, body); err != nil {
		t.Fatal(err)
	}
	// Staging's gateway verifies against its own authority.
	staging := signing.DefaultProfile()
	staging.Authorities = []string{"staging.gw.test"}
	req := signing.RequestFromHTTP(r, body)
	v, err := signing.NewVerifier(signing.VerifierConfig{Profile: staging, Keys: f.keyring}).Verify(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	br, err := api.ParseBroadcastRequest(body, f.policy.MaxTTL)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := f.svc.Submit(ctx, v, v.Envelope(req), br)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the worker to refuse the envelope", func() bool {
		n, _ := f.rdb.HGet(ctx, f.keys.SecurityEvents(), TypePlan+":envelope").Int()
		return n == 1
	})
	if n := len(f.fcm.sent("staging")); n != 0 {
		t.Errorf("the staging broadcast %s reached %d devices", sub.Status.ID, n)
	}
	// A broadcast signed for this gateway goes out.
	f.waitState(f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, "production")).ID, api.StateCompleted)
	if n := len(f.fcm.sent("production")); n != 3 {
		t.Errorf("the production broadcast reached %d devices, want 3", n)
	}
}
