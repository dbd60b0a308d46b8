package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The demo needs no PUSHGATE_TEST_REDIS: it brings its own Redis.

// demoLeakCheck fails the test if the demo left a goroutine running once
// it has returned.
func demoLeakCheck(t *testing.T) {
	t.Helper()
	current := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		goleak.VerifyNone(t, current,
			goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"),
			goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/maintnotifications.(*CircuitBreakerManager).cleanupLoop"))
	})
}

// syncBuffer is an output stream that a running command writes while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// demoWait polls cond until it holds, failing the test after within.
func demoWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("hung: still waiting for %s after %s", what, hangGuard)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func noEnv(string) string { return "" }

func TestDemoScript(t *testing.T) {
	demoLeakCheck(t)
	var out, errOut bytes.Buffer
	start := time.Now()
	err := run(context.Background(), []string{"demo", "--script", "--devices", "300"}, noEnv, strings.NewReader(""), &out, &errOut)
	t.Logf("demo --script took %s", time.Since(start))
	if err != nil {
		t.Fatalf("demo --script: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	got := out.String()
	for _, want := range []string{
		`(?m)^STEP +OUTCOME +FIGURES$`,
		`(?m)^1\. signed broadcast to citizens +ok +300 of 300 phones reached, each once, in \S+$`,
		`(?m)^2\. attacker key, replay, forged task +ok +3 of 3 attacks refused; forged task delivered to 0 phones$`,
		`(?m)^3\. kill a bad broadcast +ok +[1-9][0-9]* phones had it before the kill; stopped in \S+; 0 after$`,
		`(?m)^4\. recall with a correction +ok +([1-9][0-9]*) of ([1-9][0-9]*) phones corrected in \S+; 0 show the bad text$`,
		`(?m)^all 4 steps ok in \S+$`,
		`refused, 401 bad_signature`,
		`refused, 401 replayed_nonce`,
		`It keeps everything in memory and nothing after exit`,
	} {
		if !regexp.MustCompile(want).MatchString(got) {
			t.Errorf("output does not match %s", want)
		}
	}
	if m := regexp.MustCompile(`(?m)^4\..* ([0-9]+) of ([0-9]+) phones corrected`).FindStringSubmatch(got); m != nil && m[1] != m[2] {
		t.Errorf("recall corrected %s of %s phones", m[1], m[2])
	}
	if strings.Contains(got, "FAILED") {
		t.Errorf("a check failed")
	}
	m := regexp.MustCompile(`(?m)^  files: +(\S+) `).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("no files line")
	}
	if _, err := os.Stat(m[1]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary directory %s still there after exit (stat: %v)", m[1], err)
	}
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", got, errOut.String())
	}
}

func TestDemoInteractive(t *testing.T) {
	demoLeakCheck(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := filepath.Join(t.TempDir(), "demo")
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"demo", "--devices", "200", "--dir", dir}, noEnv, strings.NewReader(""), &out, &errOut)
	}()
	exportRE := regexp.MustCompile(`export PUSHGATE_URL=(\S+) PUSHGATE_KEY=(\S+) PUSHGATE_KEY_ID=city-alerts\n`)
	var export []string
	demoWait(t, "the demo to print the sender's settings", func() bool {
		select {
		case err := <-done:
			t.Fatalf("demo ended early: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
		default:
		}
		export = exportRE.FindStringSubmatch(out.String())
		return export != nil
	})
	if !strings.Contains(out.String(), "  gateway: "+export[1]+"\n") {
		t.Errorf("the export names %s, not the gateway URL printed above it", export[1])
	}

	// Paste the printed send command, as a user would.
	vars := map[string]string{"PUSHGATE_URL": export[1], "PUSHGATE_KEY": export[2], "PUSHGATE_KEY_ID": "city-alerts"}
	var sendOut, sendErr bytes.Buffer
	err := run(ctx, []string{"send", "--topic", "citizens", "--title", "Flood warning", "--body", "from the test", "--wait", "--poll", "20ms"},
		func(k string) string { return vars[k] }, strings.NewReader(""), &sendOut, &sendErr)
	if err != nil {
		t.Fatalf("send through the printed settings: %v\n%s%s", err, sendOut.String(), sendErr.String())
	}
	if !strings.Contains(sendOut.String(), "completed") {
		t.Errorf("send output %q does not say the broadcast completed", sendOut.String())
	}
	// The live line (plain lines here: stderr is not a terminal) shows it.
	demoWait(t, "the live line to show every phone reached", func() bool {
		return strings.Contains(errOut.String(), "0 in flight; 200 of 200 phones reached")
	})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("demo stopped with %v", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("hung: demo did not stop after cancellation")
	}
	if !strings.Contains(out.String(), "The embedded Redis is gone") {
		t.Errorf("the demo did not say the embedded Redis is gone:\n%s", out.String())
	}
	// --dir is kept: it was the user's choice.
	if _, err := os.Stat(filepath.Join(dir, "keyring.yaml")); err != nil {
		t.Errorf("--dir was not kept: %v", err)
	}
}

func TestDemoUsage(t *testing.T) {
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "notes.txt"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		give []string
		want string
	}{
		{[]string{"--devices", "0"}, "--devices"},
		{[]string{"--script", "--devices", "10"}, "at least 100"},
		{[]string{"--redis", "http://127.0.0.1:6379"}, "--redis"},
		{[]string{"--dir", full}, "not empty"},
		{[]string{"extra"}, "unexpected"},
		{[]string{"--bogus"}, "bogus"},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append([]string{"demo"}, tt.give...), noEnv, strings.NewReader(""), &out, &errOut)
		var u *usageError
		if !errors.As(err, &u) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("demo %q: error %v, want a usage error mentioning %q", tt.give, err, tt.want)
		}
	}
}
