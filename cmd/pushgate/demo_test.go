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

// demoNoLogs fails the test if what a demo wrote to the terminal holds a
// log line: the log goes to its file only.
func demoNoLogs(t *testing.T, name, got string) {
	t.Helper()
	for _, bad := range []string{"level=", "Retry exhausted", "security: task refused", "component="} {
		if strings.Contains(got, bad) {
			t.Errorf("%s holds %q, a log line:\n%s", name, bad, got)
		}
	}
}

// demoLog returns the demo's log file, which the demo named on stdout.
func demoLog(t *testing.T, out, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "pushgate.log")
	if !strings.Contains(out, "pushgate demo: the log of everything it runs goes to "+path+" ") {
		t.Errorf("the demo does not name its log file %s:\n%s", path, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the log file: %v", err)
	}
	return string(b)
}

func TestDemoScript(t *testing.T) {
	demoLeakCheck(t)
	dir := filepath.Join(t.TempDir(), "demo")
	var out, errOut bytes.Buffer
	start := time.Now()
	err := run(context.Background(), []string{"demo", "--script", "--devices", "300", "--dir", dir}, noEnv, strings.NewReader(""), &out, &errOut)
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
		// The forged task's refusal is an outcome of the story, not a log
		// line on the terminal.
		`(?m)^   ok +a plan task written straight into Redis, .*: refused by the worker and counted as a security event \(pushgate:plan:envelope = 1\); logged as event=task_refused in pushgate\.log; 0 deliveries`,
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
	demoNoLogs(t, "stdout", got)
	if errOut.Len() > 0 {
		t.Errorf("the script wrote to stderr:\n%s", errOut.String())
	}
	log := demoLog(t, got, dir)
	for _, want := range []string{`level=ERROR msg="security: task refused" event=task_refused`, `level=WARN msg=kill key_id=ops-admin`} {
		if !strings.Contains(log, want) {
			t.Errorf("the log file does not hold %q:\n%s", want, log)
		}
	}
	if !strings.Contains(got, "The log is in "+filepath.Join(dir, "pushgate.log")+".") {
		t.Errorf("the demo does not say where its log stays")
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
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
		}
	})
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"demo", "--devices", "200", "--dir", dir}, noEnv, strings.NewReader(""), &out, &errOut)
	}()
	ended := func() {
		select {
		case err := <-done:
			t.Fatalf("demo ended early: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
		default:
		}
	}
	exportRE := regexp.MustCompile(`export PUSHGATE_URL=(\S+) PUSHGATE_KEY=(\S+) PUSHGATE_KEY_ID=city-alerts\n`)
	var export []string
	demoWait(t, "the demo to print the sender's settings", func() bool {
		ended()
		export = exportRE.FindStringSubmatch(out.String())
		return export != nil
	})
	printed := out.String()
	if !strings.Contains(printed, "  gateway: "+export[1]+"\n") {
		t.Errorf("the export names %s, not the gateway URL printed above it", export[1])
	}
	// The slow broadcast the demo started, and the commands that stop it.
	m := regexp.MustCompile(`It is broadcast (\S+)\.\n`).FindStringSubmatch(printed)
	adminExport := regexp.MustCompile(`export PUSHGATE_URL=(\S+) PUSHGATE_KEY=(\S+) PUSHGATE_KEY_ID=ops-admin\n`).FindStringSubmatch(printed)
	if m == nil || adminExport == nil {
		t.Fatalf("no slow broadcast or admin settings printed:\n%s", printed)
	}
	slowID := m[1]
	if !strings.Contains(printed, "  go run ./cmd/pushgate kill --scope broadcast:"+slowID+" --reason 'wrong text' --wait\n") {
		t.Errorf("no kill command naming broadcast %s:\n%s", slowID, printed)
	}
	recallRE := regexp.MustCompile(`  go run ./cmd/pushgate recall ` + slowID + ` --mode replace --title (\S+) --body '([^']+)'\n`)
	recallCmd := recallRE.FindStringSubmatch(printed)
	if recallCmd == nil {
		t.Fatalf("no recall command naming broadcast %s:\n%s", slowID, printed)
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
	// Its progress went to a buffer, not a terminal: plain lines.
	if s := sendErr.String(); !strings.Contains(s, "devices done)\n") || strings.ContainsAny(s, "\r\x1b") {
		t.Errorf("send --wait progress off a terminal is not plain lines: %q", s)
	}
	// The live lines (plain here: stderr is not a terminal) show it.
	demoWait(t, "the live lines to show the send completed", func() bool {
		ended()
		return regexp.MustCompile(`live: \S+ "Flood warning" completed: 200 of 200 phones got it\n`).MatchString(errOut.String())
	})

	// The slow broadcast is still going, and has reached a phone (its
	// first line is written when it starts sending, the next ones every
	// few seconds): kill it, as printed.
	demoWait(t, "the live lines to show the slow broadcast sending", func() bool {
		ended()
		return regexp.MustCompile(`live: ` + slowID + ` "Dam failure" sending: [1-9][0-9]* of 200 phones got it`).MatchString(errOut.String())
	})
	adminVars := map[string]string{"PUSHGATE_URL": adminExport[1], "PUSHGATE_KEY": adminExport[2], "PUSHGATE_KEY_ID": "ops-admin"}
	admin := func(args ...string) string {
		t.Helper()
		var o, e bytes.Buffer
		if err := run(ctx, args, func(k string) string { return adminVars[k] }, strings.NewReader(""), &o, &e); err != nil {
			t.Fatalf("%q: %v\n%s%s", args, err, o.String(), e.String())
		}
		return o.String()
	}
	admin("kill", "--scope", "broadcast:"+slowID, "--reason", "wrong text", "--wait")
	killedRE := regexp.MustCompile(`live: ` + slowID + ` "Dam failure" killed: [0-9]+ of 200 phones got it`)
	demoWait(t, "the live lines to show the slow broadcast killed", func() bool {
		ended()
		return killedRE.MatchString(errOut.String())
	})

	// Replace it, as printed; the live line's figures are the status's.
	admin("recall", slowID, "--mode", "replace", "--title", recallCmd[1], "--body", recallCmd[2])
	recalledRE := regexp.MustCompile(`live: ` + slowID + ` "Dam failure" recalled \(replace\): ([0-9]+) of 200 phones got it, .*?([0-9]+) recalled`)
	var live []string
	demoWait(t, "the live lines to show the slow broadcast recalled", func() bool {
		ended()
		live = recalledRE.FindStringSubmatch(errOut.String())
		return live != nil
	})
	status := admin("status", slowID)
	sent := regexp.MustCompile(`  sent ([0-9]+) `).FindStringSubmatch(status)
	recalled := regexp.MustCompile(` recalled ([0-9]+) `).FindStringSubmatch(status)
	if sent == nil || recalled == nil || sent[1] != live[1] || recalled[1] != live[2] {
		t.Errorf("the live line says %s got it and %s recalled; pushgate status says:\n%s", live[1], live[2], status)
	}

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
	demoNoLogs(t, "stdout", out.String())
	demoNoLogs(t, "stderr", errOut.String())
	if strings.ContainsAny(errOut.String(), "\r\x1b") {
		t.Errorf("the live lines off a terminal hold a carriage return or an escape sequence:\n%q", errOut.String())
	}
	if log := demoLog(t, out.String(), dir); !strings.Contains(log, "msg=kill key_id=ops-admin scope=broadcast:"+slowID) {
		t.Errorf("the log file does not hold the kill:\n%s", log)
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
