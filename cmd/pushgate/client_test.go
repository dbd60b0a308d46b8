package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/gateway/gatewaytest"
	"github.com/pushgate/pushgate/providers"
)

// startGateway starts a real API (real Redis, real Service, no worker)
// and checks at the very end, after everything it started has stopped,
// that no goroutine of the test is left.
func startGateway(t *testing.T) *gatewaytest.Env {
	t.Helper()
	current := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		goleak.VerifyNone(t, current,
			goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"),
			goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/maintnotifications.(*CircuitBreakerManager).cleanupLoop"))
	})
	return gatewaytest.Start(t)
}

// clientRun is one in-process run of the binary.
type clientRun struct {
	stdout, stderr string
	code           int
}

// runAs runs pushgate with args, signing as key through the environment
// variables the client reads.
func runAs(ctx context.Context, gw *gatewaytest.Env, key string, args ...string) clientRun {
	vars := map[string]string{"PUSHGATE_URL": gw.URL}
	if key != "" {
		vars["PUSHGATE_KEY"] = gw.KeyFiles[key]
		vars["PUSHGATE_KEY_ID"] = key
	}
	var out, errOut bytes.Buffer
	err := run(ctx, args, func(k string) string { return vars[k] }, strings.NewReader(""), &out, &errOut)
	code := exitCode(err, &errOut)
	return clientRun{stdout: out.String(), stderr: errOut.String(), code: code}
}

