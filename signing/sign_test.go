package signing

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestSignerFields(t *testing.T) {
	_, priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s := &Signer{
		KeyID:   "city-alerts",
		Key:     priv,
		Now:     func() time.Time { return t0 },
		Nonce:   func() (string, error) { return "bm9uY2U", nil },
		Expires: 90 * time.Second,
	}
	h, err := s.Headers("POST", "http://127.0.0.1:8080/v1/broadcasts?x=1", "", []byte(helloBody))
	if err != nil {
		t.Fatal(err)
	}
	wantInput := `pushgate=("@method" "@authority" "@path" "@query" "content-digest" "content-type");` +
		`created=1795680000;expires=1795680090;keyid="city-alerts";alg="ed25519";nonce="bm9uY2U";tag="pushgate"`
	if got := h.Get("Signature-Input"); got != wantInput {
		t.Errorf("Signature-Input =\n%s\nwant\n%s", got, wantInput)
	}
	if got := h.Get("Content-Digest"); got != helloSHA256 {
		t.Errorf("Content-Digest = %q, want %q", got, helloSHA256)
	}
	if got := h.Get("Signature"); !strings.HasPrefix(got, "pushgate=:") || len(got) != len("pushgate=::")+88 {
		t.Errorf("Signature = %q", got)
	}
	if len(h) != 3 {
		t.Errorf("Headers returned %d fields, want 3: %v", len(h), h)
	}

	h, err = s.Headers("GET", "http://127.0.0.1:8080/v1/kill", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if h.Get("Content-Digest") != "" || !strings.Contains(h.Get("Signature-Input"), `("@method" "@authority" "@path");`) {
		t.Errorf("bodyless Headers = %v", h)
	}
}

func TestSignerDefaultNonceIsFresh(t *testing.T) {
	f := newFixture(t)
	a, b := f.post(t), f.post(t)
	va, err := f.verifier().Verify(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	vb, err := f.verifier().Verify(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if va.Nonce == vb.Nonce || len(va.Nonce) != 22 {
		t.Errorf("nonces %q and %q", va.Nonce, vb.Nonce)
	}
}

func TestSignerErrors(t *testing.T) {
	_, priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		signer Signer
		url    string
		body   string
		noType bool
	}{
		{"no key", Signer{KeyID: "a"}, "http://h/p", "", false},
		{"short key", Signer{KeyID: "a", Key: priv[:32]}, "http://h/p", "", false},
		{"no key id", Signer{Key: priv}, "http://h/p", "", false},
		{"key id not printable", Signer{KeyID: "a\nb", Key: priv}, "http://h/p", "", false},
		{"bad label", Signer{KeyID: "a", Key: priv, Label: "Sig"}, "http://h/p", "", false},
		{"nonce fails", Signer{KeyID: "a", Key: priv, Nonce: func() (string, error) { return "", errors.New("no entropy") }}, "http://h/p", "", false},
		{"no host", Signer{KeyID: "a", Key: priv}, "/p", "", false},
		{"body without content type", Signer{KeyID: "a", Key: priv}, "http://h/p", "{}", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := http.NewRequest("POST", tt.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.body != "" && !tt.noType {
				r.Header.Set("Content-Type", "application/json")
			}
			if err := tt.signer.Sign(r, []byte(tt.body)); err == nil {
				t.Errorf("Sign succeeded: %v", r.Header)
			}
		})
	}
	if _, err := (&Signer{KeyID: "a", Key: priv}).Headers("POST", "://bad", "", nil); err == nil {
		t.Error("Headers with a bad URL succeeded")
	}
}
