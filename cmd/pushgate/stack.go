package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/providers/sim"
	"github.com/pushgate/pushgate/queue"
	"github.com/pushgate/pushgate/signing"
)

// stack is a whole pushgate on this machine, for the demo, the benchmark
// and the end-to-end tests: the simulators and their phones, fresh keys
// for a sender, an admin and an attacker (who is not in the keyring), the
// keyring, and a gateway configuration that points at the simulators and
// a Redis.
type stack struct {
	dir        string
	redisURL   string
	sim        *sim.Sim
	devices    []sim.Device
	configPath string
	keys       map[string]stackKey
}

// stackKey is one generated key.
type stackKey struct {
	id   string
	file string
	priv []byte // PKCS#8 PEM
}

// The keys a stack generates.
const (
	keySender   = "sender"
	keyAdmin    = "admin"
	keyAttacker = "attacker"
)

// stackOptions shape a stack.
type stackOptions struct {
	dir          string // created if missing; keys, keyring, config and simulator files go here
	redisURL     string
	devices      int
	androidShare float64
	seed         int64
	topic        string
	latency      time.Duration
	// settings are extra gateway settings by YAML key, such as
	// "limits.device_rate": "unlimited".
	settings map[string]string
	logger   *slog.Logger
	// simConfig, when set, edits the simulators' configuration before they
	// start (the benchmark lifts their FCM quota, for one).
	simConfig func(*sim.Config)
}

// newStack starts the simulators, creates the phones and writes the keys,
// the keyring and the configuration.
func newStack(o stackOptions) (*stack, error) {
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if o.topic == "" {
		o.topic = "citizens"
	}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	simCfg := sim.Config{Listen: "127.0.0.1:0", Logger: o.logger.With("component", "sim"),
		Faults: sim.Faults{Latency: o.latency}}
	if o.simConfig != nil {
		o.simConfig(&simCfg)
	}
	s, err := sim.New(simCfg)
	if err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	st := &stack{dir: o.dir, redisURL: o.redisURL, sim: s, keys: map[string]stackKey{}}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	st.devices = s.NewDevices(o.devices, o.androidShare, o.seed)
	files, err := s.WriteFiles(filepath.Join(o.dir, "sim"))
	if err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}

	type entry struct {
		ID          string   `yaml:"id"`
		PublicKey   string   `yaml:"public_key"`
		Roles       []string `yaml:"roles,flow"`
		Topics      []string `yaml:"topics,flow,omitempty"`
		MaxAudience int      `yaml:"max_audience,omitempty"`
	}
	var ring struct {
		Keys []entry `yaml:"keys"`
	}
	keyDir := filepath.Join(o.dir, "keys")
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	for _, k := range []struct {
		name, id string
		roles    []string
		inRing   bool
	}{
		{keySender, "city-alerts", []string{"broadcast", "register"}, true},
		{keyAdmin, "ops-admin", []string{"admin"}, true},
		{keyAttacker, "city-alerts-stolen", []string{"broadcast"}, false},
	} {
		pub, priv, err := signing.GenerateKey()
		if err != nil {
			return nil, fmt.Errorf("stack: %w", err)
		}
		privPEM, err := signing.MarshalPrivateKeyPEM(priv)
		if err != nil {
			return nil, fmt.Errorf("stack: %w", err)
		}
		file := filepath.Join(keyDir, k.id+".key")
		if err := os.WriteFile(file, privPEM, 0o600); err != nil {
			return nil, fmt.Errorf("stack: %w", err)
		}
		st.keys[k.name] = stackKey{id: k.id, file: file, priv: privPEM}
		if !k.inRing {
			continue
		}
		pubPEM, err := signing.MarshalPublicKeyPEM(pub)
		if err != nil {
			return nil, fmt.Errorf("stack: %w", err)
		}
		e := entry{ID: k.id, PublicKey: pemBody(pubPEM), Roles: k.roles}
		if k.name == keySender {
			e.Topics, e.MaxAudience = []string{o.topic}, max(o.devices*2, 1000)
		}
		ring.Keys = append(ring.Keys, e)
	}
	ringYAML, err := yaml.Marshal(ring)
	if err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	ringPath := filepath.Join(o.dir, "keyring.yaml")
	if err := os.WriteFile(ringPath, ringYAML, 0o644); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}

	// The simulator's fragment plus what a gateway needs to run.
	frag, err := os.ReadFile(files.GatewayYAML)
	if err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	var b strings.Builder
	b.Write(frag)
	fmt.Fprintf(&b, "redis_url: %q\nkeyring_file: %q\n", o.redisURL, ringPath)
	keys := make([]string, 0, len(o.settings))
	for k := range o.settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	extra := map[string]map[string]string{}
	for _, k := range keys {
		section, name, nested := strings.Cut(k, ".")
		if !nested {
			fmt.Fprintf(&b, "%s: %q\n", k, o.settings[k])
			continue
		}
		if extra[section] == nil {
			extra[section] = map[string]string{}
		}
		extra[section][name] = o.settings[k]
	}
	for _, section := range sortedKeys(extra) {
		if section == "fcm" || section == "apns" {
			return nil, fmt.Errorf("stack: settings for %s come from the simulator", section)
		}
		fmt.Fprintf(&b, "%s:\n", section)
		for _, name := range sortedKeys(extra[section]) {
			fmt.Fprintf(&b, "  %s: %q\n", name, extra[section][name])
		}
	}
	st.configPath = filepath.Join(o.dir, "pushgate.yaml")
	if err := os.WriteFile(st.configPath, []byte(b.String()), 0o600); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	ok = true
	return st, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Close stops the simulators.
