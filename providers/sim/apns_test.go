package sim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/payload"
	"github.com/sideshow/apns2/token"

	"github.com/pushgate/pushgate/providers"
)

// apnsToken is a device token of the right shape: 64 hex digits.
func apnsToken(b byte) string {
	return strings.Repeat(string("0123456789abcdef"[b%16]), 64)
}

// TestAPNsSDK drives every APNs outcome the official client can produce
// through apns2 with token authentication.
func TestAPNsSDK(t *testing.T) {
	s := newSim(t, Config{})
	phone := apnsToken(1)
	s.AddDevice(providers.APNs, phone)
	c := apnsClient(t, s)
	alert := payload.NewPayload().AlertTitle("Flood").AlertBody("Avoid Manggarai").Custom("pushgate", map[string]string{"broadcast": "b1"})
	n := func(tok string, edit func(*apns2.Notification)) *apns2.Notification {
		nt := &apns2.Notification{DeviceToken: tok, Topic: s.Topic(), Payload: alert}
		if edit != nil {
			edit(nt)
		}
		return nt
	}

	tests := []struct {
		name       string
		give       *apns2.Notification
		wantStatus int
		wantReason string
	}{
		{"delivered", n(phone, func(nt *apns2.Notification) {
			nt.CollapseID = "b1"
			nt.ApnsID = "5f1c7c4e-2b0f-4a51-9a54-6b8f1d3c2e10"
			nt.Priority = apns2.PriorityHigh
			nt.Expiration = time.Now().Add(time.Hour)
		}), 200, ""},
		{"background push", n(phone, func(nt *apns2.Notification) {
			nt.PushType = apns2.PushTypeBackground
			nt.Priority = apns2.PriorityLow
			nt.Payload = payload.NewPayload().ContentAvailable()
		}), 200, ""},
		{"voip topic", n(phone, func(nt *apns2.Notification) {
			nt.PushType = apns2.PushTypeVOIP
			nt.Topic = s.Topic() + ".voip"
			nt.Payload = []byte(`{"aps":{},"call":"` + strings.Repeat("x", 4900) + `"}`)
		}), 200, ""},
		{"payload at the limit", n(phone, func(nt *apns2.Notification) {
			nt.Payload = []byte(`{"aps":{},"k":"` + strings.Repeat("x", 4096-len(`{"aps":{},"k":""}`)) + `"}`)
		}), 200, ""},
		{"collapse id at the limit", n(phone, func(nt *apns2.Notification) { nt.CollapseID = strings.Repeat("c", 64) }), 200, ""},
		{"unregistered prefix", n("unreg-"+phone, nil), 410, "Unregistered"},
		{"unknown token", n(apnsToken(2), nil), 410, "Unregistered"},
		{"expired token", n("expired-"+phone, nil), 410, "ExpiredToken"},
		{"bad token prefix", n("badtoken-"+phone, nil), 400, "BadDeviceToken"},
		{"malformed token", n("not-hex", nil), 400, "BadDeviceToken"},
		{"not for topic", n("mismatch-"+phone, nil), 400, "DeviceTokenNotForTopic"},
		{"too many requests", n("quota-"+phone, nil), 429, "TooManyRequests"},
		{"unavailable", n("unavail-"+phone, nil), 503, "ServiceUnavailable"},
		{"shutdown", n("shutdown-"+phone, nil), 503, "Shutdown"},
		{"internal", n("internal-"+phone, nil), 500, "InternalServerError"},
		{"forbidden", n("3pauth-"+phone, nil), 403, "Forbidden"},
		{"missing topic", n(phone, func(nt *apns2.Notification) { nt.Topic = "" }), 400, "MissingTopic"},
		{"other app's topic", n(phone, func(nt *apns2.Notification) { nt.Topic = "com.example.other" }), 400, "TopicDisallowed"},
		{"bad topic", n(phone, func(nt *apns2.Notification) { nt.Topic = "org pushgate" }), 400, "BadTopic"},
		{"unknown push type", n(phone, func(nt *apns2.Notification) { nt.PushType = "banner" }), 400, "InvalidPushType"},
		{"bad priority", n(phone, func(nt *apns2.Notification) { nt.Priority = 7 }), 400, "BadPriority"},
		{"background at priority 10", n(phone, func(nt *apns2.Notification) {
			nt.PushType = apns2.PushTypeBackground
			nt.Priority = apns2.PriorityHigh
		}), 400, "BadPriority"},
		{"collapse id too long", n(phone, func(nt *apns2.Notification) { nt.CollapseID = strings.Repeat("c", 65) }), 400, "BadCollapseId"},
		{"bad apns-id", n(phone, func(nt *apns2.Notification) { nt.ApnsID = "not-a-uuid" }), 400, "BadMessageId"},
		{"payload too large", n(phone, func(nt *apns2.Notification) {
			nt.Payload = []byte(`{"aps":{},"k":"` + strings.Repeat("x", 4096) + `"}`)
		}), 413, "PayloadTooLarge"},
		{"payload without aps", n(phone, func(nt *apns2.Notification) { nt.Payload = []byte(`{"k":1}`) }), 400, "PayloadEmpty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now().Truncate(time.Second) // apns2 reads the timestamp in whole seconds
			res, err := c.Push(tt.give)
			after := time.Now()
			if err != nil {
				t.Fatalf("Push: %v", err)
			}
			if res.StatusCode != tt.wantStatus || res.Reason != tt.wantReason {
				t.Fatalf("got %d %q, want %d %q", res.StatusCode, res.Reason, tt.wantStatus, tt.wantReason)
			}
			if !validUUID(res.ApnsID) {
				t.Errorf("apns-id %q is not a UUID", res.ApnsID)
			}
			if tt.give.ApnsID != "" && validUUID(tt.give.ApnsID) && res.ApnsID != tt.give.ApnsID {
				t.Errorf("apns-id %q, want the request's %q", res.ApnsID, tt.give.ApnsID)
			}
			if tt.wantStatus == 410 && (res.Timestamp.Time.Before(before) || res.Timestamp.Time.After(after)) {
				t.Errorf("410 timestamp %v, want between the request (%v) and its answer (%v)", res.Timestamp, before, after)
			}
		})
	}

	v, _ := s.Device(phone)
	// Shown: the first push under b1 and the one under the 64-byte id; the
	// others were silent or carried no alert.
	if len(v.Screen) != 2 || v.Screen[0].CollapseID != "b1" || v.Screen[0].Title != "Flood" || v.Screen[0].Broadcast != "b1" {
		t.Fatalf("screen = %+v, want the Flood notification under b1 and one more", v.Screen)
	}
	// delivered, background, voip, payload limit, collapse limit; the other
	// pushes to this phone were refused before delivery.
	if v.Deliveries != 5 {
		t.Errorf("deliveries = %d, want 5", v.Deliveries)
	}
}

