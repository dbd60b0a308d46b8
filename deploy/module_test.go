package deploy

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestMainModuleLeavesDeployOut checks that go vet ./... and go test ./...
// in the repository's root do not reach this module: its go.mod makes
// deploy/ a module of its own, which ./... in the main module skips.
func TestMainModuleLeavesDeployOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "list", "./...")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list ./... in the main module: %v", err)
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 10 {
		t.Fatalf("go list ./... in the main module listed %q", pkgs)
	}
	for _, p := range pkgs {
		if p == "github.com/pushgate/pushgate/deploy" || strings.HasPrefix(p, "github.com/pushgate/pushgate/deploy/") {
			t.Errorf("the main module's ./... includes %s", p)
		}
	}
}
