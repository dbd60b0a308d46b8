package sim

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"maps"
	"strings"
	"testing"
	"time"

	"firebase.google.com/go/v4/messaging"
	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/payload"

	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/signing/appsig"
)

// appPush is one push as a test sends it: the notification's own text,
// the collapse id, and the pushgate block (none when nil). A silent push
// has no text of its own.
type appPush struct {
	title, body string
	collapse    string
	block       *appsig.Block
	raw         string // a pushgate value sent as it is, instead of block
	silent      bool
}

// appSender sends p to the phone token through the official client of
// its platform.
type appSender func(t *testing.T, token string, p appPush)

func fcmAppSender(c *messaging.Client) appSender {
	return func(t *testing.T, token string, p appPush) {
		t.Helper()
		msg := &messaging.Message{Token: token, Data: map[string]string{},
			Android: &messaging.AndroidConfig{CollapseKey: p.collapse}}
		switch {
		case p.block != nil:
			b, err := json.Marshal(p.block)
			if err != nil {
				t.Fatal(err)
			}
			msg.Data["pushgate"] = string(b)
		case p.raw != "":
			msg.Data["pushgate"] = p.raw
		}
		if !p.silent && (p.title != "" || p.body != "") {
			msg.Notification = &messaging.Notification{Title: p.title, Body: p.body}
			msg.Android.Notification = &messaging.AndroidNotification{Tag: p.collapse}
		}
		if _, err := c.Send(context.Background(), msg); err != nil {
			t.Fatalf("fcm send: %v", err)
		}
	}
}

func apnsAppSender(s *Sim, c *apns2.Client) appSender {
	return func(t *testing.T, token string, p appPush) {
		t.Helper()
		pl := payload.NewPayload()
		switch {
		case p.block != nil:
			b, err := json.Marshal(p.block)
			if err != nil {
				t.Fatal(err)
			}
			pl.Custom("pushgate", json.RawMessage(b))
		case p.raw != "":
			pl.Custom("pushgate", json.RawMessage(p.raw))
		}
		n := &apns2.Notification{DeviceToken: token, Topic: s.Topic(), CollapseID: p.collapse, Payload: pl}
		if p.silent {
			pl.ContentAvailable()
			n.PushType, n.Priority = apns2.PushTypeBackground, apns2.PriorityLow
		} else {
			pl.AlertTitle(p.title).AlertBody(p.body)
		}
		res, err := c.Push(n)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("apns push: %v %+v", err, res)
		}
	}
}

func newAppSigner(t *testing.T, keyID string) *appsig.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sg, err := appsig.NewSigner(keyID, priv)
	if err != nil {
		t.Fatal(err)
	}
	return sg
}

// appPlatform is one way pushgate's pushes reach a phone.
type appPlatform struct {
	name     string
	platform providers.Platform
	token    string
	// carryText: the push is data-only and its text is in the block, as
	// FCM messages are in require mode.
	carryText bool
}

var appPlatforms = []appPlatform{
	{name: "fcm", platform: providers.FCM, token: fcmToken("phone")},
	{name: "fcm-data-only", platform: providers.FCM, token: fcmToken("phone"), carryText: true},
	// An upper-case token: the app binds to the lowercase hex of its
	// device token whatever case the provider request used.
	{name: "apns", platform: providers.APNs, token: "ABCDEF" + apnsToken(1)[6:]},
}

