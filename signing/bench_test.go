package signing

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"testing"
	"time"
)

// benchRequest returns a signed POST with a 1 KiB body, as the gateway
// receives it, and a verifier for it without replay guard or revocations.
func benchRequest(b *testing.B) (*Verifier, *Request, ed25519.PublicKey) {
	b.Helper()
	pub, priv, err := GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	kr := &Keyring{byID: map[string]*Key{"sender": {ID: "sender", Public: pub, Roles: []Role{RoleBroadcast}}}}
	body := bytes.Repeat([]byte("x"), 1024)
	s := &Signer{KeyID: "sender", Key: priv, Now: func() time.Time { return t0 }}
	h, err := s.Headers("POST", "http://api.example.com/v1/broadcasts?wait=true", "application/json", body)
	if err != nil {
		b.Fatal(err)
	}
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "bench")
	req := &Request{Method: "POST", Authority: "api.example.com", Path: "/v1/broadcasts", Query: "wait=true", Header: h, Body: body}
	v := NewVerifier(VerifierConfig{Profile: DefaultProfile(), Keys: kr, Now: func() time.Time { return t0 }})
	if _, err := v.Verify(context.Background(), req); err != nil {
		b.Fatal(err)
	}
	return v, req, pub
}

// BenchmarkVerify1KiB is the whole ingress check of a 1 KiB request:
// field parsing, digest, base and Ed25519.
func BenchmarkVerify1KiB(b *testing.B) {
	v, req, _ := benchRequest(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEd25519Verify is the floor BenchmarkVerify1KiB is measured
// against: ed25519.Verify alone over the same signature base.
func BenchmarkEd25519Verify(b *testing.B) {
	v, req, pub := benchRequest(b)
	sig, rerr := v.parse(req)
	if rerr != nil {
		b.Fatal(rerr)
	}
	base, rerr := appendBase(nil, req, sig.components, sig.input)
	if rerr != nil {
		b.Fatal(rerr)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !ed25519.Verify(pub, base, sig.value) {
			b.Fatal("signature does not verify")
		}
	}
}
