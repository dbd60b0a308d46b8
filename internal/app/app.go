// Package app wires one pushgate process from its configuration: the
// Redis client, the keyring (reloaded on SIGHUP), the signature verifier,
// the metrics registry, the HTTP API and the worker pool, and runs them
// until its context ends, then shuts them down in order. The commands
// serve, api and worker, the local stack of the demo and the tests, and
// the benchmark's child processes all run a process through it, so that
// they run the same wiring an operator does.
//
// Configuration is one table of settings (config.go) read from a YAML file
// and PUSHGATE_* variables, with *_FILE variants for secrets.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"golang.org/x/mod/sumdb/note"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/gateway"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/queue"
	"github.com/pushgate/pushgate/signing"
)

// Roles says which parts a process runs.
type Roles struct {
	API    bool
	Worker bool
}

// ConfigError is a configuration a process cannot start with: a missing
// or malformed setting, or a keyring, credential or key file it cannot
// read. Commands report it as a usage error.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

func configErrorf(format string, args ...any) error {
	return &ConfigError{fmt.Errorf(format, args...)}
}

// NewLogger returns the process's logger on w, in the configured format and
// level.
func NewLogger(w io.Writer, cfg *Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// keyringHolder serves the current keyring and swaps in a new one on
// reload, so SIGHUP changes keys without a restart.
type keyringHolder struct {
	path string
	ring atomic.Pointer[signing.Keyring]
}

var (
	_ signing.KeyLookup = (*keyringHolder)(nil)
	_ queue.KeyLister   = (*keyringHolder)(nil) // GET /v1/keys lists it
)

func loadKeyringHolder(path string) (*keyringHolder, error) {
	h := &keyringHolder{path: path}
	if err := h.reload(); err != nil {
		return nil, err
	}
	return h, nil
}

// Lookup implements signing.KeyLookup.
func (h *keyringHolder) Lookup(id string) (*signing.Key, bool) { return h.ring.Load().Lookup(id) }

// Keys returns the current keyring's keys in file order, for GET /v1/keys.
func (h *keyringHolder) Keys() []*signing.Key { return h.ring.Load().Keys() }

func (h *keyringHolder) reload() error {
	kr, err := signing.LoadKeyring(h.path)
	if err != nil {
		return err
	}
	h.ring.Store(kr)
	return nil
}

// App is one gateway process: the API, a worker pool, or both, sharing a
// Redis client, a keyring, a verifier and a metrics registry.
type App struct {
	cfg     *Config
	logger  *slog.Logger
	roles   Roles
	rdb     *redis.Client
	keyring *keyringHolder
	reg     *prometheus.Registry
	control *queue.Control
	svc     *queue.Service
	worker  *queue.Worker
	closers []func()
	api     *http.Server
	metrics *http.Server
	// apiListener, when set, is used instead of listening on cfg.Listen.
	apiListener net.Listener
	// metricsListener, when set, is used instead of listening on
	// cfg.MetricsListen.
	metricsListener net.Listener

	// deployment follows the deployment marker (docs/ARCHITECTURE.md,
	// "Redis data loss").
	deployment *queue.Deployment
	// depth keeps the queue sizes /metrics serves, read in the
	// background.
	depth *queue.QueueDepth
}

// queueDepthEvery is how often the queue sizes of /metrics are read.
const queueDepthEvery = 5 * time.Second

// New builds a process from its configuration and checks that Redis
// answers. Nothing listens or runs until Run. A *ConfigError reports a
// configuration it cannot start with.
func New(ctx context.Context, cfg *Config, logger *slog.Logger, r Roles) (*App, error) {
	if cfg.KeyringFile == "" {
		return nil, configErrorf("config: keyring_file: required")
	}
	if r.API && cfg.MetricsListen != "" && cfg.MetricsListen == cfg.Listen {
		return nil, configErrorf("config: metrics_listen: %s is also listen's address; leave metrics_listen empty to serve /metrics there", cfg.MetricsListen)
	}
	kr, err := loadKeyringHolder(cfg.KeyringFile)
	if err != nil {
		return nil, configErrorf("config: keyring_file: %w", err)
	}
	opts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, configErrorf("config: redis_url: %w", err)
	}
	a := &App{cfg: cfg, logger: logger, roles: r, keyring: kr, reg: prometheus.NewRegistry(), rdb: redis.NewClient(opts)}
	a.closers = append(a.closers, func() { a.rdb.Close() })
	ok := false
	defer func() {
		if !ok {
			a.Close()
		}
	}()
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.rdb.Ping(pingCtx).Err(); err != nil {
		return nil, fmt.Errorf("redis %s: %w", RedactURL(cfg.RedisURL), err)
	}
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := checkPersistence(ctx, a.rdb, cfg.Redis.PersistenceCheck, logger); err != nil {
		return nil, err
	}

	keys := queue.NewKeys(cfg.KeyPrefix)
	if a.deployment, err = queue.NewDeployment(queue.DeploymentConfig{Redis: a.rdb, Keys: keys, StateDir: cfg.Control.StateDir,
		CheckInterval: cfg.Redis.LossCheckInterval, Logger: logger, Registerer: a.reg}); err != nil {
		return nil, err
	}
	metrics := queue.NewMetrics(a.reg)
	if a.control, err = newControl(cfg, r.API, a.rdb, keys, kr, metrics, logger); err != nil {
		return nil, err
	}
	if r.API && cfg.Control.LogKey == "" {
		logger.Warn("this API process has no control.log_key, so it does not integrate the control log: run another that has it")
	}
	if cfg.authoritiesDerived() {
		logger.Warn("public_authorities is not set and listen is a wildcard address: only requests signed for a local authority are accepted; set public_authorities to the host[:port] clients use",
			"authorities", cfg.Authorities())
	}
	verifier := signing.NewVerifier(signing.VerifierConfig{
		Profile:     cfg.SigningProfile(),
		Keys:        kr,
		Revocations: a.control,
		Replay:      queue.NewReplayGuard(a.rdb, keys),
	})
	qcfg := queue.Config{Redis: a.rdb, Keys: keys, Verifier: verifier, Control: a.control, Policy: cfg.Policy,
		Logger: logger, Metrics: metrics, Deployment: a.deployment}
	a.depth = queue.NewQueueDepth(asynq.NewInspectorFromRedisClient(a.rdb), queueDepthEvery)
	a.reg.MustRegister(a.depth)

	if r.API {
		scfg := qcfg
		if scfg.AppSigning, err = cfg.appSigning(false); err != nil {
			return nil, err
		}
		if a.svc, err = queue.NewService(scfg); err != nil {
			return nil, err
		}
		gw, err := gateway.New(gateway.Config{Service: a.svc, Verifier: verifier, Logger: logger,
			Metrics: a.reg, Gatherer: a.reg, OmitMetrics: cfg.MetricsListen != "",
			BodyReads: cfg.BodyReads, BodyReadTimeout: cfg.BodyReadTimeout})
		if err != nil {
			return nil, err
		}
		a.api = gateway.NewHTTPServer(cfg.Listen, gw.Handler())
		boundHTTP(a.api, cfg.HTTP, logger)
	}
	if r.Worker {
		senders, err := a.newSenders(ctx)
		if err != nil {
			return nil, err
		}
		wcfg := qcfg
		if wcfg.AppSigning, err = cfg.appSigning(true); err != nil {
			return nil, err
		}
		a.worker, err = queue.NewWorker(queue.WorkerConfig{Config: wcfg, Senders: senders,
			Concurrency: cfg.WorkerConcurrency, TaskCheckInterval: cfg.TaskCheck, ShutdownTimeout: cfg.ShutdownTimeout,
			ReapMargin: cfg.ReapMargin})
		if err != nil {
			return nil, err
		}
	}
	if cfg.MetricsListen != "" {
		mux := http.NewServeMux()
		mux.Handle("GET "+api.PathMetrics, promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
		a.addProbes(mux)
		a.metrics = &http.Server{Addr: cfg.MetricsListen, Handler: mux}
		boundHTTP(a.metrics, cfg.HTTP, logger)
		// A scrape waits for nothing, so here a write deadline costs
		// nothing and bounds a client that reads slowly.
		a.metrics.WriteTimeout = metricsWriteTimeout
	}
	ok = true
	return a, nil
}

// metricsWriteTimeout bounds how long answering one scrape may take on the
// metrics listener.
const metricsWriteTimeout = 30 * time.Second

// boundHTTP applies the http.* settings to srv and sends its error log
// through logger. It clears WriteTimeout: a write deadline set when a
// request's headers are read would cut a kill that waits for every
// worker's acknowledgement, and the answers are small enough for the
// socket's buffer. How long a body may take to arrive
// (ReadTimeout, or the gateway's per-request deadline) is the gateway's.
func boundHTTP(srv *http.Server, c HTTPConfig, logger *slog.Logger) {
	// net/http's own complaints (a failed accept, a bad TLS handshake)
	// go where the rest of the process's log goes, not to the standard
	// logger.
	srv.ErrorLog = slog.NewLogLogger(logger.With("component", "http").Handler(), slog.LevelWarn)
	srv.ReadHeaderTimeout = c.ReadHeaderTimeout
	srv.IdleTimeout = c.IdleTimeout
	srv.MaxHeaderBytes = c.MaxHeaderBytes
	srv.WriteTimeout = 0
}

// newControl builds the process's view of the control log; an API process
// with the log's private key integrates it.
func newControl(cfg *Config, integrate bool, rdb redis.UniversalClient, keys queue.Keys, kr signing.KeyLookup, m *queue.Metrics, logger *slog.Logger) (*queue.Control, error) {
	v, err := note.NewVerifier(cfg.Control.LogPublicKey)
	if err != nil {
		return nil, configErrorf("config: control.log_public_key: %w", err)
	}
	cc := queue.ControlConfig{Redis: rdb, Keys: keys, Keyring: kr, Profile: cfg.SigningProfile(), Policy: cfg.Policy,
		LogKey: v, StateDir: cfg.Control.StateDir, MirrorFile: cfg.Control.MirrorFile, MaxStaleness: cfg.Control.MaxStaleness,
		Metrics: m, Logger: logger}
	if integrate && cfg.Control.LogKey != "" {
		if cc.Signer, err = note.NewSigner(cfg.Control.LogKey); err != nil {
			return nil, configErrorf("config: control.log_key: %w", err)
		}
	}
	c, err := queue.NewControl(cc)
	if err != nil {
		return nil, configErrorf("config: control: %w", err)
	}
	return c, nil
}

// Control is the process's view of the control log.
func (a *App) Control() *queue.Control { return a.control }

// Deployment follows the deployment marker: its Err says whether this
// process finds that Redis lost data.
func (a *App) Deployment() *queue.Deployment { return a.deployment }

// ServeOn makes the API serve on ln instead of listening on the
// configured address: the local stack and tests pass a listener on port 0.
// Call it before Run.
func (a *App) ServeOn(ln net.Listener) { a.apiListener = ln }

// WrapAPI wraps the API's handler in wrap; it does nothing when the
// process runs no API. Tests check every exchange against the API's
// contract with it (docs/ARCHITECTURE.md, "The API contract:
// api/openapi.yaml"). Call it before Run.
func (a *App) WrapAPI(wrap func(http.Handler) http.Handler) {
	if a.api != nil {
		a.api.Handler = wrap(a.api.Handler)
	}
}

// ServeMetricsOn makes /metrics serve on ln instead of listening on
// metrics_listen; it does nothing when metrics_listen is empty, where the
// API's listener serves /metrics. Tests pass a listener on port 0. Call it
// before Run.
func (a *App) ServeMetricsOn(ln net.Listener) { a.metricsListener = ln }

// Service is the API side of the pipeline; nil when the process runs no
// API.
func (a *App) Service() *queue.Service { return a.svc }

// newSenders builds the provider senders the configuration enables.
func (a *App) newSenders(ctx context.Context) (map[providers.Platform]queue.Sender, error) {
	cfg := a.cfg
	out := map[providers.Platform]queue.Sender{}
	if cfg.FCM.ProjectID != "" {
		s, err := providers.NewFCMSender(ctx, providers.FCMConfig{
			CredentialsFile: cfg.FCM.CredentialsFile, ProjectID: cfg.FCM.ProjectID, Endpoint: cfg.FCM.Endpoint,
			CAFile: cfg.FCM.CAFile, Concurrency: cfg.FCM.Concurrency, Logger: a.logger,
		})
		if err != nil {
			return nil, configErrorf("config: fcm: %w", err)
		}
		a.closers = append(a.closers, s.Close)
		out[providers.FCM] = s
	}
	if cfg.APNs.KeyFile != "" {
		tok, err := providers.NewAPNsToken(providers.APNsTokenConfig{KeyFile: cfg.APNs.KeyFile, KeyID: cfg.APNs.KeyID,
			TeamID: cfg.APNs.TeamID, Logger: a.logger})
		if err != nil {
			return nil, configErrorf("config: apns: %w", err)
		}
		s, err := providers.NewAPNsSender(providers.APNsConfig{Token: tok, Topic: cfg.APNs.Topic, Host: cfg.APNs.Host,
			CAFile: cfg.APNs.CAFile, Concurrency: cfg.APNs.Concurrency})
		if err != nil {
			return nil, configErrorf("config: apns: %w", err)
		}
		a.closers = append(a.closers, s.Close)
		out[providers.APNs] = s
	}
	if len(out) == 0 {
		return nil, configErrorf("config: a worker needs fcm.project_id or apns.key_file")
	}
	return out, nil
}

// Run starts the process's parts and blocks until ctx is cancelled, then
// shuts down in order: the HTTP servers stop accepting and finish their
// requests, the worker lets running batches finish, then the senders and
// the Redis client close. SIGHUP reloads the keyring meanwhile.
func (a *App) Run(ctx context.Context) error {
	defer a.Close()
	if err := a.deployment.Start(ctx); err != nil {
		return err
	}
	defer a.deployment.Close()
	if err := a.control.Start(ctx); err != nil {
		return err
	}
	defer a.control.Close()
	if err := a.control.Err(); err != nil {
		a.logger.Error("starting failed closed: the control log in Redis fails its checks; restore it with pushgate log restore", "err", err)
	}
	var wg sync.WaitGroup
	depthCtx, stopDepth := context.WithCancel(context.Background())
	wg.Go(func() { a.depth.Run(depthCtx) })
	defer stopDepth()
	errc := make(chan error, 3)
	serve := func(name string, srv *http.Server, ln net.Listener) {
		wg.Go(func() {
			a.logger.Info("listening", "server", name, "addr", ln.Addr().String())
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s server: %w", name, err)
			}
		})
	}
	for _, s := range []struct {
		name string
		srv  *http.Server
		ln   net.Listener
	}{{"api", a.api, a.apiListener}, {"metrics", a.metrics, a.metricsListener}} {
		if s.srv == nil {
			continue
		}
		ln := s.ln
		if ln == nil {
			var err error
			if ln, err = net.Listen("tcp", s.srv.Addr); err != nil {
				a.shutdownHTTP()
				stopDepth()
				wg.Wait()
				return fmt.Errorf("%s server: %w", s.name, err)
			}
		}
		serve(s.name, s.srv, ln)
	}
	if a.worker != nil {
		if err := a.worker.Start(ctx); err != nil {
			a.shutdownHTTP()
			stopDepth()
			wg.Wait()
			return err
		}
		a.logger.Info("worker started", "worker_id", a.worker.ID())
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-errc:
			runErr = err
			break loop
		case <-hup:
			if err := a.keyring.reload(); err != nil {
				a.logger.Error("keyring reload failed; keeping the previous keyring", "err", err)
			} else {
				a.logger.Info("keyring reloaded", "file", a.keyring.path)
			}
		}
	}
	a.logger.Info("shutting down")
	a.shutdownHTTP()
	stopDepth()
	wg.Wait()
	if a.worker != nil {
		a.worker.Shutdown()
	}
	a.logger.Info("stopped")
	return runErr
}

func (a *App) shutdownHTTP() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, srv := range []*http.Server{a.api, a.metrics} {
		if srv != nil {
			if err := srv.Shutdown(ctx); err != nil {
				a.logger.Warn("http shutdown", "err", err)
			}
		}
	}
}

// Close releases the senders and the Redis client, last first. Run calls
// it when it returns; call it for a process that was built but never run.
func (a *App) Close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	a.closers = nil
}

// RedactURL hides a URL's password for messages.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
