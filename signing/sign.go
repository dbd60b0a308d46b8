package signing

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// DefaultLabel is the label a Signer gives its signature when Label is
// empty. The verifier selects signatures by tag, not label, so the label
// only has to differ from other signatures a request may carry.
const DefaultLabel = "pushgate"

// Signer signs requests with one key under pushgate's profile: it covers
// "@method", "@authority", "@path", "@query" when the URL has a query, and
// "content-digest" and "content-type" when there is a body, with the
// parameters created, expires (when Expires is set), keyid,
// alg="ed25519", nonce and tag="pushgate". A Signer is safe for
// concurrent use when its Now and Nonce are.
type Signer struct {
	KeyID string
	Key   ed25519.PrivateKey
	Label string                 // "": DefaultLabel
	Now   func() time.Time       // nil: time.Now
	Nonce func() (string, error) // nil: 16 random bytes, base64url without padding
	// Expires, when positive, adds an expires parameter that far after
	// created (whole seconds, at least one).
	Expires time.Duration
}

// Sign sets Signature-Input and Signature on r, and Content-Digest when body
// is non-empty. body must be the exact bytes that will be sent, and a
// request with a body must already carry its Content-Type, which is signed.
func (s *Signer) Sign(r *http.Request, body []byte) error {
	if r.URL == nil || r.URL.Opaque != "" {
		return errors.New("sign: request needs a URL with a path, not an opaque URL")
	}
	if r.Header == nil {
		r.Header = make(http.Header)
	}
	if len(body) > 0 {
		if r.Header.Get("Content-Type") == "" {
			return errors.New("sign: a request with a body needs a Content-Type")
		}
		r.Header.Set("Content-Digest", ContentDigest(body))
	}
	// The values net/http's client will send: Host falls back to the
	// URL's host, the method to GET.
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	input, sig, err := s.sign(&Request{
		Method:    method,
		Authority: host,
		Path:      r.URL.EscapedPath(),
		Query:     r.URL.RawQuery,
		Header:    r.Header,
		Body:      body,
		Scheme:    r.URL.Scheme,
	})
	if err != nil {
		return err
	}
	r.Header.Set("Signature-Input", input)
	r.Header.Set("Signature", sig)
	return nil
}

// Headers returns the Content-Digest (when body is non-empty),
// Signature-Input and Signature fields for a request, for clients that
// build it themselves, like pushgate sign for curl. contentType defaults
// to application/json; the request must send the same Content-Type.
func (s *Signer) Headers(method, url, contentType string, body []byte) (http.Header, error) {
	r, err := http.NewRequest(method, url, nil)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	if len(body) > 0 {
		if contentType == "" {
			contentType = "application/json"
		}
		r.Header.Set("Content-Type", contentType)
	}
	if err := s.Sign(r, body); err != nil {
		return nil, err
	}
	h := make(http.Header)
	for _, name := range []string{"Content-Digest", "Signature-Input", "Signature"} {
		if v := r.Header.Get(name); v != "" {
			h.Set(name, v)
		}
	}
	return h, nil
}

// sign returns the Signature-Input and Signature field values for req.
func (s *Signer) sign(req *Request) (input, sig string, err error) {
	if len(s.Key) != ed25519.PrivateKeySize {
		return "", "", errors.New("sign: no Ed25519 private key")
	}
	if s.KeyID == "" {
		return "", "", errors.New("sign: no key id")
	}
	if req.Authority == "" {
		return "", "", errors.New("sign: request has no host")
	}
	components := []string{"@method", "@authority", "@path"}
	if req.Query != "" {
		components = append(components, "@query")
	}
	if len(req.Body) > 0 {
		components = append(components, "content-digest", "content-type")
	}

	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	created := now().Unix()
	nonce, err := s.nonce()
	if err != nil {
		return "", "", fmt.Errorf("sign: nonce: %w", err)
	}
	params := sfParams{{"created", sfInt(created)}}
	if s.Expires > 0 {
		params = append(params, sfParam{"expires", sfInt(created + max(1, int64(s.Expires/time.Second)))})
	}
	params = append(params,
		sfParam{"keyid", sfStr(s.KeyID)},
		sfParam{"alg", sfStr("ed25519")},
		sfParam{"nonce", sfStr(nonce)},
		sfParam{"tag", sfStr(Tag)},
	)
	items := make([]sfItem, len(components))
	for i, c := range components {
		items[i] = sfItem{sfValue: sfStr(c)}
	}
	in := sfItem{list: true, items: items, params: params}

	label := s.Label
	if label == "" {
		label = DefaultLabel
	}
	inField, err := appendMember(nil, label, in)
	if err != nil {
		return "", "", errors.New("sign: label, key id and nonce must be printable ASCII, and the label a lowercase key")
	}
	base, rerr := appendBase(make([]byte, 0, 512), req, components, in)
	if rerr != nil {
		return "", "", fmt.Errorf("sign: %s", rerr.Detail)
	}
	sigField, err := appendMember(nil, label, sfItem{sfValue: sfBin(ed25519.Sign(s.Key, base))})
	if err != nil {
		return "", "", fmt.Errorf("sign: %w", err)
	}
	return string(inField), string(sigField), nil
}

func (s *Signer) nonce() (string, error) {
	if s.Nonce != nil {
		return s.Nonce()
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
