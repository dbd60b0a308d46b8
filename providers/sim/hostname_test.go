package sim

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHostname runs the simulators as a container would be reached, by a
// name of their own: the advertised URLs and the service account's
// token_uri use the name, and a client verifying the certificate for that
// name connects, while one expecting another name is refused.
func TestHostname(t *testing.T) {
	s := newSim(t, Config{Hostname: "sim.test"})
	for _, u := range []string{s.FCMEndpoint(), s.TokenURL(), s.APNsHost(), s.ControlURL()} {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		if p.Hostname() != "sim.test" || p.Port() == "" || p.Port() == "0" {
			t.Errorf("advertised URL %s: want host sim.test with the listening port", u)
		}
	}
	f, err := s.WriteFiles(filepath.Join(t.TempDir(), "sim"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.ServiceAccount)
	if err != nil {
		t.Fatal(err)
	}
	var sa struct {
		TokenURI string `json:"token_uri"`
	}
	if err := json.Unmarshal(b, &sa); err != nil {
		t.Fatal(err)
	}
	if sa.TokenURI != s.TokenURL() {
		t.Errorf("service account token_uri = %q, want %q", sa.TokenURI, s.TokenURL())
	}

	// The listeners are on loopback: send sim.test there.
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		var d net.Dialer
		return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
	}
	get := func(serverName string) error {
		c := &http.Client{Transport: &http.Transport{
			DialContext:     dial,
			TLSClientConfig: &tls.Config{RootCAs: s.CertPool(), ServerName: serverName},
		}}
		defer c.CloseIdleConnections()
		resp, err := c.Get(s.TokenURL())
		if err != nil {
			return err
		}
		return resp.Body.Close()
	}
	if err := get("sim.test"); err != nil {
		t.Errorf("GET %s verifying sim.test: %v", s.TokenURL(), err)
	}
	if err := get("other.test"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("GET verifying other.test: err = %v, want a certificate error", err)
	}
}

func TestHostnameRefused(t *testing.T) {
	tests := []string{"sim:7000", "https://sim", "-sim", "sim..test", "sim_1", "a b"}
	for _, give := range tests {
		t.Run(give, func(t *testing.T) {
			s, err := New(Config{Hostname: give})
			if err == nil {
				s.Close()
				t.Fatalf("New(Hostname %q) = nil error, want a refusal", give)
			}
			if !strings.Contains(err.Error(), "hostname") {
				t.Errorf("error %q does not name the hostname", err)
			}
		})
	}
}
