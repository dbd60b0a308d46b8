// Package signing signs and verifies pushgate's HTTP requests: RFC 9421
// HTTP Message Signatures with Ed25519, over a body bound by an RFC 9530
// Content-Digest, under pushgate's signing profile (docs/ARCHITECTURE.md,
// "Signing profile").
//
// It holds the keyring (who may sign, with which roles and limits), the
// Verifier the gateway runs at ingress and the queue runs again on stored
// envelopes, the Signer the CLI and Go backends use, and the RFC 8941
// structured-field codec those need.
//
// Invariants:
//   - A Verifier accepts a request only after every check of its profile
//     passed; the replay guard's nonce is claimed last, after the signature
//     verified, so nobody can burn another sender's nonces. VerifyHead
//     claims it before the body is read, which is then checked against the
//     signed Content-Digest as it is read: only a holder of the signature
//     can spend its nonce on a body that does not match.
//   - Whoever cannot sign as a key learns nothing about it at ingress: an
//     unknown key is answered as a bad signature, and revoked_key only
//     follows a signature that verified.
//   - The structured fields are parsed within fixed limits (sfv.go), so a
//     request's header fields cost a bounded, linear amount of work.
//   - Every refusal is an *Error with a stable Code and a Detail that never
//     carries a signature, a nonce or key material; infrastructure failures
//     are plain wrapped errors, never an *Error.
//   - A Keyring is immutable once built.
//
// It owns no Redis keys and links no Redis client: the nonce memory
// (ReplayGuard) and the revocations (Revocations) are interfaces that the
// queue package implements on Redis.
//
// It imports nothing else of pushgate.
package signing

import (
	"net/http"
	"time"
)

// Request is an HTTP request as the signature sees it. It is also the
// envelope the gateway stores in Redis and the queue re-verifies, hence the
// JSON tags.
type Request struct {
	Method    string      `json:"method"`
	Authority string      `json:"authority"` // host[:port] as received; lowercased when used
	Path      string      `json:"path"`      // escaped path as received
	Query     string      `json:"query"`     // raw query without '?', "" when none
	Header    http.Header `json:"header"`
	Body      []byte      `json:"body"`
	// Scheme is "http" or "https" when known. Only the optional
	// "@scheme" and "@target-uri" components need it; pushgate's profile
	// does not, because behind a proxy the server cannot know it.
	Scheme string `json:"scheme,omitempty"`
}

// RequestFromHTTP returns the signature's view of a request received by a
// server, whose body has already been read into body.
func RequestFromHTTP(r *http.Request, body []byte) *Request {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return &Request{
		Method:    r.Method,
		Authority: r.Host,
		Path:      r.URL.EscapedPath(),
		Query:     r.URL.RawQuery,
		Header:    r.Header,
		Body:      body,
		Scheme:    scheme,
	}
}

// Profile is what a Verifier requires of a signature beyond RFC 9421
// itself.
type Profile struct {
	// Components must always be covered, e.g. "@method".
	Components []string
	// QueryComponent requires "@query" when the request has a query.
	QueryComponent bool
	// BodyComponents must be covered when the request has a body. When it
	// lists "content-digest", the digest is checked against the body.
	BodyComponents []string
	// Params must be present: any of created, expires, keyid, alg, nonce, tag.
	Params []string
	// Alg is the value the alg parameter must have when present. Only
	// Ed25519 is implemented, so it is "ed25519"; empty means the same.
	Alg string
	// Tag selects the signature to verify among those on the request:
	// the first whose tag parameter equals it. Empty selects the first.
	Tag string
	// Skew bounds |now - created| at ingress; zero means DefaultSkew.
	Skew time.Duration
	// Authorities are the "@authority" values a request may be signed
	// for: host or host:port, compared as RFC 9421 2.2.3 normalises them
	// (letters lowercased; a port of 80 or 443 is the same as none). A
	// request signed for another authority, such as a staging gateway's
	// that shares keys, is wrong_authority, and "@authority" must be
	// covered. Empty accepts any authority: for tools that serve no
	// deployment, never for a gateway or a worker.
	Authorities []string
}

// DefaultSkew is the allowed clock difference between signer and verifier.
const DefaultSkew = 300 * time.Second

// Tag is the tag parameter of every pushgate signature.
const Tag = "pushgate"

// DefaultProfile returns pushgate's signing profile: "@method",
// "@authority", "@path" always; "@query" when there is a query;
// "content-digest" and "content-type" when there is a body; parameters
// created, keyid, alg="ed25519", nonce and tag="pushgate"; skew ±300 s.
func DefaultProfile() Profile {
	return Profile{
		Components:     []string{"@method", "@authority", "@path"},
		QueryComponent: true,
		BodyComponents: []string{"content-digest", "content-type"},
		Params:         []string{"created", "keyid", "alg", "nonce", "tag"},
		Alg:            "ed25519",
		Tag:            Tag,
		Skew:           DefaultSkew,
	}
}