// TestAppVerifies drives every verdict of the app through the official
// clients: what pushgate signed for this phone shows once, replaces and
// removes; what anyone else sends, or a re-send, changes nothing and is
// counted by refusal code.
func TestAppVerifies(t *testing.T) {
	for _, ap := range appPlatforms {
		t.Run(ap.name, func(t *testing.T) {
			clock := newFakeClock()
			s := newSim(t, Config{Now: clock.Now})
			phone := ap.token
			if err := s.AddDevice(ap.platform, phone); err != nil {
				t.Fatal(err)
			}
			var send appSender
			if ap.platform == providers.FCM {
				send = fcmAppSender(fcmClient(t, s))
			} else {
				send = apnsAppSender(s, apnsClient(t, s))
			}
			signer := newAppSigner(t, "app-1")
			rogue := newAppSigner(t, "rogue")
			err := s.SetApp(&App{
				Keys: map[string]ed25519.PublicKey{signer.KeyID(): signer.Public()},
				Topics: func(p providers.Platform, token string) []string {
					if p == ap.platform && token == phone {
						return []string{"city-alerts"}
					}
					return nil
				},
			})
			if err != nil {
				t.Fatal(err)
			}

			exp := clock.Now().Add(time.Hour).Unix()
			// signed pushes what pushgate's workers send for claims c.
			signed := func(sg *appsig.Signer, c appsig.Claims) appPush {
				c.Expires = exp
				b := sg.Sign(c, ap.carryText && c.Kind != appsig.KindRecallRemove)
				p := appPush{collapse: c.Collapse, block: &b, silent: c.Kind == appsig.KindRecallRemove}
				if !ap.carryText {
					p.title, p.body = c.Title, c.Body
				} else {
					p.silent = true
				}
				return p
			}
			alert := appsig.Claims{Kind: appsig.KindAlert, Broadcast: "b1", Collapse: "pg-b1",
				Audience: appsig.AudienceTopic("city-alerts"), Title: "Flood", Body: "Leave the river banks."}
			wantRefusals := map[string]int64{}
			check := func(step string, want map[string]string) {
				t.Helper()
				if got := screen(t, s, phone); !maps.Equal(got, want) {
					t.Fatalf("%s: screen %v, want %v", step, got, want)
				}
				if got := s.Refusals(); !maps.Equal(got, wantRefusals) {
					t.Fatalf("%s: refusals %v, want %v", step, got, wantRefusals)
				}
				if got := s.Stats().Refusals; !maps.Equal(got, wantRefusals) {
					t.Fatalf("%s: Stats().Refusals %v, want %v", step, got, wantRefusals)
				}
			}
			refused := func(step, code string) {
				t.Helper()
				v, _ := s.Device(phone)
				var n int64
				for _, c := range wantRefusals {
					n += c
				}
				if int64(v.Refused) != n || v.LastRefusal != code {
					t.Fatalf("%s: phone refused %d, last %q; want %d, %q", step, v.Refused, v.LastRefusal, n, code)
				}
			}

			send(t, phone, signed(signer, alert))
			check("signed alert", map[string]string{"pg-b1": "Flood/Leave the river banks."})
			if v, _ := s.Device(phone); len(v.Screen) != 1 || v.Screen[0].Broadcast != "b1" {
				t.Fatalf("screen %+v, want broadcast b1", v.Screen)
			}

			send(t, phone, signed(signer, alert))
			wantRefusals[appsig.CodeAlreadyShown] = 1
			check("the same push again", map[string]string{"pg-b1": "Flood/Leave the river banks."})
			refused("the same push again", appsig.CodeAlreadyShown)
			if st := s.Stats(); st.RawDuplicates != 1 {
				t.Fatalf("raw duplicates %d, want the re-send counted", st.RawDuplicates)
			}

			// Someone holding the provider credential, sending around
			// pushgate.
			send(t, phone, appPush{title: "Fake", body: "Evacuate now", collapse: "spoof"})
			wantRefusals[appsig.CodeMalformed] = 1
			check("unsigned push", map[string]string{"pg-b1": "Flood/Leave the river banks."})
			refused("unsigned push", appsig.CodeMalformed)
			if got := s.Showing("spoof"); len(got) != 0 {
				t.Fatalf("the unsigned push shows on %+v", got)
			}

			other := alert
			other.Broadcast, other.Collapse, other.Title = "b2", "pg-b2", "Rogue"
			send(t, phone, signed(rogue, other))
			wantRefusals[appsig.CodeUnknownKey] = 1
			check("untrusted key", map[string]string{"pg-b1": "Flood/Leave the river banks."})
			refused("untrusted key", appsig.CodeUnknownKey)

			other = alert
			other.Broadcast, other.Collapse, other.Audience = "b3", "pg-b3", appsig.AudienceTopic("sports")
			send(t, phone, signed(signer, other))
			wantRefusals[appsig.CodeWrongAud] = 1
			check("another topic", map[string]string{"pg-b1": "Flood/Leave the river banks."})
			refused("another topic", appsig.CodeWrongAud)

			// Bound to this phone's token.
			other = alert
			other.Broadcast, other.Collapse, other.Audience, other.Body = "b4", "pg-b4", appsig.AudienceToken(phone), "for you"
			if ap.platform == providers.APNs {
				other.Audience = appsig.AudienceToken(strings.ToLower(phone))
			}
			send(t, phone, signed(signer, other))
			check("token audience", map[string]string{"pg-b1": "Flood/Leave the river banks.", "pg-b4": "Flood/for you"})

			replace := alert
			replace.Kind, replace.Body = appsig.KindRecallReplace, "Stay home."
			send(t, phone, signed(signer, replace))
			check("signed replacement", map[string]string{"pg-b1": "Flood/Stay home.", "pg-b4": "Flood/for you"})

			// A recall without a signature, as pushgate sent before
			// signing.
			send(t, phone, appPush{raw: `{"recall":"b1"}`, silent: true})
			wantRefusals[appsig.CodeVersion] = 1
			check("unsigned recall", map[string]string{"pg-b1": "Flood/Stay home.", "pg-b4": "Flood/for you"})
			refused("unsigned recall", appsig.CodeVersion)

			send(t, phone, signed(signer, appsig.Claims{Kind: appsig.KindRecallRemove, Broadcast: "b1",
				Collapse: "pg-b1", Audience: appsig.AudienceTopic("city-alerts")}))
			check("signed removal", map[string]string{"pg-b4": "Flood/for you"})

			// The replacement cannot come back after the removal.
			send(t, phone, signed(signer, replace))
			wantRefusals[appsig.CodeAlreadyShown]++
			check("replacement after removal", map[string]string{"pg-b4": "Flood/for you"})

			// The providers delivered everything; only the screen differs.
			const sent = 10
			st := s.Stats()
			if st.Deliveries != sent || st.Recalled != 1 || st.PhonesReached != 1 {
				t.Fatalf("deliveries %d recalled %d reached %d; want %d, 1, 1", st.Deliveries, st.Recalled, st.PhonesReached, sent)
			}
			if d := s.Deliveries(nil); len(d) != sent {
				t.Fatalf("%d logged deliveries, want %d", len(d), sent)
			}
			if v, _ := s.Device(phone); v.Deliveries != sent || len(v.Log) != sent {
				t.Fatalf("phone deliveries %d, log %d; want %d", v.Deliveries, len(v.Log), sent)
			}
		})
	}
}

