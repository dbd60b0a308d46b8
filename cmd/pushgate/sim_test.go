package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// TestSimCommand runs "pushgate sim" in-process until its context is
// cancelled and checks what it wrote and served.
func TestSimCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sim")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		err := run(ctx, []string{"sim", "--dir", dir, "--devices", "200", "--latency", "1ms", "--seed", "3"},
			func(string) string { return "" }, strings.NewReader(""), outW, &stderr)
		outW.Close()
		done <- err
	}()

	// The command prints its addresses once the files are written.
	sc := bufio.NewScanner(outR)
	var printed []string
	for sc.Scan() {
		printed = append(printed, sc.Text())
		if strings.HasPrefix(sc.Text(), "gateway config:") {
			break
		}
	}
	go io.Copy(io.Discard, outR)
	if len(printed) == 0 || !strings.HasPrefix(printed[len(printed)-1], "gateway config:") {
		cancel()
		t.Fatalf("sim printed %q; stderr:\n%s", printed, <-done)
	}

	var cfg struct {
		FCM struct {
			ProjectID       string `yaml:"project_id"`
			CredentialsFile string `yaml:"credentials_file"`
			Endpoint        string `yaml:"endpoint"`
			CAFile          string `yaml:"ca_file"`
		} `yaml:"fcm"`
		APNs struct {
			KeyFile string `yaml:"key_file"`
			KeyID   string `yaml:"key_id"`
			TeamID  string `yaml:"team_id"`
			Topic   string `yaml:"topic"`
			Host    string `yaml:"host"`
			CAFile  string `yaml:"ca_file"`
		} `yaml:"apns"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, "pushgate.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("pushgate.yaml: %v\n%s", err, raw)
	}
	for _, p := range []string{cfg.FCM.CredentialsFile, cfg.FCM.CAFile, cfg.APNs.KeyFile, cfg.APNs.CAFile} {
		if !filepath.IsAbs(p) {
			t.Errorf("path %q is not absolute", p)
		}
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%v", err)
		}
	}
	if cfg.FCM.ProjectID != "pushgate-sim" || cfg.APNs.KeyID != "ABCDE12345" || cfg.APNs.TeamID != "TEAM123456" || cfg.APNs.Topic != "org.pushgate.sim" {
		t.Errorf("identifiers: %+v", cfg)
	}

	// Both provider servers answer TLS with the CA the config names, and
	// speak HTTP/2.
	caPEM, err := os.ReadFile(cfg.FCM.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	for _, u := range []string{strings.TrimSuffix(cfg.FCM.Endpoint, "/v1"), cfg.APNs.Host} {
		conn, err := tls.Dial("tcp", strings.TrimPrefix(u, "https://"), &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
			t.Errorf("%s negotiated %q", u, p)
		}
		conn.Close()
	}

	var devices []struct{ Platform, Token string }
	raw, _ = os.ReadFile(filepath.Join(dir, "devices.json"))
	if err := json.Unmarshal(raw, &devices); err != nil {
		t.Fatal(err)
	}
	var nFCM int
	for _, d := range devices {
		switch {
		case d.Platform == "fcm" && len(d.Token) > 150:
			nFCM++
		case d.Platform == "apns" && len(d.Token) == 64:
		default:
			t.Fatalf("device %+v", d)
		}
	}
	if len(devices) != 200 || nFCM < 110 || nFCM > 130 {
		t.Fatalf("%d devices, %d fcm; want 200, about 60%% fcm", len(devices), nFCM)
	}

	var info struct {
		ControlURL string `json:"control_url"`
	}
	raw, _ = os.ReadFile(filepath.Join(dir, "sim.json"))
	json.Unmarshal(raw, &info)
	resp, err := http.Get(info.ControlURL + "/sim/stats")
	if err != nil {
		t.Fatal(err)
	}
	var stats struct {
		Phones map[string]int `json:"phones"`
	}
	json.NewDecoder(resp.Body).Decode(&stats)
	resp.Body.Close()
	if stats.Phones["fcm"]+stats.Phones["apns"] != 200 {
		t.Fatalf("stats phones %v", stats.Phones)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("sim: %v", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("hung: sim did not stop after cancellation")
	}
	if s := stderr.String(); !strings.Contains(s, "simulators stopped") {
		t.Errorf("log has no clean stop:\n%s", s)
	}
	if _, err := http.Get(info.ControlURL + "/sim/stats"); err == nil {
		t.Error("control server still answers after stop")
	}
}

func TestSimCommandUsage(t *testing.T) {
	tests := []struct {
		name string
		give []string
	}{
		{"no dir", []string{"sim"}},
		{"negative devices", []string{"sim", "--dir", "x", "--devices", "-1"}},
		{"share above one", []string{"sim", "--dir", "x", "--android-share", "1.5"}},
		{"negative latency", []string{"sim", "--dir", "x", "--latency", "-1s"}},
		{"bad duration", []string{"sim", "--dir", "x", "--latency", "soon"}},
		{"unknown flag", []string{"sim", "--dir", "x", "--phones", "3"}},
		{"extra argument", []string{"sim", "--dir", "x", "extra"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.give, func(string) string { return "" }, strings.NewReader(""), &stdout, &stderr)
			var u *usageError
			if !errors.As(err, &u) || exitCode(err, io.Discard) != 2 {
				t.Fatalf("run(%q) = %v, want a usage error", tt.give, err)
			}
		})
	}
}
