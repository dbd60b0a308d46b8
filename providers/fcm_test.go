package providers_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/providers/sim"
)

// TestFCMResultClasses sends one batch whose devices each fail (or not) as
// the simulator's token prefixes say, and checks every device's class.
func TestFCMResultClasses(t *testing.T) {
	s := newSim(t, sim.Config{Faults: sim.Faults{RetryAfter: 5}})
	f := newFCMSender(t, s, nil)
	const ra = 5 * time.Second
	tests := []struct {
		give string // token prefix; "" for an empty token
		want providers.Result
	}{
		{"auto-", providers.Result{Class: providers.Sent}},
		{"unreg-", providers.Result{Class: providers.InvalidToken, Reason: "UNREGISTERED"}},
		{"expired-", providers.Result{Class: providers.InvalidToken, Reason: "UNREGISTERED"}},
		{"badtoken-", providers.Result{Class: providers.InvalidToken, Reason: "INVALID_ARGUMENT"}},
		{"mismatch-", providers.Result{Class: providers.InvalidToken, Reason: "SENDER_ID_MISMATCH"}},
		{"quota-", providers.Result{Class: providers.Retryable, Reason: "QUOTA_EXCEEDED", RetryAfter: ra, ProviderWide: true}},
		{"unavail-", providers.Result{Class: providers.Retryable, Reason: "UNAVAILABLE", RetryAfter: ra, ProviderWide: true}},
		{"shutdown-", providers.Result{Class: providers.Retryable, Reason: "UNAVAILABLE", RetryAfter: ra, ProviderWide: true}},
		{"internal-", providers.Result{Class: providers.Retryable, Reason: "INTERNAL"}},
		{"3pauth-", providers.Result{Class: providers.Permanent, Reason: "THIRD_PARTY_AUTH_ERROR", Credential: true}},
		{"cred-", providers.Result{Class: providers.Retryable, Reason: "UNAUTHENTICATED", Credential: true}},
		{"", providers.Result{Class: providers.InvalidToken, Reason: "empty device token"}},
	}
	tokens := make([]string, len(tests))
	calls := 0
	for i, tt := range tests {
		if tt.give != "" {
			tokens[i] = deviceToken(providers.FCM, tt.give, i)
			calls++
		}
	}
	gate := &openGate{}
	got := f.Send(context.Background(), gate, testMessage(), tokens)
	if len(got) != len(tokens) {
		t.Fatalf("%d results for %d tokens", len(got), len(tokens))
	}
	for i, tt := range tests {
		g := got[i]
		if g.Class != tt.want.Class || g.Reason != tt.want.Reason || g.RetryAfter != tt.want.RetryAfter || g.ProviderWide != tt.want.ProviderWide ||
			g.Credential != tt.want.Credential {
			t.Errorf("prefix %q: got %v %q retry-after %v provider-wide %v credential %v, want %v %q retry-after %v provider-wide %v credential %v",
				tt.give, g.Class, g.Reason, g.RetryAfter, g.ProviderWide, g.Credential,
				tt.want.Class, tt.want.Reason, tt.want.RetryAfter, tt.want.ProviderWide, tt.want.Credential)
		}
		if tt.want.Class == providers.Sent && !strings.HasPrefix(g.MessageID, "projects/") {
			t.Errorf("prefix %q: message id %q, want an providers.FCM message name", tt.give, g.MessageID)
		}
		if called := tt.give != ""; called != (g.Latency > 0) {
			t.Errorf("prefix %q: latency %v; a call was made: %v", tt.give, g.Latency, called)
		}
	}
	// One request per device that was called: the SDK retried nothing.
	if n := requests(s, providers.FCM); n != int64(calls) {
		t.Errorf("simulator saw %d requests, want %d", n, calls)
	}
	if e, l := gate.entered.Load(), gate.left.Load(); e != int64(calls) || l != e {
		t.Errorf("gate entered %d and left %d times, want %d", e, l, calls)
	}
}

