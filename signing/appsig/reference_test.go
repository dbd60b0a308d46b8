package appsig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// requireVerifiersEnv, set to 1 (CI sets it), makes a missing node, javac
// or java fail TestReferenceVerifiers instead of skipping it.
const requireVerifiersEnv = "PUSHGATE_REQUIRE_VERIFIERS"

// harnessTimeout bounds one run of a reference verifier's harness or of
// its compiler.
const harnessTimeout = 5 * time.Minute

// TestReferenceVerifiers runs the vector harnesses of the JavaScript and
// Java reference verifiers (reference/js, reference/java) on the committed
// vectors: every case must get its verdict and, when it verifies, its
// canonical bytes. Each harness also runs on a copy of the vectors in which
// one valid push is expected to be refused, and must report that case, so
// that a harness that checks nothing cannot pass.
func TestReferenceVerifiers(t *testing.T) {
	vectors, err := filepath.Abs(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(vectors)
	if err != nil {
		t.Fatal(err)
	}
	var vs Vectors
	if err := json.Unmarshal(raw, &vs); err != nil {
		t.Fatal(err)
	}
	wrong, wrongCase := wrongVerdict(t, vs)
	passed := fmt.Sprintf("%d vectors passed", len(vs.Cases))

	t.Run("javascript", func(t *testing.T) {
		t.Parallel()
		node := lookTool(t, "node")
		script, err := filepath.Abs(filepath.Join("reference", "js", "run-vectors.mjs"))
		if err != nil {
			t.Fatal(err)
		}
		checkHarness(t, func(ctx context.Context, file string) *exec.Cmd {
			return exec.CommandContext(ctx, node, script, file)
		}, vectors, passed, wrong, wrongCase)
	})

	t.Run("java", func(t *testing.T) {
		t.Parallel()
		javac := lookTool(t, "javac")
		java := lookTool(t, "java")
		src := filepath.Join("reference", "java")
		classes := t.TempDir()
		ctx, cancel := context.WithTimeout(t.Context(), harnessTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, javac, "--release", "17", "-d", classes,
			filepath.Join(src, "PushgateVerifier.java"), filepath.Join(src, "RunVectors.java")).CombinedOutput()
		if err != nil {
			t.Fatalf("javac: %v\n%s", err, out)
		}
		checkHarness(t, func(ctx context.Context, file string) *exec.Cmd {
			return exec.CommandContext(ctx, java, "-cp", classes, "RunVectors", file)
		}, vectors, passed, wrong, wrongCase)
	})
}

// lookTool returns the path of a tool a reference verifier needs. When it
// is missing the test is skipped, or fails if requireVerifiersEnv is set.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv(requireVerifiersEnv) == "1" {
			t.Fatalf("%s is missing (%v), and %s=1 requires the reference verifiers to run", name, err, requireVerifiersEnv)
		}
		t.Skipf("%s is missing (%v); skipping this reference verifier (set %s=1 to require it)", name, err, requireVerifiersEnv)
	}
	return path
}

// wrongVerdict writes a copy of vs in which the first valid push is
// expected to be refused with CodeBadSignature, and returns its path and
// that case's name.
func wrongVerdict(t *testing.T, vs Vectors) (path, name string) {
	t.Helper()
	vs.Cases = append([]Vector(nil), vs.Cases...)
	for i := range vs.Cases {
		if vs.Cases[i].Want == "ok" {
			vs.Cases[i].Want = CodeBadSignature
			name = vs.Cases[i].Name
			break
		}
	}
	if name == "" {
		t.Fatal("no vector expects ok")
	}
	enc, err := json.MarshalIndent(vs, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "vectors-wrong-verdict.json")
	if err := os.WriteFile(path, enc, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, name
}

// checkHarness runs a harness (command builds its command for a vector
// file) on the vectors, where it must pass and say so with passed, and on
// the copy with a wrong verdict, where it must exit 1 and name wrongCase.
func checkHarness(t *testing.T, command func(ctx context.Context, file string) *exec.Cmd,
	vectors, passed, wrong, wrongCase string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), harnessTimeout)
	defer cancel()

	out, err := command(ctx, vectors).CombinedOutput()
	if err != nil {
		t.Fatalf("the harness fails the vectors: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), passed) {
		t.Fatalf("the harness does not report %q:\n%s", passed, out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))

	out, err = command(ctx, wrong).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("on vectors with a wrong verdict the harness gives %v, want exit status 1:\n%s", err, out)
	}
	if !strings.Contains(string(out), "FAIL "+wrongCase+":") {
		t.Fatalf("on vectors with a wrong verdict the harness does not report the case %q:\n%s", wrongCase, out)
	}
}
