package signing

// Code is a stable, machine-readable reason why a signed request was refused.
// The gateway puts it in the problem document it answers with, so its values
// never change.
type Code string

// The rejection codes. Every refusal of a request or an envelope carries
// exactly one of them.
const (
	// CodeMissingSignature: no Signature or Signature-Input field, or no
	// signature with the profile's tag.
	CodeMissingSignature Code = "missing_signature"
	// CodeMalformedSignature: a field is not valid RFC 8941, or a
	// parameter is missing, has the wrong type or a refused value.
	CodeMalformedSignature Code = "malformed_signature"
	// CodeMissingComponent: the profile requires a component the signature
	// does not cover, or a covered component is absent from the request.
	CodeMissingComponent Code = "missing_component"
	// CodeUnknownKey: keyid names no key in the keyring. Only a stored
	// request gets it (Reverify, VerifyRecorded): at ingress an unknown
	// key is CodeBadSignature, so that callers cannot list key ids.
	CodeUnknownKey Code = "unknown_key"
	// CodeRevokedKey: the key has been revoked. Only a signature that
	// verifies with the key gets it; any other is CodeBadSignature.
	CodeRevokedKey Code = "revoked_key"
	// CodeWrongAuthority: the request is signed for an "@authority" the
	// profile does not list, such as another deployment's.
	CodeWrongAuthority Code = "wrong_authority"
	// CodeStaleRequest: created lies outside the allowed skew (or, for a
	// stored envelope, is older than its maximum age).
	CodeStaleRequest Code = "stale_request"
	// CodeExpiredSignature: the expires parameter is in the past.
	CodeExpiredSignature Code = "expired_signature"
	// CodeReplayedNonce: the nonce was already used with this key.
	CodeReplayedNonce Code = "replayed_nonce"
	// CodeDigestMismatch: Content-Digest does not match the body, or has no
	// sha-256 value.
	CodeDigestMismatch Code = "digest_mismatch"
	// CodeBadSignature: the signature does not verify with the key, or
	// names a key the keyring does not hold.
	CodeBadSignature Code = "bad_signature"
)

// Error is a refusal of a signed request. Detail is safe to show to API
// clients: it never contains a signature, a nonce or key material.
// Infrastructure failures (Redis down) are never an *Error.
type Error struct {
	Code   Code
	Detail string
}

// Error returns the code and the detail, for logs.
func (e *Error) Error() string {
	return "signature refused: " + string(e.Code) + ": " + e.Detail
}

func refuse(code Code, detail string) *Error {
	return &Error{Code: code, Detail: detail}
}
