package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/client"
	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/internal/stack"
	"github.com/pushgate/pushgate/providers/sim"
	"github.com/pushgate/pushgate/queue"
)

// requireVerifiersEnv, set to 1 (scripts/test sets it), makes a missing
// node, python3 or Python cryptography fail TestExampleScripts instead of
// skipping it, as it does signing/appsig's TestReferenceVerifiers.
const requireVerifiersEnv = "PUSHGATE_REQUIRE_VERIFIERS"

// exampleScript is one of the signing examples in examples/, and how to
// run it.
type exampleScript struct {
	name string
	// command returns the program and the arguments before the
	// example's own; it skips or fails t when a tool is missing.
	command func(t *testing.T) []string
}

func exampleScripts() []exampleScript {
	return []exampleScript{
		{"node", func(t *testing.T) []string {
			return []string{lookExampleTool(t, "node"), examplePath(t, "node", "broadcast.mjs")}
		}},
		{"python", func(t *testing.T) []string {
			python := lookExampleTool(t, "python3")
			// The example needs the cryptography package for Ed25519
			// (Debian: python3-cryptography).
			probe := exec.CommandContext(t.Context(), python, "-c", "import cryptography.hazmat.primitives.asymmetric.ed25519")
			if out, err := probe.CombinedOutput(); err != nil {
				lines := strings.Split(strings.TrimSpace(string(out)), "\n")
				missingExampleTool(t, "the Python package cryptography", errors.New(lines[len(lines)-1]))
			}
			return []string{python, examplePath(t, "python", "broadcast.py")}
		}},
	}
}

// lookExampleTool returns the path of a program an example runs on.
func lookExampleTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		missingExampleTool(t, name, err)
	}
	return path
}

// missingExampleTool skips t, or fails it when requireVerifiersEnv is set.
func missingExampleTool(t *testing.T, what string, err error) {
	t.Helper()
	if os.Getenv(requireVerifiersEnv) == "1" {
		t.Fatalf("%s is missing (%v), and %s=1 requires the examples to run", what, err, requireVerifiersEnv)
	}
	t.Skipf("%s is missing (%v); skipping this example (set %s=1 to require it)", what, err, requireVerifiersEnv)
}

func examplePath(t *testing.T, elem ...string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join(append([]string{"..", "..", "examples"}, elem...)...))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// exampleRun is what one run of an example did.
type exampleRun struct {
	exit           int
	stdout, stderr string
}

// runExample runs an example with the gateway's URL, a key id and a key
// file in its environment, as a backend would configure it.
func runExample(t *testing.T, argv []string, gatewayURL, keyID, keyFile string, args ...string) exampleRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], append(argv[1:], args...)...)
	// Later entries win: whatever PUSHGATE_* the caller's shell has is
	// replaced.
	cmd.Env = append(os.Environ(), "PUSHGATE_URL="+gatewayURL, "PUSHGATE_KEY_ID="+keyID, "PUSHGATE_KEY="+keyFile)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	run := exampleRun{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && ctx.Err() == nil:
		run.exit = exit.ExitCode()
	default:
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(argv[1]), err, run.stdout, run.stderr)
	}
	return run
}

var (
	exampleIDLine    = regexp.MustCompile(`(?m)^broadcast (b[0-9a-v]+) [a-z_]+$`)
	exampleFinalLine = regexp.MustCompile(`(?m)^final state: ([a-z_]+)$`)
)

