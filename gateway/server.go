package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/queue"
	"github.com/pushgate/pushgate/signing"
)

// MaxBodyBytes is the largest request body the API reads; a larger
// declared Content-Length is refused with 413 before the signature is
// checked, a longer chunked body as soon as it passes the limit.
const MaxBodyBytes = 1 << 20

// DefaultBodyReads and DefaultBodyReadTimeout are Config.BodyReads' and
// Config.BodyReadTimeout's defaults.
const (
	DefaultBodyReads       = 16
	DefaultBodyReadTimeout = 15 * time.Second
)

// MaxImportBytes is the body limit of POST /v1/devices/import, the one
// route allowed more than MaxBodyBytes: 10,000 FCM registration tokens of
// about 160 characters do not fit in 1 MiB.
const MaxImportBytes = 4 << 20

// Config is what a Server is built from.
type Config struct {
	// Service does what the API is asked. Required.
	Service *queue.Service
	// Verifier checks every /v1 request's signature. Required; its
	// replay guard and revocations should be the Redis-backed ones so that
	// every gateway process agrees.
	Verifier *signing.Verifier
	// Logger receives one line per request; nil discards.
	Logger *slog.Logger
	// Metrics is where the gateway registers its metrics; nil means a
	// private registry. Never the global default registry.
	Metrics prometheus.Registerer
	// Gatherer is what GET /metrics serves; nil means Metrics, when it is
	// also a Gatherer (a *prometheus.Registry is).
	Gatherer prometheus.Gatherer
	// Now is the clock for request timings; nil means time.Now.
	Now func() time.Time
	// OmitMetrics leaves GET /metrics out of the Handler, which then
	// answers it 404: the process serves its metrics on a listener of
	// their own (metrics_listen).
	OmitMetrics bool
	// BodyReads bounds the request bodies read at once, and so the
	// memory they hold (at most BodyReads times MaxImportBytes); a body
	// is read only once its signature verified over the header fields,
	// and waits for a free read otherwise. Zero means DefaultBodyReads.
	BodyReads int
	// BodyReadTimeout bounds how long a body may take to arrive, its
	// wait for one of the BodyReads included; a body still arriving then
	// is refused (408 body_timeout). Keep it below the HTTP server's
	// ReadTimeout, which it replaces for the body. Zero means
	// DefaultBodyReadTimeout.
	BodyReadTimeout time.Duration
}

// Server is the HTTP API. Its Handler is safe for concurrent use.
type Server struct {
	svc      *queue.Service
	verifier *signing.Verifier
	logger   *slog.Logger
	metrics  *metrics
	gatherer prometheus.Gatherer
	maxTTL   time.Duration
	now      func() time.Time
	mux      *http.ServeMux
	// patterns are the routes registered on mux, in order (Routes).
	patterns []string
	// bodySlots holds a token per body being read (Config.BodyReads).
	bodySlots   chan struct{}
	bodyTimeout time.Duration
}

