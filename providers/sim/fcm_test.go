package sim

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"firebase.google.com/go/v4/errorutils"
	"firebase.google.com/go/v4/messaging"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"golang.org/x/oauth2/jws"

	"github.com/pushgate/pushgate/providers"
)

const fcmScope = "https://www.googleapis.com/auth/firebase.messaging"

// fcmToken is a registration token of the right shape.
func fcmToken(tag string) string {
	return tag + ":APA91b" + strings.Repeat("x", 140)
}

func ptr[T any](v T) *T { return &v }

// TestFCMSDK drives every FCM outcome through the official SDK and checks
// that its error predicates recognise each one.
func TestFCMSDK(t *testing.T) {
	s := newSim(t, Config{Faults: Faults{RetryAfter: 300}})
	phone := fcmToken("phone")
	if err := s.AddDevice(providers.FCM, phone); err != nil {
		t.Fatal(err)
	}
	c := fcmClient(t, s)
	note := &messaging.Notification{Title: "Flood", Body: "Avoid Manggarai"}

	tests := []struct {
		name  string
		give  *messaging.Message
		want  func(error) bool // nil: success
		check func(t *testing.T, name string, err error)
	}{
		{name: "delivered", give: &messaging.Message{Token: phone, Notification: note,
			Android: &messaging.AndroidConfig{Priority: "high", TTL: ptr(15 * time.Minute), CollapseKey: "b1",
				Notification: &messaging.AndroidNotification{Tag: "b1"}},
			Data: map[string]string{"pushgate": `{"broadcast":"b1"}`}}},
		{name: "topic", give: &messaging.Message{Topic: "citizens", Notification: note}},
		{name: "condition", give: &messaging.Message{Condition: "'a' in topics", Notification: note}},
		{name: "unregistered prefix", give: &messaging.Message{Token: "unreg-" + phone, Notification: note}, want: messaging.IsUnregistered},
		{name: "unknown token", give: &messaging.Message{Token: fcmToken("stranger"), Notification: note}, want: messaging.IsUnregistered},
		{name: "expired token", give: &messaging.Message{Token: "expired-" + phone, Notification: note}, want: messaging.IsUnregistered},
		{name: "bad token prefix", give: &messaging.Message{Token: "badtoken-" + phone, Notification: note}, want: messaging.IsInvalidArgument},
		{name: "malformed token", give: &messaging.Message{Token: "short", Notification: note}, want: messaging.IsInvalidArgument},
		{name: "sender id mismatch", give: &messaging.Message{Token: "mismatch-" + phone, Notification: note}, want: messaging.IsSenderIDMismatch},
		{name: "quota exceeded", give: &messaging.Message{Token: "quota-" + phone, Notification: note}, want: messaging.IsQuotaExceeded,
			check: wantRetryAfter("300")},
		{name: "internal", give: &messaging.Message{Token: "internal-" + phone, Notification: note}, want: messaging.IsInternal},
		{name: "third-party auth", give: &messaging.Message{Token: "3pauth-" + phone, Notification: note}, want: messaging.IsThirdPartyAuthError},
		// A Retry-After beyond the SDK's two-minute cap stops its internal
		// retries, so the 503 comes back at once.
		{name: "unavailable", give: &messaging.Message{Token: "unavail-" + phone, Notification: note}, want: messaging.IsUnavailable,
			check: wantRetryAfter("300")},
		{name: "shutdown", give: &messaging.Message{Token: "shutdown-" + phone, Notification: note}, want: messaging.IsUnavailable},
		{name: "ttl beyond four weeks", give: &messaging.Message{Token: phone, Notification: note,
			Android: &messaging.AndroidConfig{TTL: ptr(29 * 24 * time.Hour)}}, want: messaging.IsInvalidArgument},
		{name: "reserved data key", give: &messaging.Message{Token: phone, Data: map[string]string{"from": "x"}}, want: messaging.IsInvalidArgument},
		{name: "payload too big", give: &messaging.Message{Token: phone, Data: map[string]string{"k": strings.Repeat("x", 4096)}}, want: messaging.IsInvalidArgument},
		{name: "topic payload limit", give: &messaging.Message{Topic: "citizens", Data: map[string]string{"k": strings.Repeat("x", 2100)}}, want: messaging.IsInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, err := c.Send(context.Background(), tt.give)
			if tt.want == nil {
				if err != nil || !strings.HasPrefix(name, "projects/pushgate-sim/messages/") {
					t.Fatalf("Send = %q, %v; want a message name", name, err)
				}
			} else if err == nil || !tt.want(err) {
				t.Fatalf("Send error = %v; the SDK does not classify it as wanted", err)
			}
			if tt.check != nil {
				tt.check(t, name, err)
			}
		})
	}

	v, _ := s.Device(phone)
	if len(v.Screen) != 1 || v.Screen[0].CollapseID != "b1" || v.Screen[0].Title != "Flood" || v.Screen[0].Broadcast != "b1" {
		t.Fatalf("screen = %+v, want the Flood notification under b1", v.Screen)
	}
	// Invalid messages never reach the phone's token check.
	if v.Requests != 1 || v.Deliveries != 1 {
		t.Errorf("phone requests %d, deliveries %d; want 1 and 1", v.Requests, v.Deliveries)
	}
	// No 503 was retried: one request each.
	if got := s.Stats().Requests[providers.FCM][503]; got != 2 {
		t.Errorf("503 answers = %d, want 2", got)
	}
}

