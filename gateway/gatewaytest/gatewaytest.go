// Package gatewaytest starts a real pushgate API for tests: a private Redis
// database (internal/redistest), a real queue.Service, a Verifier with the
// Redis replay guard and revocations, the gateway, and an httptest server
// on loopback, plus signers and key files for a fixed set of keys. Every
// exchange with that API is checked against the API's OpenAPI description
// (CheckContract), which tests of other servers of the API use too.
//
// No worker runs: tests observe what the API stored and enqueued, and may
// drive a broadcast's state through the Service.
//
// Its Redis keys are the queue package's, under the prefix "pgt".
package gatewaytest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/mod/sumdb/note"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/gateway"
	"github.com/pushgate/pushgate/internal/redistest"
	"github.com/pushgate/pushgate/queue"
	"github.com/pushgate/pushgate/signing"
)

// The keys of the test keyring.
const (
	// Sender broadcasts to "citizens" and "district-*", at most 100 devices.
	Sender = "sender"
	// Small broadcasts to "citizens", at most 2 devices.
	Small = "small"
	// Wide broadcasts everywhere ("*", so also "all"), at most 1,000,000.
	Wide = "wide"
	// Registrar registers devices into any topic.
	Registrar = "registrar"
	// Registrar9 registers devices into district-9* only, at most 5.
	Registrar9 = "registrar-9"
	// Admin holds the admin role.
	Admin = "admin"
	// Approver holds the approve role, for owner "gov-a".
	Approver = "approver"
	// Approver2 holds the approve role, for owner "gov-b".
	Approver2 = "approver-2"
	// Admin2 holds the admin role, for another owner than Admin's.
	Admin2 = "admin-2"
	// Gated broadcasts to "citizens" and needs approvals above 2 devices.
	Gated = "gated"
	// Doomed broadcasts to "citizens"; tests revoke it.
	Doomed = "doomed"
)

// keySpec is one key of the test keyring.
type keySpec struct {
	id          string
	roles       []string
	topics      []string
	maxAudience int
	owner       string
	above       int // approval_above
	maxDevices  int
}

func keySpecs() []keySpec {
	return []keySpec{
		{Sender, []string{"broadcast"}, []string{"citizens", "district-*"}, 100, "", 0, 0},
		{Small, []string{"broadcast"}, []string{"citizens"}, 2, "", 0, 0},
		{Wide, []string{"broadcast"}, []string{"*"}, 1000000, "", 0, 0},
		{Registrar, []string{"register"}, []string{"*"}, 0, "", 0, 0},
		{Registrar9, []string{"register"}, []string{"district-9*"}, 0, "", 0, 5},
		{Admin, []string{"admin"}, nil, 0, "ops-1", 0, 0},
		{Admin2, []string{"admin"}, nil, 0, "ops-2", 0, 0},
		{Approver, []string{"approve"}, nil, 0, "gov-a", 0, 0},
		{Approver2, []string{"approve"}, nil, 0, "gov-b", 0, 0},
		{Doomed, []string{"broadcast"}, []string{"citizens"}, 100, "", 0, 0},
		{Gated, []string{"broadcast"}, []string{"citizens"}, 100, "", 2, 0},
	}
}

// Env is a running API and what tests need to talk to it and look behind it.
type Env struct {
	// URL is the API's base URL, http://127.0.0.1:port.
	URL string
	// Server is the httptest server; it closes at cleanup.
	Server *httptest.Server
	// Service is the Service behind the API.
	Service *queue.Service
	// Redis is the private database everything is stored in.
	Redis *redis.Client
	// Keys builds the Redis keys the Service uses.
	Keys queue.Keys
	// Signers sign as each key of the keyring, by key id.
	Signers map[string]*signing.Signer
	// KeyFiles are PKCS#8 PEM files of the private keys, by key id.
	KeyFiles map[string]string
	// KeyringFile is the keyring as a file, as keyring_file names it.
	KeyringFile string
	// Metrics is the registry the gateway registered its metrics on.
	Metrics *prometheus.Registry
	// Logs holds what the gateway and the Service logged.
	Logs *Buffer
	// Verifier is the gateway's signature verifier.
	Verifier *signing.Verifier
	// Gateway is the API's server; its Handler is served, wrapped in
	// CheckContract.
	Gateway *gateway.Server
	// LogKey is the public key of the control log, which the Service's
	// Control integrates, and LogPublicKey its encoding.
	LogKey       note.Verifier
	LogPublicKey string
}

// Sign signs a request as key id and verifies it as the gateway would,
// for tests that call the Service directly.
func (e *Env) Sign(tb testing.TB, id, method, path string, body []byte) (*signing.Verified, *signing.Request) {
	tb.Helper()
	r, err := http.NewRequest(method, e.URL+path, bytes.NewReader(body))
	if err != nil {
		tb.Fatalf("gatewaytest: %v", err)
	}
	if len(body) > 0 {
		r.Header.Set("Content-Type", "application/json")
	}
	if err := e.Signers[id].Sign(r, body); err != nil {
		tb.Fatalf("gatewaytest: %v", err)
	}
	req := signing.RequestFromHTTP(r, body)
	req.Authority = r.URL.Host
	v, err := e.Verifier.Verify(context.Background(), req)
	if err != nil {
		tb.Fatalf("gatewaytest: verify: %v", err)
	}
	return v, v.Envelope(req)
}

// Kill has key id kill scope through the Service, as a signed request
// would.
func (e *Env) Kill(tb testing.TB, id, scope, reason string) {
	tb.Helper()
	body := fmt.Appendf(nil, `{"scope":%q,"reason":%q}`, scope, reason)
	v, env := e.Sign(tb, id, "POST", api.PathKill, body)
	if _, err := e.Service.Kill(context.Background(), v, env, scope, reason, false); err != nil {
		tb.Fatalf("gatewaytest: kill %s: %v", scope, err)
	}
}

