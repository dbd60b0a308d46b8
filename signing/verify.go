package signing

import (
	"context"
	"crypto/ed25519"
	"fmt"
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
	profile     Profile
	keys        KeyLookup
	revocations Revocations
	replay      ReplayGuard
	now         func() time.Time
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
	return &Verifier{
		profile:     cfg.Profile,
		keys:        cfg.Keys,
		revocations: cfg.Revocations,
		replay:      cfg.Replay,
		now:         cfg.Now,
	}
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
// selection and parsing, covered components, parameters (alg, tag), the
// body's digest, created within the skew, expires, the key, its
// revocation, the Ed25519 signature, and last the nonce, claimed for twice
// the skew. A refusal is an *Error; any other error is an infrastructure
// failure.
func (v *Verifier) Verify(ctx context.Context, req *Request) (*Verified, error) {
	return v.verify(ctx, req, 0)
}

// Reverify checks a stored envelope: the same checks as Verify except the
// skew, expires and the nonce; instead created must lie within maxAge of
// now. Revocation is checked, so revoking a key stops what it queued.
func (v *Verifier) Reverify(ctx context.Context, req *Request, maxAge time.Duration) (*Verified, error) {
	if maxAge <= 0 {
		return nil, fmt.Errorf("reverify: maxAge must be positive, got %v", maxAge)
	}
	return v.verify(ctx, req, maxAge)
}

// VerifyRecorded checks a request kept in the control log: every check of
// Verify except the clock (created, expires) and the nonce, which were
// checked when the request was received and again when it was integrated
// into the log. Revocation is checked when the Verifier has Revocations;
// the log's readers use one without, and apply revocations in log order.
func (v *Verifier) VerifyRecorded(ctx context.Context, req *Request) (*Verified, error) {
	return v.verify(ctx, req, recorded)
}

// recorded is verify's maxAge for VerifyRecorded: no clock checks.
const recorded = -1

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

// verify is Verify when maxAge is zero, VerifyRecorded when it is
// recorded, and Reverify otherwise.
func (v *Verifier) verify(ctx context.Context, req *Request, maxAge time.Duration) (*Verified, error) {
	sig, rerr := v.parse(req)
	if rerr != nil {
		return nil, rerr
	}
	if rerr := v.checkCoverage(req, sig); rerr != nil {
		return nil, rerr
	}
	if slices.Contains(sig.components, "content-digest") {
		digests := req.Header.Values("Content-Digest")
		if len(digests) == 0 {
			return nil, refuse(CodeMissingComponent, `covered component "content-digest" is not in the request`)
		}
		if err := CheckContentDigest(joinLines(digests), req.Body); err != nil {
			return nil, err
		}
	}

	now := v.now()
	created := time.Unix(sig.created, 0)
	if maxAge == 0 {
		if sig.hasCreated && outside(now, created, v.profile.Skew) {
			return nil, refuse(CodeStaleRequest, "created is outside the allowed clock skew of "+v.profile.Skew.String())
		}
		if sig.hasExpires && now.Unix() > sig.expires {
			return nil, refuse(CodeExpiredSignature, "signature expired")
		}
	} else if maxAge != recorded {
		if !sig.hasCreated {
			return nil, refuse(CodeMalformedSignature, "missing parameter created")
		}
		if outside(now, created, maxAge) {
			return nil, refuse(CodeStaleRequest, "created is more than "+maxAge.String()+" from now")
		}
	}

	key, ok := v.keys.Lookup(sig.keyID)
	if !ok {
		return nil, refuse(CodeUnknownKey, "unknown key "+quoteSafe(sig.keyID))
	}
	if len(key.Public) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("key %q: public key is %d bytes", key.ID, len(key.Public))
	}
	if v.revocations != nil {
		revoked, err := v.revocations.Revoked(ctx, key.ID)
		if err != nil {
			return nil, fmt.Errorf("check revocation: %w", err)
		}
		if revoked {
			return nil, refuse(CodeRevokedKey, "key "+quoteSafe(key.ID)+" is revoked")
		}
	}

	base, rerr := appendBase(make([]byte, 0, 512), req, sig.components, sig.input)
	if rerr != nil {
		return nil, rerr
	}
	if !ed25519.Verify(key.Public, base, sig.value) {
		return nil, refuse(CodeBadSignature, "signature does not verify")
	}

	if maxAge == 0 && v.replay != nil && sig.nonce != "" {
		fresh, err := v.replay.Claim(ctx, key.ID, sig.nonce, 2*v.profile.Skew)
		if err != nil {
			return nil, fmt.Errorf("claim nonce: %w", err)
		}
		if !fresh {
			return nil, refuse(CodeReplayedNonce, "nonce already used")
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
	return out, nil
}

// outside reports whether t is more than d away from now, either way.
func outside(now, t time.Time, d time.Duration) bool {
	return t.Before(now.Add(-d)) || t.After(now.Add(d))
}

// parse selects the signature to verify and checks its syntax and
// parameters.
func (v *Verifier) parse(req *Request) (*signature, *Error) {
	inputs, values := req.Header.Values("Signature-Input"), req.Header.Values("Signature")
	if len(inputs) == 0 || len(values) == 0 {
		return nil, refuse(CodeMissingSignature, "request has no Signature-Input or Signature field")
	}
	in, err := parseDictionary(joinLines(inputs))
	if err != nil {
		return nil, refuse(CodeMalformedSignature, "Signature-Input: "+err.Error())
	}
	sigs, err := parseDictionary(joinLines(values))
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

// checkCoverage requires the profile's components. That each covered
// component is present in the request is checked while building the base.
func (v *Verifier) checkCoverage(req *Request, sig *signature) *Error {
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
	if v.profile.QueryComponent && req.Query != "" {
		if err := need("@query"); err != nil {
			return err
		}
	}
	if len(req.Body) > 0 {
		for _, c := range v.profile.BodyComponents {
			if err := need(c); err != nil {
				return err
			}
		}
	}
	return nil
}

// joinLines combines the lines of one field as RFC 9110 5.3 does.
func joinLines(vs []string) string {
	if len(vs) == 1 {
		return vs[0]
	}
	return strings.Join(vs, ", ")
}
