package signing

import (
	"context"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// readHead verifies req over its header fields, then reads body through
// the result, as the gateway does.
func readHead(t *testing.T, v *Verifier, req *Request, hasBody bool, body io.Reader) (*Verified, []byte, error) {
	t.Helper()
	vh, err := v.VerifyHead(context.Background(), req, hasBody)
	if err != nil {
		return nil, nil, err
	}
	b, err := io.ReadAll(vh.Body(body))
	return vh.Verified, b, err
}

func TestVerifyHead(t *testing.T) {
	altered := strings.Replace(testBody, "citizens", "everyone", 1)
	tests := []struct {
		name    string
		give    func(t *testing.T, f *fixture) *Request
		hasBody bool
		body    io.Reader
		want    Code // "" accepts
	}{
		{"post with body", func(t *testing.T, f *fixture) *Request { return f.post(t) }, true,
			strings.NewReader(testBody), ""},
		{"body arriving a byte at a time", func(t *testing.T, f *fixture) *Request { return f.post(t) }, true,
			iotest.OneByteReader(strings.NewReader(testBody)), ""},
		{"get without body", func(t *testing.T, f *fixture) *Request {
			return received(t, f.signer("sender"), "GET", "http://api.example.com/v1/audit", nil)
		}, false, strings.NewReader(""), ""},
		{"body altered", func(t *testing.T, f *fixture) *Request { return f.post(t) }, true,
			strings.NewReader(altered), CodeDigestMismatch},
		{"body cut short", func(t *testing.T, f *fixture) *Request { return f.post(t) }, true,
			strings.NewReader(testBody[:10]), CodeDigestMismatch},
		{"body longer than signed", func(t *testing.T, f *fixture) *Request { return f.post(t) }, true,
			strings.NewReader(testBody + " "), CodeDigestMismatch},
		{"a body the signature does not cover", func(t *testing.T, f *fixture) *Request {
			return received(t, f.signer("sender"), "GET", "http://api.example.com/v1/audit", nil)
		}, false, strings.NewReader("{}"), CodeMissingComponent},
		{"framing says body, signature covers none", func(t *testing.T, f *fixture) *Request {
			return received(t, f.signer("sender"), "POST", "http://api.example.com/v1/kill", nil)
		}, true, strings.NewReader("{}"), CodeMissingComponent},
		{"Content-Digest without sha-256", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Header.Set("Content-Digest", "sha-512=:AAAA:")
			f.rawSign(t, req, "sig1", postComponents, postParams(nil))
			return req
		}, true, strings.NewReader(testBody), CodeDigestMismatch},
		{"unknown key", func(t *testing.T, f *fixture) *Request {
			return received(t, f.signer("nobody"), "POST", "http://api.example.com/v1/broadcasts", []byte(testBody))
		}, true, strings.NewReader(testBody), CodeBadSignature},
		{"stale", func(t *testing.T, f *fixture) *Request {
			f.now = t0.Add(time.Hour)
			return f.post(t)
		}, true, strings.NewReader(testBody), CodeStaleRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			req := tt.give(t, f)
			req.Body = nil // VerifyHead must not need it
			got, body, err := readHead(t, f.verifier(), req, tt.hasBody, tt.body)
			if code := codeOf(err); code != tt.want || tt.want == "" && err != nil {
				t.Fatalf("VerifyHead and reading the body = %v, want code %q", err, tt.want)
			}
			if tt.want != "" {
				return
			}
			if got.Key.ID != "sender" {
				t.Errorf("verified key %q", got.Key.ID)
			}
			// What was read is what a one-shot Verify and the worker's
			// Reverify accept.
			req.Body = body
			if _, err := f.verifier().Reverify(context.Background(), got.Envelope(req), time.Hour); err != nil {
				t.Errorf("Reverify of the envelope: %v", err)
			}
		})
	}
}

// TestVerifyHeadClaimsTheNonce checks that the headers of a request cannot
// be sent again once VerifyHead accepted them, whatever became of its body.
func TestVerifyHeadClaimsTheNonce(t *testing.T) {
	f := newFixture(t)
	req := f.post(t)
	if _, _, err := readHead(t, f.verifier(), req, true, strings.NewReader("altered")); codeOf(err) != CodeDigestMismatch {
		t.Fatalf("first = %v, want %s", err, CodeDigestMismatch)
	}
	if _, err := f.verifier().VerifyHead(context.Background(), req, true); codeOf(err) != CodeReplayedNonce {
		t.Fatalf("again = %v, want %s", err, CodeReplayedNonce)
	}
}

