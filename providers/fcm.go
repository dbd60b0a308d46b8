package providers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/messaging"
	"golang.org/x/net/http2"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/option"
)

// DefaultFCMEndpoint is Google's FCM HTTP v1 endpoint.
const DefaultFCMEndpoint = "https://fcm.googleapis.com/v1"

// fcmScope is the OAuth2 scope of FCM HTTP v1.
const fcmScope = "https://www.googleapis.com/auth/firebase.messaging"

// FCMConfig configures an FCMSender.
type FCMConfig struct {
	// Credentials is the service-account JSON; CredentialsFile is read when
	// it is empty. Its token_uri is where access tokens are fetched.
	Credentials     []byte
	CredentialsFile string
	// ProjectID defaults to the project_id of the service account.
	ProjectID string
	// Endpoint is the FCM HTTP v1 base URL; empty means DefaultFCMEndpoint.
	Endpoint string
	// RootCAs, or the PEM file CAFile, are the roots trusted for FCM and the
	// token endpoint; both empty means the system roots.
	RootCAs *x509.CertPool
	CAFile  string
	// Concurrency is the number of calls in flight per batch; zero means
	// DefaultConcurrency.
	Concurrency int
	// RequestTimeout bounds one call; zero means DefaultRequestTimeout.
	RequestTimeout time.Duration
	// TokenTimeout bounds one access-token fetch; zero means RequestTimeout.
	TokenTimeout time.Duration
	// PingInterval is how long a connection may be silent before it is
	// pinged, and PingTimeout how long the ping may go unanswered before
	// the connection is closed and replaced; zero means the defaults.
	PingInterval time.Duration
	PingTimeout  time.Duration
	// Logger receives the sender's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// FCMSender delivers to Android devices through Firebase Cloud Messaging,
// with the Admin SDK over a transport it builds itself: its own TLS roots
// and connection pool, OAuth2 tokens from the service account, and no
// retries inside a call.
type FCMSender struct {
	client      *messaging.Client
	tokens      *fcmTokens
	transport   *http2.Transport
	tokenConns  *http.Transport
	concurrency int
	timeout     time.Duration
	log         *slog.Logger
	now         func() time.Time
}

// NewFCMSender builds the HTTP/2 client and the messaging client. It does
// not connect: the first Send does.
func NewFCMSender(ctx context.Context, cfg FCMConfig) (*FCMSender, error) {
	creds := cfg.Credentials
	if len(creds) == 0 {
		if cfg.CredentialsFile == "" {
			return nil, errors.New("fcm: no service-account credentials")
		}
		var err error
		if creds, err = os.ReadFile(cfg.CredentialsFile); err != nil {
			return nil, fmt.Errorf("fcm: %w", err)
		}
	}
	jwtConf, err := google.JWTConfigFromJSON(creds, fcmScope)
	if err != nil {
		return nil, fmt.Errorf("fcm: credentials: %w", err)
	}
	projectID := cfg.ProjectID
	if projectID == "" {
		var sa struct {
			ProjectID string `json:"project_id"`
		}
		if err := json.Unmarshal(creds, &sa); err != nil || sa.ProjectID == "" {
			return nil, errors.New("fcm: no project id in the configuration or the credentials")
		}
		projectID = sa.ProjectID
	}
	roots, err := loadRoots(cfg.RootCAs, cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("fcm: %w", err)
	}
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = DefaultFCMEndpoint
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.TokenTimeout <= 0 {
		cfg.TokenTimeout = cfg.RequestTimeout
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = DefaultPingTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}

	// Messages go over x/net's HTTP/2 transport, which on Go 1.26 coalesces
	// concurrent dials to one host into one connection and opens another
	// only when the server's stream limit is reached; net/http's transport
	// dials once per waiting request, a burst of handshakes at every start
	// and after every GOAWAY. The pings replace a connection that went
	// silent. Token fetches use net/http, since a token endpoint need not
	// speak HTTP/2; both trust the same roots.
	tlsConf := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	h2 := &http2.Transport{
		TLSClientConfig: tlsConf,
		ReadIdleTimeout: cfg.PingInterval,
		PingTimeout:     cfg.PingTimeout,
		IdleConnTimeout: idleConnTimeout,
	}
	tokenTransport := &http.Transport{
		TLSClientConfig:     tlsConf,
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: cfg.TokenTimeout,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     idleConnTimeout,
	}
	// Token fetches are not tied to any one call's context: a fetch serves
	// every call until the token expires.
	tokenCtx := context.WithValue(context.Background(), oauth2.HTTPClient,
		&http.Client{Transport: tokenTransport, Timeout: cfg.TokenTimeout})
	tokens := newFCMTokens(func() oauth2.TokenSource { return jwtConf.TokenSource(tokenCtx) })
	hc := &http.Client{Transport: &fcmTransport{base: h2, tokens: tokens, now: cfg.Now}}

	app, err := firebase.NewApp(ctx, &firebase.Config{ProjectID: projectID},
		option.WithHTTPClient(hc), option.WithEndpoint(endpoint))
	if err != nil {
		return nil, fmt.Errorf("fcm: app: %w", err)
	}
	client, err := app.Messaging(ctx)
	if err != nil {
		return nil, fmt.Errorf("fcm: messaging client: %w", err)
	}
	return &FCMSender{
		client:      client,
		tokens:      tokens,
		transport:   h2,
		tokenConns:  tokenTransport,
		concurrency: cfg.Concurrency,
		timeout:     cfg.RequestTimeout,
		log:         cfg.Logger.With("platform", string(FCM)),
		now:         cfg.Now,
	}, nil
}

// Platform returns FCM.
func (s *FCMSender) Platform() Platform { return FCM }

// Close closes the idle connections. In-flight calls are not interrupted.
func (s *FCMSender) Close() {
	s.transport.CloseIdleConnections()
	s.tokenConns.CloseIdleConnections()
}

// Send implements Sender. The message is mapped and checked once for the
// batch; each device then costs one messaging.Client.Send, at most
// Concurrency at a time.
func (s *FCMSender) Send(ctx context.Context, gate Gate, msg *Message, tokens []string) []Result {
	b, reason := fcmMessage(msg, s.now())
	if reason != "" {
		return refuseAll(len(tokens), reason)
	}
	// When no access token can be had, every further call of the batch
	// would wait for the same failing fetch: they get its result instead.
	var authFailed atomic.Pointer[Result]
	run := batch{
		gate:        gate,
		concurrency: s.concurrency,
		now:         s.now,
		refuse: func(token string) (Result, bool) {
			if p := tokenProblem(token); p != "" {
				return Result{Class: InvalidToken, Reason: p}, true
			}
			if p := b.refuseToken(token); p != "" {
				return Result{Class: Permanent, Reason: messageRefused + p}, true
			}
			if r := authFailed.Load(); r != nil {
				return *r, true
			}
			return Result{}, false
		},
		call: func(ctx context.Context, token string) Result {
			m := b.message(token)
			r, tokenFailed := s.send(ctx, &m)
			if tokenFailed {
				authFailed.CompareAndSwap(nil, &r)
			}
			return r
		},
	}
	return run.run(ctx, tokens)
}

// send makes one call and classifies its outcome; tokenFailed reports that
// no access token could be obtained.
func (s *FCMSender) send(ctx context.Context, m *messaging.Message) (r Result, tokenFailed bool) {
	callCtx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	call := &fcmCall{cancel: cancel}
	name, err := s.client.Send(context.WithValue(callCtx, fcmCallKey{}, call), m)
	if call.attempts > 1 {
		// fcmTransport cancels the call after any failed attempt; more
		// than one attempt means the SDK changed how it retries.
		s.log.Error("fcm call made more than one attempt", "attempts", call.attempts)
	}
	switch {
	case err == nil:
		return Result{Class: Sent, MessageID: name}, false
	case call.status >= 200 && call.status <= 299:
		// FCM accepted the message; only its answer did not parse.
		return Result{Class: Sent}, false
	case call.status != 0:
		r := classifyFCM(call.status, call.body, call.retryAfter)
		// A Retryable 401 is our access token refused (a Permanent one is
		// THIRD_PARTY_AUTH_ERROR, the app's APNs credential at Google).
		if call.status == http.StatusUnauthorized && r.Class == Retryable && call.source != nil && s.tokens.invalidate(call.source) {
			s.log.Warn("fcm refused the access token; a new one will be fetched")
		}
		return r, false
	case ctx.Err() != nil:
		return Result{Class: Cancelled, Reason: "context done during the call; outcome unknown"}, false
	case call.tokenErr != nil:
		return classifyTokenError(call.tokenErr), true
	case call.err != nil:
		return Result{Class: Retryable, Reason: "transport: " + transportReason(call.err)}, false
	default:
		// The SDK refused the message without sending it.
		return Result{Class: Permanent, Reason: "fcm sdk: " + err.Error()}, false
	}
}

// classifyTokenError classifies a failure to obtain an access token. A
// token endpoint that refuses the service account (4xx: invalid_grant,
// invalid_client) is a configuration error and Permanent; one that cannot
// be reached or fails (5xx, 429, network) is Retryable. Either way no
// device can be sent to: a Credential failure.
func classifyTokenError(err error) Result {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		code := re.Response.StatusCode
		if code >= 400 && code < 500 && code != http.StatusTooManyRequests {
			reason := re.ErrorCode
			if reason == "" {
				// x/oauth2/jwt leaves the RFC 6749 error body unparsed.
				var body struct {
					Error string `json:"error"`
				}
				_ = json.Unmarshal(re.Body, &body)
				reason = body.Error
			}
			if reason == "" {
				reason = re.Response.Status
			}
			return Result{Class: Permanent, Reason: "oauth2 token refused: " + reason, Credential: true}
		}
		return Result{Class: Retryable, Reason: "oauth2 token: " + re.Response.Status, Credential: true}
	}
	return Result{Class: Retryable, Reason: "oauth2 token: " + transportReason(err), Credential: true}
}
