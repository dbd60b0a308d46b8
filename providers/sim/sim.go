// Package sim runs local, faithful stand-ins for Firebase Cloud Messaging
// (the HTTP v1 API) and the Apple Push Notification service, and a
// population of virtual phones behind them, so that tests, the demo and the
// benchmark exercise pushgate's senders through the official SDK clients
// without the internet.
//
// One Sim runs three servers on loopback: FCM (TLS, HTTP/2 and HTTP/1.1:
// messages:send and the OAuth2 token endpoint), APNs (TLS, HTTP/2 only:
// /3/device/{token}) and a plain-HTTP control server (/sim/...). It
// generates its own certificate authority, FCM service-account key and APNs
// signing key; WriteFiles exports them with a gateway configuration
// fragment.
//
// # Providers
//
// FCM: a bearer token from POST /token (the service-account JWT-bearer
// grant, RS256 assertion verified against the generated key) is required;
// requests are validated as FCM does and answered with {"name": ...} or a
// google.rpc.Status carrying the FcmError detail the Firebase SDK reads. A
// project-wide quota per minute, or a quota outage of the fault plan,
// answers 429 QUOTA_EXCEEDED to every request. The simulator
// reads the snake_case field names the Go SDK sends; FCM also accepts
// lowerCamelCase, which the simulator refuses as unknown fields. Payload
// size is counted as FCM documents it: the keys and values of the data,
// plus the notification title and body.
//
// APNs: an ES256 provider token (kid = key id, iss = team id, iat) is
// verified against the generated key; tokens older than Config.TokenTTL are
// ExpiredProviderToken, and a team presenting a new token less than
// Config.MinTokenRefresh after its previous new one gets 429
// TooManyProviderTokenUpdates. Headers and payload are validated per Apple's
// table of reasons.
//
// # The APNs stream limit
//
// Like Apple, each APNs connection advertises SETTINGS_MAX_CONCURRENT_STREAMS
// = Config.InitialStreams (1) in its first SETTINGS frame, and raises it to
// Config.MaxStreams (1000) with a second SETTINGS frame after the first
// authenticated 200 on that connection. A stream opened beyond the limit is
// refused with RST_STREAM REFUSED_STREAM (counted in Stats.RefusedStreams),
// unless the client opened it before acknowledging the server's first
// SETTINGS, when it could not know the limit. A refused stream was not
// processed; Go's transport retries it by itself (at once, then after a
// second or more, so refusals show as latency).
//
// A sender must therefore honour the advertised limit and expect one
// stream per new connection. With Go, use golang.org/x/net/http2's
// Transport (net/http's dials once per waiting request: a burst of 500
// pushes opened 130 to 780 connections in TestAPNsBurst) and leave its
// StrictMaxConcurrentStreams off: callers over the limit then share one
// more coalesced dial and wait on it for a stream (a burst of 500 opens 2
// or 3 connections and none times out). With StrictMaxConcurrentStreams on,
// x/net counts every caller's pool reservation against the limit, and the
// caller holding the connection's request lock waits for a slot that the
// reservations queued behind it never release: a burst that starts after
// the limit of 1 is known stalls every call until its deadline
// (golang/go#70809). Go's transport assumes 100 streams until it reads the
// server's first SETTINGS; those early streams are served.
//
// # Phones
//
// Every token is a phone with a screen: notifications keyed by collapse
// identity (APNs apns-collapse-id, else apns-id; Android
// android.notification.tag, else the FCM message name), so a notification
// with the same identity replaces the old one. Silent and data-only messages
// are delivered and counted but not shown. The app is assumed to handle
// pushgate's recall instruction: a data message carrying
// {"pushgate":{"recall":"<id>"}} (FCM: data["pushgate"] is that JSON
// object's text; APNs: a top-level "pushgate" object) removes every shown
// notification whose own pushgate block says {"broadcast":"<id>"}.
//
// SetApp installs pushgate's app on every phone: trusted app-signing keys
// and the phone's topic subscriptions. A phone with the app then checks
// every delivered message with signing/appsig's verifier and history, as
// the app does, and shows (alert, recall-replace) or removes
// (recall-remove) only what verifies; the rest is delivered and logged
// but not acted on, and counted by refusal code in Stats.Refusals.
//
// An offline phone's providers hold only the latest undelivered message per
// collapse identity (FCM: collapse_key when set) and drop those whose expiry
// (apns-expiration, android.ttl) passed; the rest are delivered, oldest
// first, when the phone comes online. apns-expiration 0 and ttl "0s" mean
// "now or never". Real APNs keeps only the latest notification per app for
// an offline device; the simulator keeps one per collapse identity.
//
// A delivery is recorded when the configured latency has elapsed and only
// if the request's context has not been cancelled by then (a client that
// reset the stream); its time is read at that moment. Requests cancelled
// during the latency are not delivered and are counted as cancelled.
//
// A token the simulator does not know is, by default, unregistered (FCM
// UNREGISTERED, APNs 410 Unregistered), as for a token the provider never
// issued; a malformed one is BadDeviceToken / INVALID_ARGUMENT. Faults
// change that: Faults.UnknownToken, and token prefixes (DefaultPrefixes) so
// that a test can name a failing device instead of registering it.
//
// # Invariants
//
// The package imports nothing of the gateway but the provider types and
// the app's reference verifier (signing/appsig), never imports "testing"
// (the pushgate binary links it), holds no package-level state, and never
// logs a device token, a key or a bearer token. Every goroutine it starts
// is stopped by Close, which waits for them. It owns no Redis keys.
package sim

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushgate/pushgate/providers"
)

