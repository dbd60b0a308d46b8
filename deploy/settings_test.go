package deploy

import (
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/internal/app"
)

// settingsEnv is what pushgate's settings table says about environment
// variables: every one a process reads, and the *_FILE variants that
// LoadConfig opens itself.
type settingsEnv struct {
	known      map[string]bool
	secretFile map[string]bool
}

// readSettingsEnv parses pushgate help config, the settings table.
var readSettingsEnv = sync.OnceValue(func() settingsEnv {
	var b strings.Builder
	app.PrintConfigHelp(&b)
	s := settingsEnv{known: map[string]bool{"PUSHGATE_CONFIG": true}, secretFile: map[string]bool{}}
	for line := range strings.SplitSeq(b.String(), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && strings.HasPrefix(line, "  ") && !strings.HasPrefix(line, "   ") && strings.HasPrefix(f[1], "PUSHGATE_"):
			s.known[f[1]] = true
		case len(f) >= 2 && f[0] == "(or" && strings.HasPrefix(f[1], "PUSHGATE_"):
			s.known[f[1]] = true
			s.secretFile[f[1]] = true
		}
	}
	return s
})

func TestSettingsTableParses(t *testing.T) {
	s := readSettingsEnv()
	for _, name := range []string{"PUSHGATE_LISTEN", "PUSHGATE_METRICS_LISTEN", "PUSHGATE_CONTROL_STATE_DIR", "PUSHGATE_KEYRING_FILE", "PUSHGATE_APNS_KEY_FILE"} {
		if !s.known[name] || s.secretFile[name] {
			t.Errorf("settings table: %s should be a plain setting", name)
		}
	}
	for _, name := range []string{"PUSHGATE_REDIS_URL_FILE", "PUSHGATE_CONTROL_LOG_KEY_FILE"} {
		if !s.secretFile[name] {
			t.Errorf("settings table: %s should be the file variant of a secret setting", name)
		}
	}
	if s.known["PUSHGATE_LISTEN_FILE"] {
		t.Error("settings table: listen is not secret, so PUSHGATE_LISTEN_FILE is no setting")
	}
}

// logKeys is one control log key pair for every test: the samples of the
// secrets that hold it.
var logKeys = sync.OnceValues(func() (private, public string) {
	private, public, err := controllog.GenerateKey("pushgate.example.org/control")
	if err != nil {
		panic(err)
	}
	return private, public
})

// mount is what a deployment puts at one path of a container.
type mount struct {
	target string
	// kind is "secret", "config" (files the test knows), "state" (a
	// volume that outlives the container), "scratch" (one that does not)
	// or "shared" (files another container writes).
	kind string
	// source names the Secret, ConfigMap or volume.
	source string
	// file is true when target is a single file rather than a directory.
	file bool
	// files holds the content of each file, by path relative to target
	// ("" for a single-file mount), for kinds secret and config.
	files    map[string]string
	readOnly bool
}

// process is one pushgate container as a deployment describes it.
type process struct {
	name   string
	role   string // the subcommand: api, worker or sim
	env    map[string]string
	mounts []mount
}

// find returns the mount that provides path, and path relative to it.
func (p *process) find(path string) (*mount, string, bool) {
	var best *mount
	rel := ""
	for i := range p.mounts {
		m := &p.mounts[i]
		switch {
		case m.file && path == m.target:
			return m, "", true
		case !m.file && strings.HasPrefix(path, m.target+"/"):
			if best == nil || len(m.target) > len(best.target) {
				best, rel = m, strings.TrimPrefix(path, m.target+"/")
			}
		}
	}
	return best, rel, best != nil
}

// file returns the content of the file at path, when a secret or config
// mount provides it; shared reports a file another container writes.
func (p *process) file(path string) (content string, shared bool, ok bool) {
	m, rel, found := p.find(path)
	if !found {
		return "", false, false
	}
	switch m.kind {
	case "secret", "config":
		c, ok := m.files[rel]
		return c, false, ok
	case "shared":
		return "", true, true
	}
	return "", false, false
}

