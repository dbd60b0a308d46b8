package app

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"gopkg.in/yaml.v3"

	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/queue"
	"github.com/pushgate/pushgate/signing"
)

// Config is a gateway process's configuration: one YAML file, then
// PUSHGATE_* environment variables, then defaults, in that order of
// precedence from last to first (the environment wins over the file).
type Config struct {
	Listen        string
	MetricsListen string
	RedisURL      string
	KeyringFile   string
	KeyPrefix     string
	LogLevel      slog.Level
	LogFormat     string

	FCM  FCMConfig
	APNs APNsConfig

	WorkerConcurrency int
	TaskCheck         time.Duration
	ShutdownTimeout   time.Duration
	// ReapMargin is worker.reap_margin: how long after a worker's
	// heartbeat ran out another worker resumes its tasks.
	ReapMargin time.Duration

	// Policy holds the limits; its provider rates come from FCMRate and
	// APNsRate.
	Policy            queue.Policy
	FCMRate, APNsRate signing.Rate

	Control ControlConfig
	// AppSigning signs pushes for the app (docs/APP-VERIFICATION.md).
	AppSigning AppSigningConfig

	// Redis holds the checks that Redis keeps pushgate's data.
	Redis RedisChecks

	// PublicAuthorities are public_authorities: the host[:port] values
	// requests may be signed for. Empty means the default Authorities
	// derives from Listen.
	PublicAuthorities []string
	// BodyReads and BodyReadTimeout are limits.body_reads and
	// limits.body_read_timeout (gateway.Config).
	BodyReads       int
	BodyReadTimeout time.Duration

	// HTTP bounds the connections of the API and metrics listeners.
	HTTP HTTPConfig
}

// HTTPConfig bounds what a client may hold of an HTTP listener (the API's
// and metrics_listen's). How long a request's body may take to arrive is
// the gateway's to bound, per request; there is no server-wide write
// deadline, which would cut a kill that waits for every worker.
type HTTPConfig struct {
	// ReadHeaderTimeout is how long a client has to send a request's
	// headers.
	ReadHeaderTimeout time.Duration
	// IdleTimeout is how long a kept-alive connection may wait for its
	// next request.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request's headers (request line included).
	MaxHeaderBytes int
}

