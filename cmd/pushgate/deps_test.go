package main

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/pushgate/pushgate/"

// layer is what one package may import of the module, and why.
type layer struct {
	imports []string // packages of the module it may import (without the module prefix); nil: anything
	why     string
}

// layering is the package layering of docs/ARCHITECTURE.md: cmd → internal
// wiring → gateway → queue → providers, with api and signing beside.
func layering() map[string]layer {
	return map[string]layer{
		"signing": {[]string{}, "the signature code is reviewed on its own and links no Redis or provider SDK"},
		"signing/appsig": {[]string{},
			"the app-side verifier is what apps embed and what other languages copy: the standard library only"},
		"api": {[]string{"signing"},
			"the wire contract is what Go backends import through the client: it must not drag the pipeline in"},
		"client": {[]string{"api", "signing"},
			"backends import the client; it speaks the contract and signs, nothing more"},
		"providers": {[]string{"api", "signing/appsig"},
			"the senders know the contract's platforms and the app-signing block they seal pushes with, nothing of the queue that drives them"},
		"providers/sim": {[]string{"providers", "api", "signing/appsig"},
			"the simulators imitate the providers, and their phones the app's reference verifier; they must not know what pushgate sends"},
		"controllog": {[]string{"api", "signing"},
			"the control log's format is checked offline with only the log key and the keyring: it links no Redis"},
		"queue": {[]string{"api", "controllog", "providers", "signing", "signing/appsig"},
			"the pipeline sits below the HTTP API and above the senders"},
		"gateway": {[]string{"api", "queue", "signing"},
			"the API decides who may ask; the queue does it"},
		"gateway/gatewaytest": {nil, "test support: a real API for tests, never linked by the binary"},
		"internal/redistest":  {[]string{}, "test support: a private Redis database per test"},
		"internal/app": {[]string{"gateway", "queue", "controllog", "providers", "signing", "signing/appsig", "api"},
			"process wiring builds the parts, never the other way round"},
		"internal/stack": {[]string{"internal/app", "api", "client", "controllog", "providers", "providers/sim", "signing"},
			"the local stack is the one door from the binary to the simulators"},
		"internal/demo": {[]string{"internal/stack", "internal/app", "api", "client", "queue", "providers", "providers/sim", "signing"},
			"the demo runs the stack and plays the attacker against it"},
		"internal/bench": {[]string{"internal/stack", "internal/app", "api", "client", "queue", "providers", "providers/sim"},
			"the bench runs the stack and a bare SDK loop beside it"},
		"scripts/slowuploads": {[]string{},
			"a measuring tool that speaks raw HTTP/1.1 to a running API, as an attacker would, and links none of pushgate"},
		"cmd/pushgate": {[]string{"api", "client", "controllog", "signing", "signing/appsig", "internal/app", "internal/stack", "internal/demo", "internal/bench"},
			"main only parses flags and calls packages; the simulators come through internal/stack"},
	}
}

// TestImportsFlowOneWay enforces the layering, keeps the client free of
// provider SDKs and Redis, and keeps the testing package out of
// everything the binary links.
func TestImportsFlowOneWay(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	table := layering()
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for {
		var p struct {
			ImportPath string
			Imports    []string
			Deps       []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		seen++
		name := strings.TrimPrefix(p.ImportPath, module)
		l, known := table[name]
		if !known {
			t.Errorf("package %s is not in the layering table; add it deliberately, with a reason", name)
			continue
		}
		if l.imports != nil {
			for _, imp := range p.Imports {
				if dep, ours := strings.CutPrefix(imp, module); ours && !slices.Contains(l.imports, dep) {
					t.Errorf("%s imports %s, which the layering forbids: %s", name, dep, l.why)
				}
			}
		}
		if name != "gateway/gatewaytest" && name != "internal/redistest" && slices.Contains(p.Deps, "testing") {
			t.Errorf("%s links the testing package", name)
		}
		if name == "client" || name == "api" || name == "controllog" || name == "signing" {
			for _, dep := range p.Deps {
				for _, heavy := range []string{"firebase.google.com/", "github.com/sideshow/apns2", "github.com/redis/go-redis", "github.com/hibiken/asynq"} {
					if strings.HasPrefix(dep, heavy) {
						t.Errorf("%s links %s: a Go backend or an offline verifier importing it would too", name, dep)
					}
				}
			}
		}
	}
	if seen < len(table) {
		t.Errorf("go list saw %d packages, the table names %d", seen, len(table))
	}
}
