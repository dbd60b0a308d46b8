package providers_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/providers/sim"
)

// TestRefusedBeforeSending checks that a message a provider would refuse
// is refused for the whole batch without a single request.
func TestRefusedBeforeSending(t *testing.T) {
	tests := []struct {
		name string
		give func(*providers.Message)
		want string // in the reason
	}{
		{"payload over 4096 bytes", func(m *providers.Message) { m.Body = strings.Repeat("x", providers.MaxPayload) }, "over the limit of 4096"},
		{"collapse id over 64 bytes", func(m *providers.Message) { m.CollapseID = strings.Repeat("c", providers.MaxCollapseID+1) }, "collapse id is 65 bytes"},
	}
	s := newSim(t, sim.Config{})
	for _, sender := range senders(t, s) {
		for _, tt := range tests {
			t.Run(string(sender.Platform())+"/"+tt.name, func(t *testing.T) {
				msg := testMessage()
				tt.give(msg)
				gate := &openGate{}
				got := sender.Send(context.Background(), gate, msg, deviceTokens(sender.Platform(), "auto-", 20))
				for i, r := range got {
					if r.Class != providers.Permanent || !strings.Contains(r.Reason, tt.want) {
						t.Errorf("device %d: %v, want permanent %q", i, r, tt.want)
					}
				}
				if n := gate.entered.Load(); n != 0 {
					t.Errorf("gate entered %d times, want 0", n)
				}
			})
		}
	}
	st := s.Stats()
	if n := requests(s, providers.FCM) + requests(s, providers.APNs) + st.OAuthTokens; n != 0 {
		t.Errorf("simulator saw %d requests, want 0", n)
	}
}

// TestGateAndContext checks that a closed gate and a done context stop
// calls: the devices are Cancelled and the simulator sees nothing.
func TestGateAndContext(t *testing.T) {
	s := newSim(t, sim.Config{})
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		gate *openGate
	}{
		{"closed gate", context.Background(), closedGate()},
		{"context done", cancelled, &openGate{}},
	}
	for _, sender := range senders(t, s) {
		for _, tt := range tests {
			t.Run(string(sender.Platform())+"/"+tt.name, func(t *testing.T) {
				got := sender.Send(tt.ctx, tt.gate, testMessage(), deviceTokens(sender.Platform(), "auto-", 30))
				for i, r := range got {
					if r.Class != providers.Cancelled || r.Latency != 0 {
						t.Errorf("device %d: %v, want cancelled without a call", i, r)
					}
				}
				if n := tt.gate.entered.Load(); n != 0 {
					t.Errorf("gate admitted %d calls, want 0", n)
				}
			})
		}
	}
	if n := requests(s, providers.FCM) + requests(s, providers.APNs); n != 0 {
		t.Errorf("simulator saw %d requests, want 0", n)
	}
}

func closedGate() *openGate {
	g := &openGate{}
	g.closed.Store(true)
	return g
}

// TestGateClosesMidBatch closes the gate after three requests were
// committed, as a kill does mid-batch: exactly those three are delivered;
// calls already started but not yet committed are reset unsent, and
// reported Cancelled with no latency (certainly not delivered).
func TestGateClosesMidBatch(t *testing.T) {
	s := newSim(t, sim.Config{})
	for _, sender := range senders(t, s) {
		t.Run(string(sender.Platform()), func(t *testing.T) {
			before := s.Stats().Deliveries
			gate := &openGate{commitLimit: 3}
			got := sender.Send(context.Background(), gate, testMessage(), deviceTokens(sender.Platform(), "auto-", 50))
			counts := map[providers.Class]int{}
			for _, r := range got {
				counts[r.Class]++
				if r.Class == providers.Cancelled && r.Latency != 0 {
					t.Errorf("a call stopped by the gate reports latency %s: its outcome would count as unknown", r.Latency)
				}
			}
			if counts[providers.Sent] != 3 || counts[providers.Cancelled] != 47 {
				t.Errorf("results %v, want 3 sent and 47 cancelled", counts)
			}
			if n := s.Stats().Deliveries - before; n != 3 {
				t.Errorf("simulator delivered %d, want 3", n)
			}
			if gate.left.Load() != gate.entered.Load() || gate.leftCommits.Load() != gate.commits.Load() {
				t.Errorf("entered %d, left %d; committed %d, left with %d commits",
					gate.entered.Load(), gate.left.Load(), gate.commits.Load(), gate.leftCommits.Load())
			}
		})
	}
}

// pausingGate is an openGate that is also an Observer: it closes on the
// first provider-wide refusal, as the queue's pause does.
type pausingGate struct {
	openGate
	observed atomic.Int64
}

func (g *pausingGate) Observe(r providers.Result) {
	g.observed.Add(1)
	if r.ProviderWide {
		g.closed.Store(true)
	}
}