func wantRetryAfter(v string) func(*testing.T, string, error) {
	return func(t *testing.T, _ string, err error) {
		t.Helper()
		resp := errorutils.HTTPResponse(err)
		if resp == nil || resp.Header.Get("Retry-After") != v {
			t.Fatalf("Retry-After = %v, want %s", resp, v)
		}
	}
}

// TestFCMSDKDryRunAndRetry covers validate_only and a transient failure
// that the SDK's own retry overcomes.
func TestFCMSDKDryRunAndRetry(t *testing.T) {
	s := newSim(t, Config{Faults: Faults{FailFirst: 1}})
	phone := fcmToken("phone")
	s.AddDevice(providers.FCM, phone)
	c := fcmClient(t, s)
	msg := &messaging.Message{Token: phone, Notification: &messaging.Notification{Title: "t", Body: "b"}}

	// The first request fails with 503; the SDK retries at once.
	if _, err := c.Send(context.Background(), msg); err != nil {
		t.Fatalf("Send: %v", err)
	}
	name, err := c.SendDryRun(context.Background(), msg)
	if err != nil || name != "projects/pushgate-sim/messages/fake_message_id" {
		t.Fatalf("SendDryRun = %q, %v", name, err)
	}
	st := s.Stats()
	if st.Requests[providers.FCM][503] != 1 || st.Requests[providers.FCM][200] != 2 || st.Deliveries != 1 {
		t.Fatalf("requests %v, deliveries %d; want one 503, two 200, one delivery", st.Requests[providers.FCM], st.Deliveries)
	}
}

// TestFCMQuota checks the project-wide quota and its Retry-After.
func TestFCMQuota(t *testing.T) {
	clock := newFakeClock()
	s := newSim(t, Config{QuotaPerMinute: 2, Now: clock.Now, Faults: Faults{UnknownToken: OutcomeDeliver}})
	c := fcmClient(t, s)
	send := func() error {
		_, err := c.Send(context.Background(), &messaging.Message{Token: fcmToken("p"), Data: map[string]string{"a": "b"}})
		return err
	}
	for range 2 {
		if err := send(); err != nil {
			t.Fatalf("within quota: %v", err)
		}
	}
	err := send()
	if !messaging.IsQuotaExceeded(err) {
		t.Fatalf("over quota: %v, want QUOTA_EXCEEDED", err)
	}
	if ra := errorutils.HTTPResponse(err).Header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Fatalf("Retry-After = %q, want the rest of the minute", ra)
	}
	clock.Add(time.Minute)
	if err := send(); err != nil {
		t.Fatalf("next minute: %v", err)
	}
}