// Authorities returns the authorities this deployment answers to:
// public_authorities, or else the listen address. A loopback listen
// address adds localhost, 127.0.0.1 and [::1] with its port, and a
// wildcard one (0.0.0.0, [::], none) gives only those: a gateway that
// listens everywhere answers local clients only, until public_authorities
// names the host its clients use.
func (c *Config) Authorities() []string {
	if len(c.PublicAuthorities) > 0 {
		return c.PublicAuthorities
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return nil
	}
	var out []string
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		out = append(out, net.JoinHostPort(host, port))
	}
	if ip := net.ParseIP(host); host == "" || host == "localhost" || ip != nil && (ip.IsUnspecified() || ip.IsLoopback()) {
		for _, h := range []string{"localhost", "127.0.0.1", "::1"} {
			if a := net.JoinHostPort(h, port); !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}

// authoritiesDerived reports whether Authorities falls back to a wildcard
// listen address, which answers only local clients.
func (c *Config) authoritiesDerived() bool {
	if len(c.PublicAuthorities) > 0 {
		return false
	}
	host, _, err := net.SplitHostPort(c.Listen)
	ip := net.ParseIP(host)
	return err == nil && (host == "" || ip != nil && ip.IsUnspecified())
}

// SigningProfile is pushgate's signing profile with the deployment's
// authorities: what the API, the workers and the control log verify
// requests against.
func (c *Config) SigningProfile() signing.Profile {
	p := signing.DefaultProfile()
	p.Authorities = c.Authorities()
	return p
}

// RedisChecks configures the start-up persistence check and the
// deployment marker's data-loss check (docs/ARCHITECTURE.md, "Redis data
// loss").
type RedisChecks struct {
	// PersistenceCheck is PersistenceWarn, PersistenceRefuse or
	// PersistenceOff.
	PersistenceCheck string
	// LossCheckInterval is how often the deployment marker is read.
	LossCheckInterval time.Duration
}

// ControlConfig configures the process's view of the control log.
type ControlConfig struct {
	// LogKey is the log's private key ("PRIVATE+KEY+..."): a process that
	// has it integrates and signs checkpoints. Never stored in Redis.
	LogKey string
	// LogPublicKey is the log's public key; derived from LogKey when only
	// that is set.
	LogPublicKey string
	StateDir     string
	MirrorFile   string
	MaxStaleness time.Duration
}

// AppSigningConfig configures the end-to-end signature of pushes.
type AppSigningConfig struct {
	// Mode is off, sign or require.
	Mode string
	// KeyID names the app-signing key; apps trust keys by id.
	KeyID string
	// KeyFile holds the app-signing private key (PKCS #8 PEM); worker
	// processes need it, API processes only KeyID.
	KeyFile string
}

// FCMConfig configures the FCM sender; it is off when ProjectID is empty.
type FCMConfig struct {
	ProjectID       string
	CredentialsFile string
	Endpoint        string
	CAFile          string
	Concurrency     int
}

// APNsConfig configures the APNs sender; it is off when KeyFile is empty.
type APNsConfig struct {
	KeyFile     string
	KeyID       string
	TeamID      string
	Topic       string
	Host        string
	CAFile      string
	Concurrency int
}

// option is one configuration setting: its YAML key (dotted for nesting),
// default, help, and how to apply a value. The environment variable is
// PUSHGATE_ followed by the key in upper case with dots as underscores;
// secret options also read PUSHGATE_<KEY>_FILE.
type option struct {
	key    string
	def    string
	help   string
	secret bool
	// list options take a YAML sequence of values, or values separated by
	// commas.
	list bool
	set  func(c *Config, v string) error
}

// options is the one table of settings.
func options() []option {
	str := func(p func(*Config) *string) func(*Config, string) error {
		return func(c *Config, v string) error { *p(c) = v; return nil }
	}
	posInt := func(p func(*Config) *int) func(*Config, string) error {
		return func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return fmt.Errorf("must be a positive integer, got %q", v)
			}
			*p(c) = n
			return nil
		}
	}
	dur := func(p func(*Config) *time.Duration) func(*Config, string) error {
		return func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return fmt.Errorf("must be a positive duration like 30s, got %q", v)
			}
			*p(c) = d
			return nil
		}
	}
	rate := func(p func(*Config) *signing.Rate) func(*Config, string) error {
		return func(c *Config, v string) error {
			if v == "unlimited" {
				*p(c) = signing.Rate{}
				return nil
			}
			r, err := signing.ParseRate(v)
			if err != nil {
				return err
			}
			*p(c) = signing.Rate{Count: r.Count, Per: r.Per}
			return nil
		}
	}
	addr := func(p func(*Config) *string) func(*Config, string) error {
		return func(c *Config, v string) error {
			if v != "" {
				if _, _, err := net.SplitHostPort(v); err != nil {
					return fmt.Errorf("must be host:port, got %q", v)
				}
			}
			*p(c) = v
			return nil
		}
	}
	return []option{
		{key: "listen", def: "127.0.0.1:8080", help: "address of the HTTP API", set: addr(func(c *Config) *string { return &c.Listen })},
		{key: "metrics_listen", help: "address serving /metrics on a listener of its own, for any process; the API listener then answers 404 for /metrics. Empty: api and serve expose /metrics on listen, a worker-only process serves none",
			set: addr(func(c *Config) *string { return &c.MetricsListen })},
		{key: "http.read_header_timeout", def: "5s", help: "how long a client of the API or metrics listener has to send a request's headers",
			set: dur(func(c *Config) *time.Duration { return &c.HTTP.ReadHeaderTimeout })},
		{key: "http.idle_timeout", def: "2m", help: "how long a kept-alive connection to the API or metrics listener may wait for its next request",
			set: dur(func(c *Config) *time.Duration { return &c.HTTP.IdleTimeout })},
		{key: "http.max_header_bytes", def: "65536", help: "largest request headers (request line included) the API and metrics listeners read, in bytes; at least 4096",
			set: posInt(func(c *Config) *int { return &c.HTTP.MaxHeaderBytes })},
		{key: "redis_url", def: "redis://127.0.0.1:6379/0", secret: true,
			help: "Redis URL: redis:// or rediss:// (TLS), with user:password@ for ACL users",
			set: func(c *Config, v string) error {
				u, err := url.Parse(v)
				if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
					return errors.New("must be a redis://, rediss:// or unix:// URL")
				}
				c.RedisURL = v
				return nil
			}},
		{key: "redis.persistence_check", def: PersistenceWarn,
			help: "at start, check that Redis persists (CONFIG GET appendonly, appendfsync, save): warn logs what is missing, refuse exits, off skips it",
			set: func(c *Config, v string) error {
				if v != PersistenceWarn && v != PersistenceRefuse && v != PersistenceOff {
					return fmt.Errorf("must be warn, refuse or off, got %q", v)
				}
				c.Redis.PersistenceCheck = v
				return nil
			}},
		{key: "redis.loss_check_interval", def: queue.DefaultLossCheckInterval.String(),
			help: "how often each process reads the deployment marker that tells it Redis lost data",
			set:  dur(func(c *Config) *time.Duration { return &c.Redis.LossCheckInterval })},
		{key: "public_authorities", list: true,
			help: "host[:port] values clients sign requests for (the host and port of the URL they use; 80 and 443 count as none), as a YAML list or separated by commas; requests signed for any other are refused (wrong_authority). Give every process, API and worker, the same list. Default: listen's address; for a loopback or wildcard listen, localhost, 127.0.0.1 and [::1] with its port",
			set: func(c *Config, v string) error {
				c.PublicAuthorities = nil
				for _, a := range strings.Split(v, ",") {
					a = strings.TrimSpace(a)
					if err := checkAuthority(a); err != nil {
						return err
					}
					c.PublicAuthorities = append(c.PublicAuthorities, a)
				}
				return nil
			}},
		{key: "keyring_file", help: "YAML keyring of the keys that may sign requests (reloaded on SIGHUP)",
			set: str(func(c *Config) *string { return &c.KeyringFile })},
		{key: "key_prefix", def: "pg", help: "prefix of every Redis key pushgate writes",
			set: str(func(c *Config) *string { return &c.KeyPrefix })},
		{key: "log_level", def: "info", help: "debug, info, warn or error", set: func(c *Config, v string) error {
			return c.LogLevel.UnmarshalText([]byte(v))
		}},
		{key: "log_format", def: "text", help: "text or json", set: func(c *Config, v string) error {
			if v != "text" && v != "json" {
				return fmt.Errorf("must be text or json, got %q", v)
			}
			c.LogFormat = v
			return nil
		}},

		{key: "fcm.project_id", help: "Firebase project id; empty disables FCM", set: str(func(c *Config) *string { return &c.FCM.ProjectID })},
		{key: "fcm.credentials_file", help: "service-account JSON file (its token_uri is honoured)",
			set: str(func(c *Config) *string { return &c.FCM.CredentialsFile })},
		{key: "fcm.endpoint", help: "FCM API base URL; empty means Google's", set: str(func(c *Config) *string { return &c.FCM.Endpoint })},
		{key: "fcm.ca_file", help: "PEM roots to trust for FCM instead of the system's", set: str(func(c *Config) *string { return &c.FCM.CAFile })},
		{key: "fcm.concurrency", def: "64", help: "concurrent FCM requests per batch", set: posInt(func(c *Config) *int { return &c.FCM.Concurrency })},

		{key: "apns.key_file", help: "APNs token-auth key (.p8); empty disables APNs", set: str(func(c *Config) *string { return &c.APNs.KeyFile })},
		{key: "apns.key_id", help: "APNs key id", set: str(func(c *Config) *string { return &c.APNs.KeyID })},
		{key: "apns.team_id", help: "Apple developer team id", set: str(func(c *Config) *string { return &c.APNs.TeamID })},
		{key: "apns.topic", help: "the app's bundle id", set: str(func(c *Config) *string { return &c.APNs.Topic })},
		{key: "apns.host", def: "https://api.push.apple.com", help: "APNs host: production, https://api.sandbox.push.apple.com, or any URL",
			set: str(func(c *Config) *string { return &c.APNs.Host })},
		{key: "apns.ca_file", help: "PEM roots to trust for APNs instead of the system's", set: str(func(c *Config) *string { return &c.APNs.CAFile })},
		{key: "apns.concurrency", def: "64", help: "concurrent APNs requests per batch", set: posInt(func(c *Config) *int { return &c.APNs.Concurrency })},

		{key: "worker.concurrency", def: "8", help: "batches a worker process sends at once",
			set: posInt(func(c *Config) *int { return &c.WorkerConcurrency })},
		{key: "worker.task_check_interval", def: "20ms", help: "how often an idle worker polls for tasks (bounds small-broadcast latency)",
			set: dur(func(c *Config) *time.Duration { return &c.TaskCheck })},
		{key: "worker.shutdown_timeout", def: "30s", help: "how long SIGTERM lets running batches finish",
			set: dur(func(c *Config) *time.Duration { return &c.ShutdownTimeout })},
		{key: "worker.reap_margin", def: "5s", help: "how long after a worker's heartbeat ran out (control.max_staleness after its last one) another worker resumes the tasks it was running; more than workers' clocks may differ",
			set: dur(func(c *Config) *time.Duration { return &c.ReapMargin })},

		{key: "limits.max_ttl", def: "24h", help: "longest TTL a broadcast may ask for", set: dur(func(c *Config) *time.Duration { return &c.Policy.MaxTTL })},
		{key: "limits.fcm_rate", def: "600000/min", help: "FCM sends across all workers (COUNT/s|min|h or unlimited)",
			set: rate(func(c *Config) *signing.Rate { return &c.FCMRate })},
		{key: "limits.apns_rate", def: "600000/min", help: "APNs sends across all workers (COUNT/s|min|h or unlimited)",
			set: rate(func(c *Config) *signing.Rate { return &c.APNsRate })},
		{key: "limits.device_rate", def: "10/h", help: "pushes one device may get (COUNT/s|min|h or unlimited); recalls do not count",
			set: func(c *Config, v string) error {
				var r signing.Rate
				if err := rate(func(*Config) *signing.Rate { return &r })(c, v); err != nil {
					return err
				}
				c.Policy.DeviceLimit, c.Policy.DeviceWindow = r.Count, r.Per
				return nil
			}},
		{key: "limits.retry_for", def: "24h", help: "how long after a broadcast or recall was signed a device's transient failures are retried (a broadcast's TTL ends them sooner; the device then counts as expired)",
			set: dur(func(c *Config) *time.Duration { return &c.Policy.RetryFor })},
		{key: "limits.provider_pause", def: "10s", help: "how long every worker stops calling a provider that refused provider-wide (FCM 429/503, APNs 503) without a Retry-After",
			set: dur(func(c *Config) *time.Duration { return &c.Policy.ProviderPause })},
		{key: "limits.provider_pause_max", def: "5m", help: "longest provider-wide pause, whatever a provider's Retry-After asks",
			set: dur(func(c *Config) *time.Duration { return &c.Policy.ProviderPauseMax })},
		{key: "limits.failure_warn_share", def: "5%", help: "share of a broadcast's devices that, failed or expired, makes the worker's summary line of it a warning (PERCENT%, or off)",
			set: func(c *Config, v string) error {
				if v == "off" {
					c.Policy.FailureWarnShare = -1
					return nil
				}
				n, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
				if !strings.HasSuffix(v, "%") || err != nil || n <= 0 || n > 100 {
					return errors.New("must be a percentage such as 5% (more than 0, at most 100), or off")
				}
				c.Policy.FailureWarnShare = n / 100
				return nil
			}},
		{key: "limits.body_reads", def: "16", help: "request bodies the API reads at once (each after its signature verified; up to 4 MiB each); others wait",
			set: posInt(func(c *Config) *int { return &c.BodyReads })},
		{key: "limits.body_read_timeout", def: "15s", help: "how long a request body may take to arrive, waiting for one of limits.body_reads included (408 body_timeout)",
			set: dur(func(c *Config) *time.Duration { return &c.BodyReadTimeout })},
		{key: "limits.kill_wait", def: "5s", help: "how long a kill with wait=true waits for every worker (a silent worker counts until control.max_staleness and a second have passed)",
			set: dur(func(c *Config) *time.Duration { return &c.Policy.KillWait })},

		{key: "control.log_key", secret: true,
			help: "the control log's private key (pushgate log keygen NAME --out FILE); an API process that has it integrates the log and signs its checkpoints",
			set:  str(func(c *Config) *string { return &c.Control.LogKey })},
		{key: "control.log_public_key", help: "the control log's public key; every process needs it, or log_key",
			set: str(func(c *Config) *string { return &c.Control.LogPublicKey })},
		{key: "control.state_dir", help: "directory where the newest verified checkpoint and the deployment id are remembered across restarts (a persistent volume)",
			set: str(func(c *Config) *string { return &c.Control.StateDir })},
		{key: "control.mirror_file", help: "file this process keeps as an export of the control log, for pushgate log restore",
			set: str(func(c *Config) *string { return &c.Control.MirrorFile })},
		{key: "control.max_staleness", def: "2s", help: "a worker sends only while its view of the control log is younger than this",
			set: dur(func(c *Config) *time.Duration { return &c.Control.MaxStaleness })},

		{key: "app_signing.mode", def: "off", help: "off, sign (every push carries a signed block the app can verify) or require (FCM pushes are data-only and APNs alerts mutable, so the app shows only what verifies); see docs/APP-VERIFICATION.md",
			set: func(c *Config, v string) error {
				if v != "off" && v != "sign" && v != "require" {
					return fmt.Errorf("must be off, sign or require, got %q", v)
				}
				c.AppSigning.Mode = v
				return nil
			}},
		{key: "app_signing.key_id", help: "id of the app-signing key, as the app's list of trusted keys names it",
			set: str(func(c *Config) *string { return &c.AppSigning.KeyID })},
		{key: "app_signing.key_file", help: "the app-signing private key, PKCS #8 PEM (pushgate appkey keygen ID --out FILE); worker processes need it. Never the FCM or APNs credential, never in Redis",
			set: str(func(c *Config) *string { return &c.AppSigning.KeyFile })},

		{key: "approval.required", def: "2", help: "approvals (approve keys of distinct owners, not the submitter's) a broadcast over its threshold or to all needs",
			set: posInt(func(c *Config) *int { return &c.Policy.ApprovalsRequired })},
		{key: "approval.above", def: "0", help: "audience above which broadcasts need approvals unless the key sets approval_above; 0: only audiences of all devices",
			set: func(c *Config, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 {
					return fmt.Errorf("must be a whole number of devices, got %q", v)
				}
				c.Policy.ApprovalAbove = n
				return nil
			}},
		{key: "approval.window", def: "30m", help: "how long a broadcast or an admin action waits for its approvals",
			set: dur(func(c *Config) *time.Duration { return &c.Policy.ApprovalWindow })},
		{key: "approval.admin_required", def: "1", help: "approvals from other admins or approvers a custom-text recall, a global or key resume, or an admin's revocation needs",
			set: posInt(func(c *Config) *int { return &c.Policy.AdminApprovals })},
		{key: "recall.retraction_title", def: "Koreksi", help: "title of the standard retraction, which one admin may send as a recall at once",
			set: str(func(c *Config) *string { return &c.Policy.RetractionTitle })},
		{key: "recall.retraction_body", def: "Pesan sebelumnya dibatalkan.", help: "body of the standard retraction",
			set: str(func(c *Config) *string { return &c.Policy.RetractionBody })},
	}
}

