// Package stack is a whole pushgate on this machine, for the demo, the
// benchmark and the end-to-end tests: the FCM and APNs simulators with
// their virtual phones, fresh keys for a sender, an admin and an attacker
// (who is not in the keyring), the keyring, and a gateway configuration
// file that points at the simulators and a Redis. Processes run from that
// file either in this process (StartApp) or as child processes of the
// pushgate binary, exactly as an operator's would.
//
// It is the only way the commands reach the simulators' phones beyond the
// simulators' own command (pushgate sim).
package stack

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/client"
	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/providers/sim"
	"github.com/pushgate/pushgate/signing"
)

// Stack is the simulators, the keys, the keyring and a configuration file.
type Stack struct {
	Dir      string
	RedisURL string
	Sim      *sim.Sim
	// Devices are the virtual phones, in creation order.
	Devices []sim.Device
	// ConfigPath is the gateway configuration file.
	ConfigPath string
	// Keys are the generated keys by name (KeySender, KeyAdmin,
	// KeyAttacker).
	Keys map[string]Key
	// LogKey and LogPublicKey are the control log's keys; the
	// configuration holds both, and a state directory under Dir.
	LogKey, LogPublicKey string
	// AppKeyID and AppPublicKey are the app-signing key's, when the stack
	// signs pushes for the app.
	AppKeyID     string
	AppPublicKey ed25519.PublicKey

	subsMu sync.Mutex
	// subs are the topics each phone's app subscribed to, by platform and
	// token: what a real app knows of its own subscriptions.
	subs map[sim.Device][]string
}

// Key is one generated key.
type Key struct {
	ID   string
	File string // PKCS#8 PEM, mode 0600
	priv []byte
}

// The keys a stack generates.
const (
	// KeySender broadcasts to the stack's topic and registers devices into
	// it and into district-* topics.
	KeySender   = "sender"
	KeyAdmin    = "admin"    // admin, owner ops-1
	KeyAdmin2   = "admin2"   // admin, owner ops-2: the second person
	KeyApprover = "approver" // approve, owner gov-a
	// KeyApprover2 approves too, for owner gov-b.
	KeyApprover2 = "approver2"
	// KeyDistrict broadcasts to district-9* only: 20 devices a broadcast,
	// 100 distinct devices a day.
	KeyDistrict = "district"
	KeyAttacker = "attacker" // broadcast, but not in the keyring
	// KeySlow broadcasts to the stack's topic at most 50 pushes a second
	// (Options.SlowRate).
	KeySlow = "slow"
)

// Options shape a stack.
type Options struct {
	Dir          string // created if missing; keys, keyring, config and simulator files go here
	RedisURL     string
	Devices      int
	AndroidShare float64
	Seed         int64
	Topic        string        // the sender's topic; "citizens" when empty
	Latency      time.Duration // the simulators' latency per push
	// Settings are extra gateway settings by YAML key, such as
	// "limits.device_rate": "unlimited".
	Settings map[string]string
	Logger   *slog.Logger
	// SimConfig, when set, edits the simulators' configuration before they
	// start (the benchmark lifts their FCM quota, for one).
	SimConfig func(*sim.Config)
	// AppSigning is the gateway's app_signing.mode: "sign" or "require"
	// generates an app-signing key for the workers and, unless
	// UnverifyingPhones, installs an app on every phone that trusts it and
	// shows only what verifies (docs/APP-VERIFICATION.md). Empty: off.
	AppSigning        string
	UnverifyingPhones bool
	// SlowRate is KeySlow's rate (COUNT/PERIOD, as in the keyring);
	// "50/s" when empty.
	SlowRate string
}

