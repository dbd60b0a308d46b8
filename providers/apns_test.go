package providers_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/providers/sim"
)

// TestAPNsResultClasses sends one batch whose devices each fail (or not) as
// the simulator's token prefixes say, and checks every device's class.
func TestAPNsResultClasses(t *testing.T) {
	s := newSim(t, sim.Config{Faults: sim.Faults{RetryAfter: 5}})
	a := newAPNsSender(t, s, newAPNsToken(t, s, nil), nil)
	const ra = 5 * time.Second
	tests := []struct {
		give string // token prefix; "" for an empty token
		want providers.Result
	}{
		{"auto-", providers.Result{Class: providers.Sent}},
		{"unreg-", providers.Result{Class: providers.InvalidToken, Reason: "Unregistered"}},
		{"expired-", providers.Result{Class: providers.InvalidToken, Reason: "ExpiredToken"}},
		{"badtoken-", providers.Result{Class: providers.InvalidToken, Reason: "BadDeviceToken"}},
		{"mismatch-", providers.Result{Class: providers.InvalidToken, Reason: "DeviceTokenNotForTopic"}},
		{"quota-", providers.Result{Class: providers.Retryable, Reason: "TooManyRequests", RetryAfter: ra}},
		{"unavail-", providers.Result{Class: providers.Retryable, Reason: "ServiceUnavailable", RetryAfter: ra, ProviderWide: true}},
		{"shutdown-", providers.Result{Class: providers.Retryable, Reason: "Shutdown", RetryAfter: ra, ProviderWide: true}},
		{"internal-", providers.Result{Class: providers.Retryable, Reason: "InternalServerError"}},
		{"3pauth-", providers.Result{Class: providers.Permanent, Reason: "Forbidden", Credential: true}},
		{"cred-", providers.Result{Class: providers.Retryable, Reason: "TooManyProviderTokenUpdates", Credential: true}},
		{"", providers.Result{Class: providers.InvalidToken, Reason: "empty device token"}},
	}
	tokens := make([]string, len(tests))
	calls := 0
	for i, tt := range tests {
		if tt.give != "" {
			tokens[i] = deviceToken(providers.APNs, tt.give, i)
			calls++
		}
	}
	got := a.Send(context.Background(), &openGate{}, testMessage(), tokens)
	for i, tt := range tests {
		g := got[i]
		if g.Class != tt.want.Class || g.Reason != tt.want.Reason || g.RetryAfter != tt.want.RetryAfter || g.ProviderWide != tt.want.ProviderWide ||
			g.Credential != tt.want.Credential {
			t.Errorf("prefix %q: got %v %q retry-after %v provider-wide %v credential %v, want %v %q retry-after %v provider-wide %v credential %v",
				tt.give, g.Class, g.Reason, g.RetryAfter, g.ProviderWide, g.Credential,
				tt.want.Class, tt.want.Reason, tt.want.RetryAfter, tt.want.ProviderWide, tt.want.Credential)
		}
		if tt.want.Class == providers.Sent && len(g.MessageID) != 36 {
			t.Errorf("prefix %q: message id %q, want an apns-id", tt.give, g.MessageID)
		}
	}
	if n := requests(s, providers.APNs); n != int64(calls) {
		t.Errorf("simulator saw %d requests, want %d", n, calls)
	}
}

// TestAPNsDelivery checks what a phone receives: title, body, collapse
// identity and the pushgate block, and that a silent recall removes the
// notification it names.
func TestAPNsDelivery(t *testing.T) {
	s := newSim(t, sim.Config{})
	a := newAPNsSender(t, s, newAPNsToken(t, s, nil), nil)
	token := deviceToken(providers.APNs, "auto-", 1)
	msg := testMessage()
	if r := a.Send(context.Background(), &openGate{}, msg, []string{token})[0]; r.Class != providers.Sent {
		t.Fatalf("send: %v", r)
	}
	d, ok := s.Device(token)
	if !ok || len(d.Screen) != 1 {
		t.Fatalf("phone shows %+v, want one notification", d.Screen)
	}
	if n := d.Screen[0]; n.Title != msg.Title || n.Body != msg.Body || n.CollapseID != msg.CollapseID || n.Broadcast != msg.BroadcastID {
		t.Errorf("phone shows %+v, want the message of broadcast %s", n, msg.BroadcastID)
	}
	recall := &providers.Message{RecallOf: msg.BroadcastID, CollapseID: msg.CollapseID, TTL: time.Hour}
	if r := a.Send(context.Background(), &openGate{}, recall, []string{token})[0]; r.Class != providers.Sent {
		t.Fatalf("recall: %v", r)
	}
	if d, _ := s.Device(token); len(d.Screen) != 0 {
		t.Errorf("after the recall the phone shows %+v, want nothing", d.Screen)
	}
}

