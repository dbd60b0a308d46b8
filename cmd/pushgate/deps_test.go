package main

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestImportsFlowOneWay enforces the package layering of DESIGN.md: cmd →
// gateway → queue → providers; signing imports nothing of ours; and
// nothing the binary links imports the testing package.
func TestImportsFlowOneWay(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", "github.com/pushgate/pushgate/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := map[string][]string{
		"github.com/pushgate/pushgate/signing":             {},
		"github.com/pushgate/pushgate/providers":           {},
		"github.com/pushgate/pushgate/providers/sim":       {"github.com/pushgate/pushgate/providers"},
		"github.com/pushgate/pushgate/queue":               {"github.com/pushgate/pushgate/providers", "github.com/pushgate/pushgate/signing"},
		"github.com/pushgate/pushgate/gateway":             {"github.com/pushgate/pushgate/queue", "github.com/pushgate/pushgate/signing", "github.com/pushgate/pushgate/providers"},
		"github.com/pushgate/pushgate/gateway/gatewaytest": nil, // test support: anything
		"github.com/pushgate/pushgate/internal/redistest":  {},
		"github.com/pushgate/pushgate/cmd/pushgate":        nil, // main wires everything
	}
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
		want, known := allowed[p.ImportPath]
		if !known {
			t.Errorf("package %s is not in the layering table; add it deliberately", p.ImportPath)
			continue
		}
		if want != nil {
			for _, imp := range p.Imports {
				if strings.HasPrefix(imp, "github.com/pushgate/pushgate/") && !slices.Contains(want, imp) {
					t.Errorf("%s imports %s, which the layering forbids", p.ImportPath, imp)
				}
			}
		}
		if p.ImportPath != "github.com/pushgate/pushgate/gateway/gatewaytest" && p.ImportPath != "github.com/pushgate/pushgate/internal/redistest" &&
			slices.Contains(p.Deps, "testing") {
			t.Errorf("%s links the testing package", p.ImportPath)
		}
	}
	if seen < len(allowed) {
		t.Errorf("go list saw %d packages, the table names %d", seen, len(allowed))
	}
}
