package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/client"
	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/internal/redistest"
	"github.com/pushgate/pushgate/internal/stack"
	"github.com/pushgate/pushgate/queue"
)

// fastLossCheck shortens how often the processes read the deployment
// marker, so that the tests wait less; nothing asserts how long it took.
func fastLossCheck() map[string]string { return map[string]string{"redis.loss_check_interval": "20ms"} }

// getBody returns the status and body of a GET.
func getBody(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func lostErr(err error) *queue.DataLostError {
	var e *queue.DataLostError
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// exportLog runs pushgate log export into a temporary file.
func exportLog(t *testing.T, cfg map[string]string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "control.log")
	if out, errOut, err := runCmd(t, cfg, "", "log", "export", file); err != nil {
		t.Fatalf("log export: %v\n%s%s", err, out, errOut)
	}
	return file
}

// TestRedisFlushedUnderARunningGateway flushes the Redis of a running API
// and worker: the process notices (readiness fails naming the loss, the
// gauge says so, new broadcasts and device imports are refused with
// redis_data_lost, a kill is not refused for it), never writes a new
// marker, and resumes once the operator has restored the control log and
// put the marker back.
func TestRedisFlushedUnderARunningGateway(t *testing.T) {
	srv := redistest.StartServer(t, true)
	e := newE2E(t, stack.Options{RedisURL: srv.URL(), Devices: 20, AndroidShare: 0.5, Seed: 21, Latency: time.Millisecond,
		Settings: fastLossCheck()}, app.Roles{API: true, Worker: true})
	ctx := context.Background()
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
		t.Fatal(err)
	}
	if st := e.waitFinished(e.submit(e.owner, topicBroadcast("citizens", "before"))); st.State != api.StateCompleted {
		t.Fatalf("broadcast before the flush ended %s", st.State)
	}
	cfg := map[string]string{"PUSHGATE_CONFIG": e.st.ConfigPath}
	export := exportLog(t, cfg)
	deployment := e.app.App.Deployment().ID()

	rdb := srv.Client()
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the gateway to notice that Redis lost data", func() bool { return e.app.App.Deployment().Err() != nil })
	if l := lostErr(e.app.App.Deployment().Err()); l == nil || l.Expected != deployment || l.Found != "" {
		t.Errorf("condition = %v; want the marker of %s missing", e.app.App.Deployment().Err(), deployment)
	}
	code, body := getBody(t, e.app.URL+api.PathReadyz)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, api.CodeRedisDataLost) || !strings.Contains(body, "missing") {
		t.Errorf("readiness after the flush: %d %s; want 503 naming redis_data_lost and the missing marker", code, body)
	}
	if v := scrape(t, e.app.URL+api.PathMetrics)["pushgate_redis_data_lost"]; v != 1 {
		t.Errorf("pushgate_redis_data_lost = %v, want 1", v)
	}
	if _, err := e.owner.Submit(ctx, topicBroadcast("citizens", "during")); !client.IsProblem(err, api.CodeRedisDataLost) {
		t.Errorf("a broadcast on the flushed Redis: %v, want %s", err, api.CodeRedisDataLost)
	}
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); !client.IsProblem(err, api.CodeRedisDataLost) {
		t.Errorf("a device import on the flushed Redis: %v, want %s", err, api.CodeRedisDataLost)
	}
	// A stop is never refused for lost data; here the control log is gone
	// too, which refuses it on its own account (and no worker sends).
	waitUntil(t, "the control log to fail closed", func() bool { return e.app.App.Control().Err() != nil })
	if _, err := e.admin.Kill(ctx, api.ScopeGlobal, "flushed", false); client.IsProblem(err, api.CodeRedisDataLost) {
		t.Errorf("a kill was refused for lost data: %v", err)
	}
	if n, err := rdb.Exists(ctx, queue.NewKeys("").Deployment()).Result(); err != nil || n != 0 {
		t.Fatalf("the marker exists after the loss was noticed (%d, %v): a process wrote it over the loss", n, err)
	}
	out, _, err := runCmd(t, cfg, "", "redis", "status")
	if err != nil || !strings.Contains(out, "Redis lost data: the marker is missing") || !strings.Contains(out, deployment) {
		t.Errorf("redis status: %v\n%s", err, out)
	}

	if out, errOut, err := runCmd(t, cfg, "", "log", "restore", export); err != nil {
		t.Fatalf("log restore: %v\n%s%s", err, out, errOut)
	}
	out, errOut, err := runCmd(t, cfg, "", "redis", "restore-marker")
	if err != nil || !strings.Contains(out, "put deployment "+deployment+" back") {
		t.Fatalf("redis restore-marker: %v\n%s%s", err, out, errOut)
	}
	waitUntil(t, "the gateway to be ready again", func() bool { return get(t, e.app.URL+api.PathReadyz) == http.StatusOK })
	if v := scrape(t, e.app.URL+api.PathMetrics)["pushgate_redis_data_lost"]; v != 0 {
		t.Errorf("pushgate_redis_data_lost = %v after the restore, want 0", v)
	}
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil { // the flush took the registry
		t.Fatal(err)
	}
	if st := e.waitFinished(e.submit(e.owner, topicBroadcast("citizens", "after"))); st.State != api.StateCompleted || st.Counters.Sent != 20 {
		t.Errorf("broadcast after the restore ended %s with %+v", st.State, st.Counters)
	}
}

