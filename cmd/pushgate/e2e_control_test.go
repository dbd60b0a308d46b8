package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/client"
	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/internal/stack"
	"github.com/pushgate/pushgate/queue"
)

// TestFrozenWorkerSendsNothingAfterKill freezes a worker process with
// SIGSTOP in the middle of a broadcast, kills the broadcast, and thaws the
// worker once the kill is acknowledged. The frozen worker leaves the live
// set only once it must have stopped itself (its view of the control log
// too old to send by), and thawed it sends nothing in the killed scope:
// the simulators' delivery log shows no delivery after the acknowledgement.
func TestFrozenWorkerSendsNothingAfterKill(t *testing.T) {
	const devices = 20000
	e := newE2E(t, stack.Options{Devices: devices, AndroidShare: 0.6, Seed: 6, Latency: 5 * time.Millisecond},
		app.Roles{API: true})
	ps := e.startWorkers(2)
	ctx := context.Background()
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
		t.Fatal(err)
	}
	id := e.submit(e.owner, topicBroadcast("citizens", "bad text"))
	collapse := queue.CollapseID(id)
	waitUntil(t, "the broadcast to reach phones", func() bool {
		return e.st.Sim.DeliveriesAfter(time.Time{}, collapse) >= 2000
	})
	frozen := ps[0]
	if err := frozen.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			frozen.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	defer thaw()
	res, err := e.admin.Kill(ctx, api.BroadcastScope(id), "wrong text", true)
	if err != nil {
		t.Fatal(err)
	}
	acked := time.Now()
	if !res.Ack.Acknowledged || res.Ack.Workers != 1 {
		t.Fatalf("ack = %+v: want acknowledged by the one live worker, the frozen one dropped", res.Ack)
	}
	thaw()

	// The thawed worker reads the log, applies the kill and says so.
	rdb, keys := e.redisOf(), queue.NewKeys("")
	host, _ := os.Hostname()
	worker := host + "-" + strconv.Itoa(frozen.cmd.Process.Pid)
	waitUntil(t, "the thawed worker to acknowledge the kill", func() bool {
		v, _ := rdb.HGet(ctx, keys.WorkerAcks(), worker).Int64()
		return v >= res.Version
	})
	if after := e.st.Sim.DeliveriesAfter(acked, collapse); after != 0 {
		t.Errorf("%d deliveries of the killed broadcast after its kill was acknowledged", after)
	}
	t.Logf("kill acknowledged after %.1fms with a worker frozen; %d phones reached", res.Ack.WaitedMS,
		e.st.Sim.DeliveriesAfter(time.Time{}, collapse))
}

// TestLogExportRestoreAndVerify runs the operator's commands against a
// gateway whose Redis loses everything: pushgate log export before, the
// gateway failing closed after (readiness, submissions), pushgate log
// restore bringing it back with the revocation and the kill intact, and
// pushgate audit verify checking the export offline and naming an
// altered entry.
func TestLogExportRestoreAndVerify(t *testing.T) {
	e := newE2E(t, stack.Options{Devices: 50, AndroidShare: 0.5, Seed: 7, Latency: time.Millisecond, Settings: fastLossCheck()},
		app.Roles{API: true, Worker: true})
	ctx := context.Background()
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
		t.Fatal(err)
	}
	first := e.submit(e.owner, topicBroadcast("citizens", "first"))
	e.waitFinished(first)
	if _, _, err := e.admin.Revoke(ctx, e.st.Keys[stack.KeyDistrict].ID, "lost phone"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.Kill(ctx, api.TopicScope("closed"), "road closed", false); err != nil {
		t.Fatal(err)
	}
	export := filepath.Join(t.TempDir(), "control.log")
	cfg := map[string]string{"PUSHGATE_CONFIG": e.st.ConfigPath}
	out, errOut, err := runCmd(t, cfg, "", "log", "export", export)
	if err != nil || !strings.Contains(out, "exported ") {
		t.Fatalf("log export: %v\n%s%s", err, out, errOut)
	}
	verify := func(file string) (string, error) {
		out, errOut, err := runCmd(t, nil, "", "audit", "verify", file, "--log-key", e.st.LogPublicKey,
			"--keyring", filepath.Join(e.st.Dir, "keyring.yaml"))
		if err != nil {
			errOut += err.Error()
		}
		return out + errOut, err
	}
	if out, err := verify(export); err != nil || !strings.Contains(out, "every entry verifies") {
		t.Fatalf("audit verify of the export: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(export)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(raw), "\n")
	altered := filepath.Join(t.TempDir(), "altered.log")
	last := len(lines) - 1
	for !strings.Contains(lines[last], `"outcome":"`) {
		last--
	}
	lines[last] = strings.Replace(lines[last], `"outcome":"`, `"outcome":"nothing happened; `, 1)
	os.WriteFile(altered, []byte(strings.Join(lines, "")), 0o600)
	if out, err := verify(altered); err == nil || !strings.Contains(out, "was altered, added or removed") {
		t.Errorf("audit verify of an altered export: %v\n%s", err, out)
	}

	rdb := e.redisOf()
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the gateway to fail closed", func() bool { return e.app.App.Control().Err() != nil })
	if code := get(t, e.app.URL+api.PathReadyz); code != http.StatusServiceUnavailable {
		t.Errorf("readiness of a gateway whose control log is gone: %d, want 503", code)
	}
	// The flush took the deployment marker too: the loss of Redis's data
	// is what a submission is refused for.
	waitUntil(t, "the gateway to notice that Redis lost data", func() bool { return e.app.App.Deployment().Err() != nil })
	if _, err := e.owner.Submit(ctx, topicBroadcast("citizens", "during")); !client.IsProblem(err, api.CodeRedisDataLost) {
		t.Errorf("submission with the control log gone: %v, want %s", err, api.CodeRedisDataLost)
	}

	out, errOut, err = runCmd(t, cfg, "", "log", "restore", export)
	if err != nil || !strings.Contains(out, "restored ") {
		t.Fatalf("log restore: %v\n%s%s", err, out, errOut)
	}
	if out, errOut, err := runCmd(t, cfg, "", "redis", "restore-marker"); err != nil {
		t.Fatalf("redis restore-marker: %v\n%s%s", err, out, errOut)
	}
	waitUntil(t, "the gateway to be ready again", func() bool { return get(t, e.app.URL+api.PathReadyz) == http.StatusOK })
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil { // the flush took the registry
		t.Fatal(err)
	}
	if st := e.waitFinished(e.submit(e.owner, topicBroadcast("citizens", "back"))); st.State != api.StateCompleted {
		t.Errorf("broadcast after the restore ended %s", st.State)
	}
	_, err = e.client(stack.KeyDistrict).Submit(ctx, topicBroadcast("district-9a", "x"))
	if !client.IsProblem(err, "revoked_key") {
		t.Errorf("the revoked key after the restore: %v, want revoked_key", err)
	}
	kills, err := e.admin.Kills(ctx)
	if err != nil || len(kills) == 0 {
		t.Fatalf("kills after the restore = %+v, %v", kills, err)
	}
	found := false
	for _, k := range kills {
		found = found || k.Scope == api.TopicScope("closed")
	}
	if !found {
		t.Errorf("the restored log lost the kill of topic:closed: %+v", kills)
	}
}

// get returns the status of a GET.
func get(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
