package providers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"time"

	"github.com/sideshow/apns2"
	"golang.org/x/net/http2"
)

// APNs hosts.
const (
	// APNsProduction is Apple's production host.
	APNsProduction = apns2.HostProduction
	// APNsDevelopment is Apple's sandbox host, for development builds.
	APNsDevelopment = apns2.HostDevelopment
)

// APNsConfig configures an APNsSender.
type APNsConfig struct {
	// Token is the process's provider token, shared by every APNsSender.
	Token *APNsToken
	// Topic is the apns-topic, the app's bundle id.
	Topic string
	// Host is the APNs base URL: APNsProduction (the default),
	// APNsDevelopment, or any URL.
	Host string
	// RootCAs, or the PEM file CAFile, are the roots trusted for Host; both
	// empty means the system roots.
	RootCAs *x509.CertPool
	CAFile  string
	// Concurrency is the number of calls in flight per batch; zero means
	// DefaultConcurrency.
	Concurrency int
	// RequestTimeout bounds one call, connecting included; zero means
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// PingInterval is how long a connection may be silent before it is
	// pinged, and PingTimeout how long the ping may go unanswered before
	// the connection is closed and replaced; zero means the defaults.
	PingInterval time.Duration
	PingTimeout  time.Duration
	// Now is the clock, for apns-expiration; nil means time.Now.
	Now func() time.Time
}

// APNsSender delivers to iOS devices through the Apple Push Notification
// service with token authentication, over one HTTP/2 client whose
// connections are reused across batches.
type APNsSender struct {
	client      *apns2.Client
	transport   *http2.Transport
	token       *APNsToken
	topic       string
	concurrency int
	timeout     time.Duration
	now         func() time.Time
}

// NewAPNsSender builds the HTTP/2 client. It does not connect: the first
// Send does.
func NewAPNsSender(cfg APNsConfig) (*APNsSender, error) {
	if cfg.Token == nil {
		return nil, errors.New("apns: no provider token")
	}
	if cfg.Topic == "" {
		return nil, errors.New("apns: no topic")
	}
	roots, err := loadRoots(cfg.RootCAs, cfg.CAFile)
	if err != nil {
		return nil, err
	}
	if cfg.Host == "" {
		cfg.Host = APNsProduction
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = DefaultPingTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}

	// x/net's HTTP/2 transport rather than net/http's: on Go 1.26 it
	// coalesces concurrent dials to one host into one connection, where
	// net/http dials once per waiting request (measured against the
	// simulator: 64 connections for a first burst of 64 calls, against 1).
	//
	// APNs opens a connection with a stream limit of 1 and raises it after
	// the first success. StrictMaxConcurrentStreams is deliberately off:
	// with it, x/net counts every caller's pool reservation against that
	// limit, and the caller that holds the connection's request lock waits
	// for a slot that the reservations of the callers queued behind it
	// never release (golang/go#70809, open), so a reconnection under load
	// stalls every call until its timeout. Without it, callers over the
	// limit share one more coalesced dial and wait in line on it for a
	// stream, which the simulator measures as one new connection per
	// reconnection, no burst. The pings replace a connection that went
	// silent.
	transport := &http2.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ReadIdleTimeout: cfg.PingInterval,
		PingTimeout:     cfg.PingTimeout,
		IdleConnTimeout: idleConnTimeout,
	}
	client := &apns2.Client{
		Host: cfg.Host,
		// No apns2 Token: apnsTransport puts the shared one on each request.
		HTTPClient: &http.Client{Transport: &apnsTransport{base: transport, token: cfg.Token, now: cfg.Now}},
	}
	return &APNsSender{
		client:      client,
		transport:   transport,
		token:       cfg.Token,
		topic:       cfg.Topic,
		concurrency: cfg.Concurrency,
		timeout:     cfg.RequestTimeout,
		now:         cfg.Now,
	}, nil
}

// Platform returns APNs.
func (s *APNsSender) Platform() Platform { return APNs }

// Close closes the idle connections. In-flight calls are not interrupted.
func (s *APNsSender) Close() { s.transport.CloseIdleConnections() }

// Send implements Sender. The payload is encoded and checked once for the
// batch; each device then costs one apns2 PushWithContext, at most
// Concurrency at a time.
func (s *APNsSender) Send(ctx context.Context, gate Gate, msg *Message, tokens []string) []Result {
	b, reason := apnsMessage(msg, s.now())
	if reason != "" {
		return refuseAll(len(tokens), reason)
	}
	run := batch{
		gate:        gate,
		concurrency: s.concurrency,
		now:         s.now,
		refuse: func(token string) (Result, bool) {
			if p := tokenProblem(token); p != "" {
				return Result{Class: InvalidToken, Reason: p}, true
			}
			return Result{}, false
		},
		call: func(ctx context.Context, token string) Result {
			return s.send(ctx, b.notification(s.topic, token))
		},
	}
	return run.run(ctx, tokens)
}

// send makes one call and classifies its outcome.
func (s *APNsSender) send(ctx context.Context, n *apns2.Notification) Result {
	callCtx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	call := &apnsCall{}
	resp, err := s.client.PushWithContext(context.WithValue(callCtx, apnsCallKey{}, call), n)
	if err != nil {
		if ctx.Err() != nil {
			return Result{Class: Cancelled, Reason: "context done during the call; outcome unknown"}
		}
		return Result{Class: Retryable, Reason: "transport: " + transportReason(err)}
	}
	if resp.Sent() {
		return Result{Class: Sent, MessageID: resp.ApnsID}
	}
	r := classifyAPNs(resp.StatusCode, resp.Reason, call.retryAfter)
	switch resp.Reason {
	case apnsExpiredProviderToken, apnsInvalidProviderToken:
		fresh, wait := s.token.refused(call.bearer)
		switch {
		case fresh:
			// A new token is in place: the device may be tried again now,
			// and the credential is not known to be at fault.
			r.Credential = false
		case resp.Reason == apnsInvalidProviderToken:
			// A token younger than the minimum interval was refused as
			// invalid: the key, key id or team id is wrong.
			r.Class = Permanent
		default:
			r.RetryAfter = max(r.RetryAfter, wait)
		}
	}
	return r
}