// checkAuthority accepts a host or host:port as a client puts it in a URL.
func checkAuthority(a string) error {
	u, err := url.Parse("http://" + a)
	if err != nil || a == "" || u.Host != a || u.Hostname() == "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("must be host or host:port, as in a client's URL, got %q", a)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: the port must be 1 to 65535", a)
		}
	}
	return nil
}

// EnvName is the environment variable of a setting: PUSHGATE_ and the key
// in upper case, dots as underscores.
func EnvName(key string) string {
	return "PUSHGATE_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// LoadConfig reads the YAML file (if path is not empty), then the
// environment, then fills defaults, and validates. Errors name the setting.
func LoadConfig(path string, getenv func(string) string) (*Config, error) {
	values := map[string]string{}
	opts := options()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := flattenYAML(data, listKeys(opts), values); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	for _, o := range opts {
		if v := getenv(EnvName(o.key)); v != "" {
			values[o.key] = v // the environment wins over the file
		}
		if !o.secret {
			continue
		}
		if f := getenv(EnvName(o.key) + "_FILE"); f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("config: %s_FILE: %w", EnvName(o.key), err)
			}
			values[o.key] = strings.TrimSpace(string(b))
		}
	}
	known := map[string]bool{}
	for _, o := range opts {
		known[o.key] = true
	}
	for k := range values {
		if !known[k] {
			return nil, fmt.Errorf("config: unknown setting %q (run pushgate help config)", k)
		}
	}
	c := &Config{Policy: queue.DefaultPolicy()}
	for _, o := range opts {
		v, ok := values[o.key]
		if !ok {
			v = o.def
		}
		if v == "" && o.def == "" {
			continue
		}
		if err := o.set(c, v); err != nil {
			return nil, fmt.Errorf("config: %s: %w", o.key, err)
		}
	}
	c.Policy.ProviderRates = map[providers.Platform]signing.Rate{providers.FCM: c.FCMRate, providers.APNs: c.APNsRate}
	return c, c.validate()
}

