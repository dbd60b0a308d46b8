package signing

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// KeyLookup finds a key by id. *Keyring implements it; the command plugs
// in a holder whose keyring a SIGHUP replaces.
type KeyLookup interface {
	Lookup(id string) (*Key, bool)
}

// Revocations reports whether a key has been revoked. The queue package
// backs it with Redis so that a revocation reaches every process at once.
type Revocations interface {
	Revoked(ctx context.Context, keyID string) (bool, error)
}

// ReplayGuard remembers nonces. Claim reports whether the nonce is fresh
// for the key, and remembers it for ttl.
type ReplayGuard interface {
	Claim(ctx context.Context, keyID, nonce string, ttl time.Duration) (fresh bool, err error)
}

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	Profile     Profile
	Keys        KeyLookup
	Revocations Revocations      // nil: no key is revoked
	Replay      ReplayGuard      // nil: nonces are not remembered
	Now         func() time.Time // nil: time.Now
}

// Verifier checks signed requests against a profile, a keyring, the
// revocations and the replay guard. It is safe for concurrent use.
type Verifier struct {
	profile Profile
	// authorities holds the canonical forms of profile.Authorities; empty
	// accepts any authority.
	authorities map[string]bool
	keys        KeyLookup
	revocations Revocations
	replay      ReplayGuard
	now         func() time.Time
	// decoy is what a signature by an unknown key is verified with, so
	// that refusing it takes as long as refusing a known key's.
	decoy ed25519.PublicKey
}