// New builds a Server and registers its metrics.
func New(cfg Config) (*Server, error) {
	if cfg.Service == nil || cfg.Verifier == nil {
		return nil, errors.New("gateway: Service and Verifier are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.BodyReads <= 0 {
		cfg.BodyReads = DefaultBodyReads
	}
	if cfg.BodyReadTimeout <= 0 {
		cfg.BodyReadTimeout = DefaultBodyReadTimeout
	}
	if cfg.Metrics == nil {
		reg := prometheus.NewRegistry()
		cfg.Metrics = reg
		if cfg.Gatherer == nil {
			cfg.Gatherer = reg
		}
	}
	if cfg.Gatherer == nil {
		g, ok := cfg.Metrics.(prometheus.Gatherer)
		if !ok {
			return nil, errors.New("gateway: Gatherer is required when Metrics is not a Gatherer")
		}
		cfg.Gatherer = g
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	s := &Server{
		svc:      cfg.Service,
		verifier: cfg.Verifier,
		logger:   cfg.Logger,
		metrics:  m,
		gatherer: cfg.Gatherer,
		maxTTL:   cfg.Service.MaxTTL(),
		now:      cfg.Now,
		mux:      http.NewServeMux(),

		bodySlots:   make(chan struct{}, cfg.BodyReads),
		bodyTimeout: cfg.BodyReadTimeout,
	}
	s.routes(cfg.OmitMetrics)
	return s, nil
}

// routes registers every route with the role it requires; "" is any valid
// key. The Service makes its own finer checks (cancel: the submitting key
// or an admin; broadcast: topics and audience cap; reading a broadcast:
// the submitting key, an admin or an approver). GET /metrics is left out
// when omitMetrics.
func (s *Server) routes(omitMetrics bool) {
	handle := func(pattern string, h http.Handler) {
		s.mux.Handle(pattern, h)
		s.patterns = append(s.patterns, pattern)
	}
	signed := func(pattern string, h http.HandlerFunc, roles ...signing.Role) {
		handle(pattern, s.signed(roles, MaxBodyBytes, h))
	}
	signed("POST /v1/broadcasts", s.submitBroadcast, signing.RoleBroadcast)
	signed("GET /v1/broadcasts", s.listBroadcasts)
	signed("GET /v1/broadcasts/{id}", s.getBroadcast)
	signed("POST /v1/broadcasts/{id}/cancel", s.cancelBroadcast)
	signed("POST /v1/broadcasts/{id}/recall", s.recallBroadcast, signing.RoleAdmin)
	signed("POST /v1/broadcasts/{id}/approvals", s.approveBroadcast, signing.RoleApprove)
	signed("GET /v1/approvals", s.listApprovals, signing.RoleApprove, signing.RoleAdmin)
	signed("POST /v1/actions/{id}/approvals", s.approveAction, signing.RoleAdmin, signing.RoleApprove)

	signed("POST /v1/kill", s.kill, signing.RoleAdmin)
	signed("GET /v1/kill", s.listKills, signing.RoleAdmin)
	signed("POST /v1/resume", s.resume, signing.RoleAdmin)
	signed("GET /v1/keys", s.listKeys, signing.RoleAdmin)
	signed("POST /v1/keys/{id}/revoke", s.revokeKey, signing.RoleAdmin)
	signed("GET /v1/audit", s.listAudit, signing.RoleAdmin)

	signed("PUT /v1/devices/{platform}/{token}", s.putDevice, signing.RoleRegister)
	signed("DELETE /v1/devices/{platform}/{token}", s.deleteDevice, signing.RoleRegister)
	handle("POST /v1/devices/import", s.signed([]signing.Role{signing.RoleRegister}, MaxImportBytes, s.importDevices))

	handle("GET "+api.PathHealthz, http.HandlerFunc(s.healthz))
	handle("GET "+api.PathReadyz, http.HandlerFunc(s.readyz))
	if !omitMetrics {
		handle("GET "+api.PathMetrics, promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}))
	}
}

// Routes returns the pattern of every route the Handler serves, as
// ServeMux spells it ("POST /v1/broadcasts"), in the order registered.
// Tests check it against api/openapi.yaml.
func (s *Server) Routes() []string { return slices.Clone(s.patterns) }

// Handler returns the API's handler: every route, with problem documents
// for unknown routes and methods, request metrics and request logs.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// NewHTTPServer returns an http.Server for h on addr with timeouts that
// bound slow clients. WriteTimeout leaves room for a kill that waits for
// every worker's acknowledgement.
func NewHTTPServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}

// requestInfo collects what the request log reports, filled in by the
// middleware and handlers as they learn it.
type requestInfo struct {
	keyID       string
	broadcastID string
	// problem is the code of the problem the request was answered with.
	problem string
}

type infoKey struct{}

// infoFrom returns the request's log fields; it is never nil inside
// Handler.
func infoFrom(ctx context.Context) *requestInfo {
	if ri, ok := ctx.Value(infoKey{}).(*requestInfo); ok {
		return ri
	}
	return &requestInfo{}
}

// unmatchedRoute labels requests no route took, to bound label values.
const unmatchedRoute = "unmatched"

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	info := &requestInfo{}
	r = r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
	rw := &statusWriter{ResponseWriter: w}

	h, route := s.mux.Handler(r)
	err := canonical(r, route)
	if route == "" {
		route = unmatchedRoute
	}
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.logger.Error("handler panicked", "route", route, "key_id", info.keyID, "panic", fmt.Sprint(v))
			if !rw.wroteHeader {
				writeProblem(rw, api.NewProblem(api.CodeInternal, ""))
			}
		}
		s.observe(r, route, rw.status(), s.now().Sub(start), info)
	}()

	if err != nil {
		s.fail(rw, r, err)
		return
	}
	if route == unmatchedRoute {
		s.unmatched(rw, r, h)
		return
	}
	s.mux.ServeHTTP(rw, r)
}

// unmatched answers a request no route takes: ServeMux's own handler
// decides between 404 and 405 (and the Allow header), and the answer is
// rewritten as a problem.
func (s *Server) unmatched(w http.ResponseWriter, r *http.Request, h http.Handler) {
	probe := &probeWriter{header: http.Header{}}
	h.ServeHTTP(probe, r)
	info := infoFrom(r.Context())
	if probe.status == http.StatusMethodNotAllowed {
		if allow := probe.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		info.problem = api.CodeMethodNotAllowed
		writeProblem(w, api.NewProblem(api.CodeMethodNotAllowed, r.Method+" is not allowed here"))
		return
	}
	info.problem = api.CodeNotFound
	writeProblem(w, api.NewProblem(api.CodeNotFound, "no such route"))
}

