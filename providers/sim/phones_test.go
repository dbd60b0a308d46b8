package sim

import (
	"context"
	"testing"
	"time"

	"firebase.google.com/go/v4/messaging"
	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/payload"

	"github.com/pushgate/pushgate/providers"
)

// sender sends one message to one phone through the official client of
// its platform, the way pushgate's senders map a providers.Message.
type sender func(t *testing.T, token string, m providers.Message)

func fcmSender(s *Sim, c *messaging.Client) sender {
	return func(t *testing.T, token string, m providers.Message) {
		t.Helper()
		msg := &messaging.Message{Token: token, Data: map[string]string{}, Android: &messaging.AndroidConfig{CollapseKey: m.CollapseID}}
		for k, v := range m.Data {
			msg.Data[k] = v
		}
		if m.TTL != 0 {
			msg.Android.TTL = &m.TTL
		}
		if m.RecallOf != "" {
			msg.Data["pushgate"] = `{"recall":"` + m.RecallOf + `"}`
		} else {
			msg.Data["pushgate"] = `{"broadcast":"` + m.BroadcastID + `"}`
		}
		if !m.Silent {
			msg.Notification = &messaging.Notification{Title: m.Title, Body: m.Body}
			msg.Android.Notification = &messaging.AndroidNotification{Tag: m.CollapseID}
		}
		if _, err := c.Send(context.Background(), msg); err != nil {
			t.Fatalf("fcm send: %v", err)
		}
	}
}

func apnsSender(s *Sim, c *apns2.Client, now func() time.Time) sender {
	return func(t *testing.T, token string, m providers.Message) {
		t.Helper()
		p := payload.NewPayload()
		for k, v := range m.Data {
			p.Custom(k, v)
		}
		n := &apns2.Notification{DeviceToken: token, Topic: s.Topic(), CollapseID: m.CollapseID, Payload: p}
		if m.TTL != 0 {
			n.Expiration = now().Add(m.TTL)
		}
		if m.RecallOf != "" {
			p.Custom("pushgate", map[string]string{"recall": m.RecallOf})
		} else {
			p.Custom("pushgate", map[string]string{"broadcast": m.BroadcastID})
		}
		if m.Silent {
			p.ContentAvailable()
			n.PushType, n.Priority = apns2.PushTypeBackground, apns2.PriorityLow
		} else {
			p.AlertTitle(m.Title).AlertBody(m.Body)
		}
		res, err := c.Push(n)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("apns push: %v %+v", err, res)
		}
	}
}

// platforms runs f once per platform, with a fresh simulator, a phone and
// a sender.
func platforms(t *testing.T, cfg Config, f func(t *testing.T, s *Sim, phone string, send sender)) {
	t.Run("fcm", func(t *testing.T) {
		s := newSim(t, cfg)
		phone := fcmToken("phone")
		s.AddDevice(providers.FCM, phone)
		f(t, s, phone, fcmSender(s, fcmClient(t, s)))
	})
	t.Run("apns", func(t *testing.T) {
		s := newSim(t, cfg)
		phone := apnsToken(1)
		s.AddDevice(providers.APNs, phone)
		now := time.Now
		if cfg.Now != nil {
			now = cfg.Now
		}
		f(t, s, phone, apnsSender(s, apnsClient(t, s), now))
	})
}

func screen(t *testing.T, s *Sim, phone string) map[string]string {
	t.Helper()
	v, ok := s.Device(phone)
	if !ok {
		t.Fatalf("no phone")
	}
	out := map[string]string{}
	for _, n := range v.Screen {
		out[n.CollapseID] = n.Title + "/" + n.Body
	}
	return out
}

func TestReplaceByCollapseID(t *testing.T) {
	platforms(t, Config{}, func(t *testing.T, s *Sim, phone string, send sender) {
		send(t, phone, providers.Message{BroadcastID: "b1", CollapseID: "b1", Title: "Flood", Body: "wrong street"})
		send(t, phone, providers.Message{BroadcastID: "b1", CollapseID: "b1", Title: "Flood", Body: "corrected"})
		send(t, phone, providers.Message{BroadcastID: "b2", CollapseID: "b2", Title: "Other", Body: "news"})
		got := screen(t, s, phone)
		if len(got) != 2 || got["b1"] != "Flood/corrected" || got["b2"] != "Other/news" {
			t.Fatalf("screen %v", got)
		}
		shown := s.Showing("b1")
		if len(shown) != 1 || shown[0].Body != "corrected" || shown[0].Phones != 1 {
			t.Fatalf("Showing(b1) = %+v", shown)
		}
		if st := s.Stats(); st.Deliveries != 3 || st.RawDuplicates != 0 {
			t.Fatalf("deliveries %d duplicates %d", st.Deliveries, st.RawDuplicates)
		}
	})
}

