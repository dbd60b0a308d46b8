package providers_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/providers/sim"
	"github.com/pushgate/pushgate/signing/appsig"
)

// newAppKey returns a signer of a fresh app-signing key and the verifier
// of an app that trusts it.
func newAppKey(t testing.TB) (*appsig.Signer, *appsig.Verifier) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := appsig.NewSigner("app-test-1", priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, &appsig.Verifier{Keys: map[string]ed25519.PublicKey{s.KeyID(): pub}}
}

// testAppTopic is the topic the sealed broadcasts of these tests go to.
const testAppTopic = "banjir-jakarta"

// pushOf is what the app makes of a delivery: the notification's own
// text (the FCM notification, the APNs aps.alert; none for a data-only
// push) and the data, in which the simulator keeps the APNs payload's
// top-level keys other than aps as strings, objects re-marshalled.
func pushOf(d sim.Delivery) appsig.Push {
	return appsig.Push{Title: d.Title, Body: d.Body, Data: d.Data}
}

// blockOf decodes the pushgate block of a delivery.
func blockOf(t *testing.T, d sim.Delivery) appsig.Block {
	t.Helper()
	var b appsig.Block
	if err := json.Unmarshal([]byte(d.Data[appsig.DataKey]), &b); err != nil {
		t.Fatalf("pushgate block %q: %v", d.Data[appsig.DataKey], err)
	}
	return b
}

// sendOne sends msg to token and returns the one delivery the phone
// logged for it.
func sendOne(t *testing.T, s *sim.Sim, snd batchSender, msg *providers.Message, token string) sim.Delivery {
	t.Helper()
	d, _ := s.Device(token)
	before := len(d.Log)
	if r := snd.Send(context.Background(), &openGate{}, msg, []string{token})[0]; r.Class != providers.Sent {
		t.Fatalf("send: %v", r)
	}
	d, ok := s.Device(token)
	if !ok || len(d.Log) != before+1 {
		t.Fatalf("phone logged %d deliveries, want %d", len(d.Log), before+1)
	}
	return d.Log[before]
}

// TestSealedDelivery sends a sealed broadcast to a phone subscribed to its
// topic, in both modes and on both platforms, and verifies what the phone
// received as the app does.
func TestSealedDelivery(t *testing.T) {
	signer, verifier := newAppKey(t)
	for _, mode := range []providers.SealMode{providers.SealSign, providers.SealRequire} {
		t.Run(string(mode), func(t *testing.T) {
			s := newSim(t, sim.Config{})
			for _, snd := range senders(t, s) {
				p := snd.Platform()
				t.Run(string(p), func(t *testing.T) {
					token := deviceToken(p, "auto-", 1)
					msg := testMessage()
					msg.Seal = &providers.Seal{Signer: signer, Mode: mode, Kind: appsig.KindAlert, Audience: appsig.AudienceTopic(testAppTopic)}
					d := sendOne(t, s, snd, msg, token)

					c, err := verifier.Verify(appsig.Device{Token: token, Topics: []string{"other", testAppTopic}}, pushOf(d))
					if err != nil {
						t.Fatalf("verify on a subscribed phone: %v", err)
					}
					want := appsig.Claims{KeyID: signer.KeyID(), Kind: appsig.KindAlert, Broadcast: msg.BroadcastID, Collapse: msg.CollapseID,
						Audience: appsig.AudienceTopic(testAppTopic), Title: msg.Title, Body: msg.Body}
					if c.KeyID != want.KeyID || c.Kind != want.Kind || c.Broadcast != want.Broadcast || c.Collapse != want.Collapse ||
						c.Audience != want.Audience || c.Title != want.Title || c.Body != want.Body || !maps.Equal(c.Data, msg.Data) {
						t.Errorf("verified claims %+v, want %+v with data %v", c, want, msg.Data)
					}
					if exp := time.Unix(c.Expires, 0); exp.Before(time.Now().Add(14*time.Minute)) || exp.After(time.Now().Add(16*time.Minute)) {
						t.Errorf("claims expire at %v, want about the message's TTL from now", exp)
					}
					if _, err := verifier.Verify(appsig.Device{Token: token, Topics: []string{"other"}}, pushOf(d)); appsig.CodeOf(err) != appsig.CodeWrongAud {
						t.Errorf("verify on a phone not subscribed: %v, want %s", err, appsig.CodeWrongAud)
					}

					b := blockOf(t, d)
					dataOnly := p == providers.FCM && mode == providers.SealRequire
					switch {
					case dataOnly && (d.Title != "" || d.Body != "" || !d.Silent):
						t.Errorf("require-mode FCM push has a notification (%q, %q, silent %v), want data only", d.Title, d.Body, d.Silent)
					case dataOnly && (b.Title == nil || *b.Title != msg.Title || b.Body == nil || *b.Body != msg.Body):
						t.Errorf("require-mode FCM block carries title %v and body %v, want the message's", b.Title, b.Body)
					case !dataOnly && (d.Title != msg.Title || d.Body != msg.Body):
						t.Errorf("push shows %q, %q, want the message's text", d.Title, d.Body)
					case !dataOnly && (b.Title != nil || b.Body != nil):
						t.Errorf("block carries text beside the notification's")
					}
					if dataOnly {
						m := providers.FCMMessage(msg, time.Now(), token)
						if m.Notification != nil || m.Android.Notification != nil {
							t.Errorf("require-mode FCM message has notification %+v, android.notification %+v", m.Notification, m.Android.Notification)
						}
					}
					if p == providers.APNs {
						// The simulator does not keep aps: decode the payload
						// the sender sends.
						n := providers.APNsNotification(msg, time.Now(), testTopic, token)
						var payload struct {
							Aps map[string]json.RawMessage `json:"aps"`
						}
						if err := json.Unmarshal(n.Payload.([]byte), &payload); err != nil {
							t.Fatal(err)
						}
						got := string(payload.Aps["mutable-content"])
						if want := map[providers.SealMode]string{providers.SealSign: "", providers.SealRequire: "1"}[mode]; got != want {
							t.Errorf("aps mutable-content %q, want %q", got, want)
						}
					}
				})
			}
		})
	}
}

