package sim

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"time"
)

// signedJWT is a compact JSON Web Signature (a JWT) split into its parts. Both
// providers' credentials are JWTs: the OAuth2 assertion a service account
// signs with RS256, and the APNs provider token signed with ES256.
type signedJWT struct {
	header struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	claims       jwtClaims
	signingInput string
	sig          []byte
}

// jwtClaims holds the claims either provider reads. Times are seconds since
// the epoch; JSON numbers are read as floats because RFC 7519 allows
// fractions.
type jwtClaims struct {
	Iss   string  `json:"iss"`
	Aud   string  `json:"aud"`
	Scope string  `json:"scope"`
	Iat   float64 `json:"iat"`
	Exp   float64 `json:"exp"`
}

var errMalformedJWT = errors.New("malformed JWT")

// parseJWS splits and decodes a compact JWS without verifying it.
func parseJWS(s string) (*signedJWT, error) {
	dot1 := strings.IndexByte(s, '.')
	if dot1 < 0 {
		return nil, errMalformedJWT
	}
	dot2 := strings.IndexByte(s[dot1+1:], '.')
	if dot2 < 0 {
		return nil, errMalformedJWT
	}
	dot2 += dot1 + 1
	t := &signedJWT{signingInput: s[:dot2]}
	head, err := base64.RawURLEncoding.DecodeString(s[:dot1])
	if err != nil {
		return nil, errMalformedJWT
	}
	body, err := base64.RawURLEncoding.DecodeString(s[dot1+1 : dot2])
	if err != nil {
		return nil, errMalformedJWT
	}
	if t.sig, err = base64.RawURLEncoding.DecodeString(s[dot2+1:]); err != nil {
		return nil, errMalformedJWT
	}
	if json.Unmarshal(head, &t.header) != nil || json.Unmarshal(body, &t.claims) != nil {
		return nil, errMalformedJWT
	}
	return t, nil
}

// verifyES256 checks an ECDSA P-256 signature in the JWS form: r and s as
// two 32-byte big-endian integers.
func (t *signedJWT) verifyES256(pub *ecdsa.PublicKey) bool {
	if t.header.Alg != "ES256" || len(t.sig) != 64 {
		return false
	}
	h := sha256.Sum256([]byte(t.signingInput))
	r := new(big.Int).SetBytes(t.sig[:32])
	s := new(big.Int).SetBytes(t.sig[32:])
	return ecdsa.Verify(pub, h[:], r, s)
}

// verifyRS256 checks an RSASSA-PKCS1-v1_5 SHA-256 signature.
func (t *signedJWT) verifyRS256(pub *rsa.PublicKey) bool {
	if t.header.Alg != "RS256" {
		return false
	}
	h := sha256.Sum256([]byte(t.signingInput))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], t.sig) == nil
}

// unixTime converts a JWT NumericDate to a time.
func unixTime(secs float64) time.Time {
	return time.Unix(0, int64(secs*float64(time.Second)))
}
