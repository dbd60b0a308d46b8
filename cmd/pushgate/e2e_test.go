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

	"github.com/pushgate/pushgate/internal/redistest"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/providers/sim"
	"github.com/pushgate/pushgate/queue"
)

// e2e is one end-to-end environment: a real Redis database, the
// simulators, and the gateway built from the same configuration file an
// operator would write.
type e2e struct {
	t     testing.TB
	st    *stack
	app   *runningApp
	owner *apiClient // the sender key
	admin *apiClient
}

func newE2E(t testing.TB, o stackOptions, r roles) *e2e {
	t.Helper()
	o.dir = t.TempDir()
	o.redisURL = redistest.URL(t)
	if o.settings == nil {
		o.settings = map[string]string{}
	}
	if _, ok := o.settings["limits.device_rate"]; !ok {
		o.settings["limits.device_rate"] = "unlimited"
	}
	// How long a kill waits for every worker's acknowledgement is a hang
	// guard in these tests: a busy machine may take seconds to answer.
	if _, ok := o.settings["limits.kill_wait"]; !ok {
		o.settings["limits.kill_wait"] = hangGuard.String()
	}
	st, err := newStack(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &e2e{t: t, st: st}
	if r.api || r.worker {
		e.app, err = startApp(context.Background(), st.configPath, r, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := e.app.Stop(); err != nil {
				t.Errorf("app stopped with %v", err)
			}
		})
	}
	if e.app != nil && e.app.url != "" {
		e.owner = e.client(keySender)
		e.admin = e.client(keyAdmin)
	}
	return e
}

func (e *e2e) client(name string) *apiClient {
	c, err := e.st.client(name, e.app.url)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(c.close)
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
func (e *e2e) submit(c *apiClient, body map[string]any) string {
	e.t.Helper()
	var out struct {
		ID string `json:"id"`
	}
	if _, err := c.do(context.Background(), "POST", "/v1/broadcasts", nil, body, &out); err != nil {
		e.t.Fatalf("submit: %v", err)
	}
	return out.ID
}

func topicBroadcast(topic, title string) map[string]any {
	return map[string]any{
		"audience": map[string]any{"topic": topic},
		"message":  map[string]any{"title": title, "body": "body of " + title, "ttl": "15m"},
	}
}

// status reads a broadcast.
func (e *e2e) status(id string) *queue.Status {
	e.t.Helper()
	var st queue.Status
	if _, err := e.owner.do(context.Background(), "GET", "/v1/broadcasts/"+id, nil, nil, &st); err != nil {
		e.t.Fatalf("status: %v", err)
	}
	return &st
}

// hangGuard bounds every wait in these tests. It guards against a hang and
// is never the property under test: a busy machine may take many times as
// long as a quiet one, and no test here asserts how long a step took.
const hangGuard = 5 * time.Minute

// waitFinished polls a broadcast until every planned device has an
// outcome, and returns it.
func (e *e2e) waitFinished(id string) *queue.Status {
	e.t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		st := e.status(id)
		if !st.FinishedAt.IsZero() && st.State != queue.StateRecalling {
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
	e := newE2E(t, stackOptions{devices: 10000, androidShare: 0.6, seed: 1}, roles{api: true, worker: true})
	ctx := context.Background()
	if err := e.st.importDevices(ctx, e.owner, "citizens"); err != nil {
		t.Fatal(err)
	}
	// Devices the providers no longer know: FCM by the simulator's
	// "unreg-" prefix, APNs by tokens it never issued.
	var gone []queue.ImportDevice
	for i := range 30 {
		gone = append(gone, queue.ImportDevice{Platform: "fcm", Token: fmt.Sprintf("unreg-%03d", i), Topics: []string{"citizens"}})
		gone = append(gone, queue.ImportDevice{Platform: "apns", Token: fmt.Sprintf("%064x", 0xdead0000+i), Topics: []string{"citizens"}})
	}
	if _, err := e.owner.do(ctx, "POST", "/v1/devices/import", nil, queue.ImportRequest{Devices: gone}, nil); err != nil {
		t.Fatal(err)
	}

	id := e.submit(e.owner, topicBroadcast("citizens", "flood warning"))
	st := e.waitFinished(id)
	if st.State != queue.StateCompleted {
		t.Fatalf("state = %s, want completed", st.State)
	}
	got := deliveriesPerPhone(e.st.sim, id, "flood warning")
	for _, d := range e.st.devices {
		if got[d.Token] != 1 {
			t.Errorf("phone %s… (%s) got the broadcast %d times, want 1", d.Token[:12], d.Platform, got[d.Token])
			break
		}
	}
	want := queue.Counters{Targeted: 10060, Planned: 10060, Sent: 10000, InvalidToken: 60}
	if st.Counters != want {
		t.Errorf("counters = %+v, want %+v", st.Counters, want)
	}
	if stats := e.st.sim.Stats(); stats.RawDuplicates != 0 || stats.Deliveries != 10000 {
		t.Errorf("simulator saw %d deliveries and %d raw duplicates, want 10000 and 0", stats.Deliveries, stats.RawDuplicates)
	}
	// The gone devices were pruned from the registry: a second broadcast
	// targets only the live ones.
	id2 := e.submit(e.owner, topicBroadcast("citizens", "second"))
	if st2 := e.waitFinished(id2); st2.Counters.Targeted != 10000 || st2.Counters.InvalidToken != 0 {
		t.Errorf("after pruning: counters = %+v, want 10000 targeted and no invalid tokens", st2.Counters)
	}

	// An explicit-token broadcast reaches exactly its list.
	var list []map[string]string
	for _, d := range e.st.devices[:150] {
		list = append(list, map[string]string{"platform": string(d.Platform), "token": d.Token})
	}
	id3 := e.submit(e.owner, map[string]any{
		"audience": map[string]any{"tokens": list},
		"message":  map[string]any{"title": "direct", "body": "to a list"},
	})
	st3 := e.waitFinished(id3)
	direct := deliveriesPerPhone(e.st.sim, id3, "direct")
	if st3.Counters.Sent != 150 || len(direct) != 150 {
		t.Errorf("explicit list: %d sent, %d phones reached, want 150 and 150", st3.Counters.Sent, len(direct))
	}
	for tok, n := range direct {
		if n != 1 {
			t.Errorf("phone %s… got the direct broadcast %d times", tok[:12], n)
		}
	}

	// The process's metrics agree with the simulators.
	metrics := scrape(t, e.app.url+"/metrics")
	stats := e.st.sim.Stats()
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
		{`pushgate_queue_tasks{queue="pushgate-deliver",state="pending"}`, func(v float64) bool { return v == 0 }, "= 0"},
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