// Config configures a Sim. The zero value is usable.
type Config struct {
	// Listen is the host and port to listen on. With port 0 (the default,
	// "127.0.0.1:0") every server takes a free port; with port P, FCM
	// listens on P, APNs on P+1 and the control server on P+2.
	Listen string
	// Hostname, when set, is the name or IP address clients reach the
	// simulators by, as when they run in a container of their own: the
	// URLs the simulators advertise (FCMEndpoint, TokenURL, APNsHost,
	// ControlURL, and so the files WriteFiles writes) use it instead of
	// the listen address, and the TLS certificate names it besides
	// localhost and the loopback addresses.
	Hostname string

	// ProjectID is the Firebase project (default "pushgate-sim").
	ProjectID string
	// Topic is the APNs topic, the app's bundle id (default
	// "org.pushgate.sim").
	Topic string
	// TeamID and KeyID identify the APNs signing key (defaults
	// "TEAM123456" and "ABCDE12345").
	TeamID, KeyID string

	// ServiceAccountKey and APNsKey, when set, are used instead of freshly
	// generated keys, so that a restarted simulator keeps its credentials
	// (and tests avoid generating RSA keys repeatedly). APNsKey must be a
	// P-256 key.
	ServiceAccountKey *rsa.PrivateKey
	APNsKey           *ecdsa.PrivateKey

	// Faults is the initial fault plan.
	Faults Faults

	// QuotaPerMinute is FCM's project-wide message quota (default 600,000;
	// negative means unlimited).
	QuotaPerMinute int
	// TokenTTL is the age at which an APNs provider token expires
	// (default one hour).
	TokenTTL time.Duration
	// MinTokenRefresh is the shortest interval at which a team may start
	// using a new APNs provider token (default 20 minutes; negative means
	// no limit).
	MinTokenRefresh time.Duration
	// OAuthTokenTTL is the lifetime of FCM access tokens (default one
	// hour).
	OAuthTokenTTL time.Duration

	// InitialStreams and MaxStreams are the APNs stream limits before and
	// after a connection's first success (defaults 1 and 1000).
	InitialStreams, MaxStreams uint32

	// Logger receives the simulator's logs (default: discarded). Requests
	// are logged at Debug only.
	Logger *slog.Logger
	// Now is the clock for token ages, expiries, quotas and delivery times
	// (default time.Now). Latency is always real time.
	Now func() time.Time
}

const (
	defaultProjectID = "pushgate-sim"
	defaultTopic     = "org.pushgate.sim"
	defaultTeamID    = "TEAM123456"
	defaultKeyID     = "ABCDE12345"
)

