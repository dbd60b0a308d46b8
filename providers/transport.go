package providers

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
)

// Defaults shared by both senders.
const (
	// DefaultConcurrency is the number of calls in flight per batch.
	DefaultConcurrency = 64
	// DefaultRequestTimeout bounds one provider call.
	DefaultRequestTimeout = 10 * time.Second
	// DefaultPingInterval is how long a connection may be silent before
	// it is pinged.
	DefaultPingInterval = 15 * time.Second
	// DefaultPingTimeout is how long a ping may go unanswered before the
	// connection is closed and replaced.
	DefaultPingTimeout = 5 * time.Second
)

// idleConnTimeout is how long an unused connection is kept.
const idleConnTimeout = 90 * time.Second

// fcmCallKey is the context key of the *fcmCall of one FCM call.
type fcmCallKey struct{}

// fcmCall records what the single HTTP attempt of one messaging.Client.Send
// produced.
//
// The Admin SDK retries network errors and 503 answers itself, for about
// eight seconds (internal.WithDefaultRetryConfig: four retries, backoff
// 0.5 s·2^n, Retry-After honoured up to two minutes). A worker must not
// block like that, and the queue owns retries. So fcmTransport, on any
// outcome of the first attempt other than success, records it here and
// cancels the call's context: the SDK's wait before a retry returns at once
// with the context's error, and the sender classifies from this record
// instead of from that error. The transport runs in the goroutine that
// called Send, so the record needs no locking.
type fcmCall struct {
	// cancel ends the call's context (its own, derived from the batch's).
	cancel context.CancelFunc

	// status is the HTTP status of the answer; zero when none was read.
	status     int
	body       []byte
	retryAfter time.Duration
	// err is a transport error before a complete answer.
	err error
	// tokenErr is the failure to obtain an OAuth2 access token.
	tokenErr error
	// source is the token source whose token the request carried.
	source *tokenSource
	// attempts counts the HTTP attempts; more than one would mean the SDK
	// retried behind our back.
	attempts int
}

// fcmTransport authenticates FCM requests with the service account's
// OAuth2 access token and, for calls made by FCMSender, reduces the SDK's
// retry loop to one attempt (see fcmCall).
type fcmTransport struct {
	base   http.RoundTripper
	tokens *fcmTokens
	now    func() time.Time
}

// RoundTrip implements http.RoundTripper.
func (t *fcmTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	call, _ := req.Context().Value(fcmCallKey{}).(*fcmCall)
	if call != nil {
		call.attempts++
	}
	src := t.tokens.current()
	tok, err := src.Token()
	if err != nil {
		if call != nil {
			call.tokenErr = err
			call.cancel()
		}
		return nil, fmt.Errorf("fcm oauth2 token: %w", err)
	}
	// A RoundTripper must not modify the caller's request.
	authed := *req
	authed.Header = req.Header.Clone()
	tok.SetAuthHeader(&authed)
	gateBody(&authed)

	resp, err := t.base.RoundTrip(&authed)
	if call == nil {
		return resp, err
	}
	call.source = src
	if err != nil {
		call.err = err
		call.cancel()
		return nil, err
	}
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		call.status = resp.StatusCode
		// The SDK reads the body; a connection lost in the middle of it
		// must still end the call rather than start an SDK retry.
		resp.Body = &callBody{ReadCloser: resp.Body, call: call}
		return resp, nil
	}
	// A failure: read it whole and end the call before the SDK sees it,
	// so that its wait for a retry returns at once.
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		call.err = err
		call.cancel()
		return nil, err
	}
	call.status = resp.StatusCode
	call.body = body
	call.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), t.now())
	call.cancel()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// callBody is the body of a successful FCM answer. A read error ends the
// call, as a transport error before the answer does.
type callBody struct {
	io.ReadCloser
	call *fcmCall
}

func (b *callBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.call.err = err
		b.call.cancel()
	}
	return n, err
}

// tokenSource is one generation of cached OAuth2 access tokens.
type tokenSource struct{ oauth2.TokenSource }

// fcmTokens holds the current generation of cached access tokens, so that a
// token FCM refuses (401) can be dropped before it expires: the oauth2
// ReuseTokenSource would otherwise keep serving it until its expiry.
type fcmTokens struct {
	newSource func() oauth2.TokenSource
	cur       atomic.Pointer[tokenSource]
}

func newFCMTokens(newSource func() oauth2.TokenSource) *fcmTokens {
	t := &fcmTokens{newSource: newSource}
	t.cur.Store(&tokenSource{newSource()})
	return t
}

func (t *fcmTokens) current() *tokenSource { return t.cur.Load() }

// invalidate replaces src with a fresh source, once: calls that were
// refused with the same token all name the same src, and only the first
// replaces it.
func (t *fcmTokens) invalidate(src *tokenSource) bool {
	return t.cur.CompareAndSwap(src, &tokenSource{t.newSource()})
}

// apnsCallKey is the context key of the *apnsCall of one APNs call.
type apnsCallKey struct{}

// apnsCall records what apns2's Response does not carry.
type apnsCall struct {
	// bearer is the provider token the request carried.
	bearer     string
	retryAfter time.Duration
}

// apnsTransport puts the shared provider token on every APNs request.
// apns2 would otherwise regenerate its token on its own fixed 50-minute
// wall-clock schedule (token.TokenTimeout); here APNsToken alone decides
// when a token is made, so one token is in use per process and its age and
// refresh rate are exactly what APNsToken enforces.
type apnsTransport struct {
	base  http.RoundTripper
	token *APNsToken
	now   func() time.Time
}

// RoundTrip implements http.RoundTripper.
func (t *apnsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	bearer := t.token.bearer()
	authed := *req
	authed.Header = req.Header.Clone()
	authed.Header.Set("Authorization", "bearer "+bearer)
	gateBody(&authed)

	resp, err := t.base.RoundTrip(&authed)
	if call, _ := req.Context().Value(apnsCallKey{}).(*apnsCall); call != nil {
		call.bearer = bearer
		if err == nil && resp.StatusCode != http.StatusOK {
			call.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), t.now())
		}
	}
	return resp, err
}

// transportReason describes a transport error for Result.Reason. The
// request URL is left out: an APNs URL holds the device token.
func transportReason(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// loadRoots returns the roots to trust: pool, or the certificates of the
// PEM file, or nil (the system roots) when neither is given.
func loadRoots(pool *x509.CertPool, file string) (*x509.CertPool, error) {
	if pool != nil || file == "" {
		return pool, nil
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("ca file: %w", err)
	}
	pool = x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca file %s: no PEM certificates", file)
	}
	return pool, nil
}