// TestExampleScripts runs the Node.js and Python signing examples against a
// live gateway with the simulators' phones: each signs and submits a
// broadcast to a topic and one to a tokens audience, follows it to
// completed, and exactly that audience's phones show exactly that text
// once. Signed with a key the keyring does not hold under the sender's key
// id, or with the sender's key under another key's id, each prints the
// gateway's bad_signature problem, exits 1, and nothing is stored or
// delivered.
func TestExampleScripts(t *testing.T) {
	for _, ex := range exampleScripts() {
		t.Run(ex.name, func(t *testing.T) {
			argv := ex.command(t)
			e := newE2E(t, stack.Options{Devices: 12, AndroidShare: 0.5, Seed: 11}, app.Roles{API: true, Worker: true})
			if err := e.st.ImportDevices(context.Background(), e.owner, "citizens"); err != nil {
				t.Fatal(err)
			}
			sender := e.st.Keys[stack.KeySender]
			run := func(t *testing.T, keyID, keyFile string, args ...string) exampleRun {
				t.Helper()
				return runExample(t, argv, e.app.URL, keyID, keyFile, args...)
			}

			t.Run("topic", func(t *testing.T) {
				title, body := ex.name+" flood warning", "Water is rising in Manggarai, sent from "+ex.name+"."
				r := run(t, sender.ID, sender.File, "--topic", "citizens", "--title", title, "--body", body, "--poll", "0.05")
				e.checkExampleDelivered(t, r, title, body, e.st.Devices)
			})

			t.Run("tokens", func(t *testing.T) {
				audience := []sim.Device{e.st.Devices[0], e.st.Devices[5], e.st.Devices[len(e.st.Devices)-1]}
				var tokens []api.Device
				for _, d := range audience {
					tokens = append(tokens, api.Device{Platform: api.Platform(d.Platform), Token: d.Token})
				}
				file := filepath.Join(t.TempDir(), "devices.json")
				doc, err := json.Marshal(tokens)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, doc, 0o600); err != nil {
					t.Fatal(err)
				}
				title, body := ex.name+" district notice", "Only three phones, from "+ex.name+"."
				r := run(t, sender.ID, sender.File, "--tokens", file, "--title", title, "--body", body, "--poll", "0.05")
				e.checkExampleDelivered(t, r, title, body, audience)
			})

			for _, tt := range []struct {
				name       string
				keyID, key string
				wantCode   string
			}{
				// The attacker's key is in no keyring: signed under the
				// sender's id, its signature does not verify.
				{"foreign key", sender.ID, e.st.Keys[stack.KeyAttacker].File, "bad_signature"},
				// The sender's key under the admin's id verifies with
				// the admin's public key, which it is not.
				{"wrong key id", e.st.Keys[stack.KeyAdmin].ID, sender.File, "bad_signature"},
			} {
				t.Run(tt.name, func(t *testing.T) {
					before := len(e.st.Sim.Deliveries(nil))
					title := ex.name + " forged " + tt.name
					r := run(t, tt.keyID, tt.key, "--topic", "citizens", "--title", title, "--body", "must not arrive")
					if r.exit != 1 {
						t.Errorf("exit status %d, want 1\nstdout:\n%s\nstderr:\n%s", r.exit, r.stdout, r.stderr)
					}
					if want := "refused (HTTP 401): " + tt.wantCode + ": "; !strings.Contains(r.stderr, want) {
						t.Errorf("stderr does not say %q:\n%s", want, r.stderr)
					}
					if m := exampleIDLine.FindString(r.stdout); m != "" {
						t.Errorf("the refused example printed %q", m)
					}
					// Nothing was stored, so nothing can be sent later.
					page, err := e.admin.List(context.Background(), client.ListOptions{Limit: api.MaxListLimit})
					if err != nil {
						t.Fatal(err)
					}
					for _, b := range page.Broadcasts {
						if b.Title == title {
							t.Errorf("the gateway stored the refused broadcast as %s (%s)", b.ID, b.State)
						}
					}
					if after := len(e.st.Sim.Deliveries(nil)); after != before {
						t.Errorf("phones got %d pushes during the refused run, want none", after-before)
					}
				})
			}
		})
	}
}

// checkExampleDelivered checks a run of an example that should have sent
// title and body to audience: exit 0, the id and final state completed
// printed, the gateway's status agreeing, and every phone of the audience,
// and no other, shown exactly that text exactly once.
func (e *e2e) checkExampleDelivered(t *testing.T, r exampleRun, title, body string, audience []sim.Device) {
	t.Helper()
	if r.exit != 0 {
		t.Fatalf("exit status %d, want 0\nstdout:\n%s\nstderr:\n%s", r.exit, r.stdout, r.stderr)
	}
	m := exampleIDLine.FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("no broadcast id printed:\n%s", r.stdout)
	}
	id := m[1]
	if f := exampleFinalLine.FindStringSubmatch(r.stdout); f == nil || f[1] != api.StateCompleted {
		t.Fatalf("final state printed: %q, want completed:\n%s", f, r.stdout)
	}
	st := e.status(id)
	if st.State != api.StateCompleted || st.Title != title {
		t.Fatalf("the gateway has broadcast %s %s with title %q, want completed with %q", id, st.State, st.Title, title)
	}
	n := len(audience)
	if want := " sent=" + strconv.Itoa(n) + " "; !strings.Contains(r.stdout, want) {
		t.Errorf("counters printed without %q:\n%s", strings.TrimSpace(want), r.stdout)
	}

	got := map[sim.Device]int{}
	for _, d := range e.st.Sim.Deliveries(func(d sim.Delivery) bool { return d.CollapseID == queue.CollapseID(id) }) {
		if d.Title != title || d.Body != body {
			t.Errorf("phone %s… shows %q / %q, want %q / %q", d.Token[:12], d.Title, d.Body, title, body)
		}
		got[sim.Device{Platform: d.Platform, Token: d.Token}]++
	}
	for _, d := range audience {
		if got[d] != 1 {
			t.Errorf("phone %s… (%s) got the broadcast %d times, want 1", d.Token[:12], d.Platform, got[d])
		}
		delete(got, d)
	}
	for d, c := range got {
		t.Errorf("phone %s… (%s), not in the audience, got the broadcast %d times", d.Token[:12], d.Platform, c)
	}
}