// observe records a finished request in the metrics and the log. It logs
// the route pattern, never the path, which may hold a device token.
func (s *Server) observe(r *http.Request, route string, status int, took time.Duration, info *requestInfo) {
	s.metrics.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	s.metrics.duration.WithLabelValues(route).Observe(took.Seconds())
	attrs := []slog.Attr{
		slog.String("route", route),
		slog.Int("status", status),
		slog.Duration("took", took),
	}
	if info.keyID != "" {
		attrs = append(attrs, slog.String("key_id", info.keyID))
	}
	if info.broadcastID != "" {
		attrs = append(attrs, slog.String("broadcast_id", info.broadcastID))
	}
	// A request that succeeded is an access line, at debug; a refused one
	// is worth an operator's eye, with the problem it got.
	level := slog.LevelDebug
	if status >= 400 {
		level = slog.LevelInfo
		if info.problem != "" {
			attrs = append(attrs, slog.String("problem", info.problem))
		}
	}
	s.logger.LogAttrs(r.Context(), level, "request", attrs...)
}

// fail answers with the problem for err, logging errors that are not the
// client's doing.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	p, internal := api.ProblemOf(err)
	infoFrom(r.Context()).problem = p.Code
	var e *api.Error
	if errors.As(err, &e) && e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	if internal {
		info := infoFrom(r.Context())
		s.logger.Error("request failed", "route", r.Pattern, "key_id", info.keyID,
			"broadcast_id", info.broadcastID, "err", err)
	}
	writeProblem(w, p)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.svc.Ping(r.Context()); err != nil {
		s.fail(w, r, fmt.Errorf("readiness: %w", err))
		return
	}
	var lost *queue.DataLostError
	if errors.As(s.svc.DataLost(), &lost) {
		s.fail(w, r, api.Errorf(api.CodeRedisDataLost, "Redis lost data: %s; pushgate redis status says more", lost.Reason()))
		return
	}
	if err := s.svc.Control().Err(); err != nil {
		s.fail(w, r, api.Errorf(api.CodeControlLogInconsistent, "the control log failed its checks: %v", err))
		return
	}
	if !s.svc.Control().Fresh() {
		s.fail(w, r, api.Errorf(api.CodeControlLogUnavailable, "this process's view of the control log is stale: is an integrator running?"))
		return
	}
	// A provider refusing the deployment's credential leaves the API
	// ready: it still takes kills and recalls. It says so.
	health, err := s.svc.ProviderHealth(r.Context())
	if err != nil {
		s.fail(w, r, fmt.Errorf("readiness: %w", err))
		return
	}
	body := readyBody{Status: "ready"}
	for p, h := range health {
		if body.ProviderDegraded == nil {
			body.ProviderDegraded = map[api.Platform]string{}
		}
		body.ProviderDegraded[p] = h.Reason
	}
	writeJSON(w, http.StatusOK, body)
}

// readyBody is the answer of a ready API process.
type readyBody struct {
	Status string `json:"status"`
	// ProviderDegraded names the providers some worker reported refusing
	// the deployment's credential, with the reason (docs/ARCHITECTURE.md,
	// "Provider health").
	ProviderDegraded map[api.Platform]string `json:"provider_degraded,omitempty"`
}

// statusWriter remembers the status a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if !w.wroteHeader {
		return http.StatusOK
	}
	return w.code
}

// probeWriter captures ServeMux's plain-text answer to an unmatched
// request, which is then discarded.
type probeWriter struct {
	header http.Header
	status int
}

func (p *probeWriter) Header() http.Header { return p.header }

func (p *probeWriter) WriteHeader(code int) {
	if p.status == 0 {
		p.status = code
	}
}

func (p *probeWriter) Write(b []byte) (int, error) {
	p.WriteHeader(http.StatusOK)
	return len(b), nil
}

// metrics are the gateway's Prometheus metrics.
type metrics struct {
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	rejections *prometheus.CounterVec
	bodyReads  *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushgate_http_requests_total",
			Help: "HTTP requests answered, by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pushgate_http_request_duration_seconds",
			Help:    "Time to answer HTTP requests, by route pattern.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushgate_signature_rejections_total",
			Help: "Requests refused at the signature check, by code (the signing codes, and forbidden for a key whose role does not permit the route).",
		}, []string{"code"}),
		bodyReads: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushgate_http_body_reads",
			Help: "Request bodies being read (state reading, at most limits.body_reads) and waiting for a read (state waiting), after their signature verified.",
		}, []string{"state"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.rejections, m.bodyReads} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("gateway: register metrics: %w", err)
		}
	}
	return m, nil
}
