package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/client"
	"github.com/pushgate/pushgate/gateway/gatewaytest"
	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/internal/redistest"
	"github.com/pushgate/pushgate/internal/stack"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/providers/sim"
	"github.com/pushgate/pushgate/queue"
)

// e2e is one end-to-end environment: a real Redis database, the
// simulators, and the gateway built from the same configuration file an
// operator would write.
type e2e struct {
	t     testing.TB
	st    *stack.Stack
	app   *stack.RunningApp
	owner *client.Client // the sender key
	admin *client.Client
}

func newE2E(t testing.TB, o stack.Options, r app.Roles) *e2e {
	t.Helper()
	return newE2ELogged(t, o, r, testLogger(t))
}

// newE2ELogged is newE2E whose app logs to logger.
func newE2ELogged(t testing.TB, o stack.Options, r app.Roles, logger *slog.Logger) *e2e {
	t.Helper()
	o.Dir = t.TempDir()
	if o.RedisURL == "" { // a test that flushes or restarts Redis brings its own
		o.RedisURL = redistest.URL(t)
	}
	if o.Settings == nil {
		o.Settings = map[string]string{}
	}
	if _, ok := o.Settings["limits.device_rate"]; !ok {
		o.Settings["limits.device_rate"] = "unlimited"
	}
	// How long a kill waits for every worker's acknowledgement is a hang
	// guard in these tests: a busy machine may take seconds to answer.
	if _, ok := o.Settings["limits.kill_wait"]; !ok {
		o.Settings["limits.kill_wait"] = hangGuard.String()
	}
	st, err := stack.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &e2e{t: t, st: st}
	if r.API || r.Worker {
		e.app, err = stack.StartAppWith(context.Background(), st.ConfigPath, r, logger, checkedAPI(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := e.app.Stop(); err != nil {
				t.Errorf("app stopped with %v", err)
			}
		})
	}
	if e.app != nil && e.app.URL != "" {
		e.owner = e.client(stack.KeySender)
		e.admin = e.client(stack.KeyAdmin)
	}
	return e
}

// checkedAPI checks every exchange with the API of an app against
// api/openapi.yaml; what departs from it fails t once the app has stopped.
func checkedAPI(t testing.TB) stack.AppOptions {
	return stack.AppOptions{WrapAPI: func(h http.Handler) http.Handler { return gatewaytest.CheckContract(t, h) }}
}

func (e *e2e) client(name string) *client.Client {
	c, err := e.st.Client(name, e.app.URL)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(c.Close)
	return c
}

// testLogger logs warnings and errors into the test output.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// submit sends a broadcast and returns its id.
func (e *e2e) submit(c *client.Client, req *api.BroadcastRequest) string {
	e.t.Helper()
	sub, err := c.Submit(context.Background(), req)
	if err != nil {
		e.t.Fatalf("submit: %v", err)
	}
	return sub.ID
}

// retraction is a recall with the gateway's standard retraction, which
// one admin may send at once.
func retraction() *api.RecallRequest {
	p := queue.DefaultPolicy()
	return &api.RecallRequest{Mode: api.RecallReplace, Replacement: &api.MessageSpec{Title: p.RetractionTitle, Body: p.RetractionBody}}
}

func topicBroadcast(topic, title string) *api.BroadcastRequest {
	return &api.BroadcastRequest{
		Audience: api.Audience{Topic: topic},
		Message:  api.MessageSpec{Title: title, Body: "body of " + title, TTL: "15m"},
	}
}

// status reads a broadcast as the admin, who reads every key's.
func (e *e2e) status(id string) *api.Status {
	e.t.Helper()
	st, err := e.admin.Status(context.Background(), id)
	if err != nil {
		e.t.Fatalf("status: %v", err)
	}
	return st
}

// hangGuard bounds every wait in these tests. It guards against a hang and
// is never the property under test: a busy machine may take many times as
// long as a quiet one, and no test here asserts how long a step took.
const hangGuard = 5 * time.Minute