// TestSealedPerDevice seals a batch to each device's own token: every
// phone's block verifies on that phone and on no other.
func TestSealedPerDevice(t *testing.T) {
	signer, verifier := newAppKey(t)
	s := newSim(t, sim.Config{})
	for _, snd := range senders(t, s) {
		p := snd.Platform()
		t.Run(string(p), func(t *testing.T) {
			for _, mode := range []providers.SealMode{providers.SealSign, providers.SealRequire} {
				msg := testMessage()
				msg.BroadcastID, msg.CollapseID = "b-"+string(mode), "pg-b-"+string(mode)
				msg.Seal = &providers.Seal{Signer: signer, Mode: mode, Kind: appsig.KindAlert}
				tokens := deviceTokens(p, "auto-"+string(mode)+"-", 3)
				for i, r := range snd.Send(context.Background(), &openGate{}, msg, tokens) {
					if r.Class != providers.Sent {
						t.Fatalf("%s: device %d: %v", mode, i, r)
					}
				}
				pushes := make([]appsig.Push, len(tokens))
				for i, tok := range tokens {
					d, _ := s.Device(tok)
					if len(d.Log) != 1 {
						t.Fatalf("%s: device %d logged %d deliveries", mode, i, len(d.Log))
					}
					pushes[i] = pushOf(d.Log[0])
				}
				for i, tok := range tokens {
					for j, push := range pushes {
						_, err := verifier.Verify(appsig.Device{Token: tok, Topics: []string{testAppTopic}}, push)
						switch {
						case i == j && err != nil:
							t.Errorf("%s: device %d's own push: %v", mode, i, err)
						case i != j && appsig.CodeOf(err) != appsig.CodeWrongAud:
							t.Errorf("%s: device %d's push on device %d: %v, want %s", mode, j, i, err, appsig.CodeWrongAud)
						}
					}
				}
			}
		})
	}
}