// TestFCMQuotaOutage checks that an outage refuses the whole project,
// registered phones included, from its first request until it ends, with
// the seconds left as Retry-After, and records each refusal's arrival.
func TestFCMQuotaOutage(t *testing.T) {
	clock := newFakeClock()
	s := newSim(t, Config{Now: clock.Now, Faults: Faults{QuotaOutage: 10 * time.Second}})
	phone := fcmToken("phone")
	s.AddDevice(providers.FCM, phone)
	c := fcmClient(t, s)
	send := func() error {
		_, err := c.Send(context.Background(), &messaging.Message{Token: phone, Data: map[string]string{"a": "b"}})
		return err
	}
	if start, _ := s.QuotaOutage(); !start.IsZero() {
		t.Fatalf("the outage opened at %s, before any request", start)
	}
	opened := clock.Now()
	for _, tt := range []struct {
		after time.Duration
		want  string // Retry-After; "" for delivered
	}{
		{0, "10"}, {3500 * time.Millisecond, "7"}, {9900 * time.Millisecond, "1"}, {10 * time.Second, ""},
	} {
		clock.Add(opened.Add(tt.after).Sub(clock.Now()))
		err := send()
		if tt.want == "" {
			if err != nil {
				t.Fatalf("after the outage: %v", err)
			}
			continue
		}
		if !messaging.IsQuotaExceeded(err) {
			t.Fatalf("%s into the outage: %v, want QUOTA_EXCEEDED", tt.after, err)
		}
		if ra := errorutils.HTTPResponse(err).Header.Get("Retry-After"); ra != tt.want {
			t.Errorf("%s into the outage: Retry-After %q, want %q", tt.after, ra, tt.want)
		}
	}
	start, end := s.QuotaOutage()
	if !start.Equal(opened) || !end.Equal(opened.Add(10*time.Second)) {
		t.Errorf("outage window %s to %s, want %s for 10s", start, end, opened)
	}
	v, _ := s.Device(phone)
	if len(v.Attempts) != 4 || v.Deliveries != 1 {
		t.Fatalf("attempts %+v, %d deliveries; want three refusals, then a delivery", v.Attempts, v.Deliveries)
	}
	for i, a := range v.Attempts[:3] {
		if a.Status != http.StatusTooManyRequests || a.Arrived.Before(start) || !a.Arrived.Before(end) {
			t.Errorf("attempt %d = %+v, want a 429 arriving inside the outage", i, a)
		}
	}
}

// TestFCMAuth covers the bearer-token checks on messages:send.
func TestFCMAuth(t *testing.T) {
	clock := newFakeClock()
	s := newSim(t, Config{Now: clock.Now, OAuthTokenTTL: time.Minute})
	phone := fcmToken("phone")
	s.AddDevice(providers.FCM, phone)
	msg := &messaging.Message{Token: phone, Data: map[string]string{"a": "b"}}

	t.Run("insufficient scope", func(t *testing.T) {
		c := fcmClientWithScope(t, s, "https://www.googleapis.com/auth/userinfo.email")
		_, err := c.Send(context.Background(), msg)
		if !errorutils.IsPermissionDenied(err) {
			t.Fatalf("Send: %v, want PERMISSION_DENIED", err)
		}
	})
	t.Run("expired access token", func(t *testing.T) {
		c := fcmClient(t, s)
		if _, err := c.Send(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
		// The client still holds the token (its clock says it is fresh);
		// the simulator's says it expired.
		clock.Add(2 * time.Minute)
		_, err := c.Send(context.Background(), msg)
		if !errorutils.IsUnauthenticated(err) {
			t.Fatalf("Send: %v, want UNAUTHENTICATED", err)
		}
	})

	hc := h2Client(t, s)
	tests := []struct {
		name string
		give string // Authorization header
		want int
	}{
		{"missing", "", 401},
		{"unknown", "Bearer ya29.nope", 401},
		{"not bearer", "Basic abc", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := postFCM(t, hc, s, tt.give, `{"message":{"token":"`+phone+`"}}`)
			if status != tt.want || !strings.Contains(body, `"UNAUTHENTICATED"`) {
				t.Fatalf("status %d body %s", status, body)
			}
		})
	}
}

