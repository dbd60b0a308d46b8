package signing

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// t0 is the fixed "now" of these tests.
var t0 = time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)

func codeOf(err error) Code {
	var se *Error
	if errors.As(err, &se) {
		return se.Code
	}
	return ""
}

// memReplay is an in-memory ReplayGuard for tests that are not about
// Redis; queue.ReplayGuard has its own tests against a real server.
type memReplay struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (m *memReplay) Claim(_ context.Context, keyID, nonce string, _ time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen == nil {
		m.seen = make(map[string]bool)
	}
	k := keyID + "\x00" + nonce
	if m.seen[k] {
		return false, nil
	}
	m.seen[k] = true
	return true, nil
}

// revokedSet is a Revocations of fixed key ids.
type revokedSet map[string]bool

func (r revokedSet) Revoked(_ context.Context, keyID string) (bool, error) { return r[keyID], nil }

// fixture holds a sender key in a keyring and a verifier of the default
// profile at t0.
type fixture struct {
	priv    ed25519.PrivateKey
	keys    *Keyring
	revoked revokedSet
	replay  *memReplay
	now     time.Time
	// authorities are the profile's: the two forms of api.example.com
	// the tests sign for.
	authorities []string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	pub, priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	doc := "keys:\n" +
		"  - id: sender\n    public_key: " + base64.StdEncoding.EncodeToString(pub) + "\n" +
		"    roles: [broadcast]\n    topics: [citizens]\n    max_audience: 1000\n" +
		"  - id: revoked\n    public_key: " + base64.StdEncoding.EncodeToString(pub) + "\n    roles: [register]\n" +
		"  - id: other\n    public_key: " + base64.StdEncoding.EncodeToString(other) + "\n    roles: [register]\n"
	kr, err := ParseKeyring([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{priv: priv, keys: kr, revoked: revokedSet{"revoked": true}, replay: &memReplay{}, now: t0,
		authorities: []string{"api.example.com", "api.example.com:8080"}}
}

func (f *fixture) verifier() *Verifier {
	p := DefaultProfile()
	p.Authorities = f.authorities
	return NewVerifier(VerifierConfig{
		Profile:     p,
		Keys:        f.keys,
		Revocations: f.revoked,
		Replay:      f.replay,
		Now:         func() time.Time { return f.now },
	})
}

func (f *fixture) signer(keyID string) *Signer {
	return &Signer{KeyID: keyID, Key: f.priv, Now: func() time.Time { return t0 }}
}

const testBody = `{"audience":{"topic":"citizens"},"message":{"title":"t","body":"b"}}`

// received signs a request with s, sends it through HTTP/1.1 framing and
// returns what a server sees.
func received(t *testing.T, s *Signer, method, url string, body []byte) *Request {
	t.Helper()
	r, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(body) > 0 {
		r.Header.Set("Content-Type", "application/json")
	}
	if err := s.Sign(r, body); err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return onWire(t, r)
}

func onWire(t *testing.T, r *http.Request) *Request {
	t.Helper()
	var buf bytes.Buffer
	if err := r.Write(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := http.ReadRequest(bufio.NewReader(&buf))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(got.Body)
	if err != nil {
		t.Fatal(err)
	}
	return RequestFromHTTP(got, body)
}

func (f *fixture) post(t *testing.T) *Request {
	return received(t, f.signer("sender"), "POST", "http://API.example.com:8080/v1/broadcasts?dry_run=1", []byte(testBody))
}

// rawSign signs req with f's key over any components and parameters, so
// that tests can build signatures the Signer would never make.
func (f *fixture) rawSign(t *testing.T, req *Request, label string, components []string, params sfParams) {
	t.Helper()
	items := make([]sfItem, len(components))
	for i, c := range components {
		items[i] = sfItem{sfValue: sfStr(c)}
	}
	in := sfItem{list: true, items: items, params: params}
	// The base is built here without appendBase's refusals, so that
	// tests can sign what the verifier must refuse.
	var base []byte
	for _, c := range components {
		base = append(base, '"')
		base = append(base, c...)
		base = append(base, `": `...)
		var ok bool
		if base, ok = appendComponentValue(base, req, c); !ok {
			t.Fatalf("rawSign: no component %q", c)
		}
		base = append(base, '\n')
	}
	base = append(base, `"@signature-params": `...)
	base, err := appendInnerList(base, items, params)
	if err != nil {
		t.Fatal(err)
	}
	inField, err := appendMember(nil, label, in)
	if err != nil {
		t.Fatal(err)
	}
	sigField, err := appendMember(nil, label, sfItem{sfValue: sfBin(ed25519.Sign(f.priv, base))})
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Signature-Input", string(inField))
	req.Header.Set("Signature", string(sigField))
}

var postComponents = []string{"@method", "@authority", "@path", "@query", "content-digest", "content-type"}

func postParams(mod func(sfParams) sfParams) sfParams {
	ps := sfParams{
		{"created", sfInt(t0.Unix())},
		{"keyid", sfStr("sender")},
		{"alg", sfStr("ed25519")},
		{"nonce", sfStr("n-1")},
		{"tag", sfStr("pushgate")},
	}
	if mod != nil {
		ps = mod(ps)
	}
	return ps
}

func without(ps sfParams, key string) sfParams {
	return slices.DeleteFunc(slices.Clone(ps), func(p sfParam) bool { return p.key == key })
}

func TestVerifyAccepts(t *testing.T) {
	tests := []struct {
		name string
		give func(t *testing.T, f *fixture) *Request
	}{
		{"post with body and query", func(t *testing.T, f *fixture) *Request { return f.post(t) }},
		{"get without body", func(t *testing.T, f *fixture) *Request {
			return received(t, f.signer("sender"), "GET", "http://api.example.com/v1/broadcasts/b-1", nil)
		}},
		{"escaped path", func(t *testing.T, f *fixture) *Request {
			return received(t, f.signer("sender"), "DELETE", "http://api.example.com/v1/devices/fcm/a%2Fb%20c", nil)
		}},
		{"created at the edge of the skew", func(t *testing.T, f *fixture) *Request {
			f.now = t0.Add(300 * time.Second)
			return f.post(t)
		}},
		{"expires in the future", func(t *testing.T, f *fixture) *Request {
			s := f.signer("sender")
			s.Expires = time.Minute
			f.now = t0.Add(59 * time.Second)
			return received(t, s, "POST", "http://api.example.com/v1/broadcasts", []byte(testBody))
		}},
		{"another signature first, selected by tag", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Header.Set("Signature-Input", `proxy=("@method");created=1;keyid="edge", `+req.Header.Get("Signature-Input"))
			req.Header.Set("Signature", `proxy=:AAAA:, `+req.Header.Get("Signature"))
			return req
		}},
		{"fields split over several lines", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			in := req.Header.Get("Signature-Input")
			req.Header["Signature-Input"] = []string{`other=("@path");tag="x"`, in}
			return req
		}},
		{"extra covered header and unknown parameter", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Header.Add("X-Trace", " a ")
			req.Header.Add("X-Trace", "b")
			f.rawSign(t, req, "sig1", append(slices.Clone(postComponents), "x-trace"),
				postParams(func(ps sfParams) sfParams { return append(ps, sfParam{"ext", sfTok("yes")}) }))
			return req
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			req := tt.give(t, f)
			got, err := f.verifier().Verify(context.Background(), req)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Key.ID != "sender" || !got.Created.Equal(t0) || got.Nonce == "" {
				t.Errorf("Verified = key %q, created %v, nonce %q", got.Key.ID, got.Created, got.Nonce)
			}
		})
	}
}