func (s *stack) Close() error { return s.sim.Close() }

// client returns an API client signing with one of the stack's keys.
func (s *stack) client(name, gatewayURL string) (*apiClient, error) {
	k, ok := s.keys[name]
	if !ok {
		return nil, fmt.Errorf("stack: no key %q", name)
	}
	cf := &clientFlags{getenv: func(string) string { return "" }, gateway: gatewayURL, key: k.file, keyID: k.id}
	return cf.client()
}

// importDevices registers every phone of the stack into topic through the
// API, 10,000 per request, as an operator would.
func (s *stack) importDevices(ctx context.Context, c *apiClient, topic string) error {
	const chunk = queue.MaxTokens
	for start := 0; start < len(s.devices); start += chunk {
		var req queue.ImportRequest
		for _, d := range s.devices[start:min(len(s.devices), start+chunk)] {
			req.Devices = append(req.Devices, queue.ImportDevice{Platform: string(d.Platform), Token: d.Token, Topics: []string{topic}})
		}
		if _, err := c.do(ctx, "POST", "/v1/devices/import", nil, req, nil); err != nil {
			return fmt.Errorf("import devices: %w", err)
		}
	}
	return nil
}

// countByPlatform counts the stack's phones per platform.
func (s *stack) countByPlatform() map[providers.Platform]int {
	out := map[providers.Platform]int{}
	for _, d := range s.devices {
		out[d.Platform]++
	}
	return out
}

// runningApp is a gateway process's parts running inside this process.
type runningApp struct {
	url    string
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	app    *app
}

// startApp runs the API and/or a worker pool from a configuration file in
// this process, with the API on a free loopback port.
func startApp(ctx context.Context, configPath string, r roles, logger *slog.Logger) (*runningApp, error) {
	cfg, err := loadConfig(configPath, func(string) string { return "" })
	if err != nil {
		return nil, err
	}
	a, err := newApp(ctx, cfg, logger, r)
	if err != nil {
		return nil, err
	}
	ra := &runningApp{app: a, done: make(chan struct{})}
	if r.api {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			a.close()
			return nil, err
		}
		a.apiListener = ln
		ra.url = "http://" + ln.Addr().String()
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ra.cancel = cancel
	go func() {
		defer close(ra.done)
		ra.err = a.run(runCtx)
	}()
	if ra.url != "" {
		if err := waitHTTP(ctx, ra.url+"/healthz", 10*time.Second); err != nil {
			ra.Stop()
			return nil, err
		}
	}
	return ra, nil
}

// Stop shuts the app down as SIGTERM would and waits for it.
func (r *runningApp) Stop() error {
	r.cancel()
	<-r.done
	return r.err
}

// waitHTTP polls a URL until it answers 200 or the timeout passes.
func waitHTTP(ctx context.Context, u string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("not ready")
			}
			return fmt.Errorf("%s did not come up in %s: %w", redactURL(u), timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