// TestAppExpiredWhileOffline checks that the app verifies when the phone
// receives a push, on the simulator's clock: a push its provider held
// past the block's expiry is refused.
func TestAppExpiredWhileOffline(t *testing.T) {
	clock := newFakeClock()
	s := newSim(t, Config{Now: clock.Now})
	phone := fcmToken("phone")
	s.AddDevice(providers.FCM, phone)
	signer := newAppSigner(t, "app-1")
	if err := s.SetApp(&App{Keys: map[string]ed25519.PublicKey{signer.KeyID(): signer.Public()}}); err != nil {
		t.Fatal(err)
	}
	send := fcmAppSender(fcmClient(t, s))
	push := func(broadcast string) {
		c := appsig.Claims{Kind: appsig.KindAlert, Broadcast: broadcast, Collapse: broadcast,
			Expires: clock.Now().Add(time.Minute).Unix(), Audience: appsig.AudienceAll, Title: "T", Body: broadcast}
		b := signer.Sign(c, false)
		send(t, phone, appPush{title: c.Title, body: c.Body, collapse: c.Collapse, block: &b})
	}
	s.SetOnline(phone, false)
	push("late")
	clock.Add(2 * time.Minute)
	s.SetOnline(phone, true)
	push("fresh")
	if got := screen(t, s, phone); len(got) != 1 || got["fresh"] != "T/fresh" {
		t.Fatalf("screen %v, want only the fresh push", got)
	}
	if got := s.Refusals(); len(got) != 1 || got[appsig.CodeExpired] != 1 {
		t.Fatalf("refusals %v, want one expired", got)
	}
	if st := s.Stats(); st.Deliveries != 2 {
		t.Fatalf("deliveries %d, want 2", st.Deliveries)
	}
}