// TestFCMNoSDKRetries checks that the answers the Admin SDK would retry
// for seconds (503, network errors) and 429 come back at once, as one
// request, with the provider's Retry-After.
func TestFCMNoSDKRetries(t *testing.T) {
	tests := []struct {
		name string
		give string // token prefix
		want providers.Result
	}{
		{"503 with Retry-After", "unavail-", providers.Result{Class: providers.Retryable, Reason: "UNAVAILABLE", RetryAfter: 5 * time.Second}},
		{"429 with Retry-After", "quota-", providers.Result{Class: providers.Retryable, Reason: "QUOTA_EXCEEDED", RetryAfter: 5 * time.Second}},
		{"dropped connection", "drop-", providers.Result{Class: providers.Retryable}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, sim.Config{Faults: sim.Faults{RetryAfter: 5}})
			f := newFCMSender(t, s, nil)
			got := f.Send(context.Background(), &openGate{}, testMessage(), []string{deviceToken(providers.FCM, tt.give, 1)})
			g := got[0]
			if g.Class != tt.want.Class || g.RetryAfter != tt.want.RetryAfter ||
				(tt.want.Reason != "" && g.Reason != tt.want.Reason) {
				t.Errorf("got %v %q retry-after %v, want %v %q retry-after %v",
					g.Class, g.Reason, g.RetryAfter, tt.want.Class, tt.want.Reason, tt.want.RetryAfter)
			}
			// The simulator counts a dropped connection after closing it, so
			// the count may trail the client's error by a moment. Had the
			// SDK's retry loop run, its next request would have been
			// counted before Send returned.
			seen := func() int64 { return requests(s, providers.FCM) + s.Stats().DroppedConnections }
			waitFor(t, func() bool { return seen() >= 1 })
			if n := seen(); n != 1 {
				t.Errorf("simulator saw %d requests, want exactly 1: the SDK retried", n)
			}
		})
	}

	// The control: the same SDK client, called without the sender, does
	// wait and retry a 503.
	t.Run("control: the SDK alone retries", func(t *testing.T) {
		// The phone's first request is refused with 503 and Retry-After: 1;
		// the SDK waits and sends it again, which then succeeds.
		s := newSim(t, sim.Config{Faults: sim.Faults{RetryAfter: 1, FailFirst: 1, FailOutcome: sim.OutcomeUnavailable}})
		f := newFCMSender(t, s, nil)
		m := providers.FCMTemplate(testMessage(), time.Now())
		m.Token = deviceToken(providers.FCM, "", 1)
		s.AddDevice(providers.FCM, m.Token)
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		if _, err := f.SDKClient().Send(ctx, &m); err != nil {
			t.Fatalf("SDK alone: %v; want its retry to succeed", err)
		}
		v, _ := s.Device(m.Token)
		if len(v.Attempts) != 2 || v.Attempts[0].Status != 503 || v.Attempts[1].Status != 200 {
			t.Fatalf("attempts %+v, want a 503 then a 200", v.Attempts)
		}
		// Both times are the simulator's: the retry came no sooner than
		// the Retry-After after the refusal.
		if gap := v.Attempts[1].Arrived.Sub(v.Attempts[0].Answered); gap < time.Second {
			t.Errorf("the SDK retried %v after the refusal, before its Retry-After of 1s", gap)
		}
	})
}

// TestFCMQuota runs into the simulator's project-wide quota: the devices
// over it are Retryable with the seconds left in the quota minute.
func TestFCMQuota(t *testing.T) {
	clock := newFakeClock()
	s := newSim(t, sim.Config{QuotaPerMinute: 3, Now: clock.Now})
	f := newFCMSender(t, s, func(c *providers.FCMConfig) { c.Now = clock.Now })
	got := f.Send(context.Background(), &openGate{}, testMessage(), deviceTokens(providers.FCM, "auto-", 5))
	var sent, quota int
	for _, r := range got {
		switch {
		case r.Class == providers.Sent:
			sent++
		case r.Class == providers.Retryable && r.Reason == "QUOTA_EXCEEDED" && r.RetryAfter > 0 && r.RetryAfter <= time.Minute:
			quota++
		default:
			t.Errorf("unexpected result %v", r)
		}
	}
	if sent != 3 || quota != 2 {
		t.Errorf("%d sent and %d over quota, want 3 and 2", sent, quota)
	}
}