func (c *Config) setDefaults() error {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:0"
	}
	if c.ProjectID == "" {
		c.ProjectID = defaultProjectID
	}
	if c.Topic == "" {
		c.Topic = defaultTopic
	}
	if c.TeamID == "" {
		c.TeamID = defaultTeamID
	}
	if c.KeyID == "" {
		c.KeyID = defaultKeyID
	}
	if c.QuotaPerMinute == 0 {
		c.QuotaPerMinute = 600_000
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = time.Hour
	}
	if c.MinTokenRefresh == 0 {
		c.MinTokenRefresh = 20 * time.Minute
	}
	if c.OAuthTokenTTL == 0 {
		c.OAuthTokenTTL = time.Hour
	}
	if c.InitialStreams == 0 {
		c.InitialStreams = 1
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = 1000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Hostname != "" && net.ParseIP(c.Hostname) == nil && !validHostname(c.Hostname) {
		return fmt.Errorf("sim: hostname %q: want a DNS name (letters, digits, '-' and '.') or an IP address", c.Hostname)
	}
	switch {
	case c.TokenTTL < 0, c.OAuthTokenTTL < time.Second:
		return errors.New("sim: token lifetimes must be positive (OAuthTokenTTL at least a second)")
	case c.InitialStreams > c.MaxStreams:
		return fmt.Errorf("sim: InitialStreams %d exceeds MaxStreams %d", c.InitialStreams, c.MaxStreams)
	}
	return nil
}

// validHostname reports whether h is a DNS name: dot-separated labels of
// letters, digits and inner hyphens.
func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// Sim runs the FCM and APNs simulators, their phones and the control
// server. Its methods are safe for concurrent use.
type Sim struct {
	cfg   Config
	now   func() time.Time
	log   *slog.Logger
	creds *credentials

	fcm, apns, control *server

	faults            atomic.Pointer[faultPlan]
	fcmBook, apnsBook *book
	orderMu           sync.Mutex
	order             []Device                 // every phone, in registration order
	contents          atomic.Pointer[sync.Map] // content identity → *content
	fcmCache          *parseCache[*fcmParsed]
	apnsCache         *parseCache[*content]
	dlog              deliveryLog
	stats             counters
	app               atomic.Pointer[installedApp] // nil: phones show every visible message
	refusals          refusalCounts
	seq               [2]atomic.Int64 // provider requests, for DropEvery and GoAwayEvery
	msgSeq            atomic.Uint64   // FCM message names

	oauth   oauthStore
	apnsTok providerTokens
	quota   quota

	// done is closed by Close to abort requests waiting out their latency.
	done      chan struct{}
	mu        sync.Mutex
	closed    bool
	handlers  sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Platform indexes for per-platform arrays.
const (
	idxFCM  = 0
	idxAPNs = 1
)

// counters are the simulator's statistics, updated without locks.
type counters struct {
	requests        [2][600]atomic.Int64 // by platform and HTTP status
	inflight        [2]atomic.Int64      // provider requests being handled now
	deliveries      atomic.Int64
	phonesReached   atomic.Int64
	rawDuplicates   atomic.Int64
	cancelled       atomic.Int64
	pending         atomic.Int64
	replacedPending atomic.Int64
	expired         atomic.Int64
	recalled        atomic.Int64
	dropped         atomic.Int64
	goaways         atomic.Int64
	refused         atomic.Int64
	oauthTokens     atomic.Int64
}

func (c *counters) status(platform, code int) {
	if code > 0 && code < len(c.requests[platform]) {
		c.requests[platform][code].Add(1)
	}
}

// New starts the simulators. They serve until Close.
func New(cfg Config) (*Sim, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	plan, err := newFaultPlan(cfg.Faults)
	if err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	creds, err := newCredentials(&cfg)
	if err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	s := &Sim{
		cfg:      cfg,
		now:      cfg.Now,
		log:      cfg.Logger,
		creds:    creds,
		fcmBook:  newBook(providers.FCM),
		apnsBook: newBook(providers.APNs),
		done:     make(chan struct{}),

		fcmCache:  newParseCache[*fcmParsed](),
		apnsCache: newParseCache[*content](),
	}
	s.faults.Store(plan)
	s.contents.Store(new(sync.Map))
	s.dlog.now = cfg.Now
	s.oauth.tokens = make(map[string]oauthToken)
	s.apnsTok.accepted = make(map[string]time.Time)

	lns, err := listen(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	s.fcm = s.startTLSServer("fcm", lns[0], creds.serverTLS("h2", "http/1.1"), s.fcmHandler(), 100, false)
	s.apns = s.startTLSServer("apns", lns[1], creds.serverTLS("h2"), s.apnsHandler(), cfg.MaxStreams, true)
	s.control = s.startPlainServer("control", lns[2], s.controlHandler())
	if cfg.Hostname != "" {
		for _, sv := range []*server{s.fcm, s.apns, s.control} {
			_, port, _ := net.SplitHostPort(sv.addr)
			sv.addr = net.JoinHostPort(cfg.Hostname, port)
		}
	}
	s.log.Info("simulators started",
		slog.String("fcm", s.FCMEndpoint()), slog.String("apns", s.APNsHost()), slog.String("control", s.ControlURL()))
	return s, nil
}

// listen opens the three listeners: all on free ports when the port is 0,
// else on three consecutive ports.
func listen(addr string) ([]net.Listener, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65533 {
		return nil, fmt.Errorf("listen address %q: bad port", addr)
	}
	var lns []net.Listener
	for i := range 3 {
		p := 0
		if port != 0 {
			p = port + i
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("listen: %w", err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// Close stops the servers, aborts requests waiting out their latency, and
// waits for every goroutine the simulator started.
func (s *Sim) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.done)
		// Servers first, so no new request starts; then the handlers that
		// were running, which s.done has told to give up.
		var errs []error
		for _, srv := range []*server{s.control, s.fcm, s.apns} {
			errs = append(errs, srv.close())
		}
		s.handlers.Wait()
		s.closeErr = errors.Join(errs...)
		s.log.Info("simulators stopped")
	})
	return s.closeErr
}

// track wraps a handler so that Close waits for it, and refuses requests
// that arrive while closing.
func (s *Sim) track(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			http.Error(w, "simulator closing", http.StatusServiceUnavailable)
			return
		}
		s.handlers.Add(1)
		s.mu.Unlock()
		defer s.handlers.Done()
		h(w, r)
	})
}