// NewVerifier returns a Verifier. A zero Profile.Skew means DefaultSkew and
// an empty Profile.Alg means "ed25519". It panics when cfg.Keys is nil,
// which is a wiring mistake, not a runtime condition.
func NewVerifier(cfg VerifierConfig) *Verifier {
	if cfg.Keys == nil {
		panic("signing: NewVerifier without a KeyLookup")
	}
	if cfg.Profile.Skew <= 0 {
		cfg.Profile.Skew = DefaultSkew
	}
	if cfg.Profile.Alg == "" {
		cfg.Profile.Alg = "ed25519"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	v := &Verifier{
		profile:     cfg.Profile,
		authorities: make(map[string]bool, len(cfg.Profile.Authorities)),
		keys:        cfg.Keys,
		revocations: cfg.Revocations,
		replay:      cfg.Replay,
		now:         cfg.Now,
		decoy:       ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public().(ed25519.PublicKey),
	}
	for _, a := range cfg.Profile.Authorities {
		v.authorities[canonicalAuthority(a)] = true
	}
	return v
}

// Verified describes a signature that passed every check.
type Verified struct {
	Key        *Key
	Label      string
	Nonce      string
	Created    time.Time
	Expires    time.Time // zero when the signature has no expires
	Components []string  // covered components, in signature order
}

// Envelope returns a copy of req that keeps only what re-verification
// needs: the covered header fields, Signature-Input, Signature,
// Content-Digest, Content-Type and the body. The gateway stores it so that
// the queue can verify the same bytes again.
func (v *Verified) Envelope(req *Request) *Request {
	out := &Request{
		Method:    req.Method,
		Authority: req.Authority,
		Path:      req.Path,
		Query:     req.Query,
		Scheme:    req.Scheme,
		Header:    make(http.Header),
		Body:      slices.Clone(req.Body),
	}
	keep := func(name string) {
		k := http.CanonicalHeaderKey(name)
		if vs, ok := req.Header[k]; ok {
			out.Header[k] = slices.Clone(vs)
		}
	}
	for _, c := range v.Components {
		if !strings.HasPrefix(c, "@") {
			keep(c)
		}
	}
	for _, name := range []string{"Signature-Input", "Signature", "Content-Digest", "Content-Type"} {
		keep(name)
	}
	return out
}

// Keys returns the keys the verifier accepts, for callers that must know
// whether a key id exists (revoking one, for example).
func (v *Verifier) Keys() KeyLookup { return v.keys }

// Verify runs every ingress check on req, in this order: signature
// selection and parsing, covered components, the authority, parameters
// (alg, tag), the body's digest, created within the skew, expires, the
// Ed25519 signature with the key, the key's revocation, and last the
// nonce, claimed for twice the skew. A refusal is an *Error; any other
// error is an infrastructure failure.
//
// Whoever cannot sign as a key learns nothing about it: a key the keyring
// does not hold is refused as a bad signature, with the same detail and
// after the same work, and a revoked key is told only to a signature that
// verifies.
func (v *Verifier) Verify(ctx context.Context, req *Request) (*Verified, error) {
	got, _, err := v.verify(ctx, req, check{hasBody: len(req.Body) > 0, bodyRead: true})
	return got, err
}

// VerifiedHead is a request whose signature verified over its header
// fields (VerifyHead), and whose body is still to be read through Body.
type VerifiedHead struct {
	// Verified is the signature. It holds for the request only once its
	// body, read through Body, reached its end without an error.
	Verified *Verified
	digest   []byte // the signed sha-256 of the body; nil when content-digest is not covered
}

// VerifyHead runs Verify's checks on a request whose body has not been
// read, so that a server reads a body only for a signature that verified:
// the checks of Verify over the header fields, the signature over its
// base (which covers Content-Digest, not the body), the revocation and the
// nonce, which it claims. hasBody says whether the request has a body (a
// server knows from its framing: a Content-Length above zero, or chunked),
// which decides whether "content-digest" and "content-type" must be
// covered. req.Body is ignored. The body itself is checked against the
// signed Content-Digest as it is read through the result's Body.
func (v *Verifier) VerifyHead(ctx context.Context, req *Request, hasBody bool) (*VerifiedHead, error) {
	got, digest, err := v.verify(ctx, req, check{hasBody: hasBody})
	if err != nil {
		return nil, err
	}
	return &VerifiedHead{Verified: got, digest: digest}, nil
}

// Body returns a reader of the request's body r that hashes what it reads.
// At the end of r it returns a digest_mismatch *Error instead of io.EOF
// when the body does not match the signed Content-Digest; under a
// signature that covers no content-digest, the first byte of a body is a
// missing_component *Error. Every error is repeated by later reads.
func (h *VerifiedHead) Body(r io.Reader) io.Reader {
	b := &bodyReader{r: r, want: h.digest}
	if h.digest != nil {
		b.sum = sha256.New()
	}
	return b
}

// bodyReader is VerifiedHead.Body's reader.
type bodyReader struct {
	r    io.Reader
	want []byte    // nil: the body must be empty
	sum  hash.Hash // nil when want is
	err  error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.r.Read(p)
	if n > 0 {
		if b.want == nil {
			b.err = refuse(CodeMissingComponent, `the request has a body, but its signature does not cover "content-digest"`)
			return 0, b.err
		}
		b.sum.Write(p[:n])
	}
	if err == io.EOF && b.want != nil {
		var sum [sha256.Size]byte
		if rerr := matchDigest(b.want, b.sum.Sum(sum[:0])); rerr != nil {
			err = rerr
		}
	}
	b.err = err
	return n, err
}

// Reverify checks a stored envelope: the same checks as Verify except the
// skew, expires and the nonce; instead created must lie within maxAge of
// now. Revocation is checked, so revoking a key stops what it queued. A
// key that has left the keyring since is unknown_key: the envelope
// verified when it was stored.
func (v *Verifier) Reverify(ctx context.Context, req *Request, maxAge time.Duration) (*Verified, error) {
	if maxAge <= 0 {
		return nil, fmt.Errorf("reverify: maxAge must be positive, got %v", maxAge)
	}
	got, _, err := v.verify(ctx, req, check{maxAge: maxAge, hasBody: len(req.Body) > 0, bodyRead: true})
	return got, err
}

// VerifyRecorded checks a request kept in the control log: every check of
// Verify except the clock (created, expires) and the nonce, which were
// checked when the request was received and again when it was integrated
// into the log. Revocation is checked when the Verifier has Revocations;
// the log's readers use one without, and apply revocations in log order.
// A key that has left the keyring is unknown_key, as for Reverify.
func (v *Verifier) VerifyRecorded(ctx context.Context, req *Request) (*Verified, error) {
	got, _, err := v.verify(ctx, req, check{recorded: true, hasBody: len(req.Body) > 0, bodyRead: true})
	return got, err
}

// check says which of verify's checks apply.
type check struct {
	// maxAge, when positive, replaces the clock checks of ingress by
	// created within maxAge of now (Reverify).
	maxAge time.Duration
	// recorded skips the clock checks (VerifyRecorded).
	recorded bool
	// hasBody says whether the request has a body; bodyRead whether that
	// body is req.Body, to be checked against its digest here.
	hasBody, bodyRead bool
}

// ingress reports whether the request has just been received: Verify or
// VerifyHead.
func (c check) ingress() bool { return c.maxAge == 0 && !c.recorded }

// signature is the selected signature of a request, parsed once.
type signature struct {
	label      string
	input      sfItem // inner list of components, with the parameters
	components []string
	value      []byte
	created    int64
	hasCreated bool
	expires    int64
	hasExpires bool
	keyID      string
	nonce      string
}

// maxNonce bounds the nonce, which becomes part of a Redis key.
const maxNonce = 128

// verify runs the checks c names and returns the verified signature and,
// when content-digest is covered, the signed sha-256 of the body.
func (v *Verifier) verify(ctx context.Context, req *Request, c check) (*Verified, []byte, error) {
	sig, rerr := v.parse(req)
	if rerr != nil {
		return nil, nil, rerr
	}
	if rerr := v.checkCoverage(req, sig, c.hasBody); rerr != nil {
		return nil, nil, rerr
	}
	if rerr := v.checkAuthority(req); rerr != nil {
		return nil, nil, rerr
	}
	var digest []byte
	if slices.Contains(sig.components, "content-digest") {
		if len(req.Header.Values("Content-Digest")) == 0 {
			return nil, nil, refuse(CodeMissingComponent, `covered component "content-digest" is not in the request`)
		}
		field, rerr := fieldValue(req.Header, "Content-Digest")
		if rerr != nil {
			return nil, nil, rerr
		}
		if digest, rerr = parseContentDigest(field); rerr != nil {
			return nil, nil, rerr
		}
		if c.bodyRead {
			sum := sha256.Sum256(req.Body)
			if rerr := matchDigest(digest, sum[:]); rerr != nil {
				return nil, nil, rerr
			}
		}
	}

	now := v.now()
	created := time.Unix(sig.created, 0)
	switch {
	case c.ingress():
		if sig.hasCreated && outside(now, created, v.profile.Skew) {
			return nil, nil, refuse(CodeStaleRequest, "created is outside the allowed clock skew of "+v.profile.Skew.String())
		}
		if sig.hasExpires && now.Unix() > sig.expires {
			return nil, nil, refuse(CodeExpiredSignature, "signature expired")
		}
	case !c.recorded:
		if !sig.hasCreated {
			return nil, nil, refuse(CodeMalformedSignature, "missing parameter created")
		}
		if outside(now, created, c.maxAge) {
			return nil, nil, refuse(CodeStaleRequest, "created is more than "+c.maxAge.String()+" from now")
		}
	}

	base, rerr := appendBase(make([]byte, 0, 512), req, sig.components, sig.input)
	if rerr != nil {
		return nil, nil, rerr
	}
	key, ok := v.keys.Lookup(sig.keyID)
	if !ok {
		if !c.ingress() {
			return nil, nil, refuse(CodeUnknownKey, "unknown key "+quoteSafe(sig.keyID))
		}
		ed25519.Verify(v.decoy, base, sig.value)
		return nil, nil, errBadSignature()
	}
	if len(key.Public) != ed25519.PublicKeySize {
		return nil, nil, fmt.Errorf("key %q: public key is %d bytes", key.ID, len(key.Public))
	}
	if !ed25519.Verify(key.Public, base, sig.value) {
		return nil, nil, errBadSignature()
	}
	if v.revocations != nil {
		revoked, err := v.revocations.Revoked(ctx, key.ID)
		if err != nil {
			return nil, nil, fmt.Errorf("check revocation: %w", err)
		}
		if revoked {
			return nil, nil, refuse(CodeRevokedKey, "key "+quoteSafe(key.ID)+" is revoked")
		}
	}

	if c.ingress() && v.replay != nil && sig.nonce != "" {
		fresh, err := v.replay.Claim(ctx, key.ID, sig.nonce, 2*v.profile.Skew)
		if err != nil {
			return nil, nil, fmt.Errorf("claim nonce: %w", err)
		}
		if !fresh {
			return nil, nil, refuse(CodeReplayedNonce, "nonce already used")
		}
	}

	out := &Verified{
		Key:        key,
		Label:      sig.label,
		Nonce:      sig.nonce,
		Components: sig.components,
	}
	if sig.hasCreated {
		out.Created = created
	}
	if sig.hasExpires {
		out.Expires = time.Unix(sig.expires, 0)
	}
	return out, digest, nil
}

// errBadSignature is the one answer to a signature that does not verify,
// whether its key is known or not.
func errBadSignature() *Error { return refuse(CodeBadSignature, "signature does not verify") }

// checkAuthority refuses a request signed for an authority the profile
// does not list: a request a client signed for another deployment that
// shares the key (RFC 9421 2.2.3 form: the host lowercased, a default
// port dropped).
func (v *Verifier) checkAuthority(req *Request) *Error {
	if len(v.authorities) == 0 || v.authorities[canonicalAuthority(req.Authority)] {
		return nil
	}
	return refuse(CodeWrongAuthority, "the request is signed for "+quoteSafe(req.Authority)+", which is not an authority of this gateway")
}

// canonicalAuthority is an authority as verifiers compare it: ASCII
// letters lowercased and a port of 80 or 443 dropped. The scheme is
// unknown behind a proxy, so either default port counts as none.
func canonicalAuthority(a string) string {
	a = string(appendLower(nil, a))
	if i := strings.LastIndexByte(a, ':'); i >= 0 && !strings.Contains(a[i:], "]") {
		if port := a[i+1:]; port == "80" || port == "443" {
			return a[:i]
		}
	}
	return a
}

// outside reports whether t is more than d away from now, either way.
func outside(now, t time.Time, d time.Duration) bool {
	return t.Before(now.Add(-d)) || t.After(now.Add(d))
}

// parse selects the signature to verify and checks its syntax and
// parameters.
func (v *Verifier) parse(req *Request) (*signature, *Error) {
	if len(req.Header.Values("Signature-Input")) == 0 || len(req.Header.Values("Signature")) == 0 {
		return nil, refuse(CodeMissingSignature, "request has no Signature-Input or Signature field")
	}
	inputs, rerr := fieldValue(req.Header, "Signature-Input")
	if rerr != nil {
		return nil, rerr
	}
	values, rerr := fieldValue(req.Header, "Signature")
	if rerr != nil {
		return nil, rerr
	}
	in, err := parseDictionary(inputs)
	if err != nil {
		return nil, refuse(CodeMalformedSignature, "Signature-Input: "+err.Error())
	}
	sigs, err := parseDictionary(values)
	if err != nil {
		return nil, refuse(CodeMalformedSignature, "Signature: "+err.Error())
	}

	sig := &signature{}
	found := false
	for _, m := range in {
		if !m.val.list {
			return nil, refuse(CodeMalformedSignature, "Signature-Input: "+m.key+" is not an inner list")
		}
		if v.profile.Tag != "" {
			if t, _ := m.val.params.get("tag"); t.kind != sfString || t.str != v.profile.Tag {
				continue
			}
		}
		sig.label, sig.input, found = m.key, m.val, true
		break
	}
	if !found {
		if v.profile.Tag != "" {
			return nil, refuse(CodeMissingSignature, "no signature with tag "+quoteSafe(v.profile.Tag))
		}
		return nil, refuse(CodeMissingSignature, "Signature-Input is empty")
	}
	sv, ok := lookup(sigs, sig.label)
	if !ok {
		return nil, refuse(CodeMissingSignature, "Signature has no member "+sig.label)
	}
	if sv.list || sv.kind != sfBytes {
		return nil, refuse(CodeMalformedSignature, "Signature: "+sig.label+" is not a byte sequence")
	}
	sig.value = sv.bin

	sig.components = make([]string, 0, len(sig.input.items))
	for _, it := range sig.input.items {
		if it.kind != sfString {
			return nil, refuse(CodeMalformedSignature, "component identifiers must be strings")
		}
		name := it.str
		if len(it.params) > 0 {
			return nil, refuse(CodeMalformedSignature, "component parameters are not supported")
		}
		if why := checkComponent(name); why != "" {
			return nil, refuse(CodeMalformedSignature, why)
		}
		if slices.Contains(sig.components, name) {
			return nil, refuse(CodeMalformedSignature, "component "+quoteSafe(name)+" is covered twice")
		}
		sig.components = append(sig.components, name)
	}
	return sig, v.parseParams(sig)
}

// parseParams reads the signature parameters RFC 9421 defines, checks
// their types, and requires the profile's. Unknown parameters are allowed,
// as the RFC says, and signed like the rest.
func (v *Verifier) parseParams(sig *signature) *Error {
	for _, p := range sig.input.params {
		switch p.key {
		case "created", "expires":
			if p.value.kind != sfInteger {
				return refuse(CodeMalformedSignature, p.key+" must be an integer")
			}
			n := p.value.num
			if p.key == "created" {
				sig.created, sig.hasCreated = n, true
			} else {
				sig.expires, sig.hasExpires = n, true
			}
		case "keyid", "alg", "nonce", "tag":
			if p.value.kind != sfString {
				return refuse(CodeMalformedSignature, p.key+" must be a string")
			}
			s := p.value.str
			switch p.key {
			case "keyid":
				sig.keyID = s
			case "alg":
				if s != v.profile.Alg {
					return refuse(CodeMalformedSignature, "alg must be "+quoteSafe(v.profile.Alg))
				}
			case "nonce":
				if s == "" || len(s) > maxNonce {
					return refuse(CodeMalformedSignature, "nonce must be 1 to "+strconv.Itoa(maxNonce)+" characters")
				}
				sig.nonce = s
			}
		}
	}
	for _, name := range v.profile.Params {
		if _, ok := sig.input.params.get(name); !ok {
			return refuse(CodeMalformedSignature, "missing parameter "+name)
		}
	}
	if sig.keyID == "" {
		return refuse(CodeMalformedSignature, "missing parameter keyid")
	}
	return nil
}

// checkCoverage requires the profile's components, "@authority" when the
// profile lists authorities, and the body's when hasBody. That each
// covered component is present in the request is checked while building
// the base.
func (v *Verifier) checkCoverage(req *Request, sig *signature, hasBody bool) *Error {
	need := func(name string) *Error {
		if !slices.Contains(sig.components, name) {
			return refuse(CodeMissingComponent, "signature does not cover "+quoteSafe(name))
		}
		return nil
	}
	for _, c := range v.profile.Components {
		if err := need(c); err != nil {
			return err
		}
	}
	if len(v.authorities) > 0 {
		if err := need("@authority"); err != nil {
			return err
		}
	}
	if v.profile.QueryComponent && req.Query != "" {
		if err := need("@query"); err != nil {
			return err
		}
	}
	if hasBody {
		for _, c := range v.profile.BodyComponents {
			if err := need(c); err != nil {
				return err
			}
		}
	}
	return nil
}

// fieldValue returns the lines of a field combined as RFC 9110 5.3 does,
// refusing a field over the parser's limit before joining its lines.
func fieldValue(h http.Header, name string) (string, *Error) {
	vs := h.Values(name)
	n := 0
	for _, v := range vs {
		n += len(v) + len(", ")
	}
	if n > maxFieldLen+len(", ") {
		return "", refuse(CodeMalformedSignature, name+": "+errFieldTooLong.Error())
	}
	if len(vs) == 1 {
		return vs[0], nil
	}
	return strings.Join(vs, ", "), nil
}