// TestAPNsProviderTokenExpired lets APNs expire the provider token before
// its maximum age here: the calls in flight with it are Retryable, the
// token is regenerated exactly once, and sending again succeeds, without
// TooManyProviderTokenUpdates.
func TestAPNsProviderTokenExpired(t *testing.T) {
	clock := newEpochClock()
	s := newSim(t, sim.Config{TokenTTL: 30 * time.Minute, Now: clock.Now})
	logs := &logRecorder{}
	tok := newAPNsToken(t, s, func(c *providers.APNsTokenConfig) {
		c.Now = clock.Now
		c.Logger = slog.New(logs)
	})
	a := newAPNsSender(t, s, tok, func(c *providers.APNsConfig) { c.Now = clock.Now; c.Concurrency = 16 })
	tokens := deviceTokens(providers.APNs, "auto-", 100)
	for i, r := range a.Send(context.Background(), &openGate{}, testMessage(), tokens) {
		if r.Class != providers.Sent {
			t.Fatalf("device %d before expiry: %v", i, r)
		}
	}

	clock.Advance(31 * time.Minute)
	var retry []string
	for i, r := range a.Send(context.Background(), &openGate{}, testMessage(), tokens) {
		switch {
		case r.Class == providers.Sent:
		case r.Class == providers.Retryable && r.Reason == "ExpiredProviderToken" && r.RetryAfter == 0 && !r.Credential:
			retry = append(retry, tokens[i])
		default:
			t.Errorf("device %d after expiry: %v, want sent or retryable ExpiredProviderToken", i, r)
		}
	}
	if len(retry) == 0 {
		t.Error("no device saw the expired token")
	}
	for i, r := range a.Send(context.Background(), &openGate{}, testMessage(), retry) {
		if r.Class != providers.Sent {
			t.Errorf("retry of device %d: %v, want sent", i, r)
		}
	}
	if n := logs.count("apns provider token generated"); n != 2 {
		t.Errorf("%d provider tokens generated, want 2 (the first and one replacement)", n)
	}
	if n := s.Stats().Requests[providers.APNs][429]; n != 0 {
		t.Errorf("%d answers 429 (TooManyProviderTokenUpdates)", n)
	}
}

// TestAPNsTokenSharing ages the shared token past its maximum age while
// two senders use it: it is replaced once, for both, and APNs never sees
// updates too frequent. Two senders with a token each, the mistake the
// shared token prevents, are refused TooManyProviderTokenUpdates.
func TestAPNsTokenSharing(t *testing.T) {
	t.Run("shared", func(t *testing.T) {
		clock := newEpochClock()
		s := newSim(t, sim.Config{Now: clock.Now})
		logs := &logRecorder{}
		tok := newAPNsToken(t, s, func(c *providers.APNsTokenConfig) { c.Now = clock.Now; c.Logger = slog.New(logs) })
		senders := []*providers.APNsSender{newAPNsSender(t, s, tok, nil), newAPNsSender(t, s, tok, nil)}
		for round := range 3 {
			for i, a := range senders {
				for _, r := range a.Send(context.Background(), &openGate{}, testMessage(), deviceTokens(providers.APNs, "auto-", 20)) {
					if r.Class != providers.Sent {
						t.Fatalf("round %d, sender %d: %v", round, i, r)
					}
				}
			}
			clock.Advance(providers.DefaultAPNsTokenAge / 2)
		}
		// Rounds at 0, 25 and 50 minutes: the token is replaced once, at 50.
		if n := logs.count("apns provider token generated"); n != 2 {
			t.Errorf("%d provider tokens generated, want 2", n)
		}
		if logs.contains("eyJ") {
			t.Error("a bearer token was logged")
		}
	})
	t.Run("one token per process", func(t *testing.T) {
		// Two processes (two APNsTokens on the same key) make the same
		// token for an epoch, so APNs sees no extra update.
		clock := newEpochClock()
		s := newSim(t, sim.Config{Now: clock.Now})
		tokA := newAPNsToken(t, s, func(c *providers.APNsTokenConfig) { c.Now = clock.Now })
		clock.Advance(time.Minute)
		tokB := newAPNsToken(t, s, func(c *providers.APNsTokenConfig) { c.Now = clock.Now })
		first, second := newAPNsSender(t, s, tokA, nil), newAPNsSender(t, s, tokB, nil)
		tokens := deviceTokens(providers.APNs, "auto-", 5)
		for i, a := range []*providers.APNsSender{first, second, first} {
			if r := a.Send(context.Background(), &openGate{}, testMessage(), tokens)[0]; r.Class != providers.Sent {
				t.Fatalf("sender %d: %v", i, r)
			}
		}
		if n := s.Stats().Requests[providers.APNs][429]; n != 0 {
			t.Errorf("%d answers 429 (TooManyProviderTokenUpdates) for two processes", n)
		}
	})
}