// accessToken fetches a bearer token from the simulator's token endpoint.
func accessToken(t *testing.T, s *Sim) string {
	t.Helper()
	conf, err := google.JWTConfigFromJSON(s.ServiceAccountJSON(), fcmScope)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, h2Client(t, s))
	tok, err := conf.TokenSource(ctx).Token()
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	return tok.AccessToken
}

func postFCM(t *testing.T, hc *http.Client, s *Sim, auth, body string) (int, string) {
	t.Helper()
	return doFCM(t, hc, http.MethodPost, s.FCMEndpoint()+"/projects/"+s.ProjectID()+"/messages:send", auth, body)
}

func doFCM(t *testing.T, hc *http.Client, method, url, auth, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestFCMMalformed sends requests the SDK would never send, over plain
// HTTP/2, and checks FCM's answers.
func TestFCMMalformed(t *testing.T) {
	s := newSim(t, Config{})
	phone := fcmToken("phone")
	s.AddDevice(providers.FCM, phone)
	hc := h2Client(t, s)
	auth := "Bearer " + accessToken(t, s)
	msg := func(fields string) string { return `{"message":{"token":"` + phone + `"` + fields + `}}` }

	tests := []struct {
		name       string
		give       string
		wantStatus int
		wantCode   string // FcmError errorCode; "" when there must be none
	}{
		{"ok", msg(`,"notification":{"title":"t"}`), 200, ""},
		{"ttl with fraction", msg(`,"android":{"ttl":"3.5s"}`), 200, ""},
		{"ttl zero", msg(`,"android":{"ttl":"0s"}`), 200, ""},
		{"priority HIGH (proto name)", msg(`,"android":{"priority":"HIGH"}`), 200, ""},
		{"not json", `{"message":`, 400, ""},
		{"unknown field", msg(`,"colour":"red"`), 400, ""},
		{"camelCase field", msg(`,"android":{"collapseKey":"x"}`), 400, ""},
		{"trailing data", msg(``) + `{}`, 400, ""},
		{"data value not a string", msg(`,"data":{"n":12}`), 400, ""},
		{"apns header not a string", msg(`,"apns":{"headers":{"apns-priority":10}}`), 400, ""},
		{"no message", `{}`, 400, "INVALID_ARGUMENT"},
		{"no target", `{"message":{"data":{"a":"b"}}}`, 400, "INVALID_ARGUMENT"},
		{"two targets", `{"message":{"token":"` + phone + `","topic":"x"}}`, 400, "INVALID_ARGUMENT"},
		{"bad topic", `{"message":{"topic":"a b"}}`, 400, "INVALID_ARGUMENT"},
		{"priority mixed case", msg(`,"android":{"priority":"High"}`), 400, "INVALID_ARGUMENT"},
		{"priority unknown", msg(`,"android":{"priority":"urgent"}`), 400, "INVALID_ARGUMENT"},
		{"ttl without unit", msg(`,"android":{"ttl":"3.5"}`), 400, "INVALID_ARGUMENT"},
		{"ttl negative", msg(`,"android":{"ttl":"-1s"}`), 400, "INVALID_ARGUMENT"},
		{"ttl ten decimals", msg(`,"android":{"ttl":"1.0000000001s"}`), 400, "INVALID_ARGUMENT"},
		{"ttl words", msg(`,"android":{"ttl":"1h"}`), 400, "INVALID_ARGUMENT"},
		{"google data key", msg(`,"data":{"google.x":"y"}`), 400, "INVALID_ARGUMENT"},
		{"apns payload not an object", msg(`,"apns":{"payload":[1]}`), 400, "INVALID_ARGUMENT"},
		{"payload at the limit", msg(`,"data":{"k":"` + strings.Repeat("x", 4095) + `"}`), 200, ""},
		{"payload over the limit", msg(`,"data":{"k":"` + strings.Repeat("x", 4096) + `"}`), 400, "INVALID_ARGUMENT"},
		{"body over 1 MiB", msg(`,"data":{"k":"` + strings.Repeat("x", 1<<20) + `"}`), 400, "INVALID_ARGUMENT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := postFCM(t, hc, s, auth, tt.give)
			if status != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", status, tt.wantStatus, body)
			}
			if status == 200 {
				return
			}
			var e struct {
				Error struct {
					Code    int
					Status  string
					Details []struct {
						Type      string `json:"@type"`
						ErrorCode string `json:"errorCode"`
					}
				}
			}
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code != status || e.Error.Status != "INVALID_ARGUMENT" {
				t.Fatalf("body %s is not a google.rpc.Status INVALID_ARGUMENT", body)
			}
			var code string
			var badRequest bool
			for _, d := range e.Error.Details {
				switch d.Type {
				case fcmErrorType:
					code = d.ErrorCode
				case "type.googleapis.com/google.rpc.BadRequest":
					badRequest = true
				}
			}
			if code != tt.wantCode {
				t.Fatalf("FcmError code %q, want %q", code, tt.wantCode)
			}
			if !badRequest {
				// Every refusal of the message names the field at fault,
				// unlike a bad registration token: that is how a client
				// tells the two apart.
				t.Fatalf("a refusal without a google.rpc.BadRequest detail: %s", body)
			}
		})
	}

	t.Run("other project", func(t *testing.T) {
		status, body := doFCM(t, hc, "POST", s.FCMEndpoint()+"/projects/elsewhere/messages:send", auth, msg(""))
		if status != 403 || !strings.Contains(body, "PERMISSION_DENIED") {
			t.Fatalf("status %d body %s", status, body)
		}
	})
	for _, tt := range []struct{ method, path string }{
		{"GET", "/projects/pushgate-sim/messages:send"},
		{"POST", "/projects/pushgate-sim/messages:batchSend"},
		{"POST", "/projects/pushgate-sim"},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			status, body := doFCM(t, hc, tt.method, s.FCMEndpoint()+tt.path, auth, msg(""))
			if status != 404 || !strings.Contains(body, "NOT_FOUND") {
				t.Fatalf("status %d body %s", status, body)
			}
		})
	}
}