func TestRecallRemove(t *testing.T) {
	platforms(t, Config{}, func(t *testing.T, s *Sim, phone string, send sender) {
		send(t, phone, providers.Message{BroadcastID: "bad", CollapseID: "bad", Title: "Fake", Body: "evacuate now"})
		send(t, phone, providers.Message{BroadcastID: "good", CollapseID: "good", Title: "Real", Body: "all clear"})
		send(t, phone, providers.Message{RecallOf: "bad", Silent: true})
		got := screen(t, s, phone)
		if len(got) != 1 || got["good"] != "Real/all clear" {
			t.Fatalf("screen after recall %v", got)
		}
		if n := len(s.Showing("bad")); n != 0 {
			t.Fatalf("%d contents still shown under bad", n)
		}
		st := s.Stats()
		if st.Recalled != 1 || st.Deliveries != 3 {
			t.Fatalf("recalled %d, deliveries %d; want 1 and 3", st.Recalled, st.Deliveries)
		}
		d := s.Deliveries(func(d Delivery) bool { return d.Silent })
		if len(d) != 1 || d[0].Data["pushgate"] != `{"recall":"bad"}` {
			t.Fatalf("silent deliveries %+v", d)
		}
	})
}

func TestOfflinePhone(t *testing.T) {
	clock := newFakeClock()
	platforms(t, Config{Now: clock.Now}, func(t *testing.T, s *Sim, phone string, send sender) {
		if !s.SetOnline(phone, false) {
			t.Fatal("unknown phone")
		}
		send(t, phone, providers.Message{BroadcastID: "a", CollapseID: "a", Title: "A", Body: "first", TTL: time.Hour})
		send(t, phone, providers.Message{BroadcastID: "a", CollapseID: "a", Title: "A", Body: "second", TTL: time.Hour})
		send(t, phone, providers.Message{BroadcastID: "b", CollapseID: "b", Title: "B", Body: "short-lived", TTL: time.Minute})
		send(t, phone, providers.Message{BroadcastID: "c", CollapseID: "c", Title: "C", Body: "long-lived", TTL: 3 * time.Hour})

		if got := screen(t, s, phone); len(got) != 0 {
			t.Fatalf("offline phone shows %v", got)
		}
		st := s.Stats()
		if st.Pending != 3 || st.ReplacedPending != 1 || st.Deliveries != 0 {
			t.Fatalf("pending %d replaced %d deliveries %d; want 3, 1, 0", st.Pending, st.ReplacedPending, st.Deliveries)
		}

		clock.Add(10 * time.Minute) // b expires
		s.SetOnline(phone, true)
		got := screen(t, s, phone)
		if len(got) != 2 || got["a"] != "A/second" || got["c"] != "C/long-lived" {
			t.Fatalf("screen after coming online %v", got)
		}
		st = s.Stats()
		if st.Pending != 0 || st.Expired != 1 || st.Deliveries != 2 {
			t.Fatalf("pending %d expired %d deliveries %d; want 0, 1, 2", st.Pending, st.Expired, st.Deliveries)
		}
		for _, d := range s.Deliveries(nil) {
			if !d.Time.Equal(clock.Now()) {
				t.Errorf("delivery at %v, want when the phone came online (%v)", d.Time, clock.Now())
			}
		}
	})
}

// TestOfflineNowOrNever checks TTL 0: a phone that is offline never gets
// the message.
func TestOfflineNowOrNever(t *testing.T) {
	s := newSim(t, Config{})
	phone := fcmToken("phone")
	s.AddDevice(providers.FCM, phone)
	c := fcmClient(t, s)
	s.SetOnline(phone, false)
	if _, err := c.Send(context.Background(), &messaging.Message{Token: phone,
		Notification: &messaging.Notification{Title: "t"}, Android: &messaging.AndroidConfig{TTL: ptr(time.Duration(0))}}); err != nil {
		t.Fatal(err)
	}
	s.SetOnline(phone, true)
	if st := s.Stats(); st.Expired != 1 || st.Deliveries != 0 {
		t.Fatalf("expired %d deliveries %d", st.Expired, st.Deliveries)
	}
}