// New starts the simulators, creates the phones and writes the keys, the
// keyring and the configuration.
func New(o Options) (*Stack, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Topic == "" {
		o.Topic = "citizens"
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	simCfg := sim.Config{Listen: "127.0.0.1:0", Logger: o.Logger.With("component", "sim"),
		Faults: sim.Faults{Latency: o.Latency}}
	if o.SimConfig != nil {
		o.SimConfig(&simCfg)
	}
	s, err := sim.New(simCfg)
	if err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	st := &Stack{Dir: o.Dir, RedisURL: o.RedisURL, Sim: s, Keys: map[string]Key{}}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	st.Devices = s.NewDevices(o.Devices, o.AndroidShare, o.Seed)
	files, err := s.WriteFiles(filepath.Join(o.Dir, "sim"))
	if err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	ringPath, err := st.writeKeys(o)
	if err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	if err := st.writeAppKey(&o); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	if err := st.writeConfig(o, files.GatewayYAML, ringPath); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	if st.AppPublicKey != nil && !o.UnverifyingPhones {
		if err := s.SetApp(&sim.App{Keys: map[string]ed25519.PublicKey{st.AppKeyID: st.AppPublicKey}, Topics: st.Subscriptions}); err != nil {
			return nil, fmt.Errorf("stack: %w", err)
		}
	}
	ok = true
	return st, nil
}

// appKeyID is the id of the app-signing key a stack generates.
const appKeyID = "app-local"

// writeAppKey generates the app-signing key when o asks for app signing,
// and adds its settings to o.
func (st *Stack) writeAppKey(o *Options) error {
	if o.AppSigning == "" {
		return nil
	}
	pub, priv, err := signing.GenerateKey()
	if err != nil {
		return err
	}
	privPEM, err := signing.MarshalPrivateKeyPEM(priv)
	if err != nil {
		return err
	}
	file := filepath.Join(o.Dir, "keys", appKeyID+".pem")
	if err := os.WriteFile(file, privPEM, 0o600); err != nil {
		return err
	}
	st.AppKeyID, st.AppPublicKey = appKeyID, pub
	settings := maps.Clone(o.Settings)
	if settings == nil {
		settings = map[string]string{}
	}
	settings["app_signing.mode"] = o.AppSigning
	settings["app_signing.key_id"] = appKeyID
	settings["app_signing.key_file"] = file
	o.Settings = settings
	return nil
}

// Subscribe records that the apps of devs subscribed to topic, as
// ImportDevices does for the phones it registers.
func (st *Stack) Subscribe(topic string, devs ...sim.Device) {
	st.subsMu.Lock()
	defer st.subsMu.Unlock()
	if st.subs == nil {
		st.subs = map[sim.Device][]string{}
	}
	for _, d := range devs {
		if !slices.Contains(st.subs[d], topic) {
			st.subs[d] = append(st.subs[d], topic)
		}
	}
}

// Subscriptions are the topics the app on a phone subscribed to.
func (st *Stack) Subscriptions(p providers.Platform, token string) []string {
	st.subsMu.Lock()
	defer st.subsMu.Unlock()
	return slices.Clone(st.subs[sim.Device{Platform: p, Token: token}])
}

// writeKeys generates the keys and writes them and the keyring.
func (st *Stack) writeKeys(o Options) (string, error) {
	keyDir := filepath.Join(o.Dir, "keys")
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		return "", err
	}
	var ring []signing.KeyEntry
	for _, k := range []struct {
		name   string
		entry  signing.KeyEntry
		inRing bool
	}{
		{KeySender, signing.KeyEntry{ID: "city-alerts", Roles: []string{"broadcast", "register"},
			Topics: []string{o.Topic, "district-*"}, MaxAudience: max(o.Devices*2, 1000), Owner: "diskominfo"}, true},
		{KeyAdmin, signing.KeyEntry{ID: "ops-admin", Roles: []string{"admin"}, Owner: "ops-1"}, true},
		{KeyAdmin2, signing.KeyEntry{ID: "ops-admin-2", Roles: []string{"admin"}, Owner: "ops-2"}, true},
		{KeyApprover, signing.KeyEntry{ID: "bpbd-approver", Roles: []string{"approve"}, Owner: "gov-a"}, true},
		{KeyApprover2, signing.KeyEntry{ID: "walikota-approver", Roles: []string{"approve"}, Owner: "gov-b"}, true},
		{KeyDistrict, signing.KeyEntry{ID: "kelurahan-9", Roles: []string{"broadcast"}, Topics: []string{"district-9*"},
			MaxAudience: 20, Reach: "100/24h", Owner: "kelurahan-9"}, true},
		{KeySlow, signing.KeyEntry{ID: "city-slow", Roles: []string{"broadcast"}, Topics: []string{o.Topic},
			MaxAudience: max(o.Devices*2, 1000), Rate: cmp.Or(o.SlowRate, "50/s"), Owner: "diskominfo"}, true},
		{KeyAttacker, signing.KeyEntry{ID: "city-alerts-stolen", Roles: []string{"broadcast"}}, false},
	} {
		pub, priv, err := signing.GenerateKey()
		if err != nil {
			return "", err
		}
		privPEM, err := signing.MarshalPrivateKeyPEM(priv)
		if err != nil {
			return "", err
		}
		file := filepath.Join(keyDir, k.entry.ID+".key")
		if err := os.WriteFile(file, privPEM, 0o600); err != nil {
			return "", err
		}
		st.Keys[k.name] = Key{ID: k.entry.ID, File: file, priv: privPEM}
		if !k.inRing {
			continue
		}
		e := k.entry
		if e.PublicKey, err = signing.EncodePublicKey(pub); err != nil {
			return "", err
		}
		ring = append(ring, e)
	}
	doc, err := signing.MarshalKeyring(ring)
	if err != nil {
		return "", err
	}
	ringPath := filepath.Join(o.Dir, "keyring.yaml")
	return ringPath, os.WriteFile(ringPath, doc, 0o644)
}