// TestSealedRecall sends a sealed broadcast and its sealed recall
// instruction: the recall is signed as a removal without text, and the
// phone removes the broadcast.
func TestSealedRecall(t *testing.T) {
	signer, verifier := newAppKey(t)
	for _, mode := range []providers.SealMode{providers.SealSign, providers.SealRequire} {
		t.Run(string(mode), func(t *testing.T) {
			s := newSim(t, sim.Config{})
			for _, snd := range senders(t, s) {
				p := snd.Platform()
				t.Run(string(p), func(t *testing.T) {
					token := deviceToken(p, "auto-", 1)
					dev := appsig.Device{Token: token, Topics: []string{testAppTopic}}
					msg := testMessage()
					msg.Seal = &providers.Seal{Signer: signer, Mode: mode, Kind: appsig.KindAlert, Audience: appsig.AudienceTopic(testAppTopic)}
					alert := sendOne(t, s, snd, msg, token)
					if _, err := verifier.Verify(dev, pushOf(alert)); err != nil {
						t.Fatalf("the broadcast: %v", err)
					}

					recall := &providers.Message{RecallOf: msg.BroadcastID, CollapseID: msg.CollapseID, TTL: time.Hour,
						Seal: &providers.Seal{Signer: signer, Mode: mode, Kind: appsig.KindRecallRemove, Audience: appsig.AudienceTopic(testAppTopic)}}
					d := sendOne(t, s, snd, recall, token)
					c, err := verifier.Verify(dev, pushOf(d))
					if err != nil {
						t.Fatalf("the recall: %v", err)
					}
					if c.Kind != appsig.KindRecallRemove || c.Broadcast != msg.BroadcastID || c.Title != "" || c.Body != "" || len(c.Data) != 0 {
						t.Errorf("recall claims %+v, want a removal of %s without text or data", c, msg.BroadcastID)
					}
					if b := blockOf(t, d); b.Recall != msg.BroadcastID || b.Broadcast != "" || b.Title != nil || b.Body != nil {
						t.Errorf("recall block %+v, want recall %s alone", b, msg.BroadcastID)
					}
					if !d.Silent {
						t.Error("the recall instruction is not silent")
					}
					if v, _ := s.Device(token); len(v.Screen) != 0 {
						t.Errorf("after the recall the phone shows %+v, want nothing", v.Screen)
					}
				})
			}
		})
	}
}

// TestUnsealedDelivery checks that a message without a seal still
// carries the plain metadata block, and nothing else under its key.
func TestUnsealedDelivery(t *testing.T) {
	s := newSim(t, sim.Config{})
	for _, snd := range senders(t, s) {
		p := snd.Platform()
		t.Run(string(p), func(t *testing.T) {
			token := deviceToken(p, "auto-", 1)
			msg := testMessage()
			if got, want := sendOne(t, s, snd, msg, token).Data[appsig.DataKey], `{"broadcast":"b-test"}`; got != want {
				t.Errorf("pushgate block %s, want %s", got, want)
			}
			recall := &providers.Message{RecallOf: msg.BroadcastID, CollapseID: msg.CollapseID, TTL: time.Hour}
			if got, want := sendOne(t, s, snd, recall, token).Data[appsig.DataKey], `{"recall":"b-test"}`; got != want {
				t.Errorf("recall's pushgate block %s, want %s", got, want)
			}
		})
	}
}

// BenchmarkSealedBatch sends batches of benchBatch devices to the
// simulator, unsealed, sealed once for the batch (a topic) and sealed
// per device (each device's token), in require mode, and reports the
// process CPU time per message (simulator included: compare the variants
// rather than read one alone).
//
//	./scripts/bench SealedBatch ./providers/ -benchtime 20x
func BenchmarkSealedBatch(b *testing.B) {
	s := newSim(b, sim.Config{QuotaPerMinute: -1})
	signer, _ := newAppKey(b)
	apnsToken := newAPNsToken(b, s, nil)
	variants := []struct {
		name string
		seal *providers.Seal
	}{
		{"unsealed", nil},
		{"sealed-topic", &providers.Seal{Signer: signer, Mode: providers.SealRequire, Kind: appsig.KindAlert, Audience: appsig.AudienceTopic(testAppTopic)}},
		{"sealed-token", &providers.Seal{Signer: signer, Mode: providers.SealRequire, Kind: appsig.KindAlert}},
	}
	for _, p := range []providers.Platform{providers.FCM, providers.APNs} {
		tokens := deviceTokens(p, "dev-", benchBatch)
		for _, tok := range tokens {
			if err := s.AddDevice(p, tok); err != nil {
				b.Fatal(err)
			}
		}
		for _, v := range variants {
			b.Run(fmt.Sprintf("%s/%s", p, v.name), func(b *testing.B) {
				msg := testMessage()
				msg.Seal = v.seal
				sender, _ := benchSenders(b, s, apnsToken, p, 64, msg)
				sender(tokens) // warm up: connections, the access token
				var run pass
				for b.Loop() {
					s.Reset()
					run.measure(len(tokens), func() { sender(tokens) })
				}
				b.ReportMetric(run.rate(), "msgs/s")
				b.ReportMetric(run.cpuPerMsg(), "cpu-µs/msg")
			})
		}
	}
}
