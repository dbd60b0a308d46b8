package client_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/client"
	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/gateway/gatewaytest"
	"github.com/pushgate/pushgate/signing"
)

// newClient returns a client of env signing as key id.
func newClient(t *testing.T, env *gatewaytest.Env, id string) *client.Client {
	t.Helper()
	c, err := client.New(env.URL, env.Signers[id])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func problemCode(err error) string {
	var p *api.Problem
	if errors.As(err, &p) {
		return p.Code
	}
	return ""
}

func TestNewRefusesBadInput(t *testing.T) {
	signer := &signing.Signer{KeyID: "k", Key: make([]byte, 64)}
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://h/", "http:///x", "http://h/?q=1"} {
		if _, err := client.New(u, signer); err == nil {
			t.Errorf("New(%q) succeeded", u)
		}
	}
	if _, err := client.New("http://h", nil); err == nil {
		t.Error("New without a signer succeeded")
	}
}

// TestEveryRoute drives every route of the API through the client against a
// real gateway, and checks the typed answers.
func TestEveryRoute(t *testing.T) {
	env := gatewaytest.Start(t)
	ctx := context.Background()
	registrar := newClient(t, env, gatewaytest.Registrar)
	sender := newClient(t, env, gatewaytest.Sender)
	admin := newClient(t, env, gatewaytest.Admin)

	// Devices.
	d := api.Device{Platform: api.FCM, Token: "fcm-token-1"}
	got, err := registrar.PutDevice(ctx, d, []string{"citizens", "district-7"})
	if err != nil || got.Platform != "fcm" || len(got.Topics) != 2 {
		t.Fatalf("PutDevice = %+v, %v", got, err)
	}
	imp, err := registrar.ImportDevices(ctx, []api.ImportDevice{
		{Platform: "apns", Token: "ab01", Topics: []string{"citizens"}},
		{Platform: "fcm", Token: "fcm-token-2", Topics: []string{"citizens"}},
	})
	if err != nil || imp.Imported != 2 {
		t.Fatalf("ImportDevices = %+v, %v", imp, err)
	}
	if err := registrar.DeleteDevice(ctx, api.Device{Platform: api.FCM, Token: "fcm-token-2"}); err != nil {
		t.Fatalf("DeleteDevice: %v", err)
	}
	if err := registrar.DeleteDevice(ctx, api.Device{Platform: api.FCM, Token: "fcm-token-2"}); problemCode(err) != api.CodeNotFound {
		t.Fatalf("DeleteDevice of a removed device = %v, want not_found", err)
	}

	// Broadcasts: a submission, its idempotent repeat, its status, the
	// list, a cancel and a recall.
	req := &api.BroadcastRequest{IdempotencyKey: "k-1", Audience: api.Audience{Topic: "citizens"},
		Message: api.MessageSpec{Title: "t", Body: "b"}}
	sub, err := sender.Submit(ctx, req)
	if err != nil || !sub.Created || sub.State != api.StateQueued || sub.StatusURL != api.BroadcastPath(sub.ID) {
		t.Fatalf("Submit = %+v, %v", sub, err)
	}
	again, err := sender.Submit(ctx, req)
	if err != nil || again.Created || again.ID != sub.ID {
		t.Fatalf("repeated Submit = %+v, %v; want the first broadcast, not created", again, err)
	}
	st, err := sender.Status(ctx, sub.ID)
	if err != nil || st.ID != sub.ID || st.KeyID != gatewaytest.Sender || len(st.Timeline) == 0 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	page, err := sender.List(ctx, client.ListOptions{State: api.StateQueued, Limit: 10})
	if err != nil || len(page.Broadcasts) != 1 || page.Broadcasts[0].ID != sub.ID {
		t.Fatalf("List = %+v, %v", page, err)
	}
	other, err := sender.Submit(ctx, &api.BroadcastRequest{Audience: api.Audience{Topic: "citizens"}, Message: api.MessageSpec{Title: "u"}})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := sender.Cancel(ctx, other.ID, "typo"); err != nil || st.State != api.StateCancelled {
		t.Fatalf("Cancel = %+v, %v", st, err)
	}
	if st, pending, err := admin.Recall(ctx, sub.ID, &api.RecallRequest{Mode: api.RecallRemove}); err != nil || pending != nil || st.State != api.StateRecalling {
		t.Fatalf("Recall = %+v, %+v, %v", st, pending, err)
	}

	// Kills: no worker runs, so a waited kill is acknowledged by none.
	k, err := admin.Kill(ctx, api.TopicScope("floods"), "bad text", true)
	if err != nil || !k.Acknowledged() || k.Ack.Workers != 0 || k.Kill.Scope != "topic:floods" {
		t.Fatalf("Kill = %+v, %v", k, err)
	}
	kills, err := admin.Kills(ctx)
	if err != nil || len(kills) == 0 {
		t.Fatalf("Kills = %+v, %v", kills, err)
	}
	if r, _, err := admin.Resume(ctx, api.TopicScope("floods"), "fixed"); err != nil || r.Scope != "topic:floods" || r.Version <= k.Version {
		t.Fatalf("Resume = %+v, %v", r, err)
	}
	rv, _, err := admin.Revoke(ctx, gatewaytest.Doomed, "leaked")
	if err != nil || !rv.Revoked || rv.KeyID != gatewaytest.Doomed || rv.Kill.Kill.Scope != api.KeyScope(gatewaytest.Doomed) {
		t.Fatalf("Revoke = %+v, %v", rv, err)
	}
	keys, err := admin.Keys(ctx)
	if err != nil || len(keys.Keys) != len(env.Signers) {
		t.Fatalf("Keys = %+v, %v", keys, err)
	}
	for _, k := range keys.Keys {
		if k.Revoked != (k.ID == gatewaytest.Doomed) {
			t.Errorf("Keys: %s revoked %t", k.ID, k.Revoked)
		}
	}
	audit, err := admin.Audit(ctx, 100)
	if err != nil || len(audit.Entries) < 4 {
		t.Fatalf("Audit = %+v, %v; want the kill, resume, recall, cancel and revoke", audit, err)
	}
	for _, e := range audit.Entries {
		if _, err := controllog.CheckInclusion([]byte(audit.Checkpoint), env.LogKey, e.Index, e.Entry, e.Proof); err != nil {
			t.Errorf("audit entry %d (%s): %v", e.Index, e.Action, err)
		}
	}
}