// TestFCMAccessTokenRefused lets the simulator expire the OAuth2 access
// token before the oauth2 cache does: the call is Retryable, the cached
// token is dropped, and the next call fetches a new one and succeeds.
func TestFCMAccessTokenRefused(t *testing.T) {
	clock := newFakeClock()
	s := newSim(t, sim.Config{OAuthTokenTTL: 10 * time.Minute, Now: clock.Now})
	logs := &logRecorder{}
	f := newFCMSender(t, s, func(c *providers.FCMConfig) { c.Logger = slog.New(logs) })
	token := []string{deviceToken(providers.FCM, "auto-", 1)}
	send := func() providers.Result { return f.Send(context.Background(), &openGate{}, testMessage(), token)[0] }

	if r := send(); r.Class != providers.Sent {
		t.Fatalf("first send: %v", r)
	}
	clock.Advance(11 * time.Minute)
	if r := send(); r.Class != providers.Retryable || r.Reason != "UNAUTHENTICATED" {
		t.Errorf("send with a token the simulator expired: %v, want retryable UNAUTHENTICATED", r)
	}
	if r := send(); r.Class != providers.Sent {
		t.Errorf("send after the refusal: %v, want sent", r)
	}
	if n := s.Stats().OAuthTokens; n != 2 {
		t.Errorf("%d access tokens issued, want 2", n)
	}
	if n := logs.count("fcm refused the access token"); n != 1 {
		t.Errorf("%d token invalidations logged, want 1", n)
	}
}

// TestFCMTokenEndpointRefuses signs the JWT-bearer assertion with a key the
// token endpoint does not know: a configuration error, Permanent for the
// whole batch, and no message is sent.
func TestFCMTokenEndpointRefuses(t *testing.T) {
	s := newSim(t, sim.Config{})
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var sa map[string]any
	if err := json.Unmarshal(s.ServiceAccountJSON(), &sa); err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(other)
	if err != nil {
		t.Fatal(err)
	}
	sa["private_key"] = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	creds, err := json.Marshal(sa)
	if err != nil {
		t.Fatal(err)
	}
	f := newFCMSender(t, s, func(c *providers.FCMConfig) { c.Credentials = creds })
	got := f.Send(context.Background(), &openGate{}, testMessage(), deviceTokens(providers.FCM, "auto-", 40))
	for i, r := range got {
		if r.Class != providers.Permanent || !r.Credential || !strings.HasPrefix(r.Reason, "oauth2 token refused: invalid_grant") {
			t.Errorf("device %d: %v, want permanent oauth2 refusal", i, r)
		}
	}
	if n := requests(s, providers.FCM); n != 0 {
		t.Errorf("simulator saw %d message requests, want 0", n)
	}
}

// TestFCMDelivery checks what an Android phone receives: title, body,
// collapse identity and the pushgate block, and that a silent recall
// removes the notification it names.
func TestFCMDelivery(t *testing.T) {
	s := newSim(t, sim.Config{})
	f := newFCMSender(t, s, nil)
	token := deviceToken(providers.FCM, "auto-", 1)
	msg := testMessage()
	if r := f.Send(context.Background(), &openGate{}, msg, []string{token})[0]; r.Class != providers.Sent {
		t.Fatalf("send: %v", r)
	}
	d, ok := s.Device(token)
	if !ok || len(d.Screen) != 1 || len(d.Log) != 1 {
		t.Fatalf("phone shows %+v after %d deliveries, want one notification", d.Screen, len(d.Log))
	}
	if n := d.Screen[0]; n.Title != msg.Title || n.Body != msg.Body || n.CollapseID != msg.CollapseID || n.Broadcast != msg.BroadcastID {
		t.Errorf("phone shows %+v, want the message of broadcast %s", n, msg.BroadcastID)
	}
	if got := d.Log[0].Data["url"]; got != msg.Data["url"] {
		t.Errorf("data url = %q, want %q", got, msg.Data["url"])
	}
	recall := &providers.Message{RecallOf: msg.BroadcastID, CollapseID: msg.CollapseID, TTL: time.Hour}
	if r := f.Send(context.Background(), &openGate{}, recall, []string{token})[0]; r.Class != providers.Sent {
		t.Fatalf("recall: %v", r)
	}
	if d, _ := s.Device(token); len(d.Screen) != 0 {
		t.Errorf("after the recall the phone shows %+v, want nothing", d.Screen)
	}
}