// loadConfig loads the process's settings with pushgate's own loader:
// the file PUSHGATE_CONFIG names and the *_FILE secrets are read from
// what the mounts hold, every variable must be a setting, and every file
// a setting names must be mounted, readable and in place.
func (p *process) loadConfig(t *testing.T) *app.Config {
	t.Helper()
	s := readSettingsEnv()
	dir := t.TempDir()
	env := map[string]string{}
	var names []string
	for k := range p.env {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := p.env[k]
		if !strings.HasPrefix(k, "PUSHGATE_") {
			continue
		}
		if !s.known[k] {
			t.Errorf("%s: %s is not a pushgate setting (pushgate help config)", p.name, k)
			continue
		}
		if v != "" && (k == "PUSHGATE_CONFIG" || s.secretFile[k]) {
			content, _, ok := p.file(v)
			if !ok {
				t.Errorf("%s: %s=%s: no secret or config map provides that file", p.name, k, v)
				continue
			}
			local := filepath.Join(dir, k)
			if err := os.WriteFile(local, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			v = local
		}
		env[k] = v
	}
	cfg, err := app.LoadConfig(env["PUSHGATE_CONFIG"], func(k string) string {
		if k == "PUSHGATE_CONFIG" {
			return ""
		}
		return env[k]
	})
	if err != nil {
		t.Fatalf("%s: pushgate does not start with these settings: %v", p.name, err)
	}

	// Files the process opens after loading its settings.
	files := []struct{ setting, path string }{{"keyring_file", cfg.KeyringFile}}
	if p.role == "worker" {
		if cfg.FCM.ProjectID != "" {
			files = append(files, struct{ setting, path string }{"fcm.credentials_file", cfg.FCM.CredentialsFile})
		}
		files = append(files, []struct{ setting, path string }{
			{"fcm.ca_file", cfg.FCM.CAFile}, {"apns.key_file", cfg.APNs.KeyFile}, {"apns.ca_file", cfg.APNs.CAFile},
		}...)
		if cfg.AppSigning.Mode != "off" {
			files = append(files, struct{ setting, path string }{"app_signing.key_file", cfg.AppSigning.KeyFile})
		}
	}
	for _, f := range files {
		if f.path == "" {
			continue
		}
		if _, _, ok := p.file(f.path); !ok {
			t.Errorf("%s: %s is %s, which no mounted secret, config map or shared volume provides", p.name, f.setting, f.path)
		}
	}
	if cfg.KeyringFile == "" {
		t.Errorf("%s: keyring_file is not set: pushgate refuses to start", p.name)
	}

	// control.state_dir must outlive the container, and be writable: the
	// mount that provides a file in it must be the directory itself.
	m, rel, ok := p.find(cfg.Control.StateDir + "/x")
	switch {
	case cfg.Control.StateDir == "":
		t.Errorf("%s: control.state_dir is not set: a restarted process forgets its checkpoint and the deployment id", p.name)
	case !ok || rel != "x":
		t.Errorf("%s: control.state_dir %s is not a mounted volume", p.name, cfg.Control.StateDir)
	case m.kind != "state":
		t.Errorf("%s: control.state_dir %s is on a %s volume (%s), which does not outlive the pod", p.name, cfg.Control.StateDir, m.kind, m.source)
	case m.readOnly:
		t.Errorf("%s: control.state_dir %s is read-only", p.name, cfg.Control.StateDir)
	}
	return cfg
}

// port returns the port of a host:port setting, and whether its host is
// one other containers reach (every interface).
func port(t *testing.T, what, addr string) (string, bool) {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", what, addr, err)
	}
	ip := net.ParseIP(host)
	return p, host == "" || ip != nil && ip.IsUnspecified()
}
