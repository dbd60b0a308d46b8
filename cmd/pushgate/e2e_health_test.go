package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/internal/stack"
	"github.com/pushgate/pushgate/providers/sim"
)

// keptLog is a log handler's output kept for a test to read, and copied
// into the test's log.
type keptLog struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *keptLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// lines returns the kept lines that contain every one of parts.
func (l *keptLog) lines(parts ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.b.String(), "\n") {
		ok := line != ""
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// getProbe fetches a probe and decodes its JSON answer.
func getProbe(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := (&http.Client{Timeout: hangGuard}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("GET %s: %d %q is not JSON", url, resp.StatusCode, b)
	}
	return resp.StatusCode, v
}

// runCLI runs the pushgate command against the stack's gateway as key.
func runCLI(ctx context.Context, e *e2e, key string, args ...string) clientRun {
	vars := map[string]string{"PUSHGATE_URL": e.app.URL, "PUSHGATE_KEY": e.st.Keys[key].File,
		"PUSHGATE_KEY_ID": e.st.Keys[key].ID}
	var out, errOut bytes.Buffer
	err := run(ctx, args, func(k string) string { return vars[k] }, strings.NewReader(""), &out, &errOut)
	code := exitCode(err, &errOut)
	return clientRun{stdout: out.String(), stderr: errOut.String(), code: code}
}

// TestProviderRefusingCredentialIsReported has both providers refuse the
// deployment's own credential on every request — APNs 429
// TooManyProviderTokenUpdates, FCM 401 — as the two-worker token mix-up
// did for 12 minutes while nothing said so. Now, while it lasts, the
// broadcast's status, the worker's /readyz, the API's /readyz and the
// worker's error log name it; when the broadcast ends, its summary line
// is a warning with the reasons, and the CLI exits 3 naming them.
func TestProviderRefusingCredentialIsReported(t *testing.T) {
	logs := &keptLog{t: t}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	e := newE2ELogged(t, stack.Options{Devices: 60, AndroidShare: 0.5, Seed: 5, Settings: map[string]string{
		"metrics_listen": "127.0.0.1:0", "limits.retry_for": "8s"}}, app.Roles{API: true, Worker: true}, logger)
	ctx := context.Background()
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
		t.Fatal(err)
	}
	if err := e.st.Sim.SetFaults(sim.Faults{ErrorRate: 1, ErrorOutcome: sim.OutcomeCredential, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	id := e.submit(e.owner, topicBroadcast("citizens", "no credential"))

	// While the broadcast is sending, its status names both providers.
	var st *api.Status
	waitUntil(t, "the status to report both providers degraded", func() bool {
		st = e.status(id)
		return len(st.ProviderDegraded) == 2 || st.Terminal()
	})
	if st.ProviderDegraded[api.APNs] != "TooManyProviderTokenUpdates" || st.ProviderDegraded[api.FCM] != "UNAUTHENTICATED" {
		t.Fatalf("provider_degraded = %v (state %s), want apns TooManyProviderTokenUpdates and fcm UNAUTHENTICATED",
			st.ProviderDegraded, st.State)
	}
	// The worker is not ready, and says why.
	code, body := getProbe(t, e.app.MetricsURL+api.PathReadyz)
	detail, _ := body["detail"].(string)
	if code != http.StatusServiceUnavailable || body["code"] != api.CodeProviderDegraded ||
		!strings.Contains(detail, "apns refuses the deployment's credential (TooManyProviderTokenUpdates)") ||
		!strings.Contains(detail, "fcm refuses the deployment's credential (UNAUTHENTICATED)") {
		t.Errorf("worker /readyz = %d %v, want 503 provider_degraded naming both", code, body)
	}
	// The API stays ready (it still takes kills) and names them.
	code, body = getProbe(t, e.app.URL+api.PathReadyz)
	degraded, _ := body["provider_degraded"].(map[string]any)
	if code != http.StatusOK || degraded["apns"] != "TooManyProviderTokenUpdates" || degraded["fcm"] != "UNAUTHENTICATED" {
		t.Errorf("API /readyz = %d %v, want 200 naming both degraded providers", code, body)
	}
	// The metrics carry the bounded reason, and the degraded gauge.
	resp, err := (&http.Client{Timeout: hangGuard}).Get(e.app.MetricsURL + api.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`pushgate_provider_refusals_total{platform="apns",reason="TooManyProviderTokenUpdates",result="retryable"} `,
		`pushgate_provider_refusals_total{platform="fcm",reason="UNAUTHENTICATED",result="retryable"} `,
		`pushgate_provider_degraded{platform="apns"} 1`,
		`pushgate_provider_degraded{platform="fcm"} 1`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, p := range []string{"apns", "fcm"} {
		if n := len(logs.lines("level=ERROR", "event=provider_degraded", "platform="+p)); n != 1 {
			t.Errorf("%d error lines for %s's refusals, want 1 (at most one a minute)", n, p)
		}
	}

	done := e.waitFinished(id)
	if done.State != api.StateCompleted || done.Counters.Sent != 0 || done.Counters.Expired != 60 {
		t.Fatalf("state %s, counters %+v: want completed, all 60 expired", done.State, done.Counters)
	}
	if n := len(logs.lines("level=WARN", "broadcast ended with 100.0% of its devices failed or expired",
		"broadcast_id="+id, "apns/TooManyProviderTokenUpdates", "fcm/UNAUTHENTICATED")); n != 1 {
		t.Errorf("%d summary warnings naming the reasons, want 1", n)
	}
	r := runCLI(ctx, e, stack.KeyAdmin, "status", id, "--wait", "--poll", "20ms")
	if r.code != exitNotAllSent ||
		!regexp.MustCompile(`completed with 60 of 60 devices not sent \(0 failed, 60 expired.*top reasons: .*apns/TooManyProviderTokenUpdates`).MatchString(r.stderr) {
		t.Errorf("status --wait: exit %d, stderr %q; want 3 naming the reasons", r.code, r.stderr)
	}
	r = runCLI(ctx, e, stack.KeyAdmin, "status", id)
	if !strings.Contains(r.stdout, "expired by reason: ") || !strings.Contains(r.stdout, "apns/TooManyProviderTokenUpdates") {
		t.Errorf("status:\n%s\nwant the expired devices by reason", r.stdout)
	}
}

// TestKeyRateLimitedSendIsExplained sends with a key limited to 50 pushes
// a second: the CLI's progress says which limit holds deliveries back, the
// status names it, and rate_limited_retries counts devices, not attempts.
func TestKeyRateLimitedSendIsExplained(t *testing.T) {
	e := newE2E(t, stack.Options{Devices: 300, Seed: 6}, app.Roles{API: true, Worker: true})
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := runCLI(ctx, e, stack.KeySlow, "send", "--topic", "citizens", "--title", "slow", "--body", "b", "--wait", "--poll", "50ms")
	if r.code != 0 {
		t.Fatalf("send --wait: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "held back by sender key city-slow at 50/1s") {
		t.Errorf("the progress never named the limit:\n%s", r.stderr)
	}
	m := regexp.MustCompile(`broadcast (b[0-9a-v]+) completed`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("no broadcast id in %q", r.stdout)
	}
	st := e.status(m[1])
	if st.Counters.Sent != 300 || st.Counters.RateLimitedRetries < 1 || st.Counters.RateLimitedRetries > 300 {
		t.Errorf("counters %+v: want 300 sent and 1 to 300 devices rate limited", st.Counters)
	}
	if st.LimitedBy != "sender key city-slow at 50/1s" {
		t.Errorf("limited_by %q, want the sender key's limit", st.LimitedBy)
	}
	t.Logf("300 devices at 50/s in %s; %d devices held back", time.Since(start).Round(time.Millisecond), st.Counters.RateLimitedRetries)
}