// TestAPNsTokenEpochAcrossRestart runs two processes' tokens across an
// epoch boundary, the first made late in its epoch and the second made
// just after the boundary (a worker restarted): both switch to the new
// epoch's token at the boundary, so APNs never sees the old token after
// the new one, nor a token made off the epoch, and never answers
// TooManyProviderTokenUpdates. Keeping the old token until 20 minutes
// after it was made had the first process's expire, and its replacement
// be refused, for minutes.
func TestAPNsTokenEpochAcrossRestart(t *testing.T) {
	clock := newEpochClock() // a minute into an epoch
	s := newSim(t, sim.Config{Now: clock.Now})
	tokens := deviceTokens(providers.APNs, "auto-", 5)
	send := func(when string, senders ...*providers.APNsSender) {
		t.Helper()
		for i, sd := range senders {
			for j, r := range sd.Send(context.Background(), &openGate{}, testMessage(), tokens) {
				if r.Class != providers.Sent {
					t.Errorf("%s, sender %d, device %d: %v", when, i, j, r)
				}
			}
		}
	}
	// The deployment has used this epoch's token since its start.
	early := newAPNsToken(t, s, func(c *providers.APNsTokenConfig) { c.Now = clock.Now })
	send("at the epoch's start", newAPNsSender(t, s, early, func(c *providers.APNsConfig) { c.Now = clock.Now }))
	clock.Advance(44 * time.Minute)
	tokA := newAPNsToken(t, s, func(c *providers.APNsTokenConfig) { c.Now = clock.Now })
	a := newAPNsSender(t, s, tokA, func(c *providers.APNsConfig) { c.Now = clock.Now })
	send("45 minutes into the epoch", a)

	clock.Advance(6 * time.Minute) // a minute into the next epoch
	tokB := newAPNsToken(t, s, func(c *providers.APNsTokenConfig) { c.Now = clock.Now })
	b := newAPNsSender(t, s, tokB, func(c *providers.APNsConfig) { c.Now = clock.Now })
	for minute := 1; minute <= 31; minute += 5 {
		send(fmt.Sprintf("%d minutes after the boundary", minute), b, a)
		if pa, pb := providers.ProviderBearer(tokA), providers.ProviderBearer(tokB); pa != pb {
			t.Errorf("%d minutes after the boundary the two processes use different tokens", minute)
		}
		clock.Advance(5 * time.Minute)
	}
	if n := s.Stats().Requests[providers.APNs][429]; n != 0 {
		t.Errorf("%d answers 429 (TooManyProviderTokenUpdates)", n)
	}
}