// FCMEndpoint is the FCM API base URL, what firebase's option.WithEndpoint
// takes: https://127.0.0.1:PORT/v1.
func (s *Sim) FCMEndpoint() string { return "https://" + s.fcm.addr + "/v1" }

// TokenURL is the OAuth2 token endpoint the service account's token_uri
// names.
func (s *Sim) TokenURL() string { return "https://" + s.fcm.addr + "/token" }

// APNsHost is the APNs base URL, for apns2's Client.Host.
func (s *Sim) APNsHost() string { return "https://" + s.apns.addr }

// ControlURL is the control server's base URL (paths under /sim/).
func (s *Sim) ControlURL() string { return "http://" + s.control.addr }

// CAPEM returns the certificate authority that signed the servers'
// certificates, PEM-encoded.
func (s *Sim) CAPEM() []byte { return append([]byte(nil), s.creds.caPEM...) }

// CertPool returns a pool holding the simulator's certificate authority.
func (s *Sim) CertPool() *x509.CertPool { return s.creds.pool.Clone() }

// APNsKeyPEM returns the APNs signing key as a .p8 file holds it: PKCS#8,
// PEM-encoded.
func (s *Sim) APNsKeyPEM() []byte { return append([]byte(nil), s.creds.apnsKeyPEM...) }

// ProjectID is the Firebase project the simulator serves.
func (s *Sim) ProjectID() string { return s.cfg.ProjectID }

// Topic is the APNs topic (bundle id) the simulator accepts.
func (s *Sim) Topic() string { return s.cfg.Topic }

// TeamID is the APNs team id provider tokens must name.
func (s *Sim) TeamID() string { return s.cfg.TeamID }

// KeyID is the APNs key id provider tokens must name.
func (s *Sim) KeyID() string { return s.cfg.KeyID }