// TestAPNsProviderToken covers provider-token authentication: age,
// signature, identity and the refresh rate.
func TestAPNsProviderToken(t *testing.T) {
	clock := newFakeClock()
	s := newSim(t, Config{Now: clock.Now, TokenTTL: time.Hour, MinTokenRefresh: 20 * time.Minute})
	phone := apnsToken(1)
	s.AddDevice(providers.APNs, phone)
	push := func(c *apns2.Client) *apns2.Response {
		t.Helper()
		res, err := c.Push(&apns2.Notification{DeviceToken: phone, Topic: s.Topic(), Payload: payload.NewPayload().AlertBody("x")})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	want := func(res *apns2.Response, status int, reason string) {
		t.Helper()
		if res.StatusCode != status || res.Reason != reason {
			t.Fatalf("got %d %q, want %d %q", res.StatusCode, res.Reason, status, reason)
		}
	}
	withKey := func(key *ecdsa.PrivateKey, keyID, teamID string) *apns2.Client {
		c := apnsClient(t, s)
		c.Token = &token.Token{AuthKey: key, KeyID: keyID, TeamID: teamID}
		return c
	}
	_, simKey := testKeys()
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	first := withKey(simKey, s.KeyID(), s.TeamID())
	want(push(first), 200, "")
	want(push(withKey(otherKey, s.KeyID(), s.TeamID())), 403, "InvalidProviderToken")
	want(push(withKey(simKey, "OTHERKEYID", s.TeamID())), 403, "InvalidProviderToken")
	want(push(withKey(simKey, s.KeyID(), "OTHERTEAM1")), 403, "InvalidProviderToken")

	// A second, valid token so soon is one update too many; the first
	// token keeps working.
	second := withKey(simKey, s.KeyID(), s.TeamID())
	want(push(second), 429, "TooManyProviderTokenUpdates")
	want(push(first), 200, "")

	clock.Add(21 * time.Minute)
	want(push(second), 200, "")
	want(push(first), 200, "")

	// Both tokens were issued (by the real clock) about 61 minutes ago.
	clock.Add(40 * time.Minute)
	want(push(first), 403, "ExpiredProviderToken")
	want(push(second), 403, "ExpiredProviderToken")
}

// apnsRaw sends one request over plain HTTP/2.
func apnsRaw(t *testing.T, hc *http.Client, method, url string, header http.Header, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct{ Reason string }
	json.Unmarshal(b, &e)
	return resp.StatusCode, e.Reason, resp.Header
}

// TestAPNsMalformed sends requests apns2 would never send.
func TestAPNsMalformed(t *testing.T) {
	s := newSim(t, Config{Faults: Faults{RetryAfter: 7}})
	phone := apnsToken(1)
	s.AddDevice(providers.APNs, phone)
	hc := h2Client(t, s)
	bearer := "bearer " + bearerFor(t, s)
	hdr := func(kv ...string) http.Header {
		h := http.Header{"Authorization": {bearer}, "Apns-Topic": {s.Topic()}}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				h.Del(kv[i])
			} else {
				h.Add(kv[i], kv[i+1])
			}
		}
		return h
	}
	const ok = `{"aps":{"alert":"hi"}}`
	tests := []struct {
		name       string
		method     string
		path       string
		header     http.Header
		body       string
		wantStatus int
		wantReason string
	}{
		{"ok", "POST", "/3/device/" + phone, hdr(), ok, 200, ""},
		{"GET", "GET", "/3/device/" + phone, hdr(), "", 405, "MethodNotAllowed"},
		{"wrong version", "POST", "/2/device/" + phone, hdr(), ok, 404, "BadPath"},
		{"wrong resource", "POST", "/3/devices/" + phone, hdr(), ok, 404, "BadPath"},
		{"extra segment", "POST", "/3/device/" + phone + "/x", hdr(), ok, 404, "BadPath"},
		{"no token", "POST", "/3/device/", hdr(), ok, 400, "MissingDeviceToken"},
		{"no authorization", "POST", "/3/device/" + phone, hdr("Authorization", ""), ok, 403, "MissingProviderToken"},
		{"garbage bearer", "POST", "/3/device/" + phone, hdr("Authorization", "", "Authorization", "bearer abc.def.ghi"), ok, 403, "InvalidProviderToken"},
		{"not bearer", "POST", "/3/device/" + phone, hdr("Authorization", "", "Authorization", "Basic eA=="), ok, 403, "InvalidProviderToken"},
		{"duplicate topic", "POST", "/3/device/" + phone, hdr("Apns-Topic", s.Topic()), ok, 400, "DuplicateHeaders"},
		{"duplicate authorization", "POST", "/3/device/" + phone, hdr("Authorization", bearer), ok, 400, "DuplicateHeaders"},
		{"expiration not a number", "POST", "/3/device/" + phone, hdr("Apns-Expiration", "tomorrow"), ok, 400, "BadExpirationDate"},
		{"expiration negative", "POST", "/3/device/" + phone, hdr("Apns-Expiration", "-5"), ok, 400, "BadExpirationDate"},
		{"empty body", "POST", "/3/device/" + phone, hdr(), "", 400, "PayloadEmpty"},
		{"not json", "POST", "/3/device/" + phone, hdr(), "hello", 400, "PayloadEmpty"},
		{"aps not an object", "POST", "/3/device/" + phone, hdr(), `{"aps":1}`, 400, "PayloadEmpty"},
		{"retry-after on 429", "POST", "/3/device/quota-" + phone, hdr(), ok, 429, "TooManyRequests"},
		{"retry-after on 503", "POST", "/3/device/unavail-" + phone, hdr(), ok, 503, "ServiceUnavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, reason, h := apnsRaw(t, hc, tt.method, s.APNsHost()+tt.path, tt.header, tt.body)
			if status != tt.wantStatus || reason != tt.wantReason {
				t.Fatalf("got %d %q, want %d %q", status, reason, tt.wantStatus, tt.wantReason)
			}
			if (status == 429 || status == 503) && h.Get("Retry-After") != "7" {
				t.Errorf("Retry-After = %q, want 7", h.Get("Retry-After"))
			}
			if !validUUID(h.Get("Apns-Id")) {
				t.Errorf("apns-id %q", h.Get("Apns-Id"))
			}
		})
	}

	t.Run("HTTP/1.1 refused", func(t *testing.T) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.CertPool()}}
		defer tr.CloseIdleConnections()
		_, err := (&http.Client{Transport: tr}).Post(s.APNsHost()+"/3/device/"+phone, "application/json", strings.NewReader(ok))
		if err == nil {
			t.Fatal("an HTTP/1.1 client reached APNs")
		}
	})
}