// TestAppUninstall checks that without the app every phone shows what it
// receives again, and that SetApp refuses a key of the wrong size.
func TestAppUninstall(t *testing.T) {
	s := newSim(t, Config{})
	phone := apnsToken(2)
	s.AddDevice(providers.APNs, phone)
	send := apnsAppSender(s, apnsClient(t, s))
	signer := newAppSigner(t, "app-1")
	if err := s.SetApp(&App{Keys: map[string]ed25519.PublicKey{"short": make([]byte, 31)}}); err == nil {
		t.Fatal("SetApp took a 31-byte key")
	}
	if err := s.SetApp(&App{Keys: map[string]ed25519.PublicKey{signer.KeyID(): signer.Public()}}); err != nil {
		t.Fatal(err)
	}
	send(t, phone, appPush{title: "A", body: "unsigned", collapse: "a"})
	if got := screen(t, s, phone); len(got) != 0 {
		t.Fatalf("screen %v with the app", got)
	}
	if s.App() == nil {
		t.Fatal("App() is nil with an app installed")
	}
	s.SetApp(nil)
	if s.App() != nil {
		t.Fatal("App() is not nil after uninstalling")
	}
	send(t, phone, appPush{title: "A", body: "unsigned", collapse: "a"})
	if got := screen(t, s, phone); got["a"] != "A/unsigned" {
		t.Fatalf("screen %v without the app", got)
	}
	s.Reset()
	if got := s.Refusals(); len(got) != 0 {
		t.Fatalf("refusals %v after Reset", got)
	}
}

// TestControlApp installs the app through the control API.
func TestControlApp(t *testing.T) {
	s := newSim(t, Config{})
	phone, other := apnsToken(3), apnsToken(4)
	s.AddDevice(providers.APNs, phone)
	s.AddDevice(providers.APNs, other)
	send := apnsAppSender(s, apnsClient(t, s))
	signer := newAppSigner(t, "app-1")
	pub := base64.RawURLEncoding.EncodeToString(signer.Public())

	var view struct {
		Installed bool              `json:"installed"`
		Keys      map[string]string `json:"keys"`
	}
	if code := ctl(t, s, "GET", "/sim/app", "", &view); code != 200 || view.Installed {
		t.Fatalf("GET /sim/app: %d %+v", code, view)
	}
	for _, bad := range []string{`{"keys":{"k":"!!"}}`, `{"keys":{"k":"AAAA"}}`, `{"keys":{},"nope":1}`} {
		if code := ctl(t, s, "PUT", "/sim/app", bad, nil); code != 400 {
			t.Fatalf("PUT /sim/app %s: %d, want 400", bad, code)
		}
	}
	body := `{"keys":{"app-1":"` + pub + `"},"topics":["city-alerts"],"device_topics":{"` + other + `":[]}}`
	if code := ctl(t, s, "PUT", "/sim/app", body, &view); code != 200 || !view.Installed || view.Keys["app-1"] != pub {
		t.Fatalf("PUT /sim/app: %d %+v", code, view)
	}

	b := signer.Sign(appsig.Claims{Kind: appsig.KindAlert, Broadcast: "b1", Collapse: "pg-b1",
		Expires: time.Now().Add(time.Hour).Unix(), Audience: appsig.AudienceTopic("city-alerts"),
		Title: "Flood", Body: "Leave."}, false)
	for _, tok := range []string{phone, other} {
		send(t, tok, appPush{title: "Flood", body: "Leave.", collapse: "pg-b1", block: &b})
	}
	var shown map[string]any
	ctl(t, s, "GET", "/sim/showing?collapse=pg-b1", "", &shown)
	if shown["phones"] != 1.0 {
		t.Fatalf("showing %v, want the subscribed phone only", shown)
	}
	var dev DeviceView
	if ctl(t, s, "GET", "/sim/devices/"+other, "", &dev); dev.Refused != 1 || dev.LastRefusal != appsig.CodeWrongAud {
		t.Fatalf("unsubscribed phone: refused %d, last %q", dev.Refused, dev.LastRefusal)
	}
	var stats Stats
	if ctl(t, s, "GET", "/sim/stats", "", &stats); stats.Refusals[appsig.CodeWrongAud] != 1 || stats.Deliveries != 2 {
		t.Fatalf("stats refusals %v deliveries %d", stats.Refusals, stats.Deliveries)
	}

	if code := ctl(t, s, "DELETE", "/sim/app", "", &view); code != 200 || view.Installed {
		t.Fatalf("DELETE /sim/app: %d %+v", code, view)
	}
	if s.App() != nil {
		t.Fatal("the app is still installed")
	}
}