// writeConfig writes the simulators' fragment plus what a gateway needs to
// run, and the extra settings.
func (st *Stack) writeConfig(o Options, fragment, ringPath string) error {
	frag, err := os.ReadFile(fragment)
	if err != nil {
		return err
	}
	var b strings.Builder
	b.Write(frag)
	fmt.Fprintf(&b, "redis_url: %q\nkeyring_file: %q\n", o.RedisURL, ringPath)
	if _, ok := o.Settings["listen"]; !ok {
		// The API's address is fixed here, not chosen when it starts:
		// every process of the stack derives the authority requests are
		// signed for from it (public_authorities), the workers too.
		addr, err := freeLoopbackAddr()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "listen: %q\n", addr)
	}
	if st.LogKey, st.LogPublicKey, err = controllog.GenerateKey("pushgate.local/control"); err != nil {
		return err
	}
	nested := map[string]map[string]string{"control": {
		"log_key": st.LogKey, "log_public_key": st.LogPublicKey, "state_dir": filepath.Join(o.Dir, "state"),
	}}
	for _, k := range sortedKeys(o.Settings) {
		section, name, ok := strings.Cut(k, ".")
		if !ok {
			fmt.Fprintf(&b, "%s: %q\n", k, o.Settings[k])
			continue
		}
		if section == "fcm" || section == "apns" {
			return fmt.Errorf("settings for %s come from the simulator", section)
		}
		if nested[section] == nil {
			nested[section] = map[string]string{}
		}
		nested[section][name] = o.Settings[k]
	}
	for _, section := range sortedKeys(nested) {
		fmt.Fprintf(&b, "%s:\n", section)
		for _, name := range sortedKeys(nested[section]) {
			fmt.Fprintf(&b, "  %s: %q\n", name, nested[section][name])
		}
	}
	st.ConfigPath = filepath.Join(o.Dir, "pushgate.yaml")
	return os.WriteFile(st.ConfigPath, []byte(b.String()), 0o600)
}

// freeLoopbackAddr returns a loopback address with a port nothing listens
// on now.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
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
func (st *Stack) Close() error { return st.Sim.Close() }

// Signer returns a signer for one of the stack's keys.
func (st *Stack) Signer(name string) (*signing.Signer, error) {
	k, ok := st.Keys[name]
	if !ok {
		return nil, fmt.Errorf("stack: no key %q", name)
	}
	priv, err := signing.ParsePrivateKeyPEM(k.priv)
	if err != nil {
		return nil, fmt.Errorf("stack: key %q: %w", name, err)
	}
	return &signing.Signer{KeyID: k.ID, Key: priv}, nil
}

// Client returns an API client of the gateway at gatewayURL that signs
// with one of the stack's keys.
func (st *Stack) Client(name, gatewayURL string) (*client.Client, error) {
	signer, err := st.Signer(name)
	if err != nil {
		return nil, err
	}
	return client.New(gatewayURL, signer)
}