// waitFinished polls a broadcast until every planned device has an
// outcome, and returns it.
func (e *e2e) waitFinished(id string) *api.Status {
	e.t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		st := e.status(id)
		if !st.FinishedAt.IsZero() && st.State != api.StateRecalling {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("hung: broadcast %s still %s after %s: %+v", id, st.State, hangGuard, st.Counters)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// deliveriesPerPhone counts deliveries of a broadcast's collapse identity
// with the given title, per token.
func deliveriesPerPhone(s *sim.Sim, id, title string) map[string]int {
	out := map[string]int{}
	for _, d := range s.Deliveries(func(d sim.Delivery) bool {
		return d.CollapseID == queue.CollapseID(id) && d.Title == title
	}) {
		out[d.Token]++
	}
	return out
}

func TestEndToEndDelivery(t *testing.T) {
	e := newE2E(t, stack.Options{Devices: 10000, AndroidShare: 0.6, Seed: 1}, app.Roles{API: true, Worker: true})
	ctx := context.Background()
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
		t.Fatal(err)
	}
	// Devices the providers no longer know: FCM by the simulator's
	// "unreg-" prefix, APNs by tokens it never issued.
	var gone []api.ImportDevice
	for i := range 30 {
		gone = append(gone, api.ImportDevice{Platform: "fcm", Token: fmt.Sprintf("unreg-%03d", i), Topics: []string{"citizens"}})
		gone = append(gone, api.ImportDevice{Platform: "apns", Token: fmt.Sprintf("%064x", 0xdead0000+i), Topics: []string{"citizens"}})
	}
	if _, err := e.owner.ImportDevices(ctx, gone); err != nil {
		t.Fatal(err)
	}

	id := e.submit(e.owner, topicBroadcast("citizens", "flood warning"))
	st := e.waitFinished(id)
	if st.State != api.StateCompleted {
		t.Fatalf("state = %s, want completed", st.State)
	}
	got := deliveriesPerPhone(e.st.Sim, id, "flood warning")
	for _, d := range e.st.Devices {
		if got[d.Token] != 1 {
			t.Errorf("phone %s… (%s) got the broadcast %d times, want 1", d.Token[:12], d.Platform, got[d.Token])
			break
		}
	}
	want := api.Counters{Targeted: 10060, Planned: 10060, Sent: 10000, InvalidToken: 60}
	if st.Counters != want {
		t.Errorf("counters = %+v, want %+v", st.Counters, want)
	}
	if stats := e.st.Sim.Stats(); stats.RawDuplicates != 0 || stats.Deliveries != 10000 {
		t.Errorf("simulator saw %d deliveries and %d raw duplicates, want 10000 and 0", stats.Deliveries, stats.RawDuplicates)
	}
	// The gone devices were pruned from the registry: a second broadcast
	// targets only the live ones.
	id2 := e.submit(e.owner, topicBroadcast("citizens", "second"))
	if st2 := e.waitFinished(id2); st2.Counters.Targeted != 10000 || st2.Counters.InvalidToken != 0 {
		t.Errorf("after pruning: counters = %+v, want 10000 targeted and no invalid tokens", st2.Counters)
	}

	// An explicit-token broadcast reaches exactly its list.
	var list []api.Device
	for _, d := range e.st.Devices[:150] {
		list = append(list, api.Device{Platform: d.Platform, Token: d.Token})
	}
	id3 := e.submit(e.owner, &api.BroadcastRequest{
		Audience: api.Audience{Tokens: list},
		Message:  api.MessageSpec{Title: "direct", Body: "to a list"},
	})
	st3 := e.waitFinished(id3)
	direct := deliveriesPerPhone(e.st.Sim, id3, "direct")
	if st3.Counters.Sent != 150 || len(direct) != 150 {
		t.Errorf("explicit list: %d sent, %d phones reached, want 150 and 150", st3.Counters.Sent, len(direct))
	}
	for tok, n := range direct {
		if n != 1 {
			t.Errorf("phone %s… got the direct broadcast %d times", tok[:12], n)
		}
	}

	// The process's metrics agree with the simulators. The queue depth is
	// sampled in the background (every few seconds), so it is awaited.
	pending := `pushgate_queue_tasks{queue="pushgate-deliver",state="pending"}`
	waitUntil(t, "the sampled deliver queue depth reaching 0", func() bool {
		v, ok := scrape(t, e.app.URL+"/metrics")[pending]
		return ok && v == 0
	})
	metrics := scrape(t, e.app.URL+"/metrics")
	stats := e.st.Sim.Stats()
	sentFCM := stats.Requests[providers.FCM][200]
	for _, tt := range []struct {
		series string
		want   func(float64) bool
		what   string
	}{
		{`pushgate_deliveries_total{platform="fcm",result="sent"}`, func(v float64) bool { return v == float64(sentFCM) }, fmt.Sprintf("= %d", sentFCM)},
		{`pushgate_deliveries_total{platform="fcm",result="invalid_token"}`, func(v float64) bool { return v == 60-30 }, "= 30 (the unregistered FCM tokens)"},
		{`pushgate_provider_latency_seconds_count{platform="apns"}`, func(v float64) bool { return v > 0 }, "> 0"},
		{`pushgate_broadcasts_total{state="completed"}`, func(v float64) bool { return v == 3 }, "= 3"},
	} {
		v, ok := metrics[tt.series]
		if !ok || !tt.want(v) {
			t.Errorf("metric %s = %v (present %v), want %s", tt.series, v, ok, tt.what)
		}
	}
}

// scrape reads a Prometheus text exposition into series → value.
func scrape(t *testing.T, u string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}