// TestVerifyRefuses has a case for every rejection code. Each case would
// be accepted if the check it names were removed: its signature is
// otherwise valid, or it is a tampered copy of a valid request.
func TestVerifyRefuses(t *testing.T) {
	tests := []struct {
		name string
		give func(t *testing.T, f *fixture) *Request
		want Code
	}{
		{"no Signature", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Header.Del("Signature")
			return req
		}, CodeMissingSignature},
		{"no Signature-Input", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Header.Del("Signature-Input")
			return req
		}, CodeMissingSignature},
		{"no signature with the pushgate tag", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			f.rawSign(t, req, "sig1", postComponents, postParams(func(ps sfParams) sfParams { return ps.set("tag", sfStr("other")) }))
			return req
		}, CodeMissingSignature},
		{"Signature lacks the label", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Header.Set("Signature", strings.Replace(req.Header.Get("Signature"), "pushgate=", "other=", 1))
			return req
		}, CodeMissingSignature},
		{"Signature-Input not a dictionary", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Header.Set("Signature-Input", req.Header.Get("Signature-Input")+", (")
			return req
		}, CodeMalformedSignature},
		{"Signature not a byte sequence", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Header.Set("Signature", `pushgate="abc"`)
			return req
		}, CodeMalformedSignature},
		{"Signature-Input member not an inner list", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Header.Set("Signature-Input", `a=1, `+req.Header.Get("Signature-Input"))
			return req
		}, CodeMalformedSignature},
		{"nonce missing", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			f.rawSign(t, req, "sig1", postComponents, postParams(func(ps sfParams) sfParams { return without(ps, "nonce") }))
			return req
		}, CodeMalformedSignature},
		{"created missing", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			f.rawSign(t, req, "sig1", postComponents, postParams(func(ps sfParams) sfParams { return without(ps, "created") }))
			return req
		}, CodeMalformedSignature},
		{"alg missing", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			f.rawSign(t, req, "sig1", postComponents, postParams(func(ps sfParams) sfParams { return without(ps, "alg") }))
			return req
		}, CodeMalformedSignature},
		{"alg not ed25519", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			f.rawSign(t, req, "sig1", postComponents, postParams(func(ps sfParams) sfParams { return ps.set("alg", sfStr("hmac-sha256")) }))
			return req
		}, CodeMalformedSignature},
		{"created not an integer", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			f.rawSign(t, req, "sig1", postComponents, postParams(func(ps sfParams) sfParams { return ps.set("created", sfDec(t0.Unix()*1000)) }))
			return req
		}, CodeMalformedSignature},
		{"component covered twice", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			f.rawSign(t, req, "sig1", append(slices.Clone(postComponents), "@path"), postParams(nil))
			return req
		}, CodeMalformedSignature},
		{"uppercase field name", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			f.rawSign(t, req, "sig1", append(slices.Clone(postComponents), "Content-Length"), postParams(nil))
			return req
		}, CodeMalformedSignature},
		{"unknown derived component", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Header.Set("Signature-Input", strings.Replace(req.Header.Get("Signature-Input"), `"@path"`, `"@status"`, 1))
			return req
		}, CodeMalformedSignature},
		{"line break in a covered value", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Header.Set("X-Note", "a\n\"@method\": GET")
			f.rawSign(t, req, "sig1", append([]string{"x-note"}, postComponents...), postParams(nil))
			return req
		}, CodeMalformedSignature},
		{"@path not covered", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			f.rawSign(t, req, "sig1", []string{"@method", "@authority", "@query", "content-digest", "content-type"}, postParams(nil))
			return req
		}, CodeMissingComponent},
		{"@query not covered though the URL has one", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			f.rawSign(t, req, "sig1", []string{"@method", "@authority", "@path", "content-digest", "content-type"}, postParams(nil))
			return req
		}, CodeMissingComponent},
		{"content-digest not covered with a body", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			f.rawSign(t, req, "sig1", []string{"@method", "@authority", "@path", "@query", "content-type"}, postParams(nil))
			return req
		}, CodeMissingComponent},
		{"content-type not covered with a body", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			f.rawSign(t, req, "sig1", []string{"@method", "@authority", "@path", "@query", "content-digest"}, postParams(nil))
			return req
		}, CodeMissingComponent},
		{"covered field absent", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Header.Del("Content-Type")
			return req
		}, CodeMissingComponent},
		{"covered Content-Digest absent", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Header.Del("Content-Digest")
			return req
		}, CodeMissingComponent},
		// An unknown key and a revoked key whose signature does not verify
		// get the answer of a bad signature: a caller who cannot sign as
		// a key learns nothing about it.
		{"unknown key", func(t *testing.T, f *fixture) *Request {
			return received(t, f.signer("nobody"), "POST", "http://api.example.com/v1/broadcasts", []byte(testBody))
		}, CodeBadSignature},
		{"revoked key", func(t *testing.T, f *fixture) *Request {
			return received(t, f.signer("revoked"), "POST", "http://api.example.com/v1/broadcasts", []byte(testBody))
		}, CodeRevokedKey},
		{"revoked key, signature does not verify", func(t *testing.T, f *fixture) *Request {
			s := f.signer("revoked")
			_, s.Key, _ = GenerateKey()
			return received(t, s, "POST", "http://api.example.com/v1/broadcasts", []byte(testBody))
		}, CodeBadSignature},
		{"created too old", func(t *testing.T, f *fixture) *Request {
			f.now = t0.Add(301 * time.Second)
			return f.post(t)
		}, CodeStaleRequest},
		{"created in the future", func(t *testing.T, f *fixture) *Request {
			f.now = t0.Add(-301 * time.Second)
			return f.post(t)
		}, CodeStaleRequest},
		{"expired", func(t *testing.T, f *fixture) *Request {
			s := f.signer("sender")
			s.Expires = 10 * time.Second
			f.now = t0.Add(11 * time.Second)
			return received(t, s, "POST", "http://api.example.com/v1/broadcasts", []byte(testBody))
		}, CodeExpiredSignature},
		{"nonce used before", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			if _, err := f.verifier().Verify(context.Background(), req); err != nil {
				t.Fatalf("first Verify: %v", err)
			}
			return req
		}, CodeReplayedNonce},
		{"body changed", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Body = []byte(strings.Replace(testBody, "citizens", "everyone", 1))
			return req
		}, CodeDigestMismatch},
		{"body and digest changed", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Body = []byte(`{}`)
			req.Header.Set("Content-Digest", ContentDigest(req.Body))
			return req
		}, CodeBadSignature},
		{"Content-Digest without sha-256", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Header.Set("Content-Digest", "sha-512=:"+base64.StdEncoding.EncodeToString(make([]byte, 64))+":")
			f.rawSign(t, req, "sig1", postComponents, postParams(nil))
			return req
		}, CodeDigestMismatch},
		{"method changed", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Method = "PUT"
			return req
		}, CodeBadSignature},
		{"path changed", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Path = "/v1/kill"
			return req
		}, CodeBadSignature},
		{"authority changed to another of the gateway's", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Authority = "api.example.com"
			return req
		}, CodeBadSignature},
		{"signed for another gateway", func(t *testing.T, f *fixture) *Request {
			return received(t, f.signer("sender"), "POST", "http://staging.example.com/v1/broadcasts", []byte(testBody))
		}, CodeWrongAuthority},
		{"query changed", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Query = "dry_run=0"
			return req
		}, CodeBadSignature},
		{"content-type changed", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Header.Set("Content-Type", "text/plain")
			return req
		}, CodeBadSignature},
		{"created changed within the skew", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			created := "created=" + strconv.FormatInt(t0.Unix(), 10)
			earlier := "created=" + strconv.FormatInt(t0.Unix()-1, 10)
			req.Header.Set("Signature-Input", strings.Replace(req.Header.Get("Signature-Input"), created, earlier, 1))
			return req
		}, CodeBadSignature},
		{"nonce changed", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			in := req.Header.Get("Signature-Input")
			i := strings.Index(in, `nonce="`) + len(`nonce="`)
			// The nonce is random: change its first character to one it
			// surely is not.
			c := "x"
			if in[i] == 'x' {
				c = "y"
			}
			req.Header.Set("Signature-Input", in[:i]+c+in[i+1:])
			return req
		}, CodeBadSignature},
		{"keyid changed to another key", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			req.Header.Set("Signature-Input", strings.Replace(req.Header.Get("Signature-Input"), `keyid="sender"`, `keyid="other"`, 1))
			return req
		}, CodeBadSignature},
		{"signature bytes changed", func(t *testing.T, f *fixture) *Request {
			req := f.post(t)
			s := req.Header.Get("Signature")
			i := strings.Index(s, ":") + 1
			c := byte('A')
			if s[i] == 'A' {
				c = 'B'
			}
			req.Header.Set("Signature", s[:i]+string(c)+s[i+1:])
			return req
		}, CodeBadSignature},
	}
	seen := make(map[Code]bool)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			req := tt.give(t, f)
			_, err := f.verifier().Verify(context.Background(), req)
			if got := codeOf(err); got != tt.want {
				t.Fatalf("Verify = %v, want code %s", err, tt.want)
			}
			d := err.(*Error).Detail
			if sig := req.Header.Get("Signature"); sig != "" && strings.Contains(d, sig) {
				t.Errorf("detail %q quotes the signature", d)
			}
			if strings.Contains(d, "nonce=") || strings.Contains(d, "n-1") {
				t.Errorf("detail %q quotes the nonce", d)
			}
		})
		seen[tt.want] = true
	}
	// unknown_key is Reverify's and VerifyRecorded's only: see
	// TestUnknownKeyIsToldOnlyOfStoredRequests.
	for _, c := range []Code{CodeMissingSignature, CodeMalformedSignature, CodeMissingComponent, CodeWrongAuthority,
		CodeRevokedKey, CodeStaleRequest, CodeExpiredSignature, CodeReplayedNonce, CodeDigestMismatch, CodeBadSignature} {
		if !seen[c] {
			t.Errorf("no case for code %s", c)
		}
	}
}

