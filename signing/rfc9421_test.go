package signing

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"testing"
	"time"
)

// b26Profile requires exactly what RFC 9421's B.2.6 example covers and
// carries, and no tag.
func b26Profile() Profile {
	return Profile{
		Components: []string{"date", "@method", "@path", "@authority", "content-type", "content-length"},
		Params:     []string{"created", "keyid"},
	}
}

// readB26 returns the RFC's test request as a server receives it.
func readB26(t *testing.T) *Request {
	t.Helper()
	raw, err := os.ReadFile("testdata/rfc9421/b26-request.http")
	if err != nil {
		t.Fatal(err)
	}
	r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return RequestFromHTTP(r, body)
}

func b26Keyring(t *testing.T) *Keyring {
	t.Helper()
	pub, err := os.ReadFile("testdata/rfc9421/test-key-ed25519.pub")
	if err != nil {
		t.Fatal(err)
	}
	doc := "keys:\n  - id: test-key-ed25519\n    roles: [register]\n    public_key: |\n"
	for _, line := range bytes.Split(bytes.TrimSpace(pub), []byte("\n")) {
		doc += "      " + string(line) + "\n"
	}
	kr, err := ParseKeyring([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func TestRFC9421B26SignatureBase(t *testing.T) {
	want, err := os.ReadFile("testdata/rfc9421/b26-base.txt")
	if err != nil {
		t.Fatal(err)
	}
	req := readB26(t)
	v := NewVerifier(VerifierConfig{Profile: b26Profile(), Keys: b26Keyring(t)})
	sig, rerr := v.parse(req)
	if rerr != nil {
		t.Fatalf("parse: %v", rerr)
	}
	got, rerr := appendBase(nil, req, sig.components, sig.input)
	if rerr != nil {
		t.Fatalf("appendBase: %v", rerr)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("signature base differs from RFC 9421 B.2.6\ngot:\n%s\nwant:\n%s", got, want)
	}

	// Ed25519 is deterministic: signing the base with the RFC's private
	// key must give the RFC's signature byte for byte.
	keyPEM, err := os.ReadFile("testdata/rfc9421/test-key-ed25519.key")
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ed25519.Sign(priv, got), sig.value) {
		t.Errorf("signing the base gives %s, want the RFC's %s",
			base64.StdEncoding.EncodeToString(ed25519.Sign(priv, got)), base64.StdEncoding.EncodeToString(sig.value))
	}
}

func TestRFC9421B26Verifies(t *testing.T) {
	created := time.Unix(1618884473, 0)
	v := NewVerifier(VerifierConfig{
		Profile: b26Profile(),
		Keys:    b26Keyring(t),
		Now:     func() time.Time { return created },
	})
	got, err := v.Verify(context.Background(), readB26(t))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got.Key.ID != "test-key-ed25519" || got.Label != "sig-b26" || !got.Created.Equal(created) {
		t.Errorf("Verify = key %q, label %q, created %v", got.Key.ID, got.Label, got.Created)
	}

	// The same request fails once anything covered changes.
	req := readB26(t)
	req.Header.Set("Date", "Tue, 20 Apr 2021 02:07:56 GMT")
	if _, err := v.Verify(context.Background(), req); codeOf(err) != CodeBadSignature {
		t.Errorf("Verify with another Date = %v, want %s", err, CodeBadSignature)
	}
}
