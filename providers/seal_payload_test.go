package providers

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/signing/appsig"
)

const sealTopic = "banjir-jakarta"

// testSigner returns a signer of a fresh key and the verifier of an app
// that trusts it, on the golden messages' clock.
func testSigner(t testing.TB) (*appsig.Signer, *appsig.Verifier) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := appsig.NewSigner("app-test-1", priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, &appsig.Verifier{Keys: map[string]ed25519.PublicKey{s.KeyID(): pub}, Now: func() time.Time { return testNow }}
}

// sealed returns a copy of msg sealed as the queue would seal it: a
// removal for a recall instruction, an alert otherwise.
func sealed(msg Message, s *appsig.Signer, mode SealMode, audience string) *Message {
	kind := appsig.KindAlert
	if msg.RecallOf != "" {
		kind = appsig.KindRecallRemove
	}
	msg.Seal = &Seal{Signer: s, Mode: mode, Kind: kind, Audience: audience}
	return &msg
}

// fcmView is what a phone gets of an FCM message, decoded from the JSON
// the sender sends.
type fcmView struct {
	Notification *struct {
		Title string `json:"title"`
		Body  string `json:"body"`
	} `json:"notification"`
	Data    map[string]string `json:"data"`
	Android struct {
		Notification json.RawMessage `json:"notification"`
	} `json:"android"`
	APNS struct {
		Headers map[string]string `json:"headers"`
		Payload json.RawMessage   `json:"payload"`
	} `json:"apns"`
}

// push is the appsig.Push an Android app builds from v.
func (v *fcmView) push() appsig.Push {
	p := appsig.Push{Data: v.Data}
	if v.Notification != nil {
		p.Title, p.Body = v.Notification.Title, v.Notification.Body
	}
	return p
}

// apnsPush is the appsig.Push an iOS app builds from a payload: aps.alert,
// and the other top-level keys as strings, objects re-marshalled. aps is
// the payload's aps dictionary.
func apnsPush(t *testing.T, payload []byte) (p appsig.Push, aps map[string]json.RawMessage) {
	t.Helper()
	var top map[string]json.RawMessage
	if err := json.Unmarshal(payload, &top); err != nil {
		t.Fatalf("payload %s: %v", payload, err)
	}
	if err := json.Unmarshal(top["aps"], &aps); err != nil {
		t.Fatalf("aps %s: %v", top["aps"], err)
	}
	if raw, ok := aps["alert"]; ok {
		var alert struct{ Title, Body string }
		if err := json.Unmarshal(raw, &alert); err != nil {
			t.Fatal(err)
		}
		p.Title, p.Body = alert.Title, alert.Body
	}
	p.Data = map[string]string{}
	for k, raw := range top {
		if k == "aps" {
			continue
		}
		var s string
		if json.Unmarshal(raw, &s) == nil {
			p.Data[k] = s
			continue
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatal(err)
		}
		enc, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		p.Data[k] = string(enc)
	}
	return p, aps
}

// blockIn decodes the signed block of a push.
func blockIn(t *testing.T, p appsig.Push) appsig.Block {
	t.Helper()
	var b appsig.Block
	if err := json.Unmarshal([]byte(p.Data[metaKey]), &b); err != nil {
		t.Fatalf("block %q: %v", p.Data[metaKey], err)
	}
	return b
}

