package app

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/internal/redistest"
	"github.com/pushgate/pushgate/signing"
)

// hangGuard bounds every wait of these tests; reaching it means a hang.
const hangGuard = time.Minute

// runningAPI is an API process run by Run on loopback listeners.
type runningAPI struct {
	app        *App
	apiURL     string
	metricsURL string // "" without metrics_listen
	stop       func() error
}

// startAPI runs an API process from settings (YAML keys; the Redis URL,
// keyring and control log are filled in) on listeners of port 0.
func startAPI(t *testing.T, settings map[string]string) *runningAPI {
	t.Helper()
	dir := t.TempDir()
	pub, _, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	enc, err := signing.EncodePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := signing.MarshalKeyring([]signing.KeyEntry{{ID: "ops", PublicKey: enc, Roles: []string{"admin"}}})
	if err != nil {
		t.Fatal(err)
	}
	ringFile := filepath.Join(dir, "keyring.yaml")
	if err := os.WriteFile(ringFile, ring, 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"PUSHGATE_REDIS_URL":         redistest.URL(t),
		"PUSHGATE_KEYRING_FILE":      ringFile,
		"PUSHGATE_CONTROL_LOG_KEY":   testLogKey,
		"PUSHGATE_CONTROL_STATE_DIR": filepath.Join(dir, "state"),
	}
	for k, v := range settings {
		env[EnvName(k)] = v
	}
	cfg, err := LoadConfig("", envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler), Roles{API: true})
	if err != nil {
		t.Fatal(err)
	}
	r := &runningAPI{app: a}
	ln := listen(t)
	a.ServeOn(ln)
	r.apiURL = "http://" + ln.Addr().String()
	if cfg.MetricsListen != "" {
		mln := listen(t)
		a.ServeMetricsOn(mln)
		r.metricsURL = "http://" + mln.Addr().String()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	r.stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(hangGuard):
			return fmt.Errorf("hung: Run did not return %s after its context ended", hangGuard)
		}
	}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Error(err)
		}
	})
	return r
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// get fetches url. The listeners listen before Run starts, so a request
// waits in the backlog until Run serves it.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: hangGuard}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestMetricsListen serves /metrics on its own listener when
// metrics_listen is set, and then not on the API's; without it, the API's
// listener serves it as before. The metrics listener stops with the rest.
func TestMetricsListen(t *testing.T) {
	t.Run("set", func(t *testing.T) {
		r := startAPI(t, map[string]string{"metrics_listen": "127.0.0.1:0"})
		if code, _ := get(t, r.apiURL+api.PathHealthz); code != http.StatusOK {
			t.Fatalf("healthz = %d", code)
		}
		code, body := get(t, r.apiURL+api.PathMetrics)
		if code != http.StatusNotFound || !strings.Contains(body, `"code":"not_found"`) {
			t.Errorf("API listener: GET /metrics = %d %s, want 404 not_found", code, body)
		}
		code, body = get(t, r.metricsURL+api.PathMetrics)
		if code != http.StatusOK || !strings.Contains(body, `pushgate_http_requests_total{code="200",route="GET /healthz"} 1`) {
			t.Errorf("metrics listener: GET /metrics = %d, want 200 with the API's request count:\n%.2000s", code, body)
		}
		if strings.Contains(body, `route="GET /metrics"`) {
			t.Error("the API counted a /metrics route it does not serve")
		}
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
		if _, err := http.Get(r.metricsURL + api.PathMetrics); err == nil {
			t.Error("the metrics listener still answers after Run returned")
		}
	})
	t.Run("empty", func(t *testing.T) {
		r := startAPI(t, nil)
		if r.app.metrics != nil {
			t.Error("a metrics server was built without metrics_listen")
		}
		get(t, r.apiURL+api.PathHealthz)
		code, body := get(t, r.apiURL+api.PathMetrics)
		if code != http.StatusOK || !strings.Contains(body, `pushgate_http_requests_total{code="200",route="GET /healthz"} 1`) {
			t.Errorf("API listener: GET /metrics = %d, want 200 with the metrics:\n%.2000s", code, body)
		}
	})
}

