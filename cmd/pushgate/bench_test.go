package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/pushgate/pushgate/internal/redistest"
)

// TestBench runs pushgate bench end to end on 2,000 phones, to keep the
// command working: every figure is in the JSON, and the correctness checks
// hold. The performance targets are the benchmark's to report, not this
// test's.
func TestBench(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs the whole bench")
	}
	redisURL := redistest.URL(t)
	// Everything the bench starts in this process (simulators, clients,
	// the bare loop) is stopped when it returns.
	current := goleak.IgnoreCurrent()
	defer goleak.VerifyNone(t, current,
		goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"),
		goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/maintnotifications.(*CircuitBreakerManager).cleanupLoop"))

	// The bench runs the API and the workers as processes of the pushgate
	// binary; under go test, os.Executable is the test binary, so build
	// the real one.
	bin := filepath.Join(t.TempDir(), "pushgate")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"bench", "--devices", "2000", "--json", "--redis", redisURL, "--binary", bin,
		"--latency-runs", "10", "--kills", "5",
		// 2,000 phones at zero latency take a fraction of a second: slow
		// them down so that each broadcast is still running when killed.
		"--kill-latency", "20ms",
	}, func(string) string { return "" }, nil, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench: %v\nstderr:\n%s", err, stderr.String())
	}

	var got map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, stdout.String())
	}
	fields := []string{"devices", "deliveries_per_sec", "ceiling_per_sec", "ratio", "latency_p50_ms", "latency_p99_ms",
		"kill_p50_ms", "kill_p99_ms", "sent_after_kill_ack", "lost", "duplicates", "peak_rss_mb", "cpu_sec_per_1k"}
	for _, f := range fields {
		if _, ok := got[f].(float64); !ok {
			t.Errorf("%s = %v, want a number", f, got[f])
		}
	}
	if len(got) != len(fields) {
		t.Errorf("output has %d fields, want exactly %d: %v", len(got), len(fields), got)
	}
	if got["devices"] != 2000.0 {
		t.Errorf("devices = %v, want 2000", got["devices"])
	}
	for _, f := range []string{"lost", "duplicates", "sent_after_kill_ack"} {
		if got[f] != 0.0 {
			t.Errorf("%s = %v, want 0", f, got[f])
		}
	}
	for _, f := range []string{"deliveries_per_sec", "ceiling_per_sec", "latency_p50_ms", "kill_p50_ms", "peak_rss_mb", "cpu_sec_per_1k"} {
		if v, _ := got[f].(float64); v <= 0 {
			t.Errorf("%s = %v, want a measurement above 0", f, got[f])
		}
	}
}