// writeDevices writes a devices file as the simulator does.
func writeDevices(t *testing.T, n int, prefix string) string {
	t.Helper()
	devices := make([]api.Device, n)
	for i := range devices {
		devices[i] = api.Device{Platform: providers.FCM, Token: fmt.Sprintf("%s-%05d", prefix, i)}
	}
	b, err := json.Marshal(devices)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "devices.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// listBroadcasts returns the stored broadcasts, newest first.
func listBroadcasts(t *testing.T, gw *gatewaytest.Env) []*api.Status {
	t.Helper()
	page, err := gw.Service.List(context.Background(), "", 100, "")
	if err != nil {
		t.Fatal(err)
	}
	list := page.Broadcasts
	return list
}

var broadcastIDRE = regexp.MustCompile(`broadcast (b[0-9a-v]+) |\(action (a[0-9a-v]+)\)`)

func TestClientCommands(t *testing.T) {
	gw := startGateway(t)
	ctx := context.Background()
	tokens := writeDevices(t, 3, "direct")
	imports := writeDevices(t, 25, "imp")
	for i := range 3 {
		for _, tok := range []string{fmt.Sprintf("cit-%d", i), fmt.Sprintf("direct-%05d", i)} {
			d := api.Device{Platform: providers.FCM, Token: tok}
			if err := gw.Service.Registry().Put(ctx, d, []string{"citizens"}); err != nil {
				t.Fatal(err)
			}
		}
	}

	// ids holds broadcast ids created by earlier steps, by step name.
	ids := map[string]string{}
	tests := []struct {
		name string
		key  string
		// args may refer to an earlier step's broadcast id as {step}.
		args     []string
		wantCode int
		wantOut  string // regexp on stdout, or on stderr when the code is not 0
		check    func(t *testing.T)
	}{
		{
			name: "send topic", key: gatewaytest.Sender,
			args: []string{"send", "--topic", "citizens", "--title", "Flood warning", "--body", "Avoid Manggarai.",
				"--data", "url=jaki://alerts/123", "--ttl", "15m", "--priority", "high"},
			wantOut: `^broadcast b[0-9a-v]+ queued in \S+\nstatus: ` + regexp.QuoteMeta(gw.URL) + `/v1/broadcasts/b[0-9a-v]+\n$`,
			check: func(t *testing.T) {
				st, err := gw.Service.Get(ctx, ids["send topic"])
				if err != nil || st.Topic != "citizens" || st.Title != "Flood warning" || st.TTL != "15m0s" {
					t.Errorf("stored %+v, %v", st, err)
				}
			},
		},
		{
			name: "send tokens", key: gatewaytest.Sender, args: []string{"send", "--tokens", tokens, "--body", "direct"},
			wantOut: `^broadcast b[0-9a-v]+ queued`,
			check: func(t *testing.T) {
				if st, err := gw.Service.Get(ctx, ids["send tokens"]); err != nil || st.Audience != "tokens" {
					t.Errorf("stored %+v, %v", st, err)
				}
			},
		},
		{
			name: "send with idempotency key", key: gatewaytest.Sender,
			args:    []string{"send", "--topic", "citizens", "--title", "t", "--body", "b", "--idempotency-key", "k-1"},
			wantOut: `^broadcast b[0-9a-v]+ queued`,
		},
		{
			name: "send repeated", key: gatewaytest.Sender,
			args:    []string{"send", "--topic", "citizens", "--title", "t", "--body", "b", "--idempotency-key", "k-1"},
			wantOut: `already submitted with idempotency key "k-1" \(queued\)`,
			check: func(t *testing.T) {
				if ids["send repeated"] != ids["send with idempotency key"] {
					t.Errorf("repeat gave %s, first %s", ids["send repeated"], ids["send with idempotency key"])
				}
			},
		},
		{
			name: "status", key: gatewaytest.Sender, args: []string{"status", "{send topic}"},
			wantOut: `^broadcast b[0-9a-v]+: queued \(read in \S+\)\n  key sender, audience topic citizens, ttl 15m0s.*\n  targeted 0  sent 0  failed 0  expired 0  invalid_token 0 `,
		},
		{
			name: "status json", key: gatewaytest.Approver, args: []string{"status", "{send topic}", "--json"},
			wantOut: `^\{"id":"b[0-9a-v]+","state":"queued","key_id":"sender"`,
		},
		{
			name: "cancel", key: gatewaytest.Sender, args: []string{"cancel", "{send tokens}", "--reason", "wrong list"},
			wantOut: `^cancelled broadcast b[0-9a-v]+ in \S+: state cancelled\n$`,
		},
		{
			name: "recall with custom text", key: gatewaytest.Admin,
			args:    []string{"recall", "{send topic}", "--mode", "replace", "--title", "Correction", "--body", "Ignore it."},
			wantOut: `^recall of b[0-9a-v]+ awaits 1 approval\(s\) from another admin or approver until \S+ \(action (a[0-9a-v]+)\)\n  they run: pushgate approve a[0-9a-v]+\n$`,
		},
		{
			name: "approvals list", key: gatewaytest.Admin2, args: []string{"approvals", "list"},
			wantOut: `(?s)^ID +WHAT +BY +APPROVALS +EXPIRES +CONTENT\na[0-9a-v]+ +recall b[0-9a-v]+ +admin +0 of 1 .*"Correction".*\n0 broadcasts and 1 actions await approval\n$`,
		},
		{
			name: "approve the recall", key: gatewaytest.Admin2, args: []string{"approve", "{recall with custom text}"},
			wantOut: `(?s)^approving recall of b[0-9a-v]+ requested by admin: .*\naction a[0-9a-v]+: approvals 1 of 1; carried out\n$`,
			check: func(t *testing.T) {
				if st, _ := gw.Service.Get(ctx, ids["send topic"]); st.State != api.StateRecalling || st.RecallMode != api.RecallReplace {
					t.Errorf("after the approval the broadcast is %s (%s), want recalling (replace)", st.State, st.RecallMode)
				}
			},
		},
		{
			name: "recall remove", key: gatewaytest.Admin, args: []string{"recall", "{send with idempotency key}", "--mode", "remove"},
			wantOut: `^recall \(remove\) of broadcast b[0-9a-v]+ started`,
			check: func(t *testing.T) {
				if st, _ := gw.Service.Get(ctx, ids["send with idempotency key"]); st.RecallMode != api.RecallRemove {
					t.Errorf("recall mode %q", st.RecallMode)
				}
			},
		},
		{
			name: "kill and wait", key: gatewaytest.Admin, args: []string{"kill", "--scope", "topic:floods", "--reason", "bad text", "--wait"},
			wantOut: `^killed scope topic:floods in \S+: acknowledged by 0 workers\n$`,
			check: func(t *testing.T) {
				if !gw.Service.Control().IsActive("topic:floods") {
					t.Error("kill not active")
				}
			},
		},
		{
			name: "kill", key: gatewaytest.Admin, args: []string{"kill", "--scope", "key:small", "--reason", "noisy"},
			wantOut: `^killed scope key:small in \S+: durable`,
		},
		{
			name: "resume", key: gatewaytest.Admin, args: []string{"resume", "--scope", "topic:floods"},
			wantOut: `^resumed scope topic:floods in \S+ \(control log entry \d+\)\n$`,
			check: func(t *testing.T) {
				if gw.Service.Control().IsActive("topic:floods") {
					t.Error("kill still active")
				}
			},
		},
		{
			name: "revoke", key: gatewaytest.Admin, args: []string{"keys", "revoke", gatewaytest.Doomed, "--reason", "leaked"},
			wantOut: `^revoked key doomed in \S+; its running broadcasts are killed \(acknowledged by 0 workers\)\n$`,
			check: func(t *testing.T) {
				if revoked, _ := gw.Service.Control().Revoked(ctx, gatewaytest.Doomed); !revoked {
					t.Error("key not revoked")
				}
			},
		},
		{
			name: "import", key: gatewaytest.Registrar, args: []string{"devices", "import", imports, "--topic", "imported", "--chunk", "10"},
			wantOut: `^imported 25 devices into topic imported in \S+ \(3 requests\)\n$`,
			check: func(t *testing.T) {
				if n, _ := gw.Service.Registry().Count(ctx, "imported"); n != 25 {
					t.Errorf("topic has %d devices, want 25", n)
				}
			},
		},
		{
			name: "audit", key: gatewaytest.Admin, args: []string{"audit", "--limit", "20", "--log-key", gw.LogPublicKey},
			wantOut: `(?s)^INDEX +AT +ACTOR +ACTION +TARGET +REASON +OUTCOME\n\d+ .*admin +revoke +doomed +leaked.*admin +kill +topic:floods +bad text.*sender +cancel .*\n\d+ entries, read in \S+\n` +
				`every entry is in the log of \d+ entries that pushgate.test/control signed at \S+\n$`,
		},
		{
			name: "audit without the log key", key: gatewaytest.Admin, args: []string{"audit", "--limit", "1"},
			wantOut: `(?s)^INDEX .*\n1 entries, read in \S+\nnot verified: pass --log-key .*\n$`,
		},

		// Refusals by the API: one line, exit 1.
		{
			name: "topic not allowed", key: gatewaytest.Sender, args: []string{"send", "--topic", "secret", "--title", "t", "--body", "b"},
			wantCode: 1, wantOut: `^pushgate: topic_not_allowed: key sender may not send to topic "secret"\n$`,
		},
		{
			name: "kill needs admin", key: gatewaytest.Sender, args: []string{"kill", "--scope", "global", "--reason", "x"},
			wantCode: 1, wantOut: `^pushgate: forbidden: this route needs a key with the role admin`,
		},
		{
			name: "revoked key", key: gatewaytest.Doomed, args: []string{"send", "--topic", "citizens", "--title", "t", "--body", "b"},
			wantCode: 1, wantOut: `^pushgate: revoked_key: key "doomed" is revoked\n$`,
		},
		{
			name: "unknown broadcast", key: gatewaytest.Sender, args: []string{"status", "b0000"},
			wantCode: 1, wantOut: `^pushgate: not_found: `,
		},
		{
			name: "resume without a kill", key: gatewaytest.Admin, args: []string{"resume", "--scope", "global"},
			wantCode: 1, wantOut: `^pushgate: not_found: no active kill for scope global\n$`,
		},

		// Bad invocations: nothing is sent, exit 2.
		{name: "no audience", key: gatewaytest.Sender, args: []string{"send", "--title", "t", "--body", "b"},
			wantCode: 2, wantOut: `give exactly one of --topic, --all, --tokens`},
		{name: "two audiences", key: gatewaytest.Sender, args: []string{"send", "--all", "--topic", "x", "--title", "t", "--body", "b"},
			wantCode: 2, wantOut: `give exactly one of`},
		{name: "no text", key: gatewaytest.Sender, args: []string{"send", "--all"},
			wantCode: 2, wantOut: `^pushgate: send: --body is required\n$`},
		{name: "bad ttl", key: gatewaytest.Sender, args: []string{"send", "--all", "--title", "t", "--body", "b", "--ttl", "soon"},
			wantCode: 2, wantOut: `--ttl "soon"`},
		{name: "bad data", key: gatewaytest.Sender, args: []string{"send", "--all", "--title", "t", "--body", "b", "--data", "novalue"},
			wantCode: 2, wantOut: `want KEY=VALUE`},
		{name: "unknown flag", key: gatewaytest.Sender, args: []string{"kill", "--scope", "global", "--because", "x"},
			wantCode: 2, wantOut: `flag provided but not defined: -because`},
		{name: "kill without reason", key: gatewaytest.Admin, args: []string{"kill", "--scope", "global"},
			wantCode: 2, wantOut: `kill: --reason is required`},
		{name: "not a broadcast id", key: gatewaytest.Admin, args: []string{"status", "../../v1/kill"},
			wantCode: 2, wantOut: `is not a broadcast id`},
		{name: "recall with a bad mode", key: gatewaytest.Admin, args: []string{"recall", "b0", "--mode", "erase"},
			wantCode: 2, wantOut: `--mode must be replace or remove`},
		{name: "recall remove with text", key: gatewaytest.Admin, args: []string{"recall", "b0", "--mode", "remove", "--title", "x"},
			wantCode: 2, wantOut: `takes no --title`},
		{name: "no key", args: []string{"kill", "--scope", "global", "--reason", "x"},
			wantCode: 2, wantOut: `--key \(or PUSHGATE_KEY\) is required`},
		{name: "unreadable key", key: gatewaytest.Admin, args: []string{"kill", "--scope", "global", "--reason", "x", "--key", "/nonexistent/admin.pem"},
			wantCode: 2, wantOut: `read key: open /nonexistent/admin.pem`},
		{name: "key is not PEM", key: gatewaytest.Admin, args: []string{"kill", "--scope", "global", "--reason", "x", "--key", tokens},
			wantCode: 2, wantOut: `^pushgate: key .*devices.json: `},
		{name: "bad gateway URL", key: gatewaytest.Admin, args: []string{"audit", "--gateway", "127.0.0.1:8080"},
			wantCode: 2, wantOut: `--gateway "127.0.0.1:8080": want an http or https URL`},
		{name: "missing devices file", key: gatewaytest.Registrar, args: []string{"devices", "import", "/nonexistent.json"},
			wantCode: 2, wantOut: `read devices: `},
		{name: "keys without a verb", key: gatewaytest.Admin, args: []string{"keys"},
			wantCode: 2, wantOut: `keys: no verb given`},
		{name: "keys with an unknown verb", key: gatewaytest.Admin, args: []string{"keys", "rotate", "x"},
			wantCode: 2, wantOut: `keys: unknown verb "rotate"`},
		{name: "keys help", key: gatewaytest.Admin, args: []string{"help", "keys"},
			wantCode: 0, wantOut: ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := make([]string, len(tt.args))
			for i, a := range tt.args {
				if step, ok := strings.CutPrefix(a, "{"); ok {
					a = ids[strings.TrimSuffix(step, "}")]
				}
				args[i] = a
			}
			before := len(listBroadcasts(t, gw))
			r := runAs(ctx, gw, tt.key, args...)
			if r.code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tt.wantCode, r.stdout, r.stderr)
			}
			out := r.stdout
			if tt.wantCode != 0 {
				out = r.stderr
				if after := len(listBroadcasts(t, gw)); after != before {
					t.Errorf("a refused command stored %d broadcasts", after-before)
				}
			}
			if !regexp.MustCompile(tt.wantOut).MatchString(out) {
				t.Errorf("output does not match %s:\n%s", tt.wantOut, out)
			}
			if m := broadcastIDRE.FindStringSubmatch(r.stdout); m != nil {
				ids[tt.name] = m[1] + m[2] // a broadcast id, or an action id
			}
			if tt.check != nil {
				tt.check(t)
			}
		})
	}
}

