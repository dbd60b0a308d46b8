package deploy

import (
	"context"
	"maps"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/providers/sim"
)

const composeFile = "compose.yaml"

// loadCompose loads compose.yaml as docker compose does: the env files
// in order (a later one wins), then COMPOSE_PROFILES from them selects
// the profiles. The schema is checked, so an unknown key is an error.
func loadCompose(t *testing.T, envFiles ...string) (*types.Project, error) {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{composeFile},
		cli.WithWorkingDirectory("."),
		cli.WithEnvFiles(envFiles...),
		cli.WithDotEnv,
		cli.WithDefaultProfiles(),
	)
	if err != nil {
		t.Fatal(err)
	}
	return opts.LoadProject(context.Background())
}

// operatorEnv writes the deploy/.env an operator would: the control log's
// public key, which compose.yaml requires.
func operatorEnv(t *testing.T) string {
	t.Helper()
	_, public := logKeys()
	f := filepath.Join(t.TempDir(), ".env")
	if err := os.WriteFile(f, []byte("PUSHGATE_CONTROL_LOG_PUBLIC_KEY="+public+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// sampleComposeSecret is what the test puts in a compose secret's file.
func sampleComposeSecret(name string) string {
	private, _ := logKeys()
	if name == "control_log_key" {
		return private + "\n"
	}
	return "sample " + name
}

// composeProcess describes a pushgate service as pushgate sees it.
func composeProcess(t *testing.T, p *types.Project, s types.ServiceConfig) *process {
	t.Helper()
	proc := &process{name: "compose service " + s.Name, env: map[string]string{}}
	if len(s.Command) > 0 {
		proc.role = s.Command[0]
	}
	for k, v := range s.Environment {
		if v != nil {
			proc.env[k] = *v
		}
	}
	for _, sec := range s.Secrets {
		if _, ok := p.Secrets[sec.Source]; !ok {
			t.Errorf("%s: secret %s is not defined", proc.name, sec.Source)
		}
		target := sec.Target
		if target == "" {
			target = sec.Source
		}
		if !path.IsAbs(target) {
			target = "/run/secrets/" + target
		}
		proc.mounts = append(proc.mounts, mount{target: target, kind: "secret", source: sec.Source, file: true, readOnly: true,
			files: map[string]string{"": sampleComposeSecret(sec.Source)}})
	}
	for _, v := range s.Volumes {
		m := mount{target: v.Target, source: v.Source, readOnly: v.ReadOnly}
		switch {
		case v.Type == types.VolumeTypeVolume && !v.ReadOnly:
			m.kind = "state"
		case v.Type == types.VolumeTypeVolume, v.Type == types.VolumeTypeBind:
			m.kind = "shared"
		default:
			m.kind = "scratch"
		}
		if v.Type == types.VolumeTypeVolume {
			if _, ok := p.Volumes[v.Source]; !ok {
				t.Errorf("%s: volume %s is not declared", proc.name, v.Source)
			}
		}
		proc.mounts = append(proc.mounts, m)
	}
	return proc
}

// pushgateServices returns the services that run the pushgate image, by
// name.
func pushgateServices(p *types.Project) []types.ServiceConfig {
	var out []types.ServiceConfig
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		if s := p.Services[name]; s.Image == "pushgate:latest" {
			out = append(out, s)
		}
	}
	return out
}

func TestCompose(t *testing.T) {
	p, err := loadCompose(t, operatorEnv(t))
	if err != nil {
		t.Fatalf("docker compose -f deploy/compose.yaml config: %v", err)
	}
	if _, ok := p.Services["sim"]; ok {
		t.Error("the simulators run without the sim profile")
	}
	if _, ok := p.DisabledServices["sim"]; !ok {
		t.Error("no sim service behind the sim profile")
	}

	// Redis keeps an append-only file on a named volume.
	r, ok := p.Services["redis"]
	switch {
	case !ok:
		t.Fatal("no redis service")
	case r.Image != "redis:7":
		t.Errorf("redis image %q, want redis:7", r.Image)
	case !slices.ContainsFunc(r.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Type == types.VolumeTypeVolume && v.Target == "/data" }):
		t.Error("redis: /data is not a named volume")
	}
	if i := slices.Index(r.Command, "--appendonly"); i < 0 || i+1 >= len(r.Command) || r.Command[i+1] != "yes" {
		t.Errorf("redis command %q does not turn the append-only file on", r.Command)
	}
	if r.HealthCheck == nil || len(r.HealthCheck.Test) == 0 {
		t.Error("redis has no healthcheck, which the gateway's depends_on waits for")
	}

	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "Dockerfile")); err != nil {
		t.Fatalf("the build context has no Dockerfile: %v", err)
	}
	roles := map[string]int{}
	stateVolumes := map[string]string{}
	for _, s := range pushgateServices(p) {
		proc := composeProcess(t, p, s)
		roles[proc.role] += s.GetScale()
		if s.Build == nil || filepath.Clean(s.Build.Context) != root {
			t.Errorf("%s: not built from the repository's Dockerfile (build %+v)", proc.name, s.Build)
		}
		if !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") || !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
			t.Errorf("%s: want read_only, cap_drop ALL and no-new-privileges", proc.name)
		}
		if d, ok := s.DependsOn["redis"]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("%s: does not wait for a healthy Redis", proc.name)
		}
		if d, ok := s.DependsOn["sim"]; ok && d.Required {
			t.Errorf("%s: requires the sim service, which runs only with the sim profile", proc.name)
		}
		cfg := proc.loadConfig(t)
		for _, m := range proc.mounts {
			if m.kind == "state" {
				if other, dup := stateVolumes[m.source]; dup {
					t.Errorf("%s and %s share the state volume %s: each process remembers its own checkpoint", other, proc.name, m.source)
				}
				stateVolumes[m.source] = proc.name
			}
		}
		if s.StopGracePeriod == nil || float64(*s.StopGracePeriod) <= float64(cfg.ShutdownTimeout) {
			t.Errorf("%s: stop_grace_period %v is not above worker.shutdown_timeout %s", proc.name, s.StopGracePeriod, cfg.ShutdownTimeout)
		}
		var health []string
		if s.HealthCheck != nil {
			health = s.HealthCheck.Test
		}
		hasLogKey := slices.ContainsFunc(s.Secrets, func(r types.ServiceSecretConfig) bool { return r.Source == "control_log_key" })
		switch proc.role {
		case "api":
			// pushgate health asks http://127.0.0.1:8080/healthz.
			lp, wildcard := port(t, "listen", cfg.Listen)
			if lp != "8080" || !wildcard {
				t.Errorf("%s: listen %s, want 0.0.0.0:8080, which the published port and pushgate health reach", proc.name, cfg.Listen)
			}
			if !slices.Equal(health, []string{"CMD", "pushgate", "health"}) {
				t.Errorf("%s: healthcheck %q", proc.name, health)
			}
			if !slices.ContainsFunc(s.Ports, func(pc types.ServicePortConfig) bool { return strconv.Itoa(int(pc.Target)) == lp }) {
				t.Errorf("%s: the API's port %s is not published", proc.name, lp)
			}
			if !hasLogKey {
				t.Errorf("%s: without control_log_key no process integrates the control log", proc.name)
			}
		case "worker":
			mp, wildcard := port(t, "metrics_listen", cfg.MetricsListen)
			if !wildcard {
				t.Errorf("%s: metrics_listen %s", proc.name, cfg.MetricsListen)
			}
			want := []string{"CMD", "pushgate", "health", "--url", "http://127.0.0.1:" + mp + "/healthz"}
			if !slices.Equal(health, want) {
				t.Errorf("%s: healthcheck %q, want %q", proc.name, health, want)
			}
			if hasLogKey {
				t.Errorf("%s: a worker gets the control log's private key", proc.name)
			}
		default:
			t.Errorf("%s: runs %q", proc.name, proc.role)
		}
	}
	if roles["api"] != 1 || roles["worker"] < 2 {
		t.Errorf("processes by role %v: want one API and at least two workers", roles)
	}
}

