package signing

import (
	"net/http"
	"strconv"
	"strings"
)

// This file builds the RFC 9421 signature base (section 2.5).

// checkComponent reports why name cannot be a covered component of a
// request, or "" when it can. Field names must be lowercase tokens;
// derived components must be ones this package can compute.
func checkComponent(name string) string {
	if name == "" {
		return "empty component identifier"
	}
	if name[0] == '@' {
		switch name {
		case "@method", "@authority", "@path", "@query", "@target-uri", "@scheme", "@request-target":
			return ""
		}
		return "unsupported derived component " + quoteSafe(name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !isTChar(c) || 'A' <= c && c <= 'Z' {
			return "component identifier " + quoteSafe(name) + " is not a lowercase field name"
		}
	}
	return ""
}

// quoteSafe quotes a short identifier for an error detail. Most reaching
// it have passed the structured-field parser, so they are printable
// ASCII; anything else (an authority from a stored envelope) is replaced
// by '?', and the length cap keeps details short.
func quoteSafe(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			b[i] = '?'
		}
	}
	return `"` + string(b) + `"`
}

// maxBaseLen bounds a signature base. A pushgate signature's is about 500
// bytes; the bound keeps what an unsigned request can make the verifier
// copy, scan and hash (covered fields may fill the whole header block)
// to a few times that, as the header fields are bounded in sfv.go.
const maxBaseLen = 8 << 10

func errBaseTooLong() *Error {
	return refuse(CodeMalformedSignature, "the signature base is over "+strconv.Itoa(maxBaseLen)+" bytes")
}

// appendBase appends the signature base of req for the covered components,
// ending with the "@signature-params" line: input, the covered components
// with the signature parameters, in canonical serialisation (RFC 9421 2.3).
// A component absent from the request is missing_component; a base over
// maxBaseLen is malformed_signature.
func appendBase(dst []byte, req *Request, components []string, input sfItem) ([]byte, *Error) {
	start := len(dst)
	for _, c := range components {
		if len(dst)-start > maxBaseLen {
			return nil, errBaseTooLong()
		}
		dst = append(dst, '"')
		dst = append(dst, c...)
		dst = append(dst, `": `...)
		value := len(dst)
		var ok bool
		if dst, ok = appendComponentValue(dst, req, c); !ok {
			return nil, refuse(CodeMissingComponent, "covered component "+quoteSafe(c)+" is not in the request")
		}
		if len(dst)-start > maxBaseLen {
			return nil, errBaseTooLong()
		}
		// A line break inside a value would let a stored envelope shift
		// text between lines of the base; HTTP forbids them anyway.
		if hasControl(dst[value:]) {
			return nil, refuse(CodeMalformedSignature, "covered component "+quoteSafe(c)+" has control characters")
		}
		dst = append(dst, '\n')
	}
	dst = append(dst, `"@signature-params": `...)
	dst, err := appendInnerList(dst, input.items, input.params)
	if err != nil {
		return nil, refuse(CodeMalformedSignature, "signature parameters cannot be serialised")
	}
	if len(dst)-start > maxBaseLen {
		return nil, errBaseTooLong()
	}
	return dst, nil
}

func appendComponentValue(dst []byte, req *Request, name string) ([]byte, bool) {
	switch name {
	case "@method":
		return append(dst, req.Method...), req.Method != ""
	case "@authority":
		return appendLower(dst, req.Authority), req.Authority != ""
	case "@path":
		return appendPath(dst, req.Path), true
	case "@query":
		dst = append(dst, '?')
		return append(dst, req.Query...), true
	case "@request-target":
		return appendRequestTarget(dst, req), true
	case "@scheme":
		return appendLower(dst, req.Scheme), req.Scheme != ""
	case "@target-uri":
		if req.Scheme == "" || req.Authority == "" {
			return dst, false
		}
		dst = appendLower(dst, req.Scheme)
		dst = append(dst, "://"...)
		dst = appendLower(dst, req.Authority)
		return appendRequestTarget(dst, req), true
	}
	values := fieldValues(req.Header, name)
	if values == nil {
		return dst, false
	}
	// RFC 9421 2.1: each field line trimmed, lines joined with ", ".
	for i, v := range values {
		if i > 0 {
			dst = append(dst, ", "...)
		}
		dst = append(dst, strings.Trim(v, " \t")...)
	}
	return dst, true
}

func appendPath(dst []byte, path string) []byte {
	if path == "" {
		return append(dst, '/')
	}
	return append(dst, path...)
}

func appendRequestTarget(dst []byte, req *Request) []byte {
	dst = appendPath(dst, req.Path)
	if req.Query != "" {
		dst = append(dst, '?')
		dst = append(dst, req.Query...)
	}
	return dst
}

// appendLower appends s with ASCII letters lowercased: authorities and
// schemes are case-insensitive and RFC 9421 signs their lowercase form.
func appendLower(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// hasControl reports whether b holds a control character other than HTAB.
func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return true
		}
	}
	return false
}

// fieldValues returns the lines of the field named by a lowercase component
// identifier. It canonicalises the name into a stack buffer, as
// http.CanonicalHeaderKey would, because the map lookup then needs no
// allocation; component names are tokens, so the two agree.
func fieldValues(h http.Header, name string) []string {
	var buf [64]byte
	if len(name) > len(buf) {
		return h.Values(name)
	}
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		buf[i] = c
		upper = c == '-'
	}
	return h[string(buf[:len(name)])]
}