// TestSealedPayloads builds every golden message sealed, in both modes,
// for a topic and for each device's token, decodes what each device is
// sent as its phone would, and verifies it.
func TestSealedPayloads(t *testing.T) {
	signer, verifier := testSigner(t)
	tokens := []string{"fcm-token-1", strings.Repeat("t", maxFCMToken)}
	apnsTokens := []string{strings.Repeat("ab", 32), strings.Repeat("CD", 32)}
	for _, tt := range mappingMessages() {
		for _, mode := range []SealMode{SealSign, SealRequire} {
			for _, audience := range []string{appsig.AudienceTopic(sealTopic), ""} {
				name := fmt.Sprintf("%s/%s/aud=%q", tt.name, mode, audience)
				msg := sealed(tt.msg, signer, mode, audience)
				wantKind, wantBroadcast := appsig.KindAlert, msg.BroadcastID
				if msg.RecallOf != "" {
					wantKind, wantBroadcast = appsig.KindRecallRemove, msg.RecallOf
				}
				wantTitle, wantBody := msg.Title, msg.Body
				if msg.silent() {
					wantTitle, wantBody = "", ""
				}
				check := func(t *testing.T, dev appsig.Device, p appsig.Push) {
					t.Helper()
					c, err := verifier.Verify(dev, p)
					if err != nil {
						t.Fatalf("verify: %v", err)
					}
					if c.Kind != wantKind || c.Broadcast != wantBroadcast || c.Collapse != msg.CollapseID ||
						c.Expires != msg.expiresAt(testNow).Unix() || c.Title != wantTitle || c.Body != wantBody {
						t.Errorf("claims %+v, want %s of %s, collapse %q, expiring %d, text %q %q",
							c, wantKind, wantBroadcast, msg.CollapseID, msg.expiresAt(testNow).Unix(), wantTitle, wantBody)
					}
					wantAud := audience
					if wantAud == "" {
						wantAud = appsig.AudienceToken(strings.ToLower(dev.Token))
					}
					if c.Audience != wantAud {
						t.Errorf("audience %q, want %q", c.Audience, wantAud)
					}
				}

				t.Run("fcm/"+name, func(t *testing.T) {
					b, reason := fcmMessage(msg, testNow)
					if reason != "" {
						t.Fatal(reason)
					}
					var blocks [][]byte
					for _, tok := range tokens {
						m := b.message(tok)
						enc, err := json.Marshal(&m)
						if err != nil {
							t.Fatal(err)
						}
						if len(enc) != b.sizeWith(tok) {
							t.Errorf("message to a token of %d bytes is %d bytes, the batch measures %d", len(tok), len(enc), b.sizeWith(tok))
						}
						var v fcmView
						if err := json.Unmarshal(enc, &v); err != nil {
							t.Fatal(err)
						}
						p := v.push()
						check(t, appsig.Device{Token: tok, Topics: []string{sealTopic}}, p)
						blk := blockIn(t, p)
						blocks = append(blocks, []byte(p.Data[metaKey]))

						dataOnly := mode == SealRequire || msg.silent()
						hasText := blk.Title != nil || blk.Body != nil
						switch {
						case dataOnly != (v.Notification == nil && v.Android.Notification == nil):
							t.Errorf("notification %+v, android.notification %s; want data-only: %v", v.Notification, v.Android.Notification, dataOnly)
						case hasText != (mode == SealRequire && !msg.silent()):
							t.Errorf("block carries text: %v, in %s mode", hasText, mode)
						case dataOnly && (v.APNS.Headers["apns-push-type"] != "background" || v.APNS.Headers["apns-priority"] != "5" ||
							!bytes.Contains(v.APNS.Payload, []byte(`"content-available":1`))):
							t.Errorf("data-only message reaches iOS with %v %s, want a background push", v.APNS.Headers, v.APNS.Payload)
						}
					}
					if same := bytes.Equal(blocks[0], blocks[1]); same != (audience != "") {
						t.Errorf("two devices' blocks equal: %v, for audience %q", same, audience)
					}
				})

				t.Run("apns/"+name, func(t *testing.T) {
					b, reason := apnsMessage(msg, testNow)
					if reason != "" {
						t.Fatal(reason)
					}
					for _, tok := range apnsTokens {
						payload := b.notification("org.pushgate.app", tok).Payload.([]byte)
						if len(payload) != len(b.payload) {
							t.Errorf("payload for %s is %d bytes, the batch measures %d", tok, len(payload), len(b.payload))
						}
						p, aps := apnsPush(t, payload)
						// The app binds the lowercase hex of the token.
						check(t, appsig.Device{Token: strings.ToLower(tok), Topics: []string{sealTopic}}, p)
						if blk := blockIn(t, p); blk.Title != nil || blk.Body != nil {
							t.Error("APNs block carries the text beside aps.alert")
						}
						want := ""
						if mode == SealRequire && !msg.silent() {
							want = "1"
						}
						if got := string(aps["mutable-content"]); got != want {
							t.Errorf("aps mutable-content %q, want %q", got, want)
						}
					}
				})
			}
		}
	}
}

// TestUnsealedBlock checks that a message without a seal carries exactly
// the plain metadata block, as before seals existed (the golden files
// hold the whole payloads).
func TestUnsealedBlock(t *testing.T) {
	for _, tt := range mappingMessages() {
		t.Run(tt.name, func(t *testing.T) {
			want := `{"broadcast":"` + tt.msg.BroadcastID + `"}`
			if tt.msg.RecallOf != "" {
				want = `{"recall":"` + tt.msg.RecallOf + `"}`
			}
			f, reason := fcmMessage(&tt.msg, testNow)
			if reason != "" {
				t.Fatal(reason)
			}
			if got := f.tmpl.Data[metaKey]; got != want || f.seal != nil {
				t.Errorf("fcm block %s, want %s", got, want)
			}
			a, reason := apnsMessage(&tt.msg, testNow)
			if reason != "" {
				t.Fatal(reason)
			}
			var top map[string]json.RawMessage
			if err := json.Unmarshal(a.payload, &top); err != nil {
				t.Fatal(err)
			}
			if got := string(top[metaKey]); got != want || a.seal != nil {
				t.Errorf("apns block %s, want %s", got, want)
			}
		})
	}
}

