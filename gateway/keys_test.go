package gateway_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/gateway/gatewaytest"
)

// TestListKeys reads the keyring through GET /v1/keys: every entry with
// its roles, topics and limits, a revoked key marked revoked with when,
// by whom and why once the control log holds the revocation, and nothing
// of any private key.
func TestListKeys(t *testing.T) {
	env := gatewaytest.Start(t)
	list := func(t *testing.T) (api.KeyList, response) {
		t.Helper()
		r := call(t, env, gatewaytest.Admin, "GET", api.PathKeys, "")
		if r.status != http.StatusOK {
			t.Fatalf("GET /v1/keys: %d %s", r.status, r.body)
		}
		var l api.KeyList
		r.decode(t, &l)
		return l, r
	}
	byID := func(l api.KeyList) map[string]api.KeyInfo {
		m := map[string]api.KeyInfo{}
		for _, k := range l.Keys {
			m[k.ID] = k
		}
		return m
	}

	before, r := list(t)
	keys := byID(before)
	if len(before.Keys) != len(env.Signers) {
		t.Fatalf("%d keys listed, want the keyring's %d", len(before.Keys), len(env.Signers))
	}
	for id, k := range keys {
		if k.Revoked || !k.RevokedAt.IsZero() || k.RevokedBy != "" {
			t.Errorf("key %s listed revoked before any revocation: %+v", id, k)
		}
		der, err := x509.MarshalPKIXPublicKey(env.Signers[id].Key.Public())
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(der); k.PublicKeySHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("key %s: public_key_sha256 %s is not the SHA-256 of its SPKI", id, k.PublicKeySHA256)
		}
	}
	sender := keys[gatewaytest.Sender]
	if !slices.Equal(sender.Roles, []string{"broadcast"}) || !slices.Equal(sender.Topics, []string{"citizens", "district-*"}) ||
		sender.MaxAudience != 100 || sender.Reach != "100/24h" || sender.Owner != gatewaytest.Sender {
		t.Errorf("sender = %+v", sender)
	}
	if a := keys[gatewaytest.Admin]; !slices.Equal(a.Roles, []string{"admin"}) || a.Owner != "ops-1" || a.Topics == nil || a.MaxAudience != 0 {
		t.Errorf("admin = %+v", a)
	}
	if g := keys[gatewaytest.Gated]; g.ApprovalAbove != 2 {
		t.Errorf("gated approval_above = %d, want 2", g.ApprovalAbove)
	}
	if r9 := keys[gatewaytest.Registrar9]; r9.MaxDevices != 5 || !slices.Equal(r9.Topics, []string{"district-9*"}) {
		t.Errorf("registrar-9 = %+v", r9)
	}
	checkNoPrivateMaterial(t, env, r.body)

	start := time.Now().Add(-time.Minute)
	if rv := call(t, env, gatewaytest.Admin, "POST", api.RevokePath(gatewaytest.Doomed), `{"reason":"key leaked"}`); rv.status != http.StatusOK {
		t.Fatalf("revoke: %d %s", rv.status, rv.body)
	}
	after, r := list(t)
	keys = byID(after)
	d := keys[gatewaytest.Doomed]
	if !d.Revoked || d.RevokedBy != gatewaytest.Admin || d.RevokedReason != "key leaked" || d.RevokedAt.Before(start) {
		t.Errorf("doomed after its revocation = %+v, want revoked by admin for \"key leaked\"", d)
	}
	if after.Version <= before.Version {
		t.Errorf("version %d after the revocation, %d before: want it to grow", after.Version, before.Version)
	}
	for id, k := range keys {
		if id != gatewaytest.Doomed && k.Revoked {
			t.Errorf("key %s revoked too", id)
		}
	}
	checkNoPrivateMaterial(t, env, r.body)
}

// checkNoPrivateMaterial fails when a keys answer holds a member outside
// the contract, or any private key in any encoding.
func checkNoPrivateMaterial(t *testing.T, env *gatewaytest.Env, body []byte) {
	t.Helper()
	var doc struct {
		Keys []map[string]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	allowed := []string{"id", "owner", "roles", "topics", "max_audience", "rate", "reach", "approval_above", "max_devices",
		"public_key_sha256", "revoked", "revoked_at", "revoked_by", "revoked_reason"}
	for _, k := range doc.Keys {
		for name := range k {
			if !slices.Contains(allowed, name) {
				t.Errorf("key member %q is not in the contract", name)
			}
		}
	}
	text := string(body)
	if strings.Contains(text, "PRIVATE") {
		t.Error("the answer holds a PEM private key")
	}
	for id, s := range env.Signers {
		seed := s.Key.Seed()
		for _, enc := range []string{base64.StdEncoding.EncodeToString(seed), base64.RawURLEncoding.EncodeToString(seed),
			hex.EncodeToString(seed), base64.StdEncoding.EncodeToString(s.Key), hex.EncodeToString(s.Key[:ed25519.SeedSize])} {
			if strings.Contains(text, enc) {
				t.Errorf("the answer holds key %s's private key", id)
			}
		}
	}
}

// TestListKeysNeedsAdmin refuses the keyring to every key without the
// admin role, with the problem any admin route answers.
func TestListKeysNeedsAdmin(t *testing.T) {
	env := gatewaytest.Start(t)
	for _, key := range []string{gatewaytest.Sender, gatewaytest.Registrar, gatewaytest.Approver} {
		r := call(t, env, key, "GET", api.PathKeys, "")
		if r.status != http.StatusForbidden {
			t.Fatalf("%s: GET /v1/keys: %d %s, want 403", key, r.status, r.body)
		}
		if p := r.problem(t); p.Code != api.CodeForbidden {
			t.Errorf("%s: problem %s, want %s", key, p.Code, api.CodeForbidden)
		}
	}
	if r := call(t, env, "", "GET", api.PathKeys, ""); r.status != http.StatusUnauthorized {
		t.Errorf("unsigned GET /v1/keys: %d, want 401", r.status)
	}
}