// TestWorkerPutsOffTasksOnAnotherDeploymentsMarker has a broadcast queued
// when the marker in Redis turns into another deployment's, as a process
// that remembers nothing would create on an emptied Redis. A worker
// started on it finds the loss at start, takes the plan task and puts it
// off without completing anything; once the operator puts the marker back
// the same broadcast completes.
func TestWorkerPutsOffTasksOnAnotherDeploymentsMarker(t *testing.T) {
	e := newE2E(t, stack.Options{Devices: 20, AndroidShare: 0.5, Seed: 22, Latency: time.Millisecond, Settings: fastLossCheck()},
		app.Roles{API: true})
	ctx := context.Background()
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
		t.Fatal(err)
	}
	id := e.submit(e.owner, topicBroadcast("citizens", "held"))
	deployment := e.app.App.Deployment().ID()
	rdb := e.redisOf()
	key := queue.NewKeys("").Deployment()
	intruder := strings.Repeat("e", 32)
	if err := rdb.Set(ctx, key, `{"id":"`+intruder+`","created":"2026-01-01T00:00:00Z"}`, 0).Err(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the API to notice the other marker", func() bool { return e.app.App.Deployment().Err() != nil })

	worker, err := stack.StartApp(ctx, e.st.ConfigPath, app.Roles{Worker: true}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer worker.Stop()
	waitUntil(t, "the worker's start check", func() bool { return worker.App.Deployment().Err() != nil })
	if l := lostErr(worker.App.Deployment().Err()); l == nil || l.Expected != deployment || l.Found != intruder {
		t.Fatalf("worker condition = %v; want deployment %s expected, %s found", worker.App.Deployment().Err(), deployment, intruder)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	waitUntil(t, "the worker to take the plan task and put it off", func() bool {
		tasks, err := insp.ListRetryTasks(queue.QueuePlan)
		if err != nil {
			return false
		}
		for _, task := range tasks {
			if strings.Contains(task.LastErr, "Redis lost data") {
				return true
			}
		}
		return false
	})
	if st := e.status(id); st.State != api.StateQueued || st.Counters.Targeted != 0 {
		t.Fatalf("after the worker put its plan off the broadcast is %s with %+v; want it queued, nothing targeted", st.State, st.Counters)
	}
	if n := e.st.Sim.DeliveriesAfter(time.Time{}, queue.CollapseID(id)); n != 0 {
		t.Fatalf("%d deliveries while Redis held another deployment's marker", n)
	}

	out, errOut, err := runCmd(t, map[string]string{"PUSHGATE_CONFIG": e.st.ConfigPath}, "", "redis", "restore-marker")
	if err != nil || !strings.Contains(out, "replacing "+intruder) {
		t.Fatalf("redis restore-marker: %v\n%s%s", err, out, errOut)
	}
	if st := e.waitFinished(id); st.State != api.StateCompleted || st.Counters.Sent != 20 {
		t.Errorf("the held broadcast after the restore ended %s with %+v", st.State, st.Counters)
	}
	if worker.App.Deployment().Err() != nil || e.app.App.Deployment().Err() != nil {
		t.Errorf("still in the condition: worker %v, API %v", worker.App.Deployment().Err(), e.app.App.Deployment().Err())
	}
}

// TestRestartedOnAnEmptiedRedis restarts Redis without persistence while
// the gateway is down, then the gateway: with its state file it knows the
// empty Redis lost data, refuses work and does not create a marker; the
// operator accepts the loss (pushgate redis accept-loss) and restores the
// control log, and work resumes under the new deployment id.
func TestRestartedOnAnEmptiedRedis(t *testing.T) {
	srv := redistest.StartServer(t, false)
	e := newE2E(t, stack.Options{RedisURL: srv.URL(), Devices: 20, AndroidShare: 0.5, Seed: 23, Latency: time.Millisecond,
		Settings: fastLossCheck()}, app.Roles{})
	ctx := context.Background()
	start := func() {
		ra, err := stack.StartAppWith(ctx, e.st.ConfigPath, app.Roles{API: true, Worker: true}, testLogger(t), checkedAPI(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := ra.Stop(); err != nil {
				t.Errorf("app stopped with %v", err)
			}
		})
		e.app = ra
		e.owner, e.admin = e.client(stack.KeySender), e.client(stack.KeyAdmin)
	}
	start()
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
		t.Fatal(err)
	}
	if st := e.waitFinished(e.submit(e.owner, topicBroadcast("citizens", "before"))); st.State != api.StateCompleted {
		t.Fatalf("broadcast before the restart ended %s", st.State)
	}
	cfg := map[string]string{"PUSHGATE_CONFIG": e.st.ConfigPath}
	export := exportLog(t, cfg)
	stateDir := filepath.Join(e.st.Dir, "state")
	deployment, err := queue.RememberedDeployment(stateDir)
	if err != nil || deployment == "" {
		t.Fatalf("remembered deployment = %q, %v", deployment, err)
	}
	if err := e.app.Stop(); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	srv.Restart() // without an AOF: empty

	start()
	// The start check ran before the API answered.
	if l := lostErr(e.app.App.Deployment().Err()); l == nil || l.Expected != deployment || l.Found != "" {
		t.Fatalf("restarted on an empty Redis: %v; want the marker of %s missing", e.app.App.Deployment().Err(), deployment)
	}
	rdb := srv.Client()
	if n, err := rdb.Exists(ctx, queue.NewKeys("").Deployment()).Result(); err != nil || n != 0 {
		t.Fatalf("the restarted process created a marker (%d, %v) over the loss", n, err)
	}
	if code, body := getBody(t, e.app.URL+api.PathReadyz); code != http.StatusServiceUnavailable || !strings.Contains(body, api.CodeRedisDataLost) {
		t.Errorf("readiness: %d %s; want 503 redis_data_lost", code, body)
	}
	if _, err := e.owner.Submit(ctx, topicBroadcast("citizens", "during")); !client.IsProblem(err, api.CodeRedisDataLost) {
		t.Errorf("a broadcast on the emptied Redis: %v, want %s", err, api.CodeRedisDataLost)
	}

	out, errOut, err := runCmd(t, cfg, "", "redis", "accept-loss")
	if err != nil || !strings.Contains(out, "replacing "+deployment) {
		t.Fatalf("redis accept-loss: %v\n%s%s", err, out, errOut)
	}
	if out, errOut, err := runCmd(t, cfg, "", "log", "restore", export); err != nil {
		t.Fatalf("log restore: %v\n%s%s", err, out, errOut)
	}
	waitUntil(t, "the gateway to be ready again", func() bool { return get(t, e.app.URL+api.PathReadyz) == http.StatusOK })
	m, err := queue.ReadMarker(ctx, rdb, queue.NewKeys(""))
	if err != nil || m == nil || m.ID == deployment {
		t.Fatalf("marker after accept-loss = %+v, %v", m, err)
	}
	if got, err := queue.RememberedDeployment(stateDir); err != nil || got != m.ID || e.app.App.Deployment().ID() != m.ID {
		t.Errorf("the process remembers %q (%v) and holds %q; want the new deployment %s", got, err, e.app.App.Deployment().ID(), m.ID)
	}
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
		t.Fatal(err)
	}
	if st := e.waitFinished(e.submit(e.owner, topicBroadcast("citizens", "after"))); st.State != api.StateCompleted || st.Counters.Sent != 20 {
		t.Errorf("broadcast after accepting the loss ended %s with %+v", st.State, st.Counters)
	}
}