// SetFaults replaces the fault plan; requests already decided keep the old
// one. The error-rate generator restarts from the new plan's seed.
func (s *Sim) SetFaults(f Faults) error {
	plan, err := newFaultPlan(f)
	if err != nil {
		return err
	}
	s.faults.Store(plan)
	return nil
}

// Faults returns the current fault plan.
func (s *Sim) Faults() Faults { return s.faults.Load().Faults }

// QuotaOutage returns the window of the current plan's FCM quota outage
// (Faults.QuotaOutage) on the simulator's clock: zero times until its
// first message request opened it.
func (s *Sim) QuotaOutage() (start, end time.Time) { return s.faults.Load().outageWindow() }

func (s *Sim) books() []*book { return []*book{s.fcmBook, s.apnsBook} }

func (s *Sim) bookOf(p providers.Platform) (*book, error) {
	switch p {
	case providers.FCM:
		return s.fcmBook, nil
	case providers.APNs:
		return s.apnsBook, nil
	}
	return nil, fmt.Errorf("sim: unknown platform %q", p)
}

// AddDevice registers a phone, online. Registering a known token again
// changes nothing.
func (s *Sim) AddDevice(platform providers.Platform, token string) error {
	b, err := s.bookOf(platform)
	if err != nil {
		return err
	}
	s.register(b, token)
	return nil
}

// NewDevices creates n phones with realistic tokens, about androidShare
// of them FCM and the rest APNs, in an order and with tokens determined
// by seed, and returns them.
func (s *Sim) NewDevices(n int, androidShare float64, seed int64) []Device {
	androidShare = min(max(androidShare, 0), 1)
	nFCM := int(float64(n)*androidShare + 0.5)
	s.fcmBook.reserve(nFCM)
	s.apnsBook.reserve(n - nFCM)
	s.orderMu.Lock()
	s.order = slices.Grow(s.order, n)
	s.orderMu.Unlock()
	r := newRand(seed)
	out := make([]Device, 0, n)
	for i := range n {
		// Interleave the platforms evenly rather than in two blocks, so
		// any prefix of the list has about the same share.
		isFCM := int(float64(i+1)*androidShare+0.5) > int(float64(i)*androidShare+0.5)
		for {
			var d Device
			if isFCM {
				d = Device{providers.FCM, newFCMToken(r)}
			} else {
				d = Device{providers.APNs, newAPNsToken(r)}
			}
			b, _ := s.bookOf(d.Platform)
			if s.register(b, d.Token) {
				out = append(out, d)
				break
			}
		}
	}
	return out
}

// Devices returns every registered phone in registration order.
func (s *Sim) Devices() []Device {
	s.orderMu.Lock()
	defer s.orderMu.Unlock()
	return slices.Clone(s.order)
}

// SetOnline brings a phone online or offline and reports whether the
// token is known. Coming online delivers what its provider held.
func (s *Sim) SetOnline(token string, online bool) bool {
	for _, b := range s.books() {
		if s.setOnline(b, token, online) {
			return true
		}
	}
	return false
}

// Device returns a snapshot of one phone.
func (s *Sim) Device(token string) (DeviceView, bool) {
	for _, b := range s.books() {
		if v, ok := s.view(b, token); ok {
			return v, true
		}
	}
	return DeviceView{}, false
}

// Showing reports which phones currently show a notification under
// collapseID, grouped by title and body, most common first.
func (s *Sim) Showing(collapseID string) []Shown { return s.showing(collapseID) }

// Deliveries returns the deliveries for which keep returns true (all when
// keep is nil), oldest first.
func (s *Sim) Deliveries(keep func(Delivery) bool) []Delivery {
	all := s.dlog.list(func(*logEntry) bool { return true })
	if keep == nil {
		return all
	}
	out := all[:0]
	for _, d := range all {
		if keep(d) {
			out = append(out, d)
		}
	}
	return out
}

// DeliveriesAfter counts deliveries strictly after t; with a non-empty
// collapseID, only those with that explicit collapse identity.
func (s *Sim) DeliveriesAfter(t time.Time, collapseID string) int {
	return s.dlog.countAfter(t, collapseID)
}