// TestMetricsListenIsNotListen refuses an API process whose metrics_listen
// is its listen address, which could never serve both.
func TestMetricsListenIsNotListen(t *testing.T) {
	env := envOf(map[string]string{"PUSHGATE_KEYRING_FILE": "keyring.yaml",
		"PUSHGATE_LISTEN": "127.0.0.1:9100", "PUSHGATE_METRICS_LISTEN": "127.0.0.1:9100"})
	cfg, err := LoadConfig("", env)
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(context.Background(), cfg, slog.New(slog.DiscardHandler), Roles{API: true})
	var ce *ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "metrics_listen") {
		t.Errorf("New = %v, want a configuration error naming metrics_listen", err)
	}
}

// TestHTTPSettings checks that the http.* settings bound the API's and the
// metrics listener's connections: a client that never finishes its
// headers, or leaves a kept-alive connection idle, is disconnected, and
// headers over the limit are refused. The API has no write deadline.
func TestHTTPSettings(t *testing.T) {
	r := startAPI(t, map[string]string{"metrics_listen": "127.0.0.1:0",
		"http.read_header_timeout": "100ms", "http.idle_timeout": "100ms", "http.max_header_bytes": "4096"})
	if wt := r.app.api.WriteTimeout; wt != 0 {
		t.Errorf("API server: WriteTimeout = %s, want none: it would cut a kill that waits for the workers", wt)
	}
	get(t, r.apiURL+api.PathHealthz) // Run is serving
	for _, base := range []string{r.apiURL, r.metricsURL} {
		addr := strings.TrimPrefix(base, "http://")

		// Headers that never end.
		conn := dial(t, addr)
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nX-Slow: 1\r\n", api.PathHealthz, addr)
		if err := waitClosed(conn); err != nil {
			t.Errorf("%s: a request whose headers never end: %v", base, err)
		}

		// A kept-alive connection left idle after one answer.
		conn = dial(t, addr)
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", api.PathMetrics, addr)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", base, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err := waitClosed(readerConn{conn, br}); err != nil {
			t.Errorf("%s: an idle kept-alive connection: %v", base, err)
		}

		// Headers over the limit (net/http allows 4096 bytes of slack).
		req, _ := http.NewRequest("GET", base+api.PathHealthz, nil)
		req.Header.Set("X-Big", strings.Repeat("a", 16<<10))
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", base, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("%s: 16 KiB of headers: status %d, want 431", base, resp.StatusCode)
		}
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, hangGuard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// readerConn reads a connection through the reader that already buffered
// part of it.
type readerConn struct {
	net.Conn
	r *bufio.Reader
}

func (c readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// waitClosed reads until the server closes the connection. It fails if the
// server sends anything, or if the hang guard passes first.
func waitClosed(conn interface {
	io.Reader
	SetReadDeadline(time.Time) error
}) error {
	if err := conn.SetReadDeadline(time.Now().Add(hangGuard)); err != nil {
		return err
	}
	var buf [512]byte
	n, err := conn.Read(buf[:])
	var ne net.Error
	switch {
	case n > 0:
		return fmt.Errorf("the server sent %q instead of closing the connection", buf[:n])
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("hung: the server kept the connection open for %s", hangGuard)
	case err == nil:
		return errors.New("read returned nothing and no error")
	}
	return nil // EOF or a reset: the server closed it
}

// TestHTTPSettingsDefaultsAndErrors reads the http.* defaults, and refuses
// values no listener could serve with, naming the setting.
func TestHTTPSettingsDefaultsAndErrors(t *testing.T) {
	cfg, err := LoadConfig("", envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := HTTPConfig{ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 65536}
	if cfg.HTTP != want {
		t.Errorf("defaults = %+v, want %+v", cfg.HTTP, want)
	}
	tests := []struct{ key, give, want string }{
		{"http.read_header_timeout", "0s", "config: http.read_header_timeout: must be a positive duration"},
		{"http.idle_timeout", "soon", "config: http.idle_timeout: must be a positive duration"},
		{"http.max_header_bytes", "1024", "config: http.max_header_bytes: 1024 is too small"},
		{"http.max_header_bytes", "-1", "config: http.max_header_bytes: must be a positive integer"},
		{"metrics_listen", "9090", "config: metrics_listen: must be host:port"},
	}
	for _, tt := range tests {
		_, err := LoadConfig("", envOf(map[string]string{EnvName(tt.key): tt.give}))
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%s=%s: %v, want %q", tt.key, tt.give, err, tt.want)
		}
	}
}