func TestComposeNeedsLogPublicKey(t *testing.T) {
	empty := filepath.Join(t.TempDir(), ".env")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadCompose(t, empty)
	if err == nil || !strings.Contains(err.Error(), "PUSHGATE_CONTROL_LOG_PUBLIC_KEY") {
		t.Fatalf("compose.yaml without PUSHGATE_CONTROL_LOG_PUBLIC_KEY: err = %v, want one naming it", err)
	}
}

// TestComposeSim runs compose.yaml with sim.env and checks that the
// workers are pointed at what the simulator really serves and writes: a
// simulator started here with the service's flags says which project,
// key, team, topic, files and URL paths.
func TestComposeSim(t *testing.T) {
	p, err := loadCompose(t, operatorEnv(t), "sim.env")
	if err != nil {
		t.Fatalf("docker compose --env-file deploy/.env --env-file deploy/sim.env config: %v", err)
	}
	s, ok := p.Services["sim"]
	if !ok {
		t.Fatal("sim.env does not start the sim service")
	}
	if !slices.Equal(s.Profiles, []string{"sim"}) {
		t.Errorf("sim service profiles %q, want [sim]", s.Profiles)
	}
	if len(s.Command) == 0 || s.Command[0] != "sim" {
		t.Fatalf("sim service command %q", s.Command)
	}
	flags := map[string]string{}
	for i := 1; i+1 < len(s.Command); i += 2 {
		flags[strings.TrimLeft(s.Command[i], "-")] = s.Command[i+1]
	}
	hostname, dir := flags["hostname"], flags["dir"]
	host, base, err := net.SplitHostPort(flags["listen"])
	if err != nil || hostname == "" || dir == "" || host != "0.0.0.0" {
		t.Fatalf("sim service command %q: want --dir, --hostname and --listen 0.0.0.0:PORT", s.Command)
	}
	basePort, err := strconv.Atoi(base)
	if err != nil || basePort == 0 {
		t.Fatalf("sim --listen %s: want a fixed port", flags["listen"])
	}
	if s.HealthCheck == nil || !slices.Equal(s.HealthCheck.Test, []string{"CMD", "pushgate", "health", "--url", "http://127.0.0.1:" + strconv.Itoa(basePort+2) + "/sim/stats"}) {
		t.Errorf("sim healthcheck %v: want pushgate health on its control port's /sim/stats", s.HealthCheck)
	}
	i := slices.IndexFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == dir && !v.ReadOnly })
	if i < 0 {
		t.Fatalf("sim --dir %s is not a writable volume", dir)
	}
	files := s.Volumes[i].Source

	want := simulatorSettings(t, hostname)
	workers := 0
	for _, svc := range pushgateServices(p) {
		proc := composeProcess(t, p, svc)
		if proc.role == "sim" {
			continue
		}
		if d, ok := svc.DependsOn["sim"]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("%s: does not wait for the simulators", proc.name)
		}
		if proc.role != "worker" {
			continue
		}
		workers++
		cfg := proc.loadConfig(t)
		checkURL := func(setting, got, want string, wantPort int) {
			t.Helper()
			g, err := url.Parse(got)
			w, _ := url.Parse(want)
			if err != nil || g.Scheme != w.Scheme || g.Hostname() != hostname || g.Port() != strconv.Itoa(wantPort) || g.Path != w.Path {
				t.Errorf("%s: %s %q, want %s://%s:%d%s", proc.name, setting, got, w.Scheme, hostname, wantPort, w.Path)
			}
		}
		checkURL("fcm.endpoint", cfg.FCM.Endpoint, want.FCM.Endpoint, basePort)
		checkURL("apns.host", cfg.APNs.Host, want.APNs.Host, basePort+1)
		for _, f := range []struct{ setting, got, want string }{
			{"fcm.project_id", cfg.FCM.ProjectID, want.FCM.ProjectID},
			{"apns.key_id", cfg.APNs.KeyID, want.APNs.KeyID},
			{"apns.team_id", cfg.APNs.TeamID, want.APNs.TeamID},
			{"apns.topic", cfg.APNs.Topic, want.APNs.Topic},
		} {
			if f.got != f.want {
				t.Errorf("%s: %s %q, the simulator's is %q", proc.name, f.setting, f.got, f.want)
			}
		}
		for _, f := range []struct{ setting, got, want string }{
			{"fcm.credentials_file", cfg.FCM.CredentialsFile, want.FCM.CredentialsFile},
			{"fcm.ca_file", cfg.FCM.CAFile, want.FCM.CAFile},
			{"apns.key_file", cfg.APNs.KeyFile, want.APNs.KeyFile},
			{"apns.ca_file", cfg.APNs.CAFile, want.APNs.CAFile},
		} {
			m, _, ok := proc.find(f.got)
			if !ok || m.source != files || filepath.Base(f.got) != filepath.Base(f.want) {
				t.Errorf("%s: %s %s, want %s in the volume %s the simulator writes", proc.name, f.setting, f.got, filepath.Base(f.want), files)
			}
		}
	}
	if workers == 0 {
		t.Fatal("no workers")
	}
}

// simulatorSettings starts the simulators as the sim service does (with
// its hostname, on loopback) and loads the gateway settings they write.
func simulatorSettings(t *testing.T, hostname string) *app.Config {
	t.Helper()
	s, err := sim.New(sim.Config{Listen: "127.0.0.1:0", Hostname: hostname})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	f, err := s.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, public := logKeys()
	cfg, err := app.LoadConfig(f.GatewayYAML, func(k string) string {
		if k == "PUSHGATE_CONTROL_LOG_PUBLIC_KEY" {
			return public
		}
		return ""
	})
	if err != nil {
		t.Fatalf("the simulator's %s: %v", f.GatewayYAML, err)
	}
	return cfg
}