// listKeys returns the keys of the list options.
func listKeys(opts []option) map[string]bool {
	out := map[string]bool{}
	for _, o := range opts {
		if o.list {
			out[o.key] = true
		}
	}
	return out
}

// flattenYAML turns nested mappings into dotted keys with scalar values;
// a sequence of scalars, for a key in lists, becomes its values joined by
// commas.
func flattenYAML(data []byte, lists map[string]bool, into map[string]string) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return err
	}
	if len(root.Content) == 0 {
		return nil
	}
	if root.Content[0].Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: the file must be a mapping of settings", root.Content[0].Line)
	}
	var walk func(prefix string, n *yaml.Node) error
	walk = func(prefix string, n *yaml.Node) error {
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i].Value
				if prefix != "" {
					k = prefix + "." + k
				}
				if err := walk(k, n.Content[i+1]); err != nil {
					return err
				}
			}
		case yaml.ScalarNode:
			if _, dup := into[prefix]; dup {
				return fmt.Errorf("%s is set twice", prefix)
			}
			into[prefix] = n.Value
		case yaml.SequenceNode:
			if !lists[prefix] {
				return fmt.Errorf("line %d: %s must be a single value", n.Line, prefix)
			}
			if _, dup := into[prefix]; dup {
				return fmt.Errorf("%s is set twice", prefix)
			}
			var vs []string
			for _, item := range n.Content {
				if item.Kind != yaml.ScalarNode || strings.Contains(item.Value, ",") {
					return fmt.Errorf("line %d: %s must be a list of single values without commas", item.Line, prefix)
				}
				vs = append(vs, item.Value)
			}
			if len(vs) == 0 {
				return fmt.Errorf("line %d: %s is an empty list", n.Line, prefix)
			}
			into[prefix] = strings.Join(vs, ",")
		default:
			return fmt.Errorf("line %d: %s must be a single value", n.Line, prefix)
		}
		return nil
	}
	return walk("", root.Content[0])
}

