package sim

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"net/http"
	"sync"
	"testing"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/messaging"
	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"
	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/option"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

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

// newSim starts a simulator for one test and closes it afterwards.
func newSim(t testing.TB, cfg Config) *Sim {
	t.Helper()
	cfg.ServiceAccountKey, cfg.APNsKey = testKeys()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// h2Client returns an HTTP/2 client trusting the simulator, with x/net's
// default stream accounting, as pushgate's APNs sender uses it (see the
// package comment on why StrictMaxConcurrentStreams stays off).
func h2Client(t testing.TB, s *Sim) *http.Client {
	tr := &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: s.CertPool()}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: hangGuard}
}

// fcmClient builds the official FCM client the way a gateway does: an
// oauth2 client from the service-account JSON, whose token fetches trust
// the simulator's CA, passed to firebase with the simulator's endpoint.
func fcmClient(t testing.TB, s *Sim) *messaging.Client {
	t.Helper()
	return fcmClientWithScope(t, s, "https://www.googleapis.com/auth/firebase.messaging")
}

func fcmClientWithScope(t testing.TB, s *Sim, scopes ...string) *messaging.Client {
	t.Helper()
	conf, err := google.JWTConfigFromJSON(s.ServiceAccountJSON(), scopes...)
	if err != nil {
		t.Fatalf("JWTConfigFromJSON: %v", err)
	}
	base := h2Client(t, s)
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, base)
	hc := &http.Client{Transport: &oauth2.Transport{Source: conf.TokenSource(ctx), Base: base.Transport}}
	app, err := firebase.NewApp(ctx, &firebase.Config{ProjectID: s.ProjectID()},
		option.WithHTTPClient(hc), option.WithEndpoint(s.FCMEndpoint()))
	if err != nil {
		t.Fatalf("firebase.NewApp: %v", err)
	}
	c, err := app.Messaging(ctx)
	if err != nil {
		t.Fatalf("Messaging: %v", err)
	}
	return c
}

// apnsClient builds the official APNs client with token auth against the
// simulator.
func apnsClient(t testing.TB, s *Sim) *apns2.Client {
	t.Helper()
	key, err := token.AuthKeyFromBytes(s.APNsKeyPEM())
	if err != nil {
		t.Fatalf("AuthKeyFromBytes: %v", err)
	}
	c := apns2.NewTokenClient(&token.Token{AuthKey: key, KeyID: s.KeyID(), TeamID: s.TeamID()})
	c.Host = s.APNsHost()
	c.HTTPClient = h2Client(t, s)
	return c
}

// hangGuard bounds every wait in these tests. It guards against a hang and
// is never the property under test: a busy machine may take many times as
// long as a quiet one, and no test here asserts how long a step took.
const hangGuard = 5 * time.Minute

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("hung: still waiting for %s after %s", what, hangGuard)
		}
		time.Sleep(time.Millisecond)
	}
}

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func mustRSA(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