// TestFCMHTTP1 checks that a client without HTTP/2 (an http.Transport with
// a custom TLS configuration and no ForceAttemptHTTP2) still works, as it
// does against Google.
func TestFCMHTTP1(t *testing.T) {
	s := newSim(t, Config{})
	phone := fcmToken("phone")
	s.AddDevice(providers.FCM, phone)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.CertPool()}}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
	conf, err := google.JWTConfigFromJSON(s.ServiceAccountJSON(), fcmScope)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := conf.TokenSource(context.WithValue(context.Background(), oauth2.HTTPClient, hc)).Token()
	if err != nil {
		t.Fatalf("token over HTTP/1.1: %v", err)
	}
	req, _ := http.NewRequest("POST", s.FCMEndpoint()+"/projects/pushgate-sim/messages:send",
		strings.NewReader(`{"message":{"token":"`+phone+`","data":{"a":"b"}}}`))
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 1 {
		t.Fatalf("%s over %s, want 200 over HTTP/1.1", resp.Status, resp.Proto)
	}
}

// TestOAuthTokenEndpoint checks the JWT-bearer grant's refusals.
func TestOAuthTokenEndpoint(t *testing.T) {
	clock := newFakeClock()
	s := newSim(t, Config{Now: clock.Now})
	hc := h2Client(t, s)
	var sa struct {
		PrivateKeyID string `json:"private_key_id"`
		ClientEmail  string `json:"client_email"`
	}
	json.Unmarshal(s.ServiceAccountJSON(), &sa)
	saKey, _ := testKeys()
	otherKey := mustRSA(t)
	now := clock.Now()

	type claims = jws.ClaimSet
	good := func() claims {
		return claims{Iss: sa.ClientEmail, Aud: s.TokenURL(), Scope: fcmScope, Iat: now.Unix(), Exp: now.Add(time.Hour).Unix()}
	}
	tests := []struct {
		name      string
		grant     string
		claims    func() claims
		otherKey  bool
		wantCode  int
		wantError string
	}{
		{name: "good", claims: good, wantCode: 200},
		{name: "wrong grant type", grant: "client_credentials", claims: good, wantCode: 400, wantError: "unsupported_grant_type"},
		{name: "signed by another key", claims: good, otherKey: true, wantCode: 400, wantError: "invalid_grant"},
		{name: "wrong issuer", claims: func() claims { c := good(); c.Iss = "x@y"; return c }, wantCode: 400, wantError: "invalid_grant"},
		{name: "wrong audience", claims: func() claims { c := good(); c.Aud = "https://oauth2.googleapis.com/token"; return c }, wantCode: 400, wantError: "invalid_grant"},
		{name: "expired", claims: func() claims {
			c := good()
			c.Iat, c.Exp = now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
			return c
		}, wantCode: 400, wantError: "invalid_grant"},
		{name: "issued in the future", claims: func() claims {
			c := good()
			c.Iat, c.Exp = now.Add(time.Hour).Unix(), now.Add(90*time.Minute).Unix()
			return c
		}, wantCode: 400, wantError: "invalid_grant"},
		{name: "too long-lived", claims: func() claims { c := good(); c.Exp = now.Add(3 * time.Hour).Unix(); return c }, wantCode: 400, wantError: "invalid_grant"},
		{name: "no scope", claims: func() claims { c := good(); c.Scope = ""; return c }, wantCode: 400, wantError: "invalid_scope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := saKey
			if tt.otherKey {
				key = otherKey
			}
			cs := tt.claims()
			assertion, err := jws.Encode(&jws.Header{Algorithm: "RS256", Typ: "JWT", KeyID: sa.PrivateKeyID}, &cs, key)
			if err != nil {
				t.Fatal(err)
			}
			grant := tt.grant
			if grant == "" {
				grant = jwtBearerGrant
			}
			resp, err := hc.PostForm(s.TokenURL(), url.Values{"grant_type": {grant}, "assertion": {assertion}})
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status %d, want %d: %v", resp.StatusCode, tt.wantCode, body)
			}
			if tt.wantCode == 200 {
				if body["token_type"] != "Bearer" || body["access_token"] == "" || body["expires_in"].(float64) < 3000 {
					t.Fatalf("token response %v", body)
				}
				return
			}
			if body["error"] != tt.wantError {
				t.Fatalf("error %v, want %s", body["error"], tt.wantError)
			}
		})
	}

	t.Run("oauth2 library sees invalid_grant", func(t *testing.T) {
		conf, _ := google.JWTConfigFromJSON(s.ServiceAccountJSON(), fcmScope)
		conf.Email = "someone-else@example.iam.gserviceaccount.com"
		_, err := conf.TokenSource(context.WithValue(context.Background(), oauth2.HTTPClient, hc)).Token()
		var re *oauth2.RetrieveError
		// x/oauth2/jwt does not parse the error body into ErrorCode.
		if !errors.As(err, &re) || re.Response.StatusCode != 400 || !bytes.Contains(re.Body, []byte(`"invalid_grant"`)) {
			t.Fatalf("Token: %v, want a RetrieveError invalid_grant", err)
		}
	})
	if bytes.Contains(s.ServiceAccountJSON(), []byte(`"token_uri": "`+s.TokenURL()+`"`)) == false {
		t.Errorf("service account token_uri is not the simulator's")
	}
}
