package signing

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
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
	p := DefaultProfile()
	p.Authorities = []string{"api.example.com"}
	v := NewVerifier(VerifierConfig{Profile: p, Keys: kr, Now: func() time.Time { return t0 }})
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

// BenchmarkVerifyHeadNormal is the header phase of a normal signed
// request, what the gateway runs before it reads a body: the figure
// BenchmarkVerifyHeadWorstCase is compared with.
func BenchmarkVerifyHeadNormal(b *testing.B) {
	v, req, _ := benchRequest(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.VerifyHead(ctx, req, true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyHeadWorstCase is the costliest header phase anyone can
// make the gateway run without a key: the three fields at their limits
// (worstSignatureInput and fillers), several large covered header fields
// so that the signature base is as long as the header block allows, and a
// signature that is parsed, built and checked with Ed25519 before it
// fails.
func BenchmarkVerifyHeadWorstCase(b *testing.B) {
	v, req := worstRequest(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.VerifyHead(ctx, req, true); codeOf(err) != CodeBadSignature {
			b.Fatalf("VerifyHead = %v, want %s", err, CodeBadSignature)
		}
	}
}

// BenchmarkVerifyOversizedField is an attack that once cost 1.2 s of CPU:
// 62 KB of unique parameters in Signature-Input, now refused before
// parsing.
func BenchmarkVerifyOversizedField(b *testing.B) {
	v, req, _ := benchRequest(b)
	var s strings.Builder
	s.WriteString("junk=()")
	for i := 0; s.Len() < 62_000; i++ {
		fmt.Fprintf(&s, ";p%d", i)
	}
	req.Header.Set("Signature-Input", s.String()+", "+req.Header.Get("Signature-Input"))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, req); codeOf(err) != CodeMalformedSignature {
			b.Fatalf("Verify = %v, want %s", err, CodeMalformedSignature)
		}
	}
}

// BenchmarkParseSignatureInputNormal and ...WorstCase parse the field
// alone.
func BenchmarkParseSignatureInputNormal(b *testing.B) {
	_, req, _ := benchRequest(b)
	benchParse(b, req.Header.Get("Signature-Input"))
}

func BenchmarkParseSignatureInputWorstCase(b *testing.B) {
	benchParse(b, worstSignatureInput())
}

func benchParse(b *testing.B, field string) {
	b.SetBytes(int64(len(field)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseDictionary(field); err != nil {
			b.Fatal(err)
		}
	}
}

// worstFillerKey is a key of n bytes whose last characters alone tell it
// from the others of its set, so that each duplicate check compares it
// in full.
func worstFillerKey(n, i int) string {
	suffix := strconv.Itoa(i)
	return strings.Repeat("k", n-len(suffix)) + suffix
}

// worstSignatureInput is the Signature-Input the parser's limits make
// costliest: members of maxParams parameters with equal-length keys,
// which every duplicate check compares in full, up to maxElements; then
// the pushgate signature, covering four large header fields.
func worstSignatureInput() string {
	var b strings.Builder
	const fillers, keyLen = 6, 40
	for m := range fillers {
		fmt.Fprintf(&b, "f%d=()", m)
		for i := range maxParams {
			b.WriteString(";" + worstFillerKey(keyLen, i))
		}
		b.WriteString(", ")
	}
	b.WriteString(`pushgate=("@method" "@authority" "@path" "@query" "content-digest" "content-type" "x-pad-0" "x-pad-1" "x-pad-2" "x-pad-3")`)
	b.WriteString(`;created=` + strconv.FormatInt(t0.Unix(), 10) + `;keyid="sender";alg="ed25519";nonce="` + strings.Repeat("n", maxNonce) + `";tag="pushgate"`)
	for i := range min(maxParams-5, maxElements-fillers*(maxParams+1)-1-10-5) {
		b.WriteString(";" + worstFillerKey(keyLen, i))
	}
	return b.String()
}

// worstRequest is BenchmarkVerifyHeadWorstCase's request, by a known key
// with a signature that does not verify, and a verifier for it.
func worstRequest(b *testing.B) (*Verifier, *Request) {
	b.Helper()
	v, req, _ := benchRequest(b)
	h := req.Header
	in := worstSignatureInput()
	if len(in) > maxFieldLen {
		b.Fatalf("Signature-Input of %d bytes", len(in))
	}
	h.Set("Signature-Input", in)
	h.Set("Signature", fillField("s", "pushgate=:"+base64.StdEncoding.EncodeToString(make([]byte, 64))+":"))
	h.Set("Content-Digest", fillField("d", ContentDigest(req.Body)))
	// The covered fields fill the base to just under its limit.
	sig, rerr := v.parse(req)
	if rerr != nil {
		b.Fatal(rerr)
	}
	base, rerr := appendBase(nil, req, sig.components[:6], sig.input)
	if rerr != nil {
		b.Fatal(rerr)
	}
	pad := (maxBaseLen - len(base)) / 4
	for i := range 4 {
		h.Set("X-Pad-"+strconv.Itoa(i), strings.Repeat("v", pad-len(`"x-pad-0": `+"\n")))
	}
	if base, rerr = appendBase(nil, req, sig.components, sig.input); rerr != nil || len(base) < maxBaseLen-64 {
		b.Fatalf("base of %d bytes: %v", len(base), rerr)
	}
	return v, req
}

// fillField puts byte-sequence members before last until the field is at
// its limit.
func fillField(prefix, last string) string {
	var b strings.Builder
	for i := 0; b.Len()+len(last)+200 < maxFieldLen && i < maxMembers-1; i++ {
		fmt.Fprintf(&b, "%s%d=:%s:, ", prefix, i, base64.StdEncoding.EncodeToString(make([]byte, 96)))
	}
	b.WriteString(last)
	return b.String()
}