// Options change the API Start runs.
type Options struct {
	// BodyReads and BodyReadTimeout are the gateway's (gateway.Config);
	// zero keeps its defaults.
	BodyReads       int
	BodyReadTimeout time.Duration
}

// Start starts an API on a fresh Redis database. Everything stops at the
// test's cleanup.
func Start(tb testing.TB) *Env { return StartWith(tb, Options{}) }

// StartWith is Start with options. The API answers to the authorities a
// gateway listening on its loopback port does by default: 127.0.0.1,
// localhost and [::1], with the port.
func StartWith(tb testing.TB, o Options) *Env {
	tb.Helper()
	srv := httptest.NewUnstartedServer(nil)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		tb.Fatalf("gatewaytest: %v", err)
	}
	profile := signing.DefaultProfile()
	for _, host := range []string{"127.0.0.1", "localhost", "[::1]"} {
		profile.Authorities = append(profile.Authorities, host+":"+port)
	}
	rdb := redistest.Client(tb)
	dir := tb.TempDir()
	env := &Env{
		Redis:    rdb,
		Keys:     queue.NewKeys("pgt"),
		Signers:  map[string]*signing.Signer{},
		KeyFiles: map[string]string{},
		Metrics:  prometheus.NewRegistry(),
		Logs:     &Buffer{},
	}

	var ring []signing.KeyEntry
	for _, k := range keySpecs() {
		pub, priv, err := signing.GenerateKey()
		if err != nil {
			tb.Fatalf("gatewaytest: %v", err)
		}
		enc, err := signing.EncodePublicKey(pub)
		if err != nil {
			tb.Fatalf("gatewaytest: %v", err)
		}
		ring = append(ring, signing.KeyEntry{ID: k.id, PublicKey: enc, Roles: k.roles, Topics: k.topics, MaxAudience: k.maxAudience,
			Owner: k.owner, ApprovalAbove: k.above, MaxDevices: k.maxDevices})
		env.Signers[k.id] = &signing.Signer{KeyID: k.id, Key: priv}
		env.KeyFiles[k.id] = writeKey(tb, dir, k.id, priv)
	}
	doc, err := signing.MarshalKeyring(ring)
	if err != nil {
		tb.Fatalf("gatewaytest: keyring: %v", err)
	}
	keyring, err := signing.ParseKeyring(doc)
	if err != nil {
		tb.Fatalf("gatewaytest: keyring: %v", err)
	}
	env.KeyringFile = filepath.Join(dir, "keyring.yaml")
	if err := os.WriteFile(env.KeyringFile, doc, 0o600); err != nil {
		tb.Fatalf("gatewaytest: keyring: %v", err)
	}

	logger := slog.New(slog.NewTextHandler(env.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	skey, vkey, err := controllog.GenerateKey("pushgate.test/control")
	if err != nil {
		tb.Fatalf("gatewaytest: %v", err)
	}
	logSigner, _ := note.NewSigner(skey)
	logKey, _ := note.NewVerifier(vkey)
	env.LogKey, env.LogPublicKey = logKey, vkey
	control, err := queue.NewControl(queue.ControlConfig{Redis: rdb, Keys: env.Keys, Keyring: keyring,
		Profile: profile, Policy: queue.DefaultPolicy(), LogKey: logKey, Signer: logSigner, Logger: logger})
	if err != nil {
		tb.Fatalf("gatewaytest: control log: %v", err)
	}
	if err := control.Start(context.Background()); err != nil {
		tb.Fatalf("gatewaytest: control log: %v", err)
	}
	tb.Cleanup(control.Close)
	for deadline := time.Now().Add(time.Minute); !control.Fresh(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatal("gatewaytest: hung: the control log signed no checkpoint in a minute")
		}
	}
	verifier := signing.NewVerifier(signing.VerifierConfig{
		Profile:     profile,
		Keys:        keyring,
		Revocations: control,
		Replay:      queue.NewReplayGuard(rdb, env.Keys),
	})
	svc, err := queue.NewService(queue.Config{
		Redis: rdb, Keys: env.Keys, Verifier: verifier, Control: control, Policy: queue.DefaultPolicy(), Logger: logger,
	})
	if err != nil {
		tb.Fatalf("gatewaytest: service: %v", err)
	}
	env.Service = svc
	env.Verifier = verifier
	gw, err := gateway.New(gateway.Config{
		Service: svc, Verifier: verifier, Logger: logger, Metrics: env.Metrics,
		BodyReads: o.BodyReads, BodyReadTimeout: o.BodyReadTimeout,
	})
	if err != nil {
		tb.Fatalf("gatewaytest: gateway: %v", err)
	}
	env.Gateway = gw
	// Every exchange is checked against api/openapi.yaml; the findings
	// fail the test after the server below has closed.
	srv.Config.Handler = CheckContract(tb, gw.Handler())
	srv.Start()
	env.Server = srv
	tb.Cleanup(env.Server.Close)
	env.URL = env.Server.URL
	return env
}

func writeKey(tb testing.TB, dir, id string, priv ed25519.PrivateKey) string {
	tb.Helper()
	pem, err := signing.MarshalPrivateKeyPEM(priv)
	if err != nil {
		tb.Fatalf("gatewaytest: %v", err)
	}
	path := filepath.Join(dir, id+".pem")
	if err := os.WriteFile(path, pem, 0o600); err != nil {
		tb.Fatalf("gatewaytest: %v", err)
	}
	return path
}

// Buffer is a bytes.Buffer safe for concurrent writers, for logs.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
