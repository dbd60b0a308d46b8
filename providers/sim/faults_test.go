package sim

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/payload"

	"github.com/pushgate/pushgate/providers"
)

func TestFaultsJSON(t *testing.T) {
	f := Faults{
		Prefixes: map[string]Outcome{"x-": OutcomeQuota}, UnknownToken: OutcomeDeliver,
		ErrorRate: 0.25, ErrorOutcome: OutcomeInternal, Seed: 9, FailFirst: 2, FailOutcome: OutcomeShutdown,
		RetryAfter: 30, Latency: 5 * time.Millisecond, Jitter: time.Millisecond, DropEvery: 7, GoAwayEvery: 11,
		QuotaOutage: 3 * time.Second,
	}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"latency":"5ms"`) {
		t.Fatalf("durations are not strings: %s", b)
	}
	var back Faults
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Latency != f.Latency || back.Prefixes["x-"] != OutcomeQuota || back.GoAwayEvery != 11 || back.Seed != 9 || back.QuotaOutage != f.QuotaOutage {
		t.Fatalf("round trip: %+v", back)
	}

	tests := []struct {
		name string
		give string
	}{
		{"unknown field", `{"latncy":"5ms"}`},
		{"bad duration", `{"latency":"fast"}`},
		{"bad jitter", `{"jitter":"5"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f Faults
			if err := json.Unmarshal([]byte(tt.give), &f); err == nil {
				t.Fatalf("accepted %s", tt.give)
			}
		})
	}
}

func TestFaultsValidate(t *testing.T) {
	tests := []struct {
		name string
		give Faults
	}{
		{"unknown outcome", Faults{Prefixes: map[string]Outcome{"a-": "explode"}}},
		{"empty prefix", Faults{Prefixes: map[string]Outcome{"": OutcomeQuota}}},
		{"rate above one", Faults{ErrorRate: 1.5}},
		{"negative latency", Faults{Latency: -time.Second}},
		{"negative outage", Faults{QuotaOutage: -time.Second}},
		{"negative count", Faults{DropEvery: -1}},
		{"bad error outcome", Faults{ErrorOutcome: "nope"}},
	}
	s := newSim(t, Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.SetFaults(tt.give); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if _, err := New(Config{Faults: Faults{ErrorRate: 2}}); err == nil {
		t.Fatal("New accepted a bad fault plan")
	}
}

func TestPrefixLongestMatch(t *testing.T) {
	p, err := newFaultPlan(Faults{Prefixes: map[string]Outcome{"q-": OutcomeQuota, "q-x-": OutcomeInternal}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		give string
		want Outcome
	}{
		{"q-x-1", OutcomeInternal},
		{"q-1", OutcomeQuota},
		{"unreg-1", ""}, // the defaults are replaced, not merged
	}
	for _, tt := range tests {
		if got, _ := p.prefixOutcome(tt.give); got != tt.want {
			t.Errorf("prefixOutcome(%q) = %q, want %q", tt.give, got, tt.want)
		}
	}
}

// TestErrorRateDeterministic checks that a seeded error rate produces the
// same failures for the same sequence of requests, at about the rate.
func TestErrorRateDeterministic(t *testing.T) {
	run := func() string {
		s := newSim(t, Config{Faults: Faults{ErrorRate: 0.3, ErrorOutcome: OutcomeInternal, Seed: 42}})
		devs := s.NewDevices(100, 0, 1)
		c := apnsClient(t, s)
		var b strings.Builder
		for _, d := range devs {
			res, err := c.Push(&apns2.Notification{DeviceToken: d.Token, Topic: s.Topic(), Payload: payload.NewPayload().AlertBody("x")})
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode == 200 {
				b.WriteByte('.')
			} else {
				b.WriteByte('x')
			}
		}
		return b.String()
	}
	a, b := run(), run()
	if a != b {
		t.Fatalf("same seed, different failures:\n%s\n%s", a, b)
	}
	if n := strings.Count(a, "x"); n < 15 || n > 45 {
		t.Fatalf("%d failures in 100 at rate 0.3", n)
	}
}

// TestSetFaultsAtRunTime slows the provider down mid-run and checks
// unknown tokens can be made phones.
func TestSetFaultsAtRunTime(t *testing.T) {
	s := newSim(t, Config{})
	c := apnsClient(t, s)
	push := func(tok string) int {
		res, err := c.Push(&apns2.Notification{DeviceToken: tok, Topic: s.Topic(), Payload: payload.NewPayload().AlertBody("x")})
		if err != nil {
			t.Fatal(err)
		}
		return res.StatusCode
	}
	if got := push(apnsToken(3)); got != 410 {
		t.Fatalf("unknown token: %d, want 410", got)
	}
	if err := s.SetFaults(Faults{UnknownToken: OutcomeDeliver, Latency: 30 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if got := push(apnsToken(3)); got != 200 {
		t.Fatalf("unknown token with UnknownToken=deliver: %d", got)
	}
	if time.Since(start) < 30*time.Millisecond {
		t.Fatal("latency not applied")
	}
	if _, ok := s.Device(apnsToken(3)); !ok {
		t.Fatal("phone not created")
	}
	if got := push("auto-" + apnsToken(4)); got != 200 {
		t.Fatalf("auto- prefix: %d", got)
	}
	if st := s.Stats(); st.Phones[providers.APNs] != 2 {
		t.Fatalf("phones %v", st.Phones)
	}
}