// Reset forgets every delivery, screen, held message and counter, and what
// every phone's app remembered, and brings every phone online. Registered
// phones, issued credentials, the fault plan and the installed app stay.
func (s *Sim) Reset() {
	for _, b := range s.books() {
		b.reset()
	}
	s.dlog.reset()
	s.contents.Store(new(sync.Map))
	s.fcmCache.reset()
	s.apnsCache.reset()
	for p := range s.stats.requests {
		for c := range s.stats.requests[p] {
			s.stats.requests[p][c].Store(0)
		}
	}
	for _, c := range []*atomic.Int64{
		&s.stats.deliveries, &s.stats.phonesReached, &s.stats.rawDuplicates, &s.stats.cancelled,
		&s.stats.pending, &s.stats.replacedPending, &s.stats.expired, &s.stats.recalled,
		&s.stats.dropped, &s.stats.goaways, &s.stats.refused, &s.stats.oauthTokens,
		&s.seq[0], &s.seq[1],
	} {
		c.Store(0)
	}
	s.quota.reset()
	s.refusals.reset()
}

// Stats is a snapshot of the simulators' counters.
type Stats struct {
	// Phones is the number of registered phones per platform.
	Phones map[providers.Platform]int64 `json:"phones"`
	// Requests counts provider requests by platform and HTTP status.
	Requests map[providers.Platform]map[int]int64 `json:"requests"`
	// InFlight is the number of provider requests being handled now.
	InFlight map[providers.Platform]int64 `json:"in_flight"`
	// Connections counts TCP connections accepted per platform since start.
	Connections map[providers.Platform]int64 `json:"connections"`
	// Deliveries counts messages that reached a phone, silent ones
	// included.
	Deliveries int64 `json:"deliveries"`
	// PhonesReached counts phones with at least one delivery.
	PhonesReached int64 `json:"phones_reached"`
	// RawDuplicates counts deliveries of a message identity a phone had
	// already received.
	RawDuplicates int64 `json:"raw_duplicates"`
	// CancelledRequests counts requests whose client gave up before the
	// provider answered; they were not delivered.
	CancelledRequests int64 `json:"cancelled_requests"`
	// Pending is how many messages providers hold for offline phones now.
	Pending int64 `json:"pending"`
	// ReplacedPending counts held messages replaced by a newer one with the
	// same collapse identity.
	ReplacedPending int64 `json:"replaced_pending"`
	// Expired counts held messages dropped because they expired, or were
	// "now or never" for an offline phone.
	Expired int64 `json:"expired"`
	// Recalled counts notifications removed from screens by recalls.
	Recalled int64 `json:"recalled"`
	// Refusals counts, by appsig refusal code, the deliveries the app
	// (see SetApp) refused to act on; empty while no app is installed.
	Refusals map[string]int64 `json:"refusals"`
	// DroppedConnections, GoAways and RefusedStreams count connections
	// closed by DropEvery or a drop outcome, graceful shutdowns started by
	// GoAwayEvery, and HTTP/2 streams refused over the APNs stream limit.
	DroppedConnections int64 `json:"dropped_connections"`
	GoAways            int64 `json:"goaways"`
	RefusedStreams     int64 `json:"refused_streams"`
	// OAuthTokens counts FCM access tokens issued.
	OAuthTokens int64 `json:"oauth_tokens"`
}

