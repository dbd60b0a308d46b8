package app

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/queue"
	"github.com/pushgate/pushgate/signing"
)

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pushgate.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// testLogKey is a control log key pair for configurations.
var testLogKey, testLogPublicKey = func() (string, string) {
	private, public, err := controllog.GenerateKey("pushgate.test/control")
	if err != nil {
		panic(err)
	}
	return private, public
}()

// envOf is an environment of m, with the control log's public key unless
// m sets a log key itself.
func envOf(m map[string]string) func(string) string {
	return func(k string) string {
		if v, ok := m[k]; ok {
			return v
		}
		_, hasKey := m["PUSHGATE_CONTROL_LOG_KEY"]
		if k == "PUSHGATE_CONTROL_LOG_PUBLIC_KEY" && !hasKey {
			return testLogPublicKey
		}
		return ""
	}
}

func TestLoadConfig(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "redis-url")
	if err := os.WriteFile(secret, []byte("rediss://user:pw@redis.internal:6380/2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		yaml  string
		env   map[string]string
		check func(t *testing.T, c *Config)
	}{
		{
			name: "defaults",
			check: func(t *testing.T, c *Config) {
				if c.Listen != "127.0.0.1:8080" || c.RedisURL != "redis://127.0.0.1:6379/0" || c.WorkerConcurrency != 8 ||
					c.TaskCheck != 20*time.Millisecond || c.Policy.DeviceLimit != 10 || c.Policy.DeviceWindow != time.Hour ||
					c.Policy.RetryFor != 24*time.Hour ||
					c.Policy.ProviderRates[providers.FCM] != (signing.Rate{Count: 600000, Per: time.Minute}) ||
					c.Redis != (RedisChecks{PersistenceCheck: PersistenceWarn, LossCheckInterval: 5 * time.Second}) ||
					c.Policy.ProviderPause != 10*time.Second || c.Policy.ProviderPauseMax != 5*time.Minute ||
					c.Policy.FailureWarnShare != 0.05 {
					t.Errorf("defaults = %+v", c)
				}
				// A dead worker's tasks are resumed at most max_staleness
				// (its last heartbeat's freshness), the reap margin and one
				// heartbeat interval after its death.
				if resume := c.Control.MaxStaleness + c.ReapMargin + c.Control.MaxStaleness/4; c.ReapMargin != queue.DefaultReapMargin || resume > 15*time.Second {
					t.Errorf("default reap margin %s: a dead worker's tasks wait up to %s, want at most 15s", c.ReapMargin, resume)
				}
			},
		},
		{
			name: "file with nested sections",
			yaml: "listen: 0.0.0.0:9000\nfcm:\n  project_id: p1\n  credentials_file: /x.json\n  concurrency: 16\nlimits:\n  device_rate: unlimited\n  fcm_rate: 100/s\n  retry_for: 2h\n  failure_warn_share: 12.5%\n",
			check: func(t *testing.T, c *Config) {
				if c.Listen != "0.0.0.0:9000" || c.FCM.ProjectID != "p1" || c.FCM.Concurrency != 16 || c.Policy.DeviceLimit != 0 ||
					c.Policy.RetryFor != 2*time.Hour || c.Policy.FailureWarnShare != 0.125 ||
					c.Policy.ProviderRates[providers.FCM] != (signing.Rate{Count: 100, Per: time.Second}) {
					t.Errorf("config = %+v", c)
				}
			},
		},
		{
			name: "environment wins over the file",
			yaml: "listen: 127.0.0.1:1\n",
			env:  map[string]string{"PUSHGATE_LISTEN": "127.0.0.1:2", "PUSHGATE_WORKER_CONCURRENCY": "3"},
			check: func(t *testing.T, c *Config) {
				if c.Listen != "127.0.0.1:2" || c.WorkerConcurrency != 3 {
					t.Errorf("listen %s, concurrency %d", c.Listen, c.WorkerConcurrency)
				}
			},
		},
		{
			name: "log public key derived from the private key",
			env:  map[string]string{"PUSHGATE_CONTROL_LOG_KEY": testLogKey},
			check: func(t *testing.T, c *Config) {
				if c.Control.LogPublicKey != testLogPublicKey || c.Control.MaxStaleness != 2*time.Second || c.Policy.KillWait != 5*time.Second {
					t.Errorf("control = %+v, kill wait %s", c.Control, c.Policy.KillWait)
				}
			},
		},
		{
			name: "authorities and body limits by default",
			check: func(t *testing.T, c *Config) {
				want := []string{"127.0.0.1:8080", "localhost:8080", "[::1]:8080"}
				if got := c.Authorities(); !slices.Equal(got, want) || c.authoritiesDerived() {
					t.Errorf("authorities = %q, want %q", got, want)
				}
				if got := c.SigningProfile().Authorities; !slices.Equal(got, want) {
					t.Errorf("signing profile authorities = %q", got)
				}
				if c.BodyReads != 16 || c.BodyReadTimeout != 15*time.Second {
					t.Errorf("body reads %d, timeout %s", c.BodyReads, c.BodyReadTimeout)
				}
			},
		},
		{
			name: "wildcard listen answers local clients only",
			yaml: "listen: 0.0.0.0:9000\n",
			check: func(t *testing.T, c *Config) {
				want := []string{"localhost:9000", "127.0.0.1:9000", "[::1]:9000"}
				if got := c.Authorities(); !slices.Equal(got, want) || !c.authoritiesDerived() {
					t.Errorf("authorities = %q, want %q", got, want)
				}
			},
		},
		{
			name: "listen on a host name",
			env:  map[string]string{"PUSHGATE_LISTEN": "gw.internal:8443"},
			check: func(t *testing.T, c *Config) {
				if got := c.Authorities(); !slices.Equal(got, []string{"gw.internal:8443"}) {
					t.Errorf("authorities = %q", got)
				}
			},
		},
		{
			name: "public authorities as a YAML list",
			yaml: "listen: 0.0.0.0:8080\npublic_authorities:\n  - push.example.org\n  - push-old.example.org:8443\n",
			check: func(t *testing.T, c *Config) {
				want := []string{"push.example.org", "push-old.example.org:8443"}
				if got := c.Authorities(); !slices.Equal(got, want) || c.authoritiesDerived() {
					t.Errorf("authorities = %q, want %q", got, want)
				}
			},
		},
		{
			name: "public authorities from the environment",
			yaml: "public_authorities: [a.example]\n",
			env:  map[string]string{"PUSHGATE_PUBLIC_AUTHORITIES": "push.example.org, [2001:db8::1]:8080"},
			check: func(t *testing.T, c *Config) {
				if got := c.Authorities(); !slices.Equal(got, []string{"push.example.org", "[2001:db8::1]:8080"}) {
					t.Errorf("authorities = %q", got)
				}
			},
		},
		{
			name: "secret from a file",
			env:  map[string]string{"PUSHGATE_REDIS_URL_FILE": secret},
			check: func(t *testing.T, c *Config) {
				if c.RedisURL != "rediss://user:pw@redis.internal:6380/2" {
					t.Errorf("redis url not read from the file")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.yaml != "" {
				path = writeConfig(t, tt.yaml)
			}
			c, err := LoadConfig(path, envOf(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestLoadConfigErrorsNameTheSetting(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  map[string]string
		want string
	}{
		{"unknown setting", "lisen: x\n", nil, `unknown setting "lisen"`},
		{"unknown nested setting", "fcm:\n  projectid: x\n", nil, `unknown setting "fcm.projectid"`},
		{"bad integer", "worker:\n  concurrency: many\n", nil, "worker.concurrency: must be a positive integer"},
		{"zero integer", "fcm:\n  concurrency: 0\n", nil, "fcm.concurrency: must be a positive integer"},
		{"bad duration", "limits:\n  max_ttl: forever\n", nil, "limits.max_ttl: must be a positive duration"},
		{"bad rate", "limits:\n  fcm_rate: 10/fortnight\n", nil, "limits.fcm_rate:"},
		{"zero retry window", "limits:\n  retry_for: 0s\n", nil, "limits.retry_for: must be a positive duration"},
		{"failure share without a percent sign", "limits:\n  failure_warn_share: 0.05\n", nil, "limits.failure_warn_share: must be a percentage"},
		{"failure share over 100%", "limits:\n  failure_warn_share: 150%\n", nil, "limits.failure_warn_share: must be a percentage"},
		// Devices are retried until their TTL now, not a number of times.
		{"removed max_attempts", "limits:\n  max_attempts: 5\n", nil, `unknown setting "limits.max_attempts"`},
		{"bad address", "listen: nowhere\n", nil, "listen: must be host:port"},
		{"bad redis url", "redis_url: http://x\n", nil, "redis_url: must be a redis://"},
		{"bad log level", "log_level: loud\n", nil, "log_level:"},
		{"list where a value belongs", "listen: [a, b]\n", nil, "listen must be a single value"},
		{"authority with a scheme", "public_authorities: [https://push.example.org]\n", nil, "public_authorities: must be host or host:port"},
		{"authority with a path", "", map[string]string{"PUSHGATE_PUBLIC_AUTHORITIES": "push.example.org/v1"}, "public_authorities: must be host or host:port"},
		{"empty authority", "", map[string]string{"PUSHGATE_PUBLIC_AUTHORITIES": "a.example,,b.example"}, "public_authorities: must be host or host:port"},
		{"authority with a bad port", "public_authorities: [a.example:99999]\n", nil, "public_authorities: \"a.example:99999\": the port"},
		{"empty authority list", "public_authorities: []\n", nil, "public_authorities is an empty list"},
		{"authority list of lists", "public_authorities: [[a]]\n", nil, "public_authorities must be a list of single values"},
		{"zero body reads", "limits:\n  body_reads: 0\n", nil, "limits.body_reads: must be a positive integer"},
		{"zero body read timeout", "limits:\n  body_read_timeout: 0s\n", nil, "limits.body_read_timeout: must be a positive duration"},
		{"bad environment value", "", map[string]string{"PUSHGATE_LOG_FORMAT": "xml"}, "log_format: must be text or json"},
		{"fcm without credentials", "fcm:\n  project_id: p\n", nil, "fcm.credentials_file: required"},
		{"apns without team", "apns:\n  key_file: k.p8\n  key_id: K\n  topic: t\n", nil, "apns.team_id: required"},
		{"missing secret file", "", map[string]string{"PUSHGATE_REDIS_URL_FILE": "/nonexistent/secret"}, "PUSHGATE_REDIS_URL_FILE"},
		{"not YAML", "listen: [\n", nil, "config"},
		{"no log key", "", map[string]string{"PUSHGATE_CONTROL_LOG_PUBLIC_KEY": ""}, "control.log_public_key: required"},
		{"bad log key", "", map[string]string{"PUSHGATE_CONTROL_LOG_KEY": "PRIVATE+KEY+x"}, "control.log_key: not a log key"},
		{"public key of another log key", "", map[string]string{"PUSHGATE_CONTROL_LOG_KEY": testLogKey,
			"PUSHGATE_CONTROL_LOG_PUBLIC_KEY": "pushgate.test/control+00000000+AQ=="}, "control.log_public_key: not the public key"},
		{"kill wait shorter than staleness", "limits:\n  kill_wait: 2s\n", nil, "limits.kill_wait: 2s is too short"},
		{"bad persistence check", "redis:\n  persistence_check: maybe\n", nil, "redis.persistence_check: must be warn, refuse or off"},
		{"bad loss check interval", "", map[string]string{"PUSHGATE_REDIS_LOSS_CHECK_INTERVAL": "0s"}, "redis.loss_check_interval: must be a positive duration"},
		{"provider pause longer than its cap", "limits:\n  provider_pause: 10m\n", nil, "limits.provider_pause_max: 5m0s is shorter"},
		{"zero provider pause", "limits:\n  provider_pause: 0s\n", nil, "limits.provider_pause: must be a positive duration"},
		{"reap margin under a second", "worker:\n  reap_margin: 500ms\n", nil, "worker.reap_margin: 500ms is too short"},
		{"bad app signing mode", "app_signing:\n  mode: always\n", nil, "app_signing.mode: must be off, sign or require"},
		{"app signing without a key id", "app_signing:\n  mode: require\n", nil, "app_signing.key_id: required when app_signing.mode is require"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.yaml != "" {
				path = writeConfig(t, tt.yaml)
			}
			_, err := LoadConfig(path, envOf(tt.env))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one naming %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
	if _, err := LoadConfig("/nonexistent/pushgate.yaml", envOf(nil)); err == nil {
		t.Error("a missing config file was accepted")
	}
}

func TestRedactURL(t *testing.T) {
	if got := RedactURL("redis://user:hunter2@host:6379/0"); strings.Contains(got, "hunter2") {
		t.Errorf("redactURL kept the password: %s", got)
	}
}

// FuzzConfigYAML feeds arbitrary YAML through the configuration loader:
// it never panics, and every refusal is one line naming the problem.
func FuzzConfigYAML(f *testing.F) {
	for _, seed := range []string{
		"listen: 127.0.0.1:1\n",
		"fcm:\n  project_id: p\n  credentials_file: c\n",
		"limits:\n  fcm_rate: 5/s\n  device_rate: unlimited\n",
		"a: {b: {c: d}}\n",
		"- 1\n- 2\n",
		"listen: &a x\nredis_url: *a\n",
		"public_authorities: [a.example, b.example:8443]\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, yaml string) {
		values := map[string]string{}
		if err := flattenYAML([]byte(yaml), listKeys(options()), values); err != nil {
			return
		}
		path := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadConfig(path, envOf(nil)); err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("multi-line error: %q", err)
		}
	})
}

// TestAppSigningKeys checks what each process needs of the app-signing
// key: a worker refuses to start without a readable Ed25519 key file, an
// API process needs only the key id, and off needs nothing.
func TestAppSigningKeys(t *testing.T) {
	_, priv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := signing.MarshalPrivateKeyPEM(priv)
	if err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(t.TempDir(), "app.pem")
	if err := os.WriteFile(good, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	notKey := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notKey, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := func(mode, file string) *Config {
		return &Config{AppSigning: AppSigningConfig{Mode: mode, KeyID: "app-1", KeyFile: file}}
	}
	if a, err := cfg("off", "").appSigning(true); err != nil || a.Mode != "" {
		t.Errorf("off: %+v, %v; want unsigned", a, err)
	}
	if a, err := cfg("require", "").appSigning(false); err != nil || a.Mode == "" || a.KeyID != "app-1" || a.Signer != nil {
		t.Errorf("API process in require mode: %+v, %v; want the mode and key id, no key", a, err)
	}
	if a, err := cfg("sign", good).appSigning(true); err != nil || a.Signer == nil || a.Signer.KeyID() != "app-1" {
		t.Errorf("worker with a key file: %+v, %v", a, err)
	}
	for file, want := range map[string]string{"": "app_signing.key_file: required", notKey: "app_signing.key_file " + notKey, "/nonexistent/app.pem": "app_signing.key_file:"} {
		var ce *ConfigError
		if _, err := cfg("sign", file).appSigning(true); !errors.As(err, &ce) || !strings.Contains(err.Error(), want) {
			t.Errorf("worker with key file %q: %v, want a configuration error naming %q", file, err, want)
		}
	}
}
