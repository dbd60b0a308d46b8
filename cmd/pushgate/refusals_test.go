package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pushgate/pushgate/gateway/gatewaytest"
)

// runWith runs pushgate in-process with exactly the environment vars.
func runWith(ctx context.Context, vars map[string]string, args ...string) clientRun {
	var out, errOut bytes.Buffer
	err := run(ctx, args, func(k string) string { return vars[k] }, strings.NewReader(""), &out, &errOut)
	code := exitCode(err, &errOut)
	return clientRun{stdout: out.String(), stderr: errOut.String(), code: code}
}

// signingAs is the environment of a client signing as key of gw, with the
// keyring file at hand when withKeyring.
func signingAs(gw *gatewaytest.Env, key string, withKeyring bool) map[string]string {
	vars := map[string]string{"PUSHGATE_URL": gw.URL, "PUSHGATE_KEY": gw.KeyFiles[key], "PUSHGATE_KEY_ID": key}
	if withKeyring {
		vars["PUSHGATE_KEYRING_FILE"] = gw.KeyringFile
	}
	return vars
}

// requestsServed counts the requests the gateway answered.
func requestsServed(t *testing.T, gw *gatewaytest.Env) float64 {
	t.Helper()
	families, err := gw.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0.0
	for _, f := range families {
		if f.GetName() == "pushgate_http_requests_total" {
			for _, m := range f.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

// TestCommandsRefuseBadInputBeforeSending runs commands whose input is
// missing, blank, or beyond what the key may do according to the keyring
// at hand. Each is refused with exit 2 and one line naming the flag, and
// the gateway sees no request: nothing is stored, no device registered.
func TestCommandsRefuseBadInputBeforeSending(t *testing.T) {
	gw := startGateway(t)
	ctx := context.Background()
	devices := writeDevices(t, 5, "refused")
	export := filepath.Join(t.TempDir(), "control.log")
	if err := os.WriteFile(export, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ghost := signingAs(gw, gatewaytest.Sender, true)
	ghost["PUSHGATE_KEY_ID"] = "ghost"
	swapped := signingAs(gw, gatewaytest.Registrar9, true)
	swapped["PUSHGATE_KEY"] = gw.KeyFiles[gatewaytest.Registrar]

	tests := []struct {
		name string
		vars map[string]string
		args []string
		want string // the whole line after "pushgate: ", a regexp
	}{
		// The incident: a title alone went to a whole topic.
		{"send without a body", signingAs(gw, gatewaytest.Wide, false),
			[]string{"send", "--topic", "citizens", "--title", "Test"}, `send: --body is required`},
		{"send with an empty body", signingAs(gw, gatewaytest.Wide, false),
			[]string{"send", "--topic", "citizens", "--title", "Test", "--body", ""}, `send: --body is required`},
		{"send with a blank body", signingAs(gw, gatewaytest.Wide, false),
			[]string{"send", "--all", "--title", "Test", "--body", "  "}, `send: --body is required`},
		{"send to an empty topic", signingAs(gw, gatewaytest.Wide, false),
			[]string{"send", "--topic", "", "--body", "b"}, `send: --topic is empty`},
		{"send with an empty ttl", signingAs(gw, gatewaytest.Wide, false),
			[]string{"send", "--all", "--body", "b", "--ttl", ""}, `send: --ttl is empty`},
		{"send to a topic outside the key's", signingAs(gw, gatewaytest.Sender, true),
			[]string{"send", "--topic", "secret", "--body", "b"}, `send: --topic secret: key sender may not send to it \(its topics: citizens, district-\*\)`},
		{"send to all without \"*\"", signingAs(gw, gatewaytest.Sender, true),
			[]string{"send", "--all", "--body", "b"}, `send: --all: key sender may not send to every device .*`},
		{"send with a register key", signingAs(gw, gatewaytest.Registrar, true),
			[]string{"send", "--topic", "citizens", "--body", "b"}, `send: --key-id registrar: the key has no broadcast role \(its roles: register\)`},
		{"send with a key the keyring lacks", ghost,
			[]string{"send", "--topic", "citizens", "--body", "b"}, `--key-id ghost: no such key in the keyring .*`},
		{"recall replace without a body", signingAs(gw, gatewaytest.Admin, false),
			[]string{"recall", "b0", "--mode", "replace", "--title", "Koreksi"}, `recall: --body is required with --mode replace`},

		{"import into a topic outside the key's", signingAs(gw, gatewaytest.Registrar9, true),
			[]string{"devices", "import", devices, "--topic", "other"},
			`devices import: --topic other: key registrar-9 may not register devices into it \(its topics: district-9\*\)`},
		{"import into an empty topic", signingAs(gw, gatewaytest.Registrar, false),
			[]string{"devices", "import", devices, "--topic", ""}, `devices import: --topic is empty`},
		{"import with a broadcast key", signingAs(gw, gatewaytest.Sender, true),
			[]string{"devices", "import", devices, "--topic", "citizens"}, `devices import: --key-id sender: the key has no register role \(its roles: broadcast\)`},
		{"import with another key's private key", swapped,
			[]string{"devices", "import", devices, "--topic", "district-9a"}, `--key: not the private key of registrar-9 in the keyring .*`},

		{"kill a blank scope", signingAs(gw, gatewaytest.Admin, false),
			[]string{"kill", "--scope", " ", "--reason", "x"}, `kill: --scope is required`},
		{"resume a blank scope", signingAs(gw, gatewaytest.Admin, false),
			[]string{"resume", "--scope", " "}, `resume: --scope is required`},
		{"audit verify without the log key", map[string]string{"PUSHGATE_KEYRING_FILE": gw.KeyringFile},
			[]string{"audit", "verify", export}, `audit verify: --log-key \(or PUSHGATE_CONTROL_LOG_PUBLIC_KEY\) is required`},
		{"audit verify without the keyring", map[string]string{"PUSHGATE_CONTROL_LOG_PUBLIC_KEY": gw.LogPublicKey},
			[]string{"audit", "verify", export}, `audit verify: --keyring \(or PUSHGATE_KEYRING_FILE\) is required`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := requestsServed(t, gw)
			r := runWith(ctx, tt.vars, tt.args...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
			}
			if want := `^pushgate: ` + tt.want + `\n$`; !regexp.MustCompile(want).MatchString(r.stderr) {
				t.Errorf("stderr = %q, want one line matching %s", r.stderr, want)
			}
			if after := requestsServed(t, gw); after != before {
				t.Errorf("the gateway answered %v requests for a refused command", after-before)
			}
		})
	}
	if n := len(listBroadcasts(t, gw)); n != 0 {
		t.Errorf("%d broadcasts stored by refused commands", n)
	}
	for _, topic := range []string{"other", "citizens", "district-9a", ""} { // "": every device
		if n, err := gw.Service.Registry().Count(ctx, topic); err != nil || n != 0 {
			t.Errorf("topic %s holds %d devices (%v) after refused imports", topic, n, err)
		}
	}
}

// TestKeyringCheckLetsAllowedCommandsThrough runs, with the keyring at
// hand, what the keys may do: it is sent as without the keyring.
func TestKeyringCheckLetsAllowedCommandsThrough(t *testing.T) {
	gw := startGateway(t)
	ctx := context.Background()
	devices := writeDevices(t, 5, "allowed")
	r := runWith(ctx, signingAs(gw, gatewaytest.Registrar9, true), "devices", "import", devices, "--topic", "district-9a")
	if r.code != 0 {
		t.Fatalf("import: exit %d: %s", r.code, r.stderr)
	}
	if n, _ := gw.Service.Registry().Count(ctx, "district-9a"); n != 5 {
		t.Errorf("district-9a holds %d devices, want 5", n)
	}
	r = runWith(ctx, signingAs(gw, gatewaytest.Sender, true), "send", "--topic", "district-9a", "--body", "b")
	if r.code != 0 || len(listBroadcasts(t, gw)) != 1 {
		t.Errorf("send: exit %d, %d broadcasts stored: %s", r.code, len(listBroadcasts(t, gw)), r.stderr)
	}
}

// TestKeygenRefusesKeysThatCanDoNothing refuses, before writing any file,
// keys whose topics were given empty or left out where the role needs
// them, and blank values of other flags.
func TestKeygenRefusesKeysThatCanDoNothing(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"empty topics", []string{"--roles", "broadcast", "--max-audience", "10", "--topics", ""}, `keygen: --topics is empty: .*`},
		{"only commas", []string{"--roles", "register", "--topics", " , "}, `keygen: --topics is empty: .*`},
		{"broadcast without topics", []string{"--roles", "broadcast", "--max-audience", "10"},
			`keygen: --topics is required with the broadcast role: a broadcast key without topics can send nowhere`},
		{"broadcast without a cap", []string{"--roles", "broadcast", "--topics", "citizens"}, `keygen: --max-audience is required with the broadcast role: .*`},
		{"roles only commas", []string{"--roles", ","}, `keygen: --roles is required`},
		{"blank id", []string{"--roles", "admin", "--id", " "}, `keygen: --id is required`},
		{"empty keyring", []string{"--roles", "admin", "--keyring", ""}, `keygen: --keyring is empty`},
		{"empty owner", []string{"--roles", "admin", "--owner", ""}, `keygen: --owner is empty`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "keys")
			args := append([]string{"keygen", "--id", "x", "--dir", dir}, tt.args...)
			r := runWith(context.Background(), nil, args...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
			}
			if want := `^pushgate: ` + tt.want + `\n$`; !regexp.MustCompile(want).MatchString(r.stderr) {
				t.Errorf("stderr = %q, want one line matching %s", r.stderr, want)
			}
			if r.stdout != "" {
				t.Errorf("a refused keygen printed an entry: %s", r.stdout)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("a refused keygen made %s (%v)", dir, err)
			}
		})
	}
}