// TestVerifyClaimsNonceLast checks that a request failing any check does
// not use up its nonce: otherwise anyone could burn a sender's nonces.
func TestVerifyClaimsNonceLast(t *testing.T) {
	f := newFixture(t)
	req := f.post(t)
	tampered := *req
	tampered.Path = "/v1/other"
	if _, err := f.verifier().Verify(context.Background(), &tampered); codeOf(err) != CodeBadSignature {
		t.Fatalf("tampered Verify = %v, want %s", err, CodeBadSignature)
	}
	if _, err := f.verifier().Verify(context.Background(), req); err != nil {
		t.Fatalf("Verify after a refused copy: %v", err)
	}
}

// TestRoundTripHTTP signs with the Signer, sends over loopback HTTP and
// verifies in the handler, as the gateway will.
func TestRoundTripHTTP(t *testing.T) {
	f := newFixture(t)
	type result struct {
		v   *Verified
		err error
	}
	results := make(chan result, 1)
	srv := httptest.NewUnstartedServer(nil)
	f.authorities = []string{srv.Listener.Addr().String()}
	v := f.verifier()
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
		}
		got, err := v.Verify(r.Context(), RequestFromHTTP(r, body))
		results <- result{got, err}
	})
	srv.Start()
	defer srv.Close()

	tests := []struct {
		name       string
		give       string // path and query
		body       string
		components []string
	}{
		{"query and body", "/v1/broadcasts?wait=true&x=%20y", testBody, postComponents},
		{"no query, no body", "/v1/kill", "", []string{"@method", "@authority", "@path"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := http.NewRequest("POST", srv.URL+tt.give, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.body != "" {
				r.Header.Set("Content-Type", "application/json")
			}
			if err := f.signer("sender").Sign(r, []byte(tt.body)); err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(r)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			res := <-results
			if res.err != nil {
				t.Fatalf("Verify: %v", res.err)
			}
			if !slices.Equal(res.v.Components, tt.components) {
				t.Errorf("components = %q, want %q", res.v.Components, tt.components)
			}
		})
	}
}