func TestSealRefusals(t *testing.T) {
	signer, _ := testSigner(t)
	alert := Message{BroadcastID: "b-1", Title: "t", TTL: time.Hour, CollapseID: "pg-b-1"}
	recall := Message{RecallOf: "b-1", TTL: time.Hour, CollapseID: "pg-b-1"}
	with := func(msg Message, s Seal) *Message {
		msg.Seal = &s
		return &msg
	}
	topic := appsig.AudienceTopic(sealTopic)
	tests := []struct {
		name string
		give *Message
		want string // "" when both platforms accept
	}{
		{"alert to a topic", with(alert, Seal{signer, SealSign, appsig.KindAlert, topic}), ""},
		{"replacement to all", with(alert, Seal{signer, SealRequire, appsig.KindRecallReplace, appsig.AudienceAll}), ""},
		{"removal per device", with(recall, Seal{signer, SealRequire, appsig.KindRecallRemove, ""}), ""},
		{"no signer", with(alert, Seal{nil, SealSign, appsig.KindAlert, topic}), "seal has no signer"},
		{"unknown mode", with(alert, Seal{signer, "off", appsig.KindAlert, topic}), `unknown seal mode "off"`},
		{"unknown kind", with(alert, Seal{signer, SealSign, "shout", topic}), `unknown seal kind "shout"`},
		{"recall sealed as an alert", with(recall, Seal{signer, SealSign, appsig.KindAlert, topic}), "a recall instruction is sealed as recall-remove"},
		{"removal of a broadcast", with(alert, Seal{signer, SealSign, appsig.KindRecallRemove, topic}), "for a recall instruction only"},
		{"audience of no kind", with(alert, Seal{signer, SealSign, appsig.KindAlert, "everyone"}), `seal audience "everyone"`},
		{"empty topic", with(alert, Seal{signer, SealSign, appsig.KindAlert, appsig.AudienceTopic("")}), `seal audience "topic:"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, fcmReason := fcmMessage(tt.give, testNow)
			_, apnsReason := apnsMessage(tt.give, testNow)
			_, sizeReason := SealedSize(tt.give, testNow)
			for platform, reason := range map[string]string{"fcm": fcmReason, "apns": apnsReason, "SealedSize": sizeReason} {
				if (tt.want == "") != (reason == "") || !strings.Contains(reason, tt.want) {
					t.Errorf("%s: reason %q, want %q", platform, reason, tt.want)
				}
			}
		})
	}
}

// refusedWithLongestToken returns why a provider refuses msg for a
// device of the longest token expected, or "".
func refusedWithLongestToken(msg *Message) string {
	f, reason := fcmMessage(msg, testNow)
	if reason == "" {
		reason = f.refuseToken(strings.Repeat("t", maxFCMToken))
	}
	if reason != "" {
		return reason
	}
	_, reason = apnsMessage(msg, testNow)
	return reason
}

// TestSealedSize checks SealedSize against the pushes the batches build:
// the figure is exactly the largest of them for the longest token, and
// it refuses exactly what a provider would refuse.
func TestSealedSize(t *testing.T) {
	if len(agreeToken) != maxFCMToken {
		t.Fatalf("the size tests assume FCM tokens of %d bytes, SealedSize of %d", len(agreeToken), maxFCMToken)
	}
	signer, _ := testSigner(t)
	spec := func(title, body string, data map[string]string) *api.MessageSpec {
		return &api.MessageSpec{Title: title, Body: body, Data: data}
	}
	pairs := func(n int, v string) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("k%03d", i)] = v
		}
		return m
	}
	quotes := spec(strings.Repeat(`"`, api.MaxTextBytes/2), "", nil)
	cases := []struct {
		name string
		give *api.MessageSpec
	}{
		{"small", spec("Peringatan banjir", "Hindari area Manggarai.", map[string]string{"url": "jaki://alerts/1"})},
		{"plain text at the bound", spec(strings.Repeat("a", api.MaxTextBytes/2), strings.Repeat("b", api.MaxTextBytes/2), nil)},
		{"quotes at the bound", quotes},
		{"html escapes at the bound", spec("", strings.Repeat("<", api.MaxTextBytes/6), nil)},
		{"data at the bound", spec("t", "", pairs((api.MaxTextBytes-1)/(4+3+len(`"":"",`)), "vvv"))},
	}

	t.Run("text at the bound fits unsigned, not in require mode", func(t *testing.T) {
		msg := messageOf(quotes, time.Hour)
		if size, reason := SealedSize(msg, testNow); reason != "" || size > MaxPayload {
			t.Fatalf("unsigned: %d bytes, reason %q; want it to fit", size, reason)
		}
		size, reason := SealedSize(sealed(*msg, signer, SealRequire, appsig.AudienceAll), testNow)
		if want := fmt.Sprintf("signed payload is %d bytes, over the limit of %d", size, MaxPayload); size <= MaxPayload || reason != want {
			t.Errorf("require mode: %d bytes, reason %q; want over %d with reason %q", size, reason, MaxPayload, want)
		}
	})
	t.Run("small fits", func(t *testing.T) {
		if size, reason := SealedSize(sealed(*messageOf(cases[0].give, time.Hour), signer, SealRequire, ""), testNow); reason != "" || size < 500 || size > 1500 {
			t.Errorf("%d bytes, reason %q; want it to fit", size, reason)
		}
	})

	for _, tt := range cases {
		for _, mode := range []SealMode{SealSign, SealRequire} {
			for _, audience := range []string{appsig.AudienceAll, appsig.AudienceTopic(sealTopic), ""} {
				t.Run(fmt.Sprintf("%s/%s/aud=%q", tt.name, mode, audience), func(t *testing.T) {
					msg := sealed(*messageOf(tt.give, 28*24*time.Hour), signer, mode, audience)
					size, reason := SealedSize(msg, testNow)
					refused := refusedWithLongestToken(msg)
					t.Logf("sealed size %d bytes, reason %q", size, reason)
					if (reason == "") != (refused == "") {
						t.Fatalf("SealedSize: %d bytes, reason %q; the batch refuses with %q", size, reason, refused)
					}
					f, fr := buildFCM(msg, testNow)
					a, ar := buildAPNs(msg, testNow)
					if fr != "" || ar != "" {
						t.Fatal(fr, ar)
					}
					largest := len(a.notification("org.pushgate.app", strings.Repeat("0", 64)).Payload.([]byte))
					for _, tok := range []string{"tok", agreeToken} {
						m := f.message(tok)
						enc, err := json.Marshal(&m)
						if err != nil {
							t.Fatal(err)
						}
						largest = max(largest, len(enc))
					}
					if size != largest {
						t.Errorf("SealedSize says %d bytes, the largest push built is %d", size, largest)
					}
				})
			}
		}
	}
}

// BenchmarkSealedBuild builds the pushes of one batch of 500 devices, as
// the senders do before each call, unsealed, sealed once for a topic, and
// sealed per device.
func BenchmarkSealedBuild(b *testing.B) {
	signer, _ := testSigner(b)
	base := Message{BroadcastID: "b0123456789abcdefghijklmn", Title: "Peringatan banjir", Body: "Ketinggian air di Manggarai naik.",
		Data: map[string]string{"url": "jaki://alerts/123"}, TTL: time.Hour, CollapseID: "pg-b0123456789abcdefghijklmn"}
	fcmTokens, apnsTokens := make([]string, 500), make([]string, 500)
	for i := range fcmTokens {
		fcmTokens[i] = fmt.Sprintf("fcm-device-%0150d", i)
		apnsTokens[i] = fmt.Sprintf("%064x", i)
	}
	for _, v := range []struct {
		name string
		msg  *Message
	}{
		{"unsealed", &base},
		{"sealed-topic", sealed(base, signer, SealRequire, appsig.AudienceTopic(sealTopic))},
		{"sealed-token", sealed(base, signer, SealRequire, "")},
	} {
		b.Run("fcm/"+v.name, func(b *testing.B) {
			for b.Loop() {
				f, reason := fcmMessage(v.msg, testNow)
				if reason != "" {
					b.Fatal(reason)
				}
				for _, tok := range fcmTokens {
					if f.refuseToken(tok) != "" {
						b.Fatal("refused")
					}
					m := f.message(tok)
					_ = m
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(fcmTokens)), "ns/device")
		})
		b.Run("apns/"+v.name, func(b *testing.B) {
			for b.Loop() {
				a, reason := apnsMessage(v.msg, testNow)
				if reason != "" {
					b.Fatal(reason)
				}
				for _, tok := range apnsTokens {
					_ = a.notification("org.pushgate.app", tok)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(apnsTokens)), "ns/device")
		})
	}
}