// ImportDevices registers every phone of the stack into topic through the
// API, api.MaxTokens per request, as an operator would.
func (st *Stack) ImportDevices(ctx context.Context, c *client.Client, topic string) error {
	return st.ImportDevicesOf(ctx, c, topic, st.Devices)
}

// ImportDevicesOf registers devs into topic through the API, and
// subscribes their apps to it.
func (st *Stack) ImportDevicesOf(ctx context.Context, c *client.Client, topic string, devs []sim.Device) error {
	st.Subscribe(topic, devs...)
	for start := 0; start < len(devs); start += api.MaxTokens {
		var devices []api.ImportDevice
		for _, d := range devs[start:min(len(devs), start+api.MaxTokens)] {
			devices = append(devices, api.ImportDevice{Platform: string(d.Platform), Token: d.Token, Topics: []string{topic}})
		}
		if _, err := c.ImportDevices(ctx, devices); err != nil {
			return fmt.Errorf("import devices: %w", err)
		}
	}
	return nil
}

// CountByPlatform counts the stack's phones per platform.
func (st *Stack) CountByPlatform() map[providers.Platform]int {
	out := map[providers.Platform]int{}
	for _, d := range st.Devices {
		out[d.Platform]++
	}
	return out
}

// RunningApp is a gateway process's parts running inside this process.
type RunningApp struct {
	// URL is the API's base URL; empty when it runs no API.
	URL string
	// MetricsURL is the base URL of the metrics listener (its /metrics,
	// /healthz and /readyz); empty without metrics_listen. Any address
	// in metrics_listen gets a free port on 127.0.0.1.
	MetricsURL string
	App        *app.App
	cancel     context.CancelFunc
	done       chan struct{}
	err        error
}

// StartApp runs the API and/or a worker pool from a configuration file in
// this process, with the API on the configuration's listen address, and
// waits until the API answers.
func StartApp(ctx context.Context, configPath string, r app.Roles, logger *slog.Logger) (*RunningApp, error) {
	return StartAppWith(ctx, configPath, r, logger, AppOptions{})
}

// AppOptions change the process StartAppWith runs.
type AppOptions struct {
	// WrapAPI, when set, wraps the API's handler (app.App.WrapAPI): the
	// end-to-end tests check every exchange against the API's contract.
	WrapAPI func(http.Handler) http.Handler
}

// StartAppWith is StartApp with options.
func StartAppWith(ctx context.Context, configPath string, r app.Roles, logger *slog.Logger, o AppOptions) (*RunningApp, error) {
	cfg, err := app.LoadConfig(configPath, func(string) string { return "" })
	if err != nil {
		return nil, err
	}
	a, err := app.New(ctx, cfg, logger, r)
	if err != nil {
		return nil, err
	}
	if o.WrapAPI != nil {
		a.WrapAPI(o.WrapAPI)
	}
	ra := &RunningApp{App: a, done: make(chan struct{})}
	if r.API {
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("stack: api: %w", err)
		}
		a.ServeOn(ln)
		ra.URL = "http://" + ln.Addr().String()
	}
	if cfg.MetricsListen != "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			a.Close()
			return nil, err
		}
		a.ServeMetricsOn(ln)
		ra.MetricsURL = "http://" + ln.Addr().String()
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ra.cancel = cancel
	go func() {
		defer close(ra.done)
		ra.err = a.Run(runCtx)
	}()
	if ra.URL != "" {
		if err := WaitHTTP(ctx, ra.URL+api.PathHealthz, time.Minute); err != nil {
			ra.Stop()
			return nil, err
		}
	}
	return ra, nil
}

// Stop shuts the app down as SIGTERM would and waits for it.
func (r *RunningApp) Stop() error {
	r.cancel()
	<-r.done
	return r.err
}

// Pause waits for d or until ctx is done, for the pollers of the demo and
// the bench.
func Pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// WaitHTTP polls a URL until it answers 200, ctx ends or the timeout
// passes.
func WaitHTTP(ctx context.Context, u string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("not ready")
			}
			return fmt.Errorf("%s did not come up in %s: %w", app.RedactURL(u), timeout, err)
		}
		if err := Pause(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}
