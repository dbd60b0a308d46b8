package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/signing"
)

// auth is what the signature middleware established about a request.
type auth struct {
	verified *signing.Verified
	// envelope is the signed request as received, reduced to what
	// re-verification needs; the Service stores it.
	envelope *signing.Request
	// body is the request body, read after the signature verified over
	// the header fields and matched against its Content-Digest.
	body []byte
}

type authKey struct{}

// authFrom returns the request's verified signature. Handlers behind
// signed always have one; its absence is a wiring bug.
func authFrom(ctx context.Context) *auth {
	a, _ := ctx.Value(authKey{}).(*auth)
	return a
}

// signed wraps h with the checks every /v1 route shares, in this order:
// a declared body within limit bytes, the signature over the header
// fields (signing.VerifyHead, which claims the nonce), the key holding
// one of roles (any key when none is named), a body declared JSON; only
// then is the body read, within limit bytes and the body read timeout,
// and checked against the signed Content-Digest as it arrives. So a
// request that is not signed, or not by a key allowed here, costs no body
// buffer. h runs last, with the verified request in its context.
func (s *Server) signed(roles []signing.Role, limit int64, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hasBody := r.ContentLength != 0 // -1: chunked, or HTTP/2 without a length
		// refuse answers err. A body is then left unread: the server
		// closes the connection instead of waiting for it.
		refuse := func(err error) {
			if hasBody {
				dropBody(w)
			}
			s.refuse(w, r, err)
		}
		if r.ContentLength > limit {
			refuse(tooLarge(limit))
			return
		}
		req := signing.RequestFromHTTP(r, nil)
		vh, err := s.verifier.VerifyHead(r.Context(), req, hasBody)
		if err != nil {
			refuse(err)
			return
		}
		v := vh.Verified
		info := infoFrom(r.Context())
		info.keyID = v.Key.ID
		if len(roles) > 0 && !slices.ContainsFunc(roles, v.Key.Has) {
			s.metrics.rejections.WithLabelValues(api.CodeForbidden).Inc()
			refuse(api.Errorf(api.CodeForbidden, "this route needs a key with the role %s; key %s has none of them",
				roleNames(roles), v.Key.ID))
			return
		}
		if hasBody && !isJSON(r.Header.Get("Content-Type")) {
			refuse(api.Errorf(api.CodeUnsupportedMediaType, "a request body must be application/json"))
			return
		}
		body, err := s.readBody(w, r, vh, limit)
		if err != nil {
			refuse(err)
			return
		}
		req.Body = body
		a := &auth{verified: v, envelope: v.Envelope(req), body: body}
		h(w, r.WithContext(context.WithValue(r.Context(), authKey{}, a)))
	})
}

// refuse answers err, counting it among the signature rejections when it
// is a signature refusal.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, err error) {
	var se *signing.Error
	if errors.As(err, &se) {
		s.metrics.rejections.WithLabelValues(string(se.Code)).Inc()
		err = fmt.Errorf("verify signature: %w", err)
	}
	s.fail(w, r, err)
}

// dropBody makes the server close the connection after the answer
// rather than read what remains of a body the gateway will not use (up
// to 256 KiB, for as long as the client takes): a client that stalls its
// upload then holds nothing.
func dropBody(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}

func tooLarge(limit int64) error {
	return api.Errorf(api.CodeBodyTooLarge, "the body is over %d bytes", limit)
}

// readBody reads the body of a request whose signature verified over its
// header fields: at most limit bytes, checked against the signed
// Content-Digest as it arrives. The body holds one of the server's body
// slots while it is read, and waiting for a slot and reading must end
// within the body read timeout. Once the whole body is read the deadline
// is lifted, so that a handler that takes longer is not cut off; after an
// error the caller drops the rest of the body.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, vh *signing.VerifiedHead, limit int64) ([]byte, error) {
	if r.ContentLength == 0 {
		// Nothing arrives; the reader still checks a covered digest
		// against the empty body.
		return readAll(vh.Body(r.Body), 0)
	}
	unreadable := api.Errorf(api.CodeMalformedJSON, "the request body could not be read")
	timedOut := api.Errorf(api.CodeBodyTimeout, "the body did not arrive within %s", s.bodyTimeout)
	deadline := time.Now().Add(s.bodyTimeout)
	rc := http.NewResponseController(w)
	// A ResponseWriter that cannot reach its connection leaves the
	// server's own read timeout as the only bound.
	_ = rc.SetReadDeadline(deadline)

	waiting := s.metrics.bodyReads.WithLabelValues("waiting")
	waiting.Inc()
	wait := time.NewTimer(time.Until(deadline))
	acquired := false
	select {
	case s.bodySlots <- struct{}{}:
		acquired = true
	case <-wait.C:
	case <-r.Context().Done():
	}
	wait.Stop()
	waiting.Dec()
	switch {
	case acquired:
	case r.Context().Err() != nil:
		return nil, unreadable // the client went away
	default:
		return nil, timedOut
	}
	reading := s.metrics.bodyReads.WithLabelValues("reading")
	reading.Inc()
	defer func() {
		reading.Dec()
		<-s.bodySlots
	}()

	body, err := readAll(vh.Body(http.MaxBytesReader(w, r.Body, limit)), r.ContentLength)
	var mbe *http.MaxBytesError
	var se *signing.Error
	var ne net.Error
	switch {
	case err == nil:
		_ = rc.SetReadDeadline(time.Time{})
		return body, nil
	case errors.As(err, &se):
		return nil, err
	case errors.As(err, &mbe):
		return nil, tooLarge(limit)
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return nil, timedOut
	default:
		// The client went away or sent a broken chunked body: its
		// problem, not ours, so no 503 and no error log.
		return nil, unreadable
	}
}

// readAll reads r to its end into a buffer sized for the declared length
// (unknown when negative), so that a body of known length costs one
// allocation of its size, not io.ReadAll's doublings.
func readAll(r io.Reader, size int64) ([]byte, error) {
	b := make([]byte, 0, max(size, 511)+1) // +1: room to see the end without growing
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
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
