package signing

import (
	"bytes"
	"crypto/sha256"
	"testing"
)

// The body of RFC 9530's and RFC 9421's examples, and its digests as those
// RFCs print them.
const (
	helloBody   = `{"hello": "world"}`
	helloSHA256 = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
	helloSHA512 = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
)

func TestContentDigest(t *testing.T) {
	tests := []struct {
		give string
		want string
	}{
		{helloBody, helloSHA256},
		{"", "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"},
	}
	for _, tt := range tests {
		if got := ContentDigest([]byte(tt.give)); got != tt.want {
			t.Errorf("ContentDigest(%q) = %q, want %q", tt.give, got, tt.want)
		}
	}
}

func TestCheckContentDigest(t *testing.T) {
	tests := []struct {
		name   string
		header string
		body   string
		want   Code
	}{
		{"sha-256", helloSHA256, helloBody, ""},
		{"sha-256 among others", helloSHA512 + ", " + helloSHA256 + ";p=1", helloBody, ""},
		{"last sha-256 wins", "sha-256=:AAAA:, " + helloSHA256, helloBody, ""},
		{"other body", helloSHA256, `{"hello": "World"}`, CodeDigestMismatch},
		{"empty body", helloSHA256, "", CodeDigestMismatch},
		{"only sha-512", helloSHA512, helloBody, CodeDigestMismatch},
		{"truncated digest", "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBA==:", helloBody, CodeDigestMismatch},
		{"empty field", "", helloBody, CodeDigestMismatch},
		{"not a dictionary", "sha-256=X48E9q", helloBody, CodeMalformedSignature},
		{"value is a token", "sha-256=abc", helloBody, CodeMalformedSignature},
		{"value is an inner list", "sha-256=(:AAAA:)", helloBody, CodeMalformedSignature},
		{"RFC 3230 Digest syntax", "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=", helloBody, CodeMalformedSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckContentDigest(tt.header, []byte(tt.body))
			if got := codeOf(err); got != tt.want || tt.want == "" && err != nil {
				t.Errorf("CheckContentDigest = %v, want code %q", err, tt.want)
			}
		})
	}
}

// FuzzContentDigest checks that the Content-Digest parser never panics,
// only ever refuses with one of its two codes, and accepts a field only
// when it carries the body's sha-256.
func FuzzContentDigest(f *testing.F) {
	f.Add(helloSHA256, helloBody)
	f.Add(helloSHA512+", "+helloSHA256, helloBody)
	f.Add(helloSHA512, helloBody)
	f.Add("sha-256=:YQ:", "")
	f.Add("sha-256=(1 2), md5=?1", "x")
	f.Add(`sha-256="abc";q=1.5`, "")
	f.Fuzz(func(t *testing.T, header, body string) {
		err := CheckContentDigest(header, []byte(body))
		if err == nil {
			d, perr := parseDictionary(header)
			v, _ := lookup(d, "sha-256")
			got := v.bin
			sum := sha256.Sum256([]byte(body))
			if perr != nil || !bytes.Equal(got, sum[:]) {
				t.Fatalf("accepted %q for a body whose digest is %s", header, ContentDigest([]byte(body)))
			}
			return
		}
		if c := codeOf(err); c != CodeDigestMismatch && c != CodeMalformedSignature {
			t.Fatalf("CheckContentDigest(%q) = %v: unexpected code", header, err)
		}
	})
}