// minHeaderBytes is the least http.max_header_bytes: a signed request's
// Signature-Input, Signature and Content-Digest alone take several hundred
// bytes.
const minHeaderBytes = 4096

// validate checks settings that depend on each other.
func (c *Config) validate() error {
	if (c.AppSigning.Mode == "sign" || c.AppSigning.Mode == "require") && c.AppSigning.KeyID == "" {
		return fmt.Errorf("config: app_signing.key_id: required when app_signing.mode is %s", c.AppSigning.Mode)
	}
	if c.FCM.ProjectID != "" && c.FCM.CredentialsFile == "" {
		return errors.New("config: fcm.credentials_file: required when fcm.project_id is set")
	}
	if c.APNs.KeyFile != "" {
		for _, f := range []struct{ key, v string }{{"apns.key_id", c.APNs.KeyID}, {"apns.team_id", c.APNs.TeamID}, {"apns.topic", c.APNs.Topic}} {
			if f.v == "" {
				return fmt.Errorf("config: %s: required when apns.key_file is set", f.key)
			}
		}
	}
	if c.Control.LogKey != "" {
		pub, err := controllog.PublicKey(c.Control.LogKey)
		if err != nil {
			return errors.New("config: control.log_key: not a log key (pushgate log keygen NAME --out FILE makes one)")
		}
		if c.Control.LogPublicKey != "" && c.Control.LogPublicKey != pub {
			return errors.New("config: control.log_public_key: not the public key of control.log_key")
		}
		c.Control.LogPublicKey = pub
	}
	if c.Control.LogPublicKey == "" {
		return errors.New("config: control.log_public_key: required, or control.log_key (pushgate log keygen NAME --out FILE makes them)")
	}
	if _, err := note.NewVerifier(c.Control.LogPublicKey); err != nil {
		return fmt.Errorf("config: control.log_public_key: %v", err)
	}
	if c.HTTP.MaxHeaderBytes < minHeaderBytes {
		return fmt.Errorf("config: http.max_header_bytes: %d is too small: a signed request's headers need more; at least %d", c.HTTP.MaxHeaderBytes, minHeaderBytes)
	}
	if c.Policy.ProviderPauseMax < c.Policy.ProviderPause {
		return fmt.Errorf("config: limits.provider_pause_max: %s is shorter than limits.provider_pause (%s)",
			c.Policy.ProviderPauseMax, c.Policy.ProviderPause)
	}
	if c.ReapMargin < time.Second {
		return fmt.Errorf("config: worker.reap_margin: %s is too short: a worker whose heartbeat is late by less than a second, or whose clock is a second behind, is still sending", c.ReapMargin)
	}
	if c.Policy.KillWait <= c.Control.MaxStaleness+time.Second {
		return fmt.Errorf("config: limits.kill_wait: %s is too short: a worker that stopped answering counts as live for control.max_staleness (%s) and a second",
			c.Policy.KillWait, c.Control.MaxStaleness)
	}
	return nil
}

// PrintConfigHelp writes the settings table: every YAML key, its
// environment variable, default and meaning.
func PrintConfigHelp(w io.Writer) {
	fmt.Fprintln(w, "Settings (YAML key, environment variable, default):")
	for _, o := range options() {
		def := o.def
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(w, "  %-28s %-40s %s\n      %s\n", o.key, EnvName(o.key), def, o.help)
		if o.secret {
			fmt.Fprintf(w, "      (or %s_FILE naming a file that holds it)\n", EnvName(o.key))
		}
	}
}
