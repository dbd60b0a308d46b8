package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/internal/app"
)

// runHealth is pushgate health: one probe of a running process, for a
// container's HEALTHCHECK (the distroless image has no shell and no curl).
// It exits 0 when the probe answers 200 and 1 with one line saying why
// otherwise.
func runHealth(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "health", "[--url URL] [--ready] [--timeout D]")
	rawURL := fs.String("url", "", "probe to ask (default /healthz, or /readyz with --ready, on $"+app.EnvName("listen")+"'s port, asked on loopback; else http://127.0.0.1:8080)")
	ready := fs.Bool("ready", false, "ask /readyz instead of /healthz: Redis answers, the control log is fresh, no provider refuses the credential")
	timeout := fs.Duration("timeout", 3*time.Second, "how long the probe may take")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("health takes no arguments")
	}
	if *timeout <= 0 {
		return usagef("--timeout must be positive, got %s", *timeout)
	}
	path := api.PathHealthz
	if *ready {
		path = api.PathReadyz
	}
	target := *rawURL
	if target == "" {
		var err error
		if target, err = probeURL(e.getenv(app.EnvName("listen")), path); err != nil {
			return err
		}
	}
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usagef("--url %q: want an http or https URL such as http://127.0.0.1:8080/healthz", target)
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	// No proxy from the environment and no redirects: the probe asks this
	// process, not whatever an HTTP_PROXY or a Location points at.
	client := &http.Client{
		Transport:     &http.Transport{},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health: %s answered %s%s", u.Redacted(), resp.Status, problemSuffix(body))
	}
	fmt.Fprintf(e.stdout, "healthy: %s answered %s\n", u.Redacted(), resp.Status)
	return nil
}

// probeURL is the probe on the address a process listens on, asked on
// loopback when it listens on every interface (or names no host).
func probeURL(listen, path string) (string, error) {
	if listen == "" {
		listen = "127.0.0.1:8080"
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", usagef("$%s %q: want host:port", app.EnvName("listen"), listen)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port) + path, nil
}

// problemSuffix is ": code: detail" when body is a problem document, else
// nothing: a probe's refusal names what is wrong.
func problemSuffix(body []byte) string {
	var p struct {
		Code   string `json:"code"`
		Detail string `json:"detail"`
	}
	if json.Unmarshal(body, &p) != nil || p.Code == "" {
		return ""
	}
	return ": " + strings.TrimSpace(p.Code+": "+p.Detail)
}