func TestReverify(t *testing.T) {
	tests := []struct {
		name string
		give func(f *fixture, env *Request)
		want Code
	}{
		{"an hour later", func(f *fixture, env *Request) { f.now = t0.Add(time.Hour) }, ""},
		{"older than maxAge", func(f *fixture, env *Request) { f.now = t0.Add(24*time.Hour + time.Second) }, CodeStaleRequest},
		{"key revoked since", func(f *fixture, env *Request) { f.revoked["sender"] = true }, CodeRevokedKey},
		{"body altered in storage", func(f *fixture, env *Request) {
			env.Body = []byte(strings.Replace(string(env.Body), `"b"`, `"evil"`, 1))
		}, CodeDigestMismatch},
		{"path altered in storage", func(f *fixture, env *Request) { env.Path = "/v1/kill" }, CodeBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			req := f.post(t)
			req.Header.Set("X-Forwarded-For", "10.0.0.1")
			verified, err := f.verifier().Verify(context.Background(), req)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			// The envelope goes through JSON, as it does through Redis.
			stored, err := json.Marshal(verified.Envelope(req))
			if err != nil {
				t.Fatal(err)
			}
			var env Request
			if err := json.Unmarshal(stored, &env); err != nil {
				t.Fatal(err)
			}
			if env.Header.Get("X-Forwarded-For") != "" {
				t.Errorf("envelope keeps an uncovered header: %v", env.Header)
			}
			tt.give(f, &env)
			_, err = f.verifier().Reverify(context.Background(), &env, 24*time.Hour)
			if got := codeOf(err); got != tt.want || tt.want == "" && err != nil {
				t.Fatalf("Reverify = %v, want code %q", err, tt.want)
			}
		})
	}
}

