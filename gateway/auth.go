package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/signing"
)

// auth is what the signature middleware established about a request.
type auth struct {
	verified *signing.Verified
	// envelope is the signed request as received, reduced to what
	// re-verification needs; the Service stores it.
	envelope *signing.Request
	// body is the request body, already read and covered by the
	// signature's Content-Digest.
	body []byte
}

type authKey struct{}

// authFrom returns the request's verified signature. Handlers behind
// signed always have one; its absence is a wiring bug.
func authFrom(ctx context.Context) *auth {
	a, _ := ctx.Value(authKey{}).(*auth)
	return a
}

// signed wraps h with the checks every /v1 route shares: the body is read
// within limit bytes, the signature verifies, the key holds one of roles
// (any key when none is named), and a body is JSON. Only then does h run,
// with the verified request in its context.
func (s *Server) signed(roles []signing.Role, limit int64, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := readBody(w, r, limit)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		req := signing.RequestFromHTTP(r, body)
		v, err := s.verifier.Verify(r.Context(), req)
		if err != nil {
			var se *signing.Error
			if errors.As(err, &se) {
				s.metrics.rejections.WithLabelValues(string(se.Code)).Inc()
			}
			s.fail(w, r, fmt.Errorf("verify signature: %w", err))
			return
		}
		info := infoFrom(r.Context())
		info.keyID = v.Key.ID
		if len(roles) > 0 && !slices.ContainsFunc(roles, v.Key.Has) {
			s.metrics.rejections.WithLabelValues(api.CodeForbidden).Inc()
			s.fail(w, r, api.Errorf(api.CodeForbidden, "this route needs a key with the role %s; key %s has none of them",
				roleNames(roles), v.Key.ID))
			return
		}
		if len(body) > 0 && !isJSON(r.Header.Get("Content-Type")) {
			s.fail(w, r, api.Errorf(api.CodeUnsupportedMediaType, "a request body must be application/json"))
			return
		}
		a := &auth{verified: v, envelope: v.Envelope(req), body: body}
		h(w, r.WithContext(context.WithValue(r.Context(), authKey{}, a)))
	})
}

// readBody reads the whole body, refusing more than limit bytes.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	tooLarge := api.Errorf(api.CodeBodyTooLarge, "the body is over %d bytes", limit)
	if r.ContentLength > limit {
		return nil, tooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge
		}
		// The client went away or sent a broken chunked body: its
		// problem, not ours, so no 503 and no error log.
		return nil, api.Errorf(api.CodeMalformedJSON, "the request body could not be read")
	}
	return body, nil
}

// isJSON reports whether a Content-Type is application/json, with any
// parameters.
func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

// roleNames lists roles for a message: "admin or approve".
func roleNames(roles []signing.Role) string {
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = string(r)
	}
	return strings.Join(names, " or ")
}
