package providers_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/providers/sim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testTopic  = "org.pushgate.test"
	testTeamID = "TEAMTEST01"
	testKeyID  = "KEYTEST001"
)

// testKeys are generated once: RSA key generation would dominate the
// suite's time if every simulator made its own.
var testKeys = sync.OnceValues(func() (*rsa.PrivateKey, *ecdsa.PrivateKey) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return rk, ek
})

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

// newEpochClock starts one minute into the next APNs token epoch, so that
// tests know when the provider token will next be replaced.
func newEpochClock() *fakeClock {
	epoch := int64(providers.DefaultAPNsTokenAge / time.Second)
	return &fakeClock{now: time.Unix((time.Now().Unix()/epoch+1)*epoch+60, 0)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newSim starts a simulator for one test and closes it afterwards.
func newSim(t testing.TB, cfg sim.Config) *sim.Sim {
	t.Helper()
	cfg.ServiceAccountKey, cfg.APNsKey = testKeys()
	cfg.Topic, cfg.TeamID, cfg.KeyID = testTopic, testTeamID, testKeyID
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatalf("sim.New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("sim Close: %v", err)
		}
	})
	return s
}

// newFCMSender returns a sender to s; edit adjusts its configuration.
func newFCMSender(t testing.TB, s *sim.Sim, edit func(*providers.FCMConfig)) *providers.FCMSender {
	t.Helper()
	cfg := providers.FCMConfig{
		Credentials: s.ServiceAccountJSON(),
		Endpoint:    s.FCMEndpoint(),
		RootCAs:     s.CertPool(),
		Concurrency: 8,
	}
	if edit != nil {
		edit(&cfg)
	}
	f, err := providers.NewFCMSender(context.Background(), cfg)
	if err != nil {
		t.Fatalf("NewFCMSender: %v", err)
	}
	t.Cleanup(f.Close)
	return f
}

// newAPNsToken returns a provider token for s; edit adjusts its
// configuration.
func newAPNsToken(t testing.TB, s *sim.Sim, edit func(*providers.APNsTokenConfig)) *providers.APNsToken {
	t.Helper()
	cfg := providers.APNsTokenConfig{Key: s.APNsKeyPEM(), KeyID: testKeyID, TeamID: testTeamID}
	if edit != nil {
		edit(&cfg)
	}
	tok, err := providers.NewAPNsToken(cfg)
	if err != nil {
		t.Fatalf("NewAPNsToken: %v", err)
	}
	return tok
}

// newAPNsSender returns a sender to s with tok; edit adjusts its
// configuration.
func newAPNsSender(t testing.TB, s *sim.Sim, tok *providers.APNsToken, edit func(*providers.APNsConfig)) *providers.APNsSender {
	t.Helper()
	cfg := providers.APNsConfig{
		Token:       tok,
		Topic:       testTopic,
		Host:        s.APNsHost(),
		RootCAs:     s.CertPool(),
		Concurrency: 8,
	}
	if edit != nil {
		edit(&cfg)
	}
	a, err := providers.NewAPNsSender(cfg)
	if err != nil {
		t.Fatalf("NewAPNsSender: %v", err)
	}
	t.Cleanup(a.Close)
	return a
}

// senders returns an providers.FCM and an providers.APNs sender to s, for tests that hold for
// both platforms.
// batchSender is what the queue sees of FCMSender and APNsSender.
type batchSender interface {
	Platform() providers.Platform
	Send(ctx context.Context, gate providers.Gate, msg *providers.Message, tokens []string) []providers.Result
}

func senders(t testing.TB, s *sim.Sim) []batchSender {
	t.Helper()
	return []batchSender{
		newFCMSender(t, s, nil),
		newAPNsSender(t, s, newAPNsToken(t, s, nil), nil),
	}
}

// deviceToken returns a token the simulator delivers to (its auto- prefix
// creates the phone on first use) or, with another prefix, fails as that
// prefix says.
func deviceToken(p providers.Platform, prefix string, i int) string {
	if p == providers.APNs {
		// Long and hex-like, as an providers.APNs token is.
		return fmt.Sprintf("%s%064x", prefix, i)
	}
	return fmt.Sprintf("%sfcm-device-%032d", prefix, i)
}

func deviceTokens(p providers.Platform, prefix string, n int) []string {
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = deviceToken(p, prefix, i)
	}
	return tokens
}

// requests is the number of provider requests the simulator answered for
// a platform, by any status.
func requests(s *sim.Sim, p providers.Platform) int64 {
	var n int64
	for _, c := range s.Stats().Requests[p] {
		n += c
	}
	return n
}

// testMessage is a small valid message.
func testMessage() *providers.Message {
	return &providers.Message{
		BroadcastID: "b-test",
		Title:       "Peringatan banjir",
		Body:        "Hindari area Manggarai.",
		Data:        map[string]string{"url": "jaki://alerts/1"},
		TTL:         15 * time.Minute,
		Priority:    providers.PriorityHigh,
		CollapseID:  "pg-b-test",
	}
}

// openGate admits calls until closed, and counts them.
type openGate struct {
	closed  atomic.Bool
	entered atomic.Int64
	left    atomic.Int64
	// commits and leftCommits count commits made and reported by Leave.
	commits, leftCommits atomic.Int64
	// commitLimit, when positive, closes the gate once that many commits
	// were made, as a kill arriving mid-batch would.
	commitLimit int64
	// onEnter, when set, runs on every admitted Enter.
	onEnter func()
}

func (g *openGate) Enter() bool {
	if g.closed.Load() {
		return false
	}
	g.entered.Add(1)
	if g.onEnter != nil {
		g.onEnter()
	}
	return true
}

func (g *openGate) Commit() bool {
	if g.closed.Load() {
		return false
	}
	if n := g.commits.Add(1); g.commitLimit > 0 && n >= g.commitLimit {
		g.closed.Store(true)
		if n > g.commitLimit {
			g.commits.Add(-1)
			return false
		}
	}
	return true
}

func (g *openGate) Leave(commits int) {
	g.left.Add(1)
	g.leftCommits.Add(int64(commits))
}

// logRecorder is a slog handler that keeps every record's message and
// attributes as text.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lines = append(h.lines, b.String())
	return nil
}

// count returns how many records start with msg.
func (h *logRecorder) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, l := range h.lines {
		if strings.HasPrefix(l, msg) {
			n++
		}
	}
	return n
}

// contains reports whether any record mentions s.
func (h *logRecorder) contains(s string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, l := range h.lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// hangGuard bounds every wait in these tests. It guards against a hang and
// is never the property under test: a busy machine may take many times as
// long as a quiet one, and no test here asserts how long a step took.
const hangGuard = 5 * time.Minute

// waitFor polls cond until it holds or timeout passes, for state the
// simulator updates just after the client saw its effect.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("hung: condition not met after %v", hangGuard)
		}
		time.Sleep(time.Millisecond)
	}
}