// TestPersistenceCheckRefusesToStart runs serve and worker with
// redis.persistence_check refuse on a Redis without persistence: each
// exits at once with one line saying what to set.
func TestPersistenceCheckRefusesToStart(t *testing.T) {
	srv := redistest.StartServer(t, false)
	e := newE2E(t, stack.Options{RedisURL: srv.URL(), Devices: 1, Seed: 24}, app.Roles{})
	for _, cmd := range []string{"serve", "worker"} {
		env := map[string]string{"PUSHGATE_CONFIG": e.st.ConfigPath, "PUSHGATE_REDIS_PERSISTENCE_CHECK": "refuse"}
		_, _, err := runCmd(t, env, "", cmd)
		if err == nil {
			t.Fatalf("%s started on a Redis without persistence in refuse mode", cmd)
		}
		var buf strings.Builder
		exitCode(err, &buf)
		line := buf.String()
		if strings.Count(line, "\n") != 1 || !strings.Contains(line, "appendonly is no") || !strings.Contains(line, "appendonly yes and appendfsync everysec") {
			t.Errorf("%s: %q; want one line naming appendonly and what to set", cmd, line)
		}
	}
	if _, err := os.Stat(filepath.Join(e.st.Dir, "state", "deployment")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused start wrote a deployment id: %v", err)
	}
}