// TestAPNsInvalidProviderToken signs tokens with a key APNs does not know:
// a fresh token refused as invalid is a configuration error, Permanent,
// and no new token is made for it.
func TestAPNsInvalidProviderToken(t *testing.T) {
	s := newSim(t, sim.Config{})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logRecorder{}
	tok := newAPNsToken(t, s, func(c *providers.APNsTokenConfig) {
		c.Key = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		c.Logger = slog.New(logs)
	})
	a := newAPNsSender(t, s, tok, nil)
	for i, r := range a.Send(context.Background(), &openGate{}, testMessage(), deviceTokens(providers.APNs, "auto-", 10)) {
		if r.Class != providers.Permanent || !r.Credential || r.Reason != "InvalidProviderToken" {
			t.Errorf("device %d: %v, want permanent InvalidProviderToken", i, r)
		}
	}
	if n := logs.count("apns provider token generated"); n != 1 {
		t.Errorf("%d provider tokens generated, want 1", n)
	}
}

// TestAPNsStreamLimit sends a burst to a fresh sender whose first
// connection allows one stream until its first success, as Apple's do:
// everything is sent, without a burst of connections.
func TestAPNsStreamLimit(t *testing.T) {
	s := newSim(t, sim.Config{})
	a := newAPNsSender(t, s, newAPNsToken(t, s, nil), func(c *providers.APNsConfig) { c.Concurrency = 64 })
	for i, r := range a.Send(context.Background(), &openGate{}, testMessage(), deviceTokens(providers.APNs, "auto-", 500)) {
		if r.Class != providers.Sent {
			t.Errorf("device %d: %v", i, r)
		}
	}
	st := s.Stats()
	// Calls over the limit of 1 share coalesced dials; a burst would open
	// a connection per waiting call (up to 64). How many coalesced dials
	// race the first depends on scheduling (a third was seen once in CI),
	// so the bound is a few, not exactly one more.
	if n := st.Connections[providers.APNs]; n > 4 {
		t.Errorf("%d connections, want at most 4", n)
	}
	t.Logf("%d connections, %d refused streams", st.Connections[providers.APNs], st.RefusedStreams)
}

func TestNewAPNsTokenConfig(t *testing.T) {
	s := newSim(t, sim.Config{})
	tests := []struct {
		name string
		give func(*providers.APNsTokenConfig)
		ok   bool
	}{
		{"defaults", func(*providers.APNsTokenConfig) {}, true},
		{"max age 20m", func(c *providers.APNsTokenConfig) { c.MaxAge = 20 * time.Minute }, true},
		{"max age 60m", func(c *providers.APNsTokenConfig) { c.MaxAge = 60 * time.Minute }, true},
		{"max age 19m", func(c *providers.APNsTokenConfig) { c.MaxAge = 19 * time.Minute }, false},
		{"max age 61m", func(c *providers.APNsTokenConfig) { c.MaxAge = 61 * time.Minute }, false},
		{"min interval over max age", func(c *providers.APNsTokenConfig) { c.MinInterval = time.Hour }, false},
		{"no key id", func(c *providers.APNsTokenConfig) { c.KeyID = "" }, false},
		{"not a key", func(c *providers.APNsTokenConfig) { c.Key = []byte("nope") }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := providers.APNsTokenConfig{Key: s.APNsKeyPEM(), KeyID: testKeyID, TeamID: testTeamID}
			tt.give(&cfg)
			_, err := providers.NewAPNsToken(cfg)
			if (err == nil) != tt.ok {
				t.Errorf("NewAPNsToken: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// TestAPNsTokenEpochs checks that tokens made by different processes in
// one epoch are byte-identical, and that the next epoch brings one new
// token, no sooner than the minimum interval.
func TestAPNsTokenEpochs(t *testing.T) {
	s := newSim(t, sim.Config{})
	clock := newEpochClock()
	epoch := providers.DefaultAPNsTokenAge // the clock starts one minute into one
	a := newAPNsToken(t, s, func(c *providers.APNsTokenConfig) { c.Now = clock.Now })
	first := providers.ProviderBearer(a)
	clock.Advance(30 * time.Minute)
	b := newAPNsToken(t, s, func(c *providers.APNsTokenConfig) { c.Now = clock.Now })
	if providers.ProviderBearer(b) != first || providers.ProviderBearer(a) != first {
		t.Fatal("two tokens made in one epoch differ")
	}
	clock.Advance(epoch - 30*time.Minute) // one minute into the next epoch
	next := providers.ProviderBearer(a)
	if next == first {
		t.Fatal("the token was not replaced in the next epoch")
	}
	if providers.ProviderBearer(b) != next {
		t.Error("the two processes' tokens differ in the next epoch")
	}
}