// TestBodyErrorsAreSticky checks that a reader keeps answering its error:
// a caller that reads again does not get a clean EOF.
func TestBodyErrorsAreSticky(t *testing.T) {
	f := newFixture(t)
	vh, err := f.verifier().VerifyHead(context.Background(), f.post(t), true)
	if err != nil {
		t.Fatal(err)
	}
	r := vh.Body(strings.NewReader("x"))
	if _, err := io.ReadAll(r); codeOf(err) != CodeDigestMismatch {
		t.Fatalf("ReadAll = %v", err)
	}
	if n, err := r.Read(make([]byte, 8)); n != 0 || codeOf(err) != CodeDigestMismatch {
		t.Errorf("read after the error = %d, %v; want 0 and the same refusal", n, err)
	}
}

// TestAuthorities checks that a verifier with authorities refuses requests
// signed for others at ingress, in stored envelopes and in the control log
// alike, and compares authorities as RFC 9421 does.
func TestAuthorities(t *testing.T) {
	tests := []struct {
		name        string
		authorities []string
		url         string
		want        Code
	}{
		{"listed", []string{"api.example.com"}, "http://api.example.com/v1/broadcasts", ""},
		{"listed with its port", []string{"api.example.com:8080"}, "http://api.example.com:8080/v1/broadcasts", ""},
		{"case differs", []string{"API.Example.com"}, "http://api.EXAMPLE.com/v1/broadcasts", ""},
		{"default port 443 is none", []string{"api.example.com"}, "https://api.example.com:443/v1/broadcasts", ""},
		{"default port 80 is none", []string{"api.example.com:80"}, "http://api.example.com/v1/broadcasts", ""},
		{"IPv6 with a port", []string{"[::1]:8080"}, "http://[::1]:8080/v1/broadcasts", ""},
		{"another host", []string{"api.example.com"}, "http://staging.example.com/v1/broadcasts", CodeWrongAuthority},
		{"another port", []string{"api.example.com:8080"}, "http://api.example.com:8081/v1/broadcasts", CodeWrongAuthority},
		{"a port where none is listed", []string{"api.example.com"}, "http://api.example.com:8080/v1/broadcasts", CodeWrongAuthority},
		{"a suffix of a listed one", []string{"api.example.com"}, "http://example.com/v1/broadcasts", CodeWrongAuthority},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			p := DefaultProfile()
			p.Authorities = tt.authorities
			v := NewVerifier(VerifierConfig{Profile: p, Keys: f.keys, Revocations: f.revoked, Replay: f.replay,
				Now: func() time.Time { return f.now }})
			req := received(t, f.signer("sender"), "POST", tt.url, []byte(testBody))
			checks := []struct {
				name string
				run  func() error
			}{
				{"Verify", func() error { _, err := v.Verify(context.Background(), req); return err }},
				{"Reverify", func() error { _, err := v.Reverify(context.Background(), req, time.Hour); return err }},
				{"VerifyRecorded", func() error { _, err := v.VerifyRecorded(context.Background(), req); return err }},
			}
			for _, c := range checks {
				if err := c.run(); codeOf(err) != tt.want || tt.want == "" && err != nil {
					t.Errorf("%s = %v, want code %q", c.name, err, tt.want)
				}
			}
		})
	}
}

// TestAuthoritiesNeedAuthorityCovered checks that listing authorities
// makes "@authority" a required component, even for a profile that does
// not name it: an uncovered authority could be anything.
func TestAuthoritiesNeedAuthorityCovered(t *testing.T) {
	f := newFixture(t)
	p := DefaultProfile()
	p.Components = []string{"@method", "@path"}
	p.Authorities = []string{"api.example.com"}
	v := NewVerifier(VerifierConfig{Profile: p, Keys: f.keys, Now: func() time.Time { return f.now }})
	req := received(t, f.signer("sender"), "POST", "http://api.example.com/v1/broadcasts", []byte(testBody))
	f.rawSign(t, req, "sig1", []string{"@method", "@path", "content-digest", "content-type"}, postParams(nil))
	if _, err := v.Verify(context.Background(), req); codeOf(err) != CodeMissingComponent {
		t.Fatalf("Verify without @authority covered = %v, want %s", err, CodeMissingComponent)
	}
}