// TestRedisCommandRefusals runs pushgate redis and serve with what an
// operator may get wrong: no subcommand, a damaged state file (untrusted:
// refused with one line naming it, never taken for "no deployment"), no
// id to restore, an id that is not one.
func TestRedisCommandRefusals(t *testing.T) {
	e := newE2E(t, stack.Options{Devices: 1, Seed: 25}, app.Roles{})
	cfg := map[string]string{"PUSHGATE_CONFIG": e.st.ConfigPath}
	state := filepath.Join(e.st.Dir, "state", "deployment")
	tests := []struct {
		name      string
		stateFile string // written first unless empty
		args      []string
		want      string
		wantUsage bool
	}{
		{name: "no subcommand", args: []string{"redis"}, want: "want status, restore-marker or accept-loss", wantUsage: true},
		{name: "unknown subcommand", args: []string{"redis", "flush"}, want: `unknown verb "flush"`, wantUsage: true},
		{name: "nothing to restore", args: []string{"redis", "restore-marker"}, want: "give --id", wantUsage: true},
		{name: "not an id", args: []string{"redis", "restore-marker", "--id", "../../etc"}, want: "not a deployment id"},
		{name: "nothing to accept", args: []string{"redis", "accept-loss"}, want: "nothing to replace"},
		{name: "damaged state, status", stateFile: "garbage\n", args: []string{"redis", "status"}, want: state},
		{name: "damaged state, accept-loss", stateFile: "garbage\n", args: []string{"redis", "accept-loss"}, want: state},
		{name: "damaged state, serve", stateFile: "\x00\x01", args: []string{"serve"}, want: state},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.stateFile != "" {
				if err := os.MkdirAll(filepath.Dir(state), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(state, []byte(tt.stateFile), 0o600); err != nil {
					t.Fatal(err)
				}
				defer os.Remove(state)
			}
			_, _, err := runCmd(t, cfg, "", tt.args...)
			var buf strings.Builder
			code := exitCode(err, &buf)
			line := buf.String()
			if err == nil || !strings.Contains(line, tt.want) || strings.Count(line, "\n") != 1 {
				t.Fatalf("pushgate %s: %q; want one line naming %q", strings.Join(tt.args, " "), line, tt.want)
			}
			if tt.wantUsage != (code == 2) {
				t.Errorf("exit code %d, usage error %t", code, tt.wantUsage)
			}
		})
	}
	if n, err := e.redisOf().Exists(context.Background(), queue.NewKeys("").Deployment()).Result(); err != nil || n != 0 {
		t.Errorf("a refused command wrote the marker (%d, %v)", n, err)
	}
}
