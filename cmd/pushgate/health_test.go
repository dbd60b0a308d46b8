package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/internal/stack"
)

// runHealthCmd runs pushgate health with args and environment env.
func runHealthCmd(t *testing.T, environ map[string]string, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), append([]string{"health"}, args...), func(k string) string { return environ[k] },
		strings.NewReader(""), &stdout, &stderr)
	return stdout.String(), err
}

// TestHealthProbesARunningProcess asks a real pushgate serve's probes,
// the way the container's HEALTHCHECK does: by URL, and by the listen
// address in the environment, which a wildcard address turns into
// loopback.
func TestHealthProbesARunningProcess(t *testing.T) {
	e := newE2E(t, stack.Options{Devices: 1, Settings: map[string]string{"metrics_listen": "127.0.0.1:0"}},
		app.Roles{API: true, Worker: true})

	out, err := runHealthCmd(t, nil, "--url", e.app.URL+api.PathHealthz)
	if err != nil || !strings.Contains(out, "200") {
		t.Fatalf("health --url API: %q, %v; want healthy", out, err)
	}
	// Ready once the process's view of the control log is fresh.
	waitUntil(t, "the worker's /readyz to answer 200", func() bool {
		_, err := runHealthCmd(t, nil, "--url", e.app.MetricsURL+api.PathReadyz)
		return err == nil
	})

	u, err := url.Parse(e.app.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(u.Host)
	out, err = runHealthCmd(t, map[string]string{"PUSHGATE_LISTEN": "0.0.0.0:" + port}, "--ready")
	if err != nil || !strings.Contains(out, "127.0.0.1:"+port+api.PathReadyz) {
		t.Fatalf("health --ready with PUSHGATE_LISTEN=0.0.0.0:%s: %q, %v; want /readyz asked on 127.0.0.1", port, out, err)
	}
}

// TestHealthReportsWhatIsWrong: a probe that refuses, a process that is
// not there and a bad URL each fail with one line naming the problem.
func TestHealthReportsWhatIsWrong(t *testing.T) {
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = append(asked, r.URL.Path)
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"type":"about:blank","title":"Service Unavailable","status":503,"code":"unavailable","detail":"Redis does not answer"}`))
	}))
	defer srv.Close()

	_, err := runHealthCmd(t, nil, "--ready", "--url", srv.URL+api.PathReadyz)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "unavailable: Redis does not answer") {
		t.Fatalf("a refusing probe: err = %v, want the status and the problem", err)
	}
	if len(asked) != 1 || asked[0] != api.PathReadyz {
		t.Fatalf("asked %v, want one GET of %s", asked, api.PathReadyz)
	}
	if exitCode(err, &bytes.Buffer{}) != 1 {
		t.Fatalf("a refusing probe exits %d, want 1", exitCode(err, &bytes.Buffer{}))
	}

	// Nothing listens on a port just closed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if _, err := runHealthCmd(t, map[string]string{"PUSHGATE_LISTEN": addr}); err == nil {
		t.Fatal("health of a process that is not running succeeded")
	}

	for _, bad := range [][]string{{"--url", "ftp://127.0.0.1/healthz"}, {"--url", "127.0.0.1:8080"}, {"--timeout", "0s"}, {"extra"}} {
		_, err := runHealthCmd(t, nil, bad...)
		var u *usageError
		if !errors.As(err, &u) {
			t.Errorf("health %v: err = %v, want a usage error", bad, err)
		}
	}
	if _, err := runHealthCmd(t, map[string]string{"PUSHGATE_LISTEN": "no-port"}); err == nil || !strings.Contains(err.Error(), "PUSHGATE_LISTEN") {
		t.Errorf("a bad PUSHGATE_LISTEN: err = %v, want one naming it", err)
	}
}

func TestProbeURL(t *testing.T) {
	for _, c := range []struct{ listen, want string }{
		{"", "http://127.0.0.1:8080/healthz"},
		{"0.0.0.0:8080", "http://127.0.0.1:8080/healthz"},
		{":9000", "http://127.0.0.1:9000/healthz"},
		{"[::]:8080", "http://[::1]:8080/healthz"},
		{"10.0.0.7:8080", "http://10.0.0.7:8080/healthz"},
	} {
		got, err := probeURL(c.listen, api.PathHealthz)
		if err != nil || got != c.want {
			t.Errorf("probeURL(%q) = %q, %v; want %q", c.listen, got, err, c.want)
		}
	}
}

// TestVersionOf: a stamped release version comes first, else the module
// version; the revision and a dirty mark follow when the build recorded
// them.
func TestVersionOf(t *testing.T) {
	info := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}}
	for _, c := range []struct {
		stamped string
		info    *debug.BuildInfo
		want    string
	}{
		{"", info, "(devel) 0123456789ab-dirty go1.26.8"},
		{"v1.4.0", info, "v1.4.0 0123456789ab-dirty go1.26.8"},
		{"", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.4.0"}}, "v1.4.0 go1.26.8"},
		{"v1.4.0", nil, "v1.4.0"},
		{"", nil, "unknown"},
	} {
		if got := versionOf(c.stamped, c.info); got != c.want {
			t.Errorf("versionOf(%q, …) = %q, want %q", c.stamped, got, c.want)
		}
	}
}
