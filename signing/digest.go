package signing

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"strconv"
)

// ContentDigest returns the RFC 9530 Content-Digest field value for body,
// with the sha-256 algorithm: sha-256=:<base64>:.
func ContentDigest(body []byte) string {
	sum := sha256.Sum256(body)
	b := make([]byte, 0, len("sha-256=::")+base64.StdEncoding.EncodedLen(len(sum)))
	b = append(b, "sha-256=:"...)
	b = base64.StdEncoding.AppendEncode(b, sum[:])
	return string(append(b, ':'))
}

// CheckContentDigest checks a Content-Digest field value against body. The
// field may list other algorithms too, but it must carry sha-256, which is
// the one checked. A field that is not a valid dictionary of byte sequences
// is malformed_signature; a missing or different sha-256 value is
// digest_mismatch.
func CheckContentDigest(header string, body []byte) error {
	want, rerr := parseContentDigest(header)
	if rerr != nil {
		return rerr
	}
	sum := sha256.Sum256(body)
	if rerr := matchDigest(want, sum[:]); rerr != nil {
		return rerr
	}
	return nil
}

// parseContentDigest returns the sha-256 value of a Content-Digest field,
// refusing as CheckContentDigest does a field that cannot match any body.
func parseContentDigest(header string) ([]byte, *Error) {
	d, err := parseDictionary(header)
	if err != nil {
		return nil, refuse(CodeMalformedSignature, "Content-Digest: "+err.Error())
	}
	var want []byte
	for _, m := range d {
		if m.val.list || m.val.kind != sfBytes {
			return nil, refuse(CodeMalformedSignature, "Content-Digest: "+m.key+" is not a byte sequence")
		}
		if m.key == "sha-256" {
			want = m.val.bin
		}
	}
	if want == nil {
		return nil, refuse(CodeDigestMismatch, "Content-Digest has no sha-256 value")
	}
	if len(want) != sha256.Size {
		return nil, refuse(CodeDigestMismatch, "Content-Digest's sha-256 value is not "+strconv.Itoa(sha256.Size)+" bytes")
	}
	return want, nil
}

// matchDigest compares a signed sha-256 value with the body's. Constant
// time, although the digest of a public body is no secret: it keeps every
// comparison in this package uniform and reviewable.
func matchDigest(want, sum []byte) *Error {
	if subtle.ConstantTimeCompare(want, sum) != 1 {
		return refuse(CodeDigestMismatch, "Content-Digest does not match the body")
	}
	return nil
}