// TestObserverStopsBatchOnProviderWideRefusal refuses every request
// provider-wide (an FCM project quota outage; APNs 503) and checks that a
// gate told of the first refusal stops the batch at once: no more requests
// reach the provider than the calls already in flight, one per unit of
// concurrency, and every other device is Cancelled without a call. An APNs
// 429 TooManyRequests is about its device and closes nothing.
func TestObserverStopsBatchOnProviderWideRefusal(t *testing.T) {
	const concurrency, devices = 4, 200
	tests := []struct {
		name     string
		platform providers.Platform
		faults   sim.Faults
		prefix   string
		wide     bool
	}{
		{"fcm quota outage", providers.FCM, sim.Faults{QuotaOutage: time.Hour, RetryAfter: 30}, "auto-", true},
		{"apns 503", providers.APNs, sim.Faults{RetryAfter: 30}, "unavail-", true},
		{"apns 429 per device", providers.APNs, sim.Faults{RetryAfter: 30}, "quota-", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, sim.Config{Faults: tt.faults})
			var sender batchSender
			if tt.platform == providers.FCM {
				sender = newFCMSender(t, s, func(c *providers.FCMConfig) { c.Concurrency = concurrency })
			} else {
				sender = newAPNsSender(t, s, newAPNsToken(t, s, nil), func(c *providers.APNsConfig) { c.Concurrency = concurrency })
			}
			gate := &pausingGate{}
			got := sender.Send(context.Background(), gate, testMessage(), deviceTokens(tt.platform, tt.prefix, devices))
			refused, cancelled := 0, 0
			for i, r := range got {
				switch {
				case r.Class == providers.Retryable && strings.HasPrefix(r.Reason, "transport: "):
					// An APNs connection that never had a success keeps a
					// stream limit of 1, so its transport retries refused
					// streams; the gate may close between two attempts,
					// after one committed. Not an answer of the provider.
				case r.Class == providers.Retryable:
					refused++
					if r.ProviderWide != tt.wide || r.RetryAfter != 30*time.Second {
						t.Errorf("device %d: %+v, want provider-wide %v with Retry-After 30s", i, r, tt.wide)
					}
				case r.Class == providers.Cancelled && r.Latency == 0:
					cancelled++
				default:
					t.Errorf("device %d: %+v, want refused or cancelled without a call", i, r)
				}
			}
			if int64(refused) != requests(s, tt.platform) || gate.observed.Load() < int64(refused) {
				t.Errorf("%d refused, %d observed, %d requests at the provider: want every refusal observed, one request each",
					refused, gate.observed.Load(), requests(s, tt.platform))
			}
			if tt.wide && (refused < 1 || refused > concurrency) {
				t.Errorf("%d requests reached the provider after it refused provider-wide, want 1 to %d (the calls in flight)", refused, concurrency)
			}
			if !tt.wide && refused != devices {
				t.Errorf("%d of %d devices tried, want all: a per-device refusal stops nothing", refused, devices)
			}
			t.Logf("%d requests reached the provider, %d devices stopped unsent", refused, cancelled)
		})
	}
}

// TestCancelDuringCall cancels the context while calls wait on a slow
// provider: their outcome is unknown, so they are Cancelled, and Send
// returns without waiting for the provider.
func TestCancelDuringCall(t *testing.T) {
	s := newSim(t, sim.Config{Faults: sim.Faults{Latency: time.Hour}})
	for _, sender := range senders(t, s) {
		t.Run(string(sender.Platform()), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			gate := &openGate{}
			// Cancel once the last call is admitted: the calls are then in
			// flight or about to be, and none can finish for a minute.
			gate.onEnter = func() {
				if gate.entered.Load() == 4 {
					cancel()
				}
			}
			// The provider holds every call for an hour: Send returning at
			// all shows that it did not wait for the provider.
			var got []providers.Result
			sent := make(chan struct{})
			go func() {
				defer close(sent)
				got = sender.Send(ctx, gate, testMessage(), deviceTokens(sender.Platform(), "auto-", 4))
			}()
			select {
			case <-sent:
			case <-time.After(hangGuard):
				t.Fatal("hung: Send still waits for the provider after the cancellation")
			}
			for i, r := range got {
				if r.Class != providers.Cancelled {
					t.Errorf("device %d: %v, want cancelled", i, r)
				}
			}
			if gate.left.Load() != 4 {
				t.Errorf("gate left %d times, want 4", gate.left.Load())
			}
		})
	}
}

// TestConnectionFaults drops connections and sends GOAWAY while batches
// are in flight: every device ends Sent or Retryable, nothing hangs,
// connections are replaced, and once the faults stop everything is sent.
func TestConnectionFaults(t *testing.T) {
	tests := []struct {
		name string
		give sim.Faults
	}{
		{"goaway", sim.Faults{GoAwayEvery: 7}},
		{"drop", sim.Faults{DropEvery: 11}},
		{"goaway and drop", sim.Faults{GoAwayEvery: 5, DropEvery: 13}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, sim.Config{Faults: tt.give})
			for _, sender := range senders(t, s) {
				p := sender.Platform()
				tokens := deviceTokens(p, "auto-", 200)
				var retry []string
				for i, r := range sender.Send(context.Background(), &openGate{}, testMessage(), tokens) {
					switch r.Class {
					case providers.Sent:
					case providers.Retryable:
						retry = append(retry, tokens[i])
					default:
						t.Errorf("%s device %d: %v, want sent or retryable", p, i, r)
					}
				}
				st := s.Stats()
				if st.Connections[p] < 2 {
					t.Errorf("%s: %d connections; the faults should have forced new ones", p, st.Connections[p])
				}
				t.Logf("%s: %d retryable of %d, %d connections, %d drops, %d goaways",
					p, len(retry), len(tokens), st.Connections[p], st.DroppedConnections, st.GoAways)
				if err := s.SetFaults(sim.Faults{}); err != nil {
					t.Fatal(err)
				}
				for i, r := range sender.Send(context.Background(), &openGate{}, testMessage(), retry) {
					if r.Class != providers.Sent {
						t.Errorf("%s retry of device %d: %v, want sent", p, i, r)
					}
				}
				if err := s.SetFaults(tt.give); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