func TestRawDuplicates(t *testing.T) {
	platforms(t, Config{}, func(t *testing.T, s *Sim, phone string, send sender) {
		m := providers.Message{BroadcastID: "b1", CollapseID: "b1", Title: "T", Body: "B"}
		send(t, phone, m)
		send(t, phone, m) // a re-send after a crash: replaces, but is a raw duplicate
		st := s.Stats()
		if st.Deliveries != 2 || st.RawDuplicates != 1 || st.PhonesReached != 1 {
			t.Fatalf("deliveries %d duplicates %d reached %d", st.Deliveries, st.RawDuplicates, st.PhonesReached)
		}
		if got := screen(t, s, phone); len(got) != 1 {
			t.Fatalf("screen %v, want one notification", got)
		}
		d := s.Deliveries(nil)
		if d[0].Identity != d[1].Identity || d[0].MessageID == d[1].MessageID {
			t.Fatalf("identities %s %s, message ids %s %s", d[0].Identity, d[1].Identity, d[0].MessageID, d[1].MessageID)
		}
	})
}

func TestDeliveriesAfter(t *testing.T) {
	clock := newFakeClock()
	platforms(t, Config{Now: clock.Now}, func(t *testing.T, s *Sim, phone string, send sender) {
		send(t, phone, providers.Message{BroadcastID: "x", CollapseID: "x", Title: "before"})
		clock.Add(time.Second)
		mark := clock.Now()
		clock.Add(time.Second)
		send(t, phone, providers.Message{BroadcastID: "x", CollapseID: "x", Title: "after"})
		send(t, phone, providers.Message{BroadcastID: "y", CollapseID: "y", Title: "after"})
		tests := []struct {
			give  string
			after time.Time
			want  int
		}{
			{"", mark, 2},
			{"x", mark, 1},
			{"z", mark, 0},
			{"", mark.Add(-time.Hour), 3},
			{"", clock.Now(), 0},
		}
		for _, tt := range tests {
			if got := s.DeliveriesAfter(tt.after, tt.give); got != tt.want {
				t.Errorf("DeliveriesAfter(%v, %q) = %d, want %d", tt.after.Sub(mark), tt.give, got, tt.want)
			}
		}
	})
}

// TestCancelledDuringLatency checks the kill-switch semantics: a request
// whose client gives up while the provider holds it is not delivered, and
// a delivery is timed when the latency has elapsed.
func TestCancelledDuringLatency(t *testing.T) {
	const latency = 150 * time.Millisecond
	s := newSim(t, Config{Faults: Faults{Latency: latency}})
	phone := apnsToken(1)
	s.AddDevice(providers.APNs, phone)
	c := apnsClient(t, s)
	n := &apns2.Notification{DeviceToken: phone, Topic: s.Topic(), Payload: payload.NewPayload().AlertBody("x")}

	start := time.Now()
	if res, err := c.Push(n); err != nil || res.StatusCode != 200 {
		t.Fatalf("push: %v %+v", err, res)
	}
	d := s.Deliveries(nil)
	if len(d) != 1 || d[0].Time.Sub(start) < latency {
		t.Fatalf("deliveries %+v, want one at least %v after the request", d, latency)
	}

	// Hold the next request far longer than the test waits, and give up
	// once the simulator has it.
	if err := s.SetFaults(Faults{Latency: time.Hour}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pushed := make(chan error, 1)
	go func() {
		_, err := c.PushWithContext(ctx, n)
		pushed <- err
	}()
	waitFor(t, "the simulator to hold the request", func() bool { return s.Stats().InFlight[providers.APNs] == 1 })
	cancel()
	if err := <-pushed; err == nil {
		t.Fatal("push outlived its context")
	}
	waitFor(t, "the cancelled request", func() bool { return s.Stats().CancelledRequests == 1 })
	if st := s.Stats(); st.Deliveries != 1 {
		t.Fatalf("deliveries %d, want the cancelled push not delivered", st.Deliveries)
	}
}

func TestNewDevices(t *testing.T) {
	s := newSim(t, Config{})
	devs := s.NewDevices(1000, 0.6, 7)
	var nFCM int
	seen := map[string]bool{}
	for _, d := range devs {
		if seen[d.Token] {
			t.Fatalf("duplicate token")
		}
		seen[d.Token] = true
		switch d.Platform {
		case providers.FCM:
			nFCM++
			if !wellFormedFCMToken(d.Token) || len(d.Token) < 150 {
				t.Fatalf("FCM token %q", d.Token)
			}
		case providers.APNs:
			if !wellFormedAPNsToken(d.Token) || len(d.Token) != 64 {
				t.Fatalf("APNs token %q", d.Token)
			}
		}
	}
	if nFCM != 600 {
		t.Fatalf("%d FCM phones, want 600", nFCM)
	}
	if st := s.Stats(); st.Phones[providers.FCM] != 600 || st.Phones[providers.APNs] != 400 {
		t.Fatalf("phones %v", st.Phones)
	}
	again := newSim(t, Config{}).NewDevices(1000, 0.6, 7)
	if again[17] != devs[17] {
		t.Fatalf("the same seed made different devices")
	}
}