// Stats returns the counters.
func (s *Sim) Stats() Stats {
	st := Stats{
		Phones: map[providers.Platform]int64{
			providers.FCM: s.fcmBook.count.Load(), providers.APNs: s.apnsBook.count.Load(),
		},
		Requests: map[providers.Platform]map[int]int64{providers.FCM: {}, providers.APNs: {}},
		InFlight: map[providers.Platform]int64{
			providers.FCM: s.stats.inflight[idxFCM].Load(), providers.APNs: s.stats.inflight[idxAPNs].Load(),
		},
		Connections: map[providers.Platform]int64{
			providers.FCM: s.fcm.accepted.Load(), providers.APNs: s.apns.accepted.Load(),
		},
		Deliveries:         s.stats.deliveries.Load(),
		PhonesReached:      s.stats.phonesReached.Load(),
		RawDuplicates:      s.stats.rawDuplicates.Load(),
		CancelledRequests:  s.stats.cancelled.Load(),
		Pending:            s.stats.pending.Load(),
		ReplacedPending:    s.stats.replacedPending.Load(),
		Expired:            s.stats.expired.Load(),
		Recalled:           s.stats.recalled.Load(),
		Refusals:           s.refusals.snapshot(),
		DroppedConnections: s.stats.dropped.Load(),
		GoAways:            s.stats.goaways.Load(),
		RefusedStreams:     s.stats.refused.Load(),
		OAuthTokens:        s.stats.oauthTokens.Load(),
	}
	for i, p := range []providers.Platform{providers.FCM, providers.APNs} {
		for code := range s.stats.requests[i] {
			if n := s.stats.requests[i][code].Load(); n > 0 {
				st.Requests[p][code] = n
			}
		}
	}
	return st
}

// waitLatency holds a request for the fault plan's latency and reports
// whether its client is still waiting for the answer.
func (s *Sim) waitLatency(ctx context.Context, plan *faultPlan) bool {
	if d := plan.latency(); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-s.done:
			return false
		}
	}
	if ctx.Err() != nil {
		s.stats.cancelled.Add(1)
		return false
	}
	return true
}

// decide settles the fate of a request for token once it passed
// authentication and validation (see Faults for the order).
func (s *Sim) decide(b *book, plan *faultPlan, token string, wellFormed func(string) bool) Outcome {
	o, matched := plan.prefixOutcome(token)
	if matched && o != OutcomeDeliver {
		return o
	}
	n, ok := b.touch(token)
	if !ok {
		switch {
		case matched:
			// An auto- prefix: the phone appears on first use.
		case !wellFormed(token):
			return OutcomeBadToken
		case plan.UnknownToken != OutcomeDeliver:
			return plan.UnknownToken
		}
		s.register(b, token)
		n, _ = b.touch(token)
	}
	if int(n) <= plan.FailFirst {
		return plan.FailOutcome
	}
	if plan.randomError() {
		return plan.ErrorOutcome
	}
	return OutcomeDeliver
}

// connAction applies DropEvery and GoAwayEvery to the seq-th request of a
// simulator. It reports whether the request was dropped; goaway tells
// the handler to close the connection gracefully after answering.
func (s *Sim) connAction(w http.ResponseWriter, r *http.Request, plan *faultPlan, platform int) (dropped bool) {
	n := s.seq[platform].Add(1)
	if plan.DropEvery > 0 && n%int64(plan.DropEvery) == 0 {
		s.drop(r)
		return true
	}
	if plan.GoAwayEvery > 0 && n%int64(plan.GoAwayEvery) == 0 {
		// x/net/http2 (and net/http for HTTP/1.1) turn "Connection:
		// close" on a response into a graceful shutdown of the
		// connection: GOAWAY, then close once in-flight streams finish.
		w.Header().Set("Connection", "close")
		s.stats.goaways.Add(1)
	}
	return false
}

// drop closes the TCP connection under r without answering. Requests the
// server had already read from it are not answered either.
func (s *Sim) drop(r *http.Request) {
	if ci := connInfoFrom(r.Context()); ci != nil && ci.dropped.CompareAndSwap(false, true) {
		ci.tls.NetConn().Close()
		s.stats.dropped.Add(1)
	}
}

// quota is FCM's project-wide message quota over fixed minutes.
type quota struct {
	mu     sync.Mutex
	minute int64
	used   int
}

// take counts one message and reports whether it is within limit; when it
// is not, retryAfter is the number of seconds left in the minute.
func (q *quota) take(now time.Time, limit int) (ok bool, retryAfter int) {
	if limit < 0 {
		return true, 0
	}
	m := now.Unix() / 60
	q.mu.Lock()
	defer q.mu.Unlock()
	if m != q.minute {
		q.minute, q.used = m, 0
	}
	if q.used >= limit {
		return false, int(60 - now.Unix()%60)
	}
	q.used++
	return true, 0
}

func (q *quota) reset() {
	q.mu.Lock()
	q.minute, q.used = 0, 0
	q.mu.Unlock()
}