// TestClientKeyFromEnvironment passes the private key itself in
// PUSHGATE_KEY: it signs, and usage output never prints it.
func TestClientKeyFromEnvironment(t *testing.T) {
	gw := startGateway(t)
	pem, err := os.ReadFile(gw.KeyFiles[gatewaytest.Admin])
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"PUSHGATE_URL": gw.URL, "PUSHGATE_KEY": string(pem), "PUSHGATE_KEY_ID": gatewaytest.Admin}
	getenv := func(k string) string { return vars[k] }
	for _, args := range [][]string{{"audit"}, {"help", "kill"}, {"kill", "--bogus"}} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, getenv, strings.NewReader(""), &out, &errOut)
		if args[0] == "audit" && err != nil {
			t.Errorf("audit with the key in PUSHGATE_KEY: %v", err)
		}
		if strings.Contains(out.String()+errOut.String(), "PRIVATE KEY") {
			t.Errorf("pushgate %v printed the private key:\n%s%s", args, out.String(), errOut.String())
		}
	}
}

func TestClientUnreachableGateway(t *testing.T) {
	gw := startGateway(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	r := runAs(context.Background(), gw, gatewaytest.Admin, "audit", "--gateway", dead)
	if r.code != 1 || !strings.Contains(r.stderr, "pushgate: GET "+dead+"/v1/audit?limit=50: ") {
		t.Errorf("exit %d, stderr %q; want 1 and the failed request", r.code, r.stderr)
	}
}

// TestSendWait follows broadcasts whose state the test drives, as a worker
// would: the wait ends with the broadcast, exit 0 only if every device was
// sent (or found gone), 3 when some were not, 4 when it was stopped, and
// the output says why.
func TestSendWait(t *testing.T) {
	tests := []struct {
		name     string
		finish   func(t *testing.T, gw *gatewaytest.Env, id string)
		wantCode int
		wantOut  string
		wantErr  string // the last line on stderr, when set
	}{
		{
			name: "cancelled",
			finish: func(t *testing.T, gw *gatewaytest.Env, id string) {
				v, env := gw.Sign(t, gatewaytest.Admin, "POST", api.CancelPath(id), []byte(`{"reason":"test"}`))
				if _, err := gw.Service.Cancel(context.Background(), v, env, id, "test"); err != nil {
					t.Error(err)
				}
				// No worker runs here; write what the worker whose plan
				// task meets the kill writes: planning done, nothing left.
				err := gw.Redis.HSet(context.Background(), gw.Keys.Broadcast(id),
					"plan_done", 1, "finished_at", time.Now().UnixMilli()).Err()
				if err != nil {
					t.Error(err)
				}
			},
			wantCode: 4,
			wantOut:  `broadcast b[0-9a-v]+ cancelled after`,
			wantErr:  `pushgate: broadcast b[0-9a-v]+ did not complete: it ended cancelled\n$`,
		},
		{
			name: "completed, every device sent",
			finish: func(t *testing.T, gw *gatewaytest.Env, id string) {
				err := gw.Redis.HSet(context.Background(), gw.Keys.Broadcast(id),
					"state", api.StateCompleted, "targeted", 3, "planned", 3, "sent", 2, "invalid_token", 1, "plan_done", 1,
					"finished_at", time.Now().UnixMilli()).Err()
				if err != nil {
					t.Error(err)
				}
			},
			wantCode: 0,
			wantOut:  `broadcast b[0-9a-v]+ completed after \S+: 2 sent, 0 failed, 0 expired, 1 invalid tokens, 0 cancelled of 3 targeted\n$`,
		},
		{
			// What APNs answering TooManyProviderTokenUpdates to every
			// device leaves: completed, with failures the exit code and
			// the output name.
			name: "completed with failures",
			finish: func(t *testing.T, gw *gatewaytest.Env, id string) {
				err := gw.Redis.HSet(context.Background(), gw.Keys.Broadcast(id),
					"state", api.StateCompleted, "targeted", 5, "planned", 5, "sent", 0, "expired", 5, "plan_done", 1,
					"retries", 40, "why:e:apns/TooManyProviderTokenUpdates", 5, "why:r:apns/TooManyProviderTokenUpdates", 40,
					"finished_at", time.Now().UnixMilli()).Err()
				if err != nil {
					t.Error(err)
				}
			},
			wantCode: 3,
			wantOut:  `completed after \S+: 0 sent, 0 failed, 5 expired, 0 invalid tokens, 0 cancelled of 5 targeted\n  top reasons: apns/TooManyProviderTokenUpdates expired=5, apns/TooManyProviderTokenUpdates retried=40\n$`,
			wantErr:  `pushgate: broadcast b[0-9a-v]+ completed with 5 of 5 devices not sent \(0 failed, 5 expired, .*\); top reasons: apns/TooManyProviderTokenUpdates expired=5, apns/TooManyProviderTokenUpdates retried=40\n$`,
		},
		{
			name: "completed",
			finish: func(t *testing.T, gw *gatewaytest.Env, id string) {
				// No worker runs here; write what a finishing worker
				// writes to the record.
				err := gw.Redis.HSet(context.Background(), gw.Keys.Broadcast(id),
					"state", api.StateCompleted, "targeted", 3, "planned", 3, "sent", 2, "expired", 1, "plan_done", 1,
					"finished_at", time.Now().UnixMilli()).Err()
				if err != nil {
					t.Error(err)
				}
			},
			wantCode: 3,
			wantOut:  `broadcast b[0-9a-v]+ completed after \S+: 2 sent, 0 failed, 1 expired, 0 invalid tokens, 0 cancelled of 3 targeted\n$`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := startGateway(t)
			ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
			defer cancel()
			done := make(chan clientRun, 1)
			go func() {
				done <- runAs(ctx, gw, gatewaytest.Wide, "send", "--topic", "citizens", "--title", "t", "--body", "b", "--wait", "--poll", "20ms")
			}()
			id := waitForBroadcast(t, gw, done)
			tt.finish(t, gw, id)
			r := <-done
			if r.code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tt.wantCode, r.stdout, r.stderr)
			}
			if !regexp.MustCompile(tt.wantOut).MatchString(r.stdout) {
				t.Errorf("stdout does not match %s:\n%s", tt.wantOut, r.stdout)
			}
			if !strings.Contains(r.stderr, "sent") {
				t.Errorf("no progress on stderr: %q", r.stderr)
			}
			if tt.wantErr != "" && !regexp.MustCompile(tt.wantErr).MatchString(r.stderr) {
				t.Errorf("stderr does not end with %s:\n%s", tt.wantErr, r.stderr)
			}
			// status --wait of the ended broadcast judges it the same way.
			if again := runAs(ctx, gw, gatewaytest.Admin, "status", id, "--wait", "--poll", "20ms"); again.code != tt.wantCode {
				t.Errorf("status --wait: exit %d, want %d\nstdout: %s\nstderr: %s", again.code, tt.wantCode, again.stdout, again.stderr)
			}
		})
	}
}

// waitForBroadcast polls until the CLI's broadcast is stored and returns
// its id. It fails if the CLI exits first.
func waitForBroadcast(t *testing.T, gw *gatewaytest.Env, done <-chan clientRun) string {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for time.Now().Before(deadline) {
		if list := listBroadcasts(t, gw); len(list) == 1 {
			return list[0].ID
		}
		select {
		case r := <-done:
			t.Fatalf("send exited %d before the broadcast was stored:\n%s%s", r.code, r.stdout, r.stderr)
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("hung: the broadcast was not stored after %s", hangGuard)
	return ""
}
