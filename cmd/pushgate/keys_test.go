package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/signing"
)

// runCmd runs the binary's run in-process with the given environment and
// standard input.
func runCmd(t *testing.T, env map[string]string, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	getenv := func(k string) string { return env[k] }
	err = run(context.Background(), args, getenv, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), err
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := runCmd(t, nil, "", args...)
	if err != nil {
		t.Fatalf("pushgate %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

func TestKeygenWritesKeyPair(t *testing.T) {
	dir := t.TempDir()
	out := mustRun(t, "keygen", "--id", "city-alerts", "--roles", "broadcast,register",
		"--topics", "citizens,district-*", "--max-audience", "100000", "--rate", "6000/min", "--dir", dir,
		"--owner", "diskominfo", "--reach", "50000/24h", "--approval-above", "20000", "--max-devices", "300000")

	keyFile, pubFile := filepath.Join(dir, "city-alerts.key"), filepath.Join(dir, "city-alerts.pub")
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("%s mode = %v, want 0600", keyFile, perm)
	}
	privPEM, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := signing.ParsePrivateKeyPEM(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := os.ReadFile(pubFile)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := signing.ParsePublicKey(string(pubPEM))
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(priv.Public()) {
		t.Error(".pub does not hold the public half of .key")
	}

	// The printed entry is a keyring entry for that key.
	kr, err := signing.ParseKeyring([]byte("keys:\n" + out))
	if err != nil {
		t.Fatalf("printed entry does not parse: %v\n%s", err, out)
	}
	k, ok := kr.Lookup("city-alerts")
	if !ok || !k.Public.Equal(pub) || !k.Has(signing.RoleRegister) || !k.AllowsTopic("district-9") ||
		k.MaxAudience != 100000 || k.Rate != (signing.Rate{Count: 6000, Per: time.Minute}) || k.Owner != "diskominfo" ||
		k.Reach != (signing.Rate{Count: 50000, Per: 24 * time.Hour}) || k.ApprovalAbove != 20000 || k.MaxDevices != 300000 {
		t.Errorf("printed entry = %+v", k)
	}
}

func TestKeygenRefusesOverwrite(t *testing.T) {
	tests := []struct {
		name     string
		existing string // file present before keygen runs
	}{
		{"key exists", "a.key"},
		{"public key exists", "a.pub"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, tt.existing), []byte("keep me"), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := runCmd(t, nil, "", "keygen", "--id", "a", "--roles", "admin", "--dir", dir)
			if !isUsage(err) || !strings.Contains(err.Error(), "already exists") {
				t.Fatalf("keygen = %v, want a usage error about the existing file", err)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 {
				t.Errorf("dir holds %d files after a refused keygen, want only %s", len(entries), tt.existing)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, tt.existing)); string(b) != "keep me" {
				t.Errorf("%s was overwritten", tt.existing)
			}
		})
	}
}

func TestKeygenKeyring(t *testing.T) {
	dir := t.TempDir()
	keyring := filepath.Join(dir, "keyring.yaml")
	mustRun(t, "keygen", "--id", "alerts", "--roles", "broadcast", "--topics", "*", "--max-audience", "10", "--dir", dir, "--keyring", keyring)
	mustRun(t, "keygen", "--id", "ops", "--roles", "admin,approve", "--dir", dir, "--keyring", keyring)

	kr, err := signing.LoadKeyring(keyring)
	if err != nil {
		t.Fatal(err)
	}
	if ks := kr.Keys(); len(ks) != 2 || ks[0].ID != "alerts" || ks[1].ID != "ops" || !ks[0].AllowsAll() {
		t.Fatalf("keyring keys = %+v", ks)
	}

	// A duplicate id is refused before any key file is written.
	before, _ := os.ReadFile(keyring)
	other := t.TempDir()
	_, _, err = runCmd(t, nil, "", "keygen", "--id", "ops", "--roles", "admin", "--dir", other, "--keyring", keyring)
	if !isUsage(err) || !strings.Contains(err.Error(), `already has a key "ops"`) {
		t.Fatalf("keygen with a duplicate id = %v", err)
	}
	if entries, _ := os.ReadDir(other); len(entries) != 0 {
		t.Errorf("refused keygen wrote %d files", len(entries))
	}
	if after, _ := os.ReadFile(keyring); !bytes.Equal(before, after) {
		t.Error("refused keygen changed the keyring")
	}

	// A keyring whose list cannot be appended to is left alone.
	flow := filepath.Join(dir, "flow.yaml")
	if err := os.WriteFile(flow, []byte("keys: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = runCmd(t, nil, "", "keygen", "--id", "x", "--roles", "admin", "--dir", dir, "--keyring", flow)
	if !isUsage(err) {
		t.Fatalf("keygen onto a flow-style list = %v, want a usage error", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "x.key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("x.key exists after a refused keygen: %v", err)
	}
}

func TestSignOutputVerifies(t *testing.T) {
	dir := t.TempDir()
	keyring := filepath.Join(dir, "keyring.yaml")
	mustRun(t, "keygen", "--id", "alerts", "--roles", "broadcast", "--topics", "citizens", "--max-audience", "10", "--dir", dir, "--keyring", keyring)
	keyFile := filepath.Join(dir, "alerts.key")
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"audience":{"topic":"citizens"},"message":{"title":"t","body":"b"}}`
	bodyFile := filepath.Join(dir, "body.json")
	if err := os.WriteFile(bodyFile, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	const target = "http://127.0.0.1:8080/v1/broadcasts?wait=true"

	tests := []struct {
		name  string
		env   map[string]string
		stdin string
		args  []string
		body  string
		lines int
	}{
		{"body from file", nil, "", []string{"--key", keyFile, "--key-id", "alerts", "--url", target, "--body", bodyFile}, body, 3},
		{"body from stdin", nil, body, []string{"--key", keyFile, "--key-id", "alerts", "--url", target, "--body", "-"}, body, 3},
		{"no body", nil, "", []string{"--key", keyFile, "--key-id", "alerts", "--method", "GET", "--url", target}, "", 2},
		{"key file and id from the environment", map[string]string{"PUSHGATE_KEY": keyFile, "PUSHGATE_KEY_ID": "alerts"}, "",
			[]string{"--url", target, "--body", bodyFile}, body, 3},
		{"PEM in the environment", map[string]string{"PUSHGATE_KEY": string(keyPEM), "PUSHGATE_KEY_ID": "alerts"}, "",
			[]string{"--url", target, "--body", bodyFile}, body, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, err := runCmd(t, tt.env, tt.stdin, append([]string{"sign"}, tt.args...)...)
			if err != nil {
				t.Fatalf("sign: %v\n%s", err, errOut)
			}
			if n := strings.Count(out, "\n"); n != tt.lines {
				t.Errorf("sign printed %d lines, want %d:\n%s", n, tt.lines, out)
			}
			// Parse the printed lines as curl -H would send them.
			method := "POST"
			if tt.body == "" {
				method = "GET"
			}
			h := readHeaderLines(t, out)
			if tt.body != "" {
				h.Set("Content-Type", "application/json")
			}
			u, _ := url.Parse(target)
			req := &signing.Request{Method: method, Authority: u.Host, Path: u.EscapedPath(), Query: u.RawQuery, Header: h, Body: []byte(tt.body)}
			kr, err := signing.LoadKeyring(keyring)
			if err != nil {
				t.Fatal(err)
			}
			v := signing.NewVerifier(signing.VerifierConfig{Profile: signing.DefaultProfile(), Keys: kr})
			got, err := v.Verify(context.Background(), req)
			if err != nil {
				t.Fatalf("printed headers do not verify: %v\n%s", err, out)
			}
			if got.Key.ID != "alerts" {
				t.Errorf("verified key = %q", got.Key.ID)
			}
		})
	}
}

func readHeaderLines(t *testing.T, out string) http.Header {
	t.Helper()
	h := make(http.Header)
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			t.Fatalf("line %q is not Name: value", sc.Text())
		}
		h.Add(name, value)
	}
	return h
}

func TestKeysUsageErrors(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, "keygen", "--id", "k", "--roles", "admin", "--dir", dir)
	key := filepath.Join(dir, "k.key")
	pub := filepath.Join(dir, "k.pub")
	target := "http://127.0.0.1:8080/v1/broadcasts"

	tests := []struct {
		name string
		give []string
		want string
	}{
		{"keygen unknown flag", []string{"keygen", "--colour", "red"}, "flag provided but not defined"},
		{"keygen without id", []string{"keygen", "--roles", "admin", "--dir", dir}, "--id is required"},
		{"keygen without roles", []string{"keygen", "--id", "x", "--dir", dir}, "--roles is required"},
		{"keygen without dir", []string{"keygen", "--id", "x", "--roles", "admin"}, "--dir is required"},
		{"keygen bad id", []string{"keygen", "--id", "../x", "--roles", "admin", "--dir", dir}, `id: "../x"`},
		{"keygen unknown role", []string{"keygen", "--id", "x", "--roles", "root", "--dir", dir}, `unknown role "root"`},
		{"keygen broadcast without cap", []string{"keygen", "--id", "x", "--roles", "broadcast", "--topics", "citizens", "--dir", dir}, "--max-audience is required"},
		{"keygen bad rate", []string{"keygen", "--id", "x", "--roles", "admin", "--rate", "5/fortnight", "--dir", dir}, "the period must be s, min, h or d"},
		{"keygen bad topic", []string{"keygen", "--id", "x", "--roles", "admin", "--topics", "a[", "--dir", dir}, "not a valid pattern"},
		{"keygen stray argument", []string{"keygen", "--id", "x", "--roles", "admin", "--dir", dir, "extra"}, "unexpected argument"},
		{"sign without key", []string{"sign", "--key-id", "k", "--url", target}, "--key (or PUSHGATE_KEY) is required"},
		{"sign without key id", []string{"sign", "--key", key, "--url", target}, "--key-id (or PUSHGATE_KEY_ID) is required"},
		{"sign without url", []string{"sign", "--key", key, "--key-id", "k"}, "--url is required"},
		{"sign relative url", []string{"sign", "--key", key, "--key-id", "k", "--url", "/v1/broadcasts"}, "want an absolute http or https URL"},
		{"sign missing key file", []string{"sign", "--key", filepath.Join(dir, "none.key"), "--key-id", "k", "--url", target}, "no such file"},
		{"sign public key as private", []string{"sign", "--key", pub, "--key-id", "k", "--url", target}, "want PRIVATE KEY"},
		{"sign missing body file", []string{"sign", "--key", key, "--key-id", "k", "--url", target, "--body", filepath.Join(dir, "none.json")}, "read body"},
		{"sign bad method", []string{"sign", "--key", key, "--key-id", "k", "--url", target, "--method", "P O"}, "invalid method"},
		{"sign bad flag value", []string{"sign", "--key", key, "--key-id", "k", "--url", target, "--body"}, "flag needs an argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runCmd(t, nil, "", tt.give...)
			if !isUsage(err) {
				t.Fatalf("run = %v, want a usage error", err)
			}
			var stderr bytes.Buffer
			if code := exitCode(err, &stderr); code != 2 {
				t.Errorf("exit code = %d, want 2", code)
			}
			msg := stderr.String()
			if !strings.Contains(msg, tt.want) || strings.Count(msg, "\n") != 1 {
				t.Errorf("message = %q, want one line containing %q", msg, tt.want)
			}
		})
	}
}

func isUsage(err error) bool {
	var u *usageError
	return errors.As(err, &u)
}

func TestLogKeygen(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "control.key")
	out := mustRun(t, "log", "keygen", "pushgate.example.org/control", "--out", file)
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: %v, mode %v; want 0600", err, fi)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	public := lines[len(lines)-1]
	if !strings.HasPrefix(public, "pushgate.example.org/control+") {
		t.Fatalf("last line %q is not the public key", public)
	}
	// The files work as the configuration says.
	cfg, err := app.LoadConfig("", func(k string) string {
		return map[string]string{"PUSHGATE_CONTROL_LOG_KEY_FILE": file, "PUSHGATE_CONTROL_LOG_PUBLIC_KEY": public}[k]
	})
	if err != nil || cfg.Control.LogPublicKey != public {
		t.Fatalf("config from the generated key: %+v, %v", cfg, err)
	}
	if strings.Contains(out, "PRIVATE+KEY") {
		t.Error("keygen printed the private key")
	}
	if _, _, err := runCmd(t, nil, "", "log", "keygen", "pushgate.example.org/control", "--out", file); err == nil {
		t.Error("keygen overwrote an existing key file")
	}
	if _, _, err := runCmd(t, nil, "", "log", "keygen", "bad name", "--out", filepath.Join(dir, "x")); err == nil {
		t.Error("keygen took a name with a space")
	}
}