func TestEnvelopeKeepsWhatVerificationNeeds(t *testing.T) {
	f := newFixture(t)
	req := f.post(t)
	req.Header.Set("Authorization", "Bearer secret")
	verified, err := f.verifier().Verify(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	env := verified.Envelope(req)
	var got []string
	for k := range env.Header {
		got = append(got, k)
	}
	slices.Sort(got)
	want := []string{"Content-Digest", "Content-Type", "Signature", "Signature-Input"}
	if !slices.Equal(got, want) {
		t.Errorf("envelope headers = %q, want %q", got, want)
	}
	env.Body[0] = 'X'
	if req.Body[0] == 'X' {
		t.Error("envelope shares the request's body")
	}
}

type failingRevocations struct{}

func (failingRevocations) Revoked(context.Context, string) (bool, error) {
	return false, errors.New("redis: connection refused")
}

func TestVerifyInfrastructureErrorIsNotARefusal(t *testing.T) {
	f := newFixture(t)
	v := NewVerifier(VerifierConfig{
		Profile:     DefaultProfile(),
		Keys:        f.keys,
		Revocations: failingRevocations{},
		Now:         func() time.Time { return t0 },
	})
	_, err := v.Verify(context.Background(), f.post(t))
	var se *Error
	if err == nil || errors.As(err, &se) {
		t.Fatalf("Verify = %v, want a plain error", err)
	}
}

// TestUnknownKeyAnswersAsBadSignature checks that whoever cannot sign as a
// key cannot tell from the answer whether it exists or is revoked: the
// code and the detail are a bad signature's, byte for byte.
func TestUnknownKeyAnswersAsBadSignature(t *testing.T) {
	f := newFixture(t)
	_, stranger, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	refusal := func(keyID string, key ed25519.PrivateKey) *Error {
		t.Helper()
		s := f.signer(keyID)
		s.Key = key
		_, err := f.verifier().Verify(context.Background(), received(t, s, "GET", "http://api.example.com/v1/audit", nil))
		var se *Error
		if !errors.As(err, &se) {
			t.Fatalf("Verify as %s = %v, want a refusal", keyID, err)
		}
		return se
	}
	want := refusal("sender", stranger) // a known key, a wrong signature
	if want.Code != CodeBadSignature {
		t.Fatalf("wrong signature: %v, want %s", want, CodeBadSignature)
	}
	for _, keyID := range []string{"nobody", "revoked"} {
		if got := refusal(keyID, stranger); *got != *want {
			t.Errorf("key %s with a wrong signature: %v; want %v, as for a known key", keyID, got, want)
		}
	}
}

// TestUnknownKeyIsToldOnlyOfStoredRequests checks that a request stored
// after it verified (an envelope, a control log entry) whose key has left
// the keyring since is unknown_key: the worker and the control log tell it
// from a forgery.
func TestUnknownKeyIsToldOnlyOfStoredRequests(t *testing.T) {
	f := newFixture(t)
	req := f.post(t)
	if _, err := f.verifier().Verify(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	f.keys = &Keyring{byID: map[string]*Key{}}
	if _, err := f.verifier().Reverify(context.Background(), req, time.Hour); codeOf(err) != CodeUnknownKey {
		t.Errorf("Reverify after the key left = %v, want %s", err, CodeUnknownKey)
	}
	if _, err := f.verifier().VerifyRecorded(context.Background(), req); codeOf(err) != CodeUnknownKey {
		t.Errorf("VerifyRecorded after the key left = %v, want %s", err, CodeUnknownKey)
	}
}