// TestProblemsAreTyped checks that refusals come back as *api.Problem with
// their stable code and status.
func TestProblemsAreTyped(t *testing.T) {
	env := gatewaytest.Start(t)
	ctx := context.Background()
	sender := newClient(t, env, gatewaytest.Sender)
	_, err := sender.Submit(ctx, &api.BroadcastRequest{Audience: api.Audience{Topic: "elsewhere"}, Message: api.MessageSpec{Title: "t"}})
	var p *api.Problem
	if !errors.As(err, &p) || p.Code != api.CodeTopicNotAllowed || p.Status != http.StatusForbidden {
		t.Fatalf("Submit to a topic the key may not use = %v, want a 403 topic_not_allowed problem", err)
	}
	if _, err := sender.Kill(ctx, api.ScopeGlobal, "x", false); problemCode(err) != api.CodeForbidden {
		t.Fatalf("Kill by a broadcast key = %v, want forbidden", err)
	}
	if _, err := sender.Status(ctx, "bnotthere"); !client.IsProblem(err, api.CodeNotFound) {
		t.Fatalf("Status of an unknown broadcast = %v, want not_found", err)
	}
	unknown, err := client.New(env.URL, &signing.Signer{KeyID: "nobody", Key: env.Signers[gatewaytest.Sender].Key})
	if err != nil {
		t.Fatal(err)
	}
	// The gateway answers a key it does not know as a bad signature, so
	// that nobody learns which key ids exist.
	if _, err := unknown.Status(ctx, "b1"); problemCode(err) != string(signing.CodeBadSignature) {
		t.Fatalf("a key the gateway does not know = %v, want bad_signature", err)
	}
}

// TestSignedReplayIsRefused sends one signed request twice, byte for byte.
func TestSignedReplayIsRefused(t *testing.T) {
	env := gatewaytest.Start(t)
	ctx := context.Background()
	sender := newClient(t, env, gatewaytest.Sender)
	s, err := sender.Sign(ctx, http.MethodPost, api.PathBroadcasts, nil,
		&api.BroadcastRequest{Audience: api.Audience{Topic: "citizens"}, Message: api.MessageSpec{Title: "t"}})
	if err != nil {
		t.Fatal(err)
	}
	if status, err := s.Send(ctx, nil); err != nil || status != http.StatusAccepted {
		t.Fatalf("first Send = %d, %v", status, err)
	}
	if _, err := s.Send(ctx, nil); problemCode(err) != string(signing.CodeReplayedNonce) {
		t.Fatalf("replayed Send = %v, want replayed_nonce", err)
	}
}

// TestWaitFollowsUntilFinished drives a broadcast's record from behind the
// API and checks that Wait reports every status it read and returns once
// the broadcast has finished.
func TestWaitFollowsUntilFinished(t *testing.T) {
	env := gatewaytest.Start(t)
	ctx := context.Background()
	sender := newClient(t, env, gatewaytest.Sender)
	sub, err := sender.Submit(ctx, &api.BroadcastRequest{Audience: api.Audience{Topic: "citizens"}, Message: api.MessageSpec{Title: "t"}})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	st, err := sender.Wait(ctx, sub.ID, 5*time.Millisecond, func(st *api.Status) {
		seen = append(seen, st.State)
		if len(seen) == 2 {
			// What a worker writes when the last device has an outcome.
			now := strconv.FormatInt(time.Now().UnixMilli(), 10)
			if err := env.Redis.HSet(ctx, env.Keys.Broadcast(sub.ID), "state", api.StateCompleted,
				"targeted", 1, "sent", 1, "finished_at", now).Err(); err != nil {
				t.Error(err)
			}
		}
	})
	if err != nil || st.State != api.StateCompleted || st.Counters.Sent != 1 {
		t.Fatalf("Wait = %+v, %v", st, err)
	}
	if len(seen) != 3 || seen[0] != api.StateQueued || seen[2] != api.StateCompleted {
		t.Errorf("progress saw %v, want queued, queued, completed", seen)
	}
	if _, err := sender.Wait(ctx, sub.ID, 0, nil); err == nil {
		t.Error("Wait with no poll interval succeeded")
	}
}
