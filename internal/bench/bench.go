// Package bench is pushgate bench: the gateway's main job measured beside its ceiling on
// the same machine in one run. The bench process runs the simulators and
// the measuring loops; Redis, the API and the workers run as child
// processes (the API and the workers are this same binary), so that each
// one's memory and CPU can be read from /proc and so that they compete for
// the machine as a deployment's processes would.
//
// Its gateway processes keep their Redis keys under the prefix "pgbench".
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/schollz/progressbar/v3"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/client"
	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/internal/stack"
	"github.com/pushgate/pushgate/providers/sim"
	"github.com/pushgate/pushgate/queue"
)

// Fixed parts of a bench run.
const (
	// benchTopic is the topic every phone is registered in.
	benchTopic = "citizens"
	// benchKeyPrefix prefixes the gateway's Redis keys during a bench.
	benchKeyPrefix = "pgbench"
	// benchAndroidShare is the share of FCM phones.
	benchAndroidShare = 0.6
	// latencyPhones is the audience of each latency broadcast.
	latencyPhones = 10
	// stallTimeout is how long deliveries may stop growing before a
	// phase gives up waiting for the rest (which then count as lost).
	stallTimeout = 30 * time.Second
	// childGrace is how long a child process may take to stop after
	// SIGTERM before it is killed.
	childGrace = 15 * time.Second
)

// ceilingConcurrencies are the bare loop's concurrencies; the best one
// is the ceiling. The providers' own benchmark found 64 best per platform;
// a loop over both platforms in its own process peaks higher.
func ceilingConcurrencies() []int { return []int{32, 64, 128, 256, 512} }

// benchSettings are the gateway settings the bench changes from the
// defaults.
//
// It lifts the limits that would otherwise be what it measures: the
// per-device limit (the latency and kill phases reach the same phones many
// times) and the provider rates (600,000/min each by default, a cap of
// 10,000 deliveries/s per platform).
//
// It sends 8 calls at a time per batch instead of 64, so 128 across two
// workers of 8 batches each. The default is sized for real providers,
// whose answers take tens of milliseconds; against simulators that answer
// at once, calls beyond what keeps the CPU busy only wait in line (the
// throughput is the same at 8 as at 64 here, see BENCHMARKS.md), and a
// kill must let every call already on the wire be answered: at 1,024 in
// flight that line alone is about 100 ms at this machine's rate.
func benchSettings() map[string]string {
	return map[string]string{
		"limits.device_rate":      "unlimited",
		"limits.fcm_rate":         "unlimited",
		"limits.apns_rate":        "unlimited",
		"fcm.concurrency":         "8",
		"apns.concurrency":        "8",
		"worker.shutdown_timeout": "5s",
		"log_level":               "warn",
		"key_prefix":              benchKeyPrefix,
	}
}

// benchResult is what --json prints: every figure of a run, as numbers.
type benchResult struct {
	Devices          int     `json:"devices"`
	DeliveriesPerSec float64 `json:"deliveries_per_sec"`
	CeilingPerSec    float64 `json:"ceiling_per_sec"`
	Ratio            float64 `json:"ratio"`
	LatencyP50Ms     float64 `json:"latency_p50_ms"`
	LatencyP99Ms     float64 `json:"latency_p99_ms"`
	KillP50Ms        float64 `json:"kill_p50_ms"`
	KillP99Ms        float64 `json:"kill_p99_ms"`
	SentAfterKillAck int64   `json:"sent_after_kill_ack"`
	Lost             int64   `json:"lost"`
	Duplicates       int64   `json:"duplicates"`
	PeakRSSMB        float64 `json:"peak_rss_mb"`
	CPUSecPer1k      float64 `json:"cpu_sec_per_1k"`
}

// benchDetail is what the table shows beyond benchResult.
type benchDetail struct {
	workers        int
	throughputWall time.Duration
	ceilingTries   []ceilingTry
	ceilingBest    int
	latencyRuns    int
	kills          int
	killLatency    time.Duration
	procs          []procFigures
	// inProcess is the bare loop's pass in the bench process, at the
	// best concurrency.
	inProcess ceilingTry
	// settings are the gateway settings changed for the bench, as
	// key=value.
	settings []string
	// throughputCPU is the CPU time each process used during the
	// throughput phase, by name; the bench process (the simulators) is
	// "bench".
	throughputCPU map[string]time.Duration
}

// ceilingTry is one pass of the bare loop.
type ceilingTry struct {
	concurrency int
	perSec      float64
	// cpuPer1k is the bare loop's process's CPU time per 1,000 messages,
	// and simCPUPer1k the bench process's (the simulators') meanwhile.
	cpuPer1k, simCPUPer1k float64
}

// procFigures are one process's resource figures.
type procFigures struct {
	name      string
	peakRSSMB float64
	// cpu is the CPU time it used during the throughput phase; negative
	// when not measured.
	cpu time.Duration
}

// Options are what a bench run measures and how. The command checks
// them; Run trusts them.
type Options struct {
	Devices     int           // virtual phones to register and broadcast to
	Workers     int           // worker processes
	RedisURL    string        // an empty database to use; empty to start a redis-server
	JSON        bool          // print one JSON object instead of a table
	LatencyRuns int           // small broadcasts timed for latency
	Kills       int           // running broadcasts to kill
	KillLatency time.Duration // simulator latency during the kill phase
	// AppSigning is the gateway's app_signing.mode ("" for off); the
	// simulated phones do not verify, so that only the gateway's cost is
	// measured.
	AppSigning string

	// Binary is the pushgate binary to run as the API and the workers.
	Binary string
	// PprofDir, when set, gets a CPU profile of every process. The
	// children are started as "pushgate bench --cpuprofile FILE api ...".
	PprofDir string
	// Settings override gateway settings, for exploring configurations.
	Settings map[string]string
	// Phases, when not empty, names the phases to run: latency,
	// throughput, ceiling, kill.
	Phases map[string]bool
	// Getenv reads the environment the children inherit from.
	Getenv func(string) string
}

// Phases lists the phases a run may be limited to.
func Phases() []string { return []string{"latency", "throughput", "ceiling", "kill"} }

// Run runs a bench: progress on stderr, the figures on stdout. It fails
// when the gateway lost, duplicated or sent after a kill was
// acknowledged.
func Run(ctx context.Context, o Options, stdout, stderr io.Writer) error {
	if o.PprofDir != "" {
		if err := os.MkdirAll(o.PprofDir, 0o755); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		stop, err := StartCPUProfile(filepath.Join(o.PprofDir, "bench.pprof"))
		if err != nil {
			return err
		}
		defer stop()
	}
	b := &bench{o: o, stderr: stderr}
	res, det, err := b.run(ctx)
	// Everything started is stopped even when the run failed; a failure
	// (not an interruption) shows the end of each child's log first, since
	// the directory that holds the logs goes away.
	b.close(err != nil && ctx.Err() == nil)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if o.JSON {
		if err := json.NewEncoder(stdout).Encode(res); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	} else {
		printBench(stdout, res, det)
	}
	var failed []string
	for _, c := range []struct {
		name string
		n    int64
	}{{"lost", res.Lost}, {"duplicates", res.Duplicates}, {"sent_after_kill_ack", res.SentAfterKillAck}} {
		if c.n != 0 {
			failed = append(failed, fmt.Sprintf("%s = %d", c.name, c.n))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("bench: correctness check failed: %s, want 0", strings.Join(failed, ", "))
	}
	return nil
}

// StartCPUProfile starts writing a CPU profile to file; the returned
// function ends it.
func StartCPUProfile(file string) (func(), error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// bench is one run: what it started, and how to reach it.
type bench struct {
	o      Options
	stderr io.Writer
	dir    string

	redis    *childProc // nil when --redis names one
	redisURL string
	rdb      *redis.Client
	st       *stack.Stack
	api      *childProc
	workers  []*childProc
	// settings are the gateway settings that change what is measured,
	// for the report.
	settings []string
	sender   *client.Client
	admin    *client.Client
}

// say prints one line of progress.
func (b *bench) say(format string, args ...any) {
	fmt.Fprintf(b.stderr, "bench: "+format+"\n", args...)
}

// run starts everything and runs the phases. The figures of each phase are
// read as it ends; the processes' peak memory at the very end.
func (b *bench) run(ctx context.Context) (*benchResult, *benchDetail, error) {
	if err := b.start(ctx); err != nil {
		return nil, nil, err
	}
	res := &benchResult{Devices: b.o.Devices}
	det := &benchDetail{workers: b.o.Workers, latencyRuns: b.o.LatencyRuns, kills: b.o.Kills, killLatency: b.o.KillLatency,
		throughputCPU: map[string]time.Duration{}, settings: b.settings}
	phase := func(name string) bool { return b.o.Phases == nil || b.o.Phases[name] }

	// Warm-up: a few small broadcasts, so that every worker has its
	// provider connections and tokens before anything is timed, as the
	// bare loop gets a warm-up pass too.
	b.say("warming up")
	if _, err := b.smallBroadcasts(ctx, 2*b.o.Workers, "warm-up", res); err != nil {
		return nil, nil, err
	}

	if phase("latency") {
		b.say("latency: %d broadcasts of %d phones, one after another", b.o.LatencyRuns, latencyPhones)
		lat, err := b.smallBroadcasts(ctx, b.o.LatencyRuns, "latency", res)
		if err != nil {
			return nil, nil, err
		}
		res.LatencyP50Ms, res.LatencyP99Ms = percentileMs(lat, 50), percentileMs(lat, 99)
	}

	if phase("throughput") {
		b.say("throughput: one topic broadcast to %d phones", b.o.Devices)
		if err := b.throughput(ctx, res, det); err != nil {
			return nil, nil, err
		}
	}

	if phase("ceiling") {
		b.say("ceiling: %d messages by a bare loop over the SDK clients, concurrency %v", b.o.Devices, ceilingConcurrencies())
		if err := b.ceiling(ctx, res, det); err != nil {
			return nil, nil, err
		}
		if res.CeilingPerSec > 0 {
			res.Ratio = res.DeliveriesPerSec / res.CeilingPerSec
		}
	}

	if phase("kill") {
		b.say("kill: %d running topic broadcasts killed, simulator latency %s", b.o.Kills, b.o.KillLatency)
		kills, err := b.killPhase(ctx, res)
		if err != nil {
			return nil, nil, err
		}
		res.KillP50Ms, res.KillP99Ms = percentileMs(kills, 50), percentileMs(kills, 99)
	}

	// Peak memory is read last, while the processes still run.
	procs := b.gatewayProcs()
	if b.redis != nil {
		procs = append(procs, b.redis)
	}
	for _, p := range procs {
		kb, err := procPeakRSSKB(p.pid())
		if err != nil {
			return nil, nil, err
		}
		cpu, ok := det.throughputCPU[p.name]
		if !ok {
			cpu = -1
		}
		det.procs = append(det.procs, procFigures{name: p.name, peakRSSMB: float64(kb) / 1024, cpu: cpu})
		if p != b.redis {
			res.PeakRSSMB = max(res.PeakRSSMB, float64(kb)/1024)
		}
	}
	if cpu, ok := det.throughputCPU["bench"]; ok {
		det.procs = append(det.procs, procFigures{name: "bench (simulators)", peakRSSMB: -1, cpu: cpu})
	}
	return res, det, nil
}

// start starts Redis (unless given), the simulators, the API and the
// workers, and registers the phones.
func (b *bench) start(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "pushgate-bench-")
	if err != nil {
		return err
	}
	b.dir = dir
	env := b.childEnv()

	b.redisURL = b.o.RedisURL
	if b.redisURL == "" {
		b.say("starting redis-server")
		if b.redis, b.redisURL, err = startRedis(ctx, filepath.Join(dir, "redis"), env); err != nil {
			return err
		}
	}
	opts, err := redis.ParseURL(b.redisURL)
	if err != nil {
		return fmt.Errorf("--redis: %w", err)
	}
	b.rdb = redis.NewClient(opts)
	n, err := b.rdb.DBSize(ctx).Result()
	if err != nil {
		return fmt.Errorf("redis %s: %w", app.RedactURL(b.redisURL), err)
	}
	if n > 0 {
		return fmt.Errorf("redis %s holds %d keys: the bench needs an empty database (it shares asynq's queues with whatever else runs there)", app.RedactURL(b.redisURL), n)
	}

	apiAddr, err := freeLoopbackAddr()
	if err != nil {
		return err
	}
	all := map[string]string{"listen": apiAddr}
	maps.Copy(all, benchSettings())
	maps.Copy(all, b.o.Settings)
	settings := map[string]string{}
	for k, v := range all {
		// The senders' sections of the configuration file come from the
		// simulators; their settings reach the children as environment
		// variables, which win over the file.
		if strings.HasPrefix(k, "fcm.") || strings.HasPrefix(k, "apns.") {
			env = append(env, app.EnvName(k)+"="+v)
			continue
		}
		settings[k] = v
	}
	for _, k := range slices.Sorted(maps.Keys(all)) {
		switch k {
		case "listen", "key_prefix", "log_level", "worker.shutdown_timeout":
		default:
			b.settings = append(b.settings, k+"="+all[k])
		}
	}
	if b.o.AppSigning != "" {
		b.settings = append(b.settings, "app_signing.mode="+b.o.AppSigning)
	}
	b.say("starting the simulators with %d phones", b.o.Devices)
	b.st, err = stack.New(stack.Options{
		Dir: filepath.Join(dir, "stack"), RedisURL: b.redisURL, Devices: b.o.Devices,
		AndroidShare: benchAndroidShare, Seed: 1, Topic: benchTopic, Settings: settings,
		AppSigning: b.o.AppSigning, UnverifyingPhones: true,
		SimConfig: func(c *sim.Config) {
			// FCM's project quota (600,000/min) would cap the
			// measurement. The bare loop signs its own APNs provider
			// token with apns2, as a plain SDK user does: a second token
			// for the team, which the simulator's refresh limit (one new
			// token per 20 minutes) would refuse.
			c.QuotaPerMinute = -1
			c.MinTokenRefresh = -1
		},
	})
	if err != nil {
		return err
	}

	b.say("starting the API and %d worker processes (%s)", b.o.Workers, b.o.Binary)
	if b.api, err = b.startGateway("api", env); err != nil {
		return err
	}
	apiURL := "http://" + apiAddr
	if err := b.waitUp(ctx, func(ctx context.Context) error { return stack.WaitHTTP(ctx, apiURL+api.PathReadyz, 15*time.Second) }); err != nil {
		return err
	}
	for i := range b.o.Workers {
		w, err := b.startGateway(fmt.Sprintf("worker-%d", i+1), env)
		if err != nil {
			return err
		}
		b.workers = append(b.workers, w)
	}
	if err := b.waitUp(ctx, b.waitWorkers); err != nil {
		return err
	}

	if b.sender, err = b.st.Client(stack.KeySender, apiURL); err != nil {
		return err
	}
	if b.admin, err = b.st.Client(stack.KeyAdmin, apiURL); err != nil {
		return err
	}
	b.say("registering %d phones through the API", b.o.Devices)
	return b.st.ImportDevices(ctx, b.sender, benchTopic)
}

// startGateway starts one gateway process: "api", or a worker when name
// starts with "worker".
func (b *bench) startGateway(name string, env []string) (*childProc, error) {
	sub := "api"
	if strings.HasPrefix(name, "worker") {
		sub = "worker"
	}
	args := []string{sub, "--config", b.st.ConfigPath}
	if b.o.PprofDir != "" {
		args = append([]string{"bench", "--cpuprofile", filepath.Join(b.o.PprofDir, name+".pprof")}, args...)
	}
	return startChild(name, filepath.Join(b.dir, name+".log"), b.o.Binary, args, env)
}

// waitUp runs wait, failing early when a child process has exited.
func (b *bench) waitUp(ctx context.Context, wait func(context.Context) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel(nil)
		wg.Wait()
	}()
	wg.Go(func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := b.childrenAlive(); err != nil {
					cancel(err)
					return
				}
			}
		}
	})
	err := wait(ctx)
	if cause := context.Cause(ctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// waitWorkers waits until every worker process has a heartbeat: a kill
// waits for exactly these.
func (b *bench) waitWorkers(ctx context.Context) error {
	key := queue.NewKeys(benchKeyPrefix).Workers()
	deadline := time.Now().Add(15 * time.Second)
	for {
		n, err := b.rdb.ZCard(ctx, key).Result()
		if err == nil && n >= int64(b.o.Workers) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d workers registered within 15s", n, b.o.Workers)
		}
		if err := stack.Pause(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// childEnv is the environment of the child processes: nothing of the
// PUSHGATE_* variables (which would override the bench's configuration),
// only what the Go runtime and Redis may want.
func (b *bench) childEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "GOMAXPROCS", "GOGC", "GOMEMLIMIT", "GODEBUG"} {
		if v := b.o.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// gatewayProcs are the API and worker processes, in that order.
func (b *bench) gatewayProcs() []*childProc {
	return append([]*childProc{b.api}, b.workers...)
}

// childrenAlive reports a child process that exited.
func (b *bench) childrenAlive() error {
	for _, p := range append(b.gatewayProcs(), b.redis) {
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited: %v", p.name, p.waitErr)
		}
	}
	return nil
}

// close stops everything the bench started, in the order a deployment
// shuts down: the API, the workers (they finish their batches), then
// Redis; then the simulators and the directory. With showLogs, the end of
// each child's log is printed first.
func (b *bench) close(showLogs bool) {
	if showLogs {
		for _, p := range append(b.gatewayProcs(), b.redis) {
			if p != nil {
				p.printTail(b.stderr, 20)
			}
		}
	}
	for _, c := range []*client.Client{b.sender, b.admin} {
		if c != nil {
			c.Close()
		}
	}
	procs := b.gatewayProcs()
	var wg sync.WaitGroup
	for _, p := range procs[1:] {
		if p != nil {
			wg.Go(func() { p.stop(childGrace) })
		}
	}
	if b.api != nil {
		b.api.stop(childGrace)
	}
	wg.Wait()
	if b.rdb != nil {
		if b.redis == nil {
			// A database given with --redis was empty; leave it so.
			b.rdb.FlushDB(context.Background())
		}
		b.rdb.Close()
	}
	if b.redis != nil {
		b.redis.stop(childGrace)
	}
	if b.st != nil {
		b.st.Close()
	}
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// submit sends a broadcast and returns its id and when the 202 arrived.
func (b *bench) submit(ctx context.Context, req *api.BroadcastRequest) (string, time.Time, error) {
	sub, err := b.sender.Submit(ctx, req)
	if err != nil {
		return "", time.Time{}, err
	}
	return sub.ID, time.Now(), nil
}

// waitFinished polls a broadcast until every device it planned has an
// outcome.
func (b *bench) waitFinished(ctx context.Context, id string, within time.Duration) (*api.Status, error) {
	deadline := time.Now().Add(within)
	for {
		st, err := b.sender.Status(ctx, id)
		if err != nil {
			return nil, err
		}
		if st.Terminal() && !st.FinishedAt.IsZero() {
			return st, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("broadcast %s still %s after %s: %+v", id, st.State, within, st.Counters)
		}
		if err := b.childrenAlive(); err != nil {
			return nil, err
		}
		if err := stack.Pause(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// smallBroadcasts submits n broadcasts to latencyPhones phones each by
// explicit tokens, one after another, and returns for each the time from
// the API's 202 to its last delivery at the simulators. Phones that got
// nothing, or more than one copy, are added to res.
func (b *bench) smallBroadcasts(ctx context.Context, n int, what string, res *benchResult) ([]time.Duration, error) {
	s := b.st.Sim
	s.Reset()
	var out []time.Duration
	for i := range n {
		devs := make([]api.Device, 0, latencyPhones)
		want := map[string]bool{}
		for j := range latencyPhones {
			d := b.st.Devices[(i*latencyPhones+j)%len(b.st.Devices)]
			devs = append(devs, api.Device{Platform: d.Platform, Token: d.Token})
			want[d.Token] = true
		}
		before := s.Stats().Deliveries
		id, accepted, err := b.submit(ctx, &api.BroadcastRequest{
			Audience: api.Audience{Tokens: devs},
			Message:  api.MessageSpec{Title: fmt.Sprintf("%s %d", what, i), Body: "pushgate bench", TTL: "15m"},
		})
		if err != nil {
			return nil, fmt.Errorf("%s broadcast: %w", what, err)
		}
		// Nothing else is sending: the simulators' counter says when this
		// broadcast has arrived, without copying their delivery log at
		// every poll (which would take CPU from the gateway).
		deadline := accepted.Add(stallTimeout)
		for s.Stats().Deliveries < before+latencyPhones && time.Now().Before(deadline) {
			if err := b.childrenAlive(); err != nil {
				return nil, err
			}
			if err := stack.Pause(ctx, time.Millisecond); err != nil {
				return nil, err
			}
		}
		if _, err := b.waitFinished(ctx, id, stallTimeout); err != nil {
			return nil, err
		}
		cid := queue.CollapseID(id)
		dels := s.Deliveries(func(d sim.Delivery) bool { return d.CollapseID == cid })
		lost, dup := tally(dels, want)
		res.Lost += lost
		res.Duplicates += dup
		if len(dels) > 0 {
			out = append(out, lastDelivery(dels).Sub(accepted))
		}
	}
	res.Duplicates += s.Stats().RawDuplicates
	return out, nil
}

// throughput broadcasts to every phone by topic and measures deliveries
// per second at the simulators, from submission to the last delivery, and
// the gateway processes' CPU time meanwhile.
func (b *bench) throughput(ctx context.Context, res *benchResult, det *benchDetail) error {
	s := b.st.Sim
	s.Reset()
	procs := b.gatewayProcs()
	if b.redis != nil {
		procs = append(procs, b.redis)
	}
	cpu0, err := procsCPU(procs)
	if err != nil {
		return err
	}
	self0 := selfCPU()
	start := time.Now()
	id, _, err := b.submit(ctx, &api.BroadcastRequest{
		Audience: api.Audience{Topic: benchTopic},
		Message:  api.MessageSpec{Title: "pushgate bench throughput", Body: "one broadcast to every phone", TTL: "15m"},
	})
	if err != nil {
		return fmt.Errorf("throughput broadcast: %w", err)
	}
	if err := b.waitDeliveries(ctx, int64(b.o.Devices), "delivered"); err != nil {
		return err
	}
	if _, err := b.waitFinished(ctx, id, stallTimeout); err != nil {
		return err
	}
	cpu1, err := procsCPU(procs)
	if err != nil {
		return err
	}
	det.throughputCPU["bench"] = selfCPU() - self0

	cid := queue.CollapseID(id)
	dels := s.Deliveries(func(d sim.Delivery) bool { return d.CollapseID == cid })
	want := make(map[string]bool, len(b.st.Devices))
	for _, d := range b.st.Devices {
		want[d.Token] = true
	}
	lost, dup := tally(dels, want)
	res.Lost += lost
	res.Duplicates += dup + s.Stats().RawDuplicates
	if len(dels) == 0 {
		return errors.New("throughput: nothing was delivered")
	}
	det.throughputWall = lastDelivery(dels).Sub(start)
	res.DeliveriesPerSec = float64(len(dels)) / det.throughputWall.Seconds()

	var total time.Duration
	for i, p := range procs {
		det.throughputCPU[p.name] = cpu1[i] - cpu0[i]
		if p != b.redis {
			total += cpu1[i] - cpu0[i]
		}
	}
	res.CPUSecPer1k = total.Seconds() / (float64(len(dels)) / 1000)
	return nil
}

// waitDeliveries shows the simulators' delivery count on a progress bar
// until it reaches n, or stops growing for stallTimeout.
func (b *bench) waitDeliveries(ctx context.Context, n int64, what string) error {
	s := b.st.Sim
	bar := progressbar.NewOptions64(n,
		progressbar.OptionSetWriter(b.stderr),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("msg"),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionThrottle(100*time.Millisecond),
		// Without a spinner interval the bar starts no goroutine of its own.
		progressbar.OptionSetSpinnerChangeInterval(0),
		progressbar.OptionSetDescription(what),
	)
	defer func() {
		_ = bar.Exit()
		fmt.Fprintln(b.stderr)
	}()
	var last int64
	grew := time.Now()
	for {
		got := s.Stats().Deliveries
		_ = bar.Set64(min(got, n))
		if got >= n {
			return nil
		}
		if got != last {
			last, grew = got, time.Now()
		} else if time.Since(grew) > stallTimeout {
			return nil // the rest count as lost
		}
		if err := b.childrenAlive(); err != nil {
			return err
		}
		if err := stack.Pause(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
}

// ceiling sends one message per phone straight through the SDK clients,
// with no API, queue or Redis, at several concurrencies, and keeps the
// best rate: what this machine allows with these simulators.
//
// Each pass runs in a process of its own, as each worker does. A loop in
// the bench process would share the simulators' Go runtime: handing a
// request to the simulator and back would cost a goroutine switch instead
// of the operating system's process switch (and cache refill) that every
// real client, and every worker, pays; such a ceiling is not attainable by
// any gateway. The in-process figure is measured too, for the table.
func (b *bench) ceiling(ctx context.Context, res *benchResult, det *benchDetail) error {
	s := b.st.Sim
	simJSON := filepath.Join(b.dir, "stack", "sim", "sim.json")
	for _, c := range ceilingConcurrencies() {
		s.Reset()
		title := fmt.Sprintf("ceiling c=%d", c)
		outFile := filepath.Join(b.dir, fmt.Sprintf("ceiling-%d.json", c))
		args := []string{"bench", "--bare-loop", simJSON, "--bare-concurrency", strconv.Itoa(c), "--bare-title", title, "--bare-out", outFile}
		if b.o.PprofDir != "" {
			args = append([]string{"bench", "--cpuprofile", filepath.Join(b.o.PprofDir, fmt.Sprintf("bare-%d.pprof", c))}, args...)
		}
		self0 := selfCPU()
		p, err := startChild(fmt.Sprintf("bare loop c=%d", c), filepath.Join(b.dir, fmt.Sprintf("ceiling-%d.log", c)), b.o.Binary, args, b.childEnv())
		if err != nil {
			return err
		}
		select {
		case <-p.done:
		case <-ctx.Done():
			p.stop(childGrace)
			return ctx.Err()
		}
		simCPU := selfCPU() - self0
		if p.waitErr != nil {
			p.printTail(b.stderr, 20)
			return fmt.Errorf("ceiling: %s: %w", p.name, p.waitErr)
		}
		var pass barePass
		raw, err := os.ReadFile(outFile)
		if err == nil {
			err = json.Unmarshal(raw, &pass)
		}
		if err != nil {
			return fmt.Errorf("ceiling: %s: %w", p.name, err)
		}
		try, err := b.ceilingTry(c, title, time.Unix(0, pass.StartUnixNano), time.Duration(pass.CPUNanos))
		if err != nil {
			return err
		}
		// The pass's warm-up is in this figure too: 1,000 messages more.
		try.simCPUPer1k = simCPU.Seconds() / (float64(len(b.st.Devices)+min(len(b.st.Devices), 1000)) / 1000)
		det.ceilingTries = append(det.ceilingTries, try)
		if try.perSec > res.CeilingPerSec {
			res.CeilingPerSec, det.ceilingBest = try.perSec, c
		}
	}

	// The same loop at the best concurrency in the bench process, beside
	// the simulators, for comparison.
	bc, err := newBareClients(ctx, bareTargetOf(s))
	if err != nil {
		return err
	}
	defer bc.close()
	if err := bc.sendAll(ctx, b.st.Devices[:min(len(b.st.Devices), 1000)], 64, "warm-up"); err != nil {
		return err
	}
	s.Reset()
	title := fmt.Sprintf("in-process c=%d", det.ceilingBest)
	start := time.Now()
	if err := bc.sendAll(ctx, b.st.Devices, det.ceilingBest, title); err != nil {
		return err
	}
	if det.inProcess, err = b.ceilingTry(det.ceilingBest, title, start, 0); err != nil {
		return err
	}
	s.Reset()
	return nil
}

// ceilingTry reads one bare-loop pass's rate from the simulators: every
// phone must have got the pass's message.
func (b *bench) ceilingTry(c int, title string, start time.Time, cpu time.Duration) (ceilingTry, error) {
	cid := bareCollapseID(title)
	dels := b.st.Sim.Deliveries(func(d sim.Delivery) bool { return d.CollapseID == cid })
	if len(dels) != len(b.st.Devices) {
		return ceilingTry{}, fmt.Errorf("ceiling: %d deliveries for %d messages at concurrency %d", len(dels), len(b.st.Devices), c)
	}
	n := float64(len(dels))
	return ceilingTry{concurrency: c, perSec: n / lastDelivery(dels).Sub(start).Seconds(), cpuPer1k: cpu.Seconds() / (n / 1000)}, nil
}

// killPhase kills running topic broadcasts one after another and returns,
// for each, the time from sending the kill to the last delivery in its
// scope. Deliveries after the kill's acknowledgement go to
// res.SentAfterKillAck.
func (b *bench) killPhase(ctx context.Context, res *benchResult) ([]time.Duration, error) {
	s := b.st.Sim
	if b.o.KillLatency > 0 {
		if err := s.SetFaults(sim.Faults{Latency: b.o.KillLatency}); err != nil {
			return nil, err
		}
		defer s.SetFaults(sim.Faults{})
	}
	// Kill each broadcast once it has reached 1% of the phones: well into
	// its fan-out, far from its end.
	threshold := int64(max(1, b.o.Devices/100))
	var out []time.Duration
	for i := range b.o.Kills {
		s.Reset()
		id, _, err := b.submit(ctx, &api.BroadcastRequest{
			Audience: api.Audience{Topic: benchTopic},
			Message:  api.MessageSpec{Title: fmt.Sprintf("kill %d", i), Body: "to be killed", TTL: "15m"},
		})
		if err != nil {
			return nil, fmt.Errorf("kill broadcast: %w", err)
		}
		deadline := time.Now().Add(stallTimeout)
		for s.Stats().Deliveries < threshold {
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("kill: broadcast %s reached %d phones in %s, want %d", id, s.Stats().Deliveries, stallTimeout, threshold)
			}
			if err := stack.Pause(ctx, time.Millisecond); err != nil {
				return nil, err
			}
		}
		sent := time.Now()
		k, err := b.admin.Kill(ctx, api.BroadcastScope(id), "pushgate bench", true)
		if err != nil {
			return nil, fmt.Errorf("kill: %w", err)
		}
		acked := time.Now()
		if !k.Acknowledged() || k.Ack.Workers != b.o.Workers {
			return nil, fmt.Errorf("kill of broadcast %s: answer %+v, want acknowledged by %d workers", id, k.Ack, b.o.Workers)
		}
		st, err := b.waitFinished(ctx, id, stallTimeout)
		if err != nil {
			return nil, err
		}
		if st.State != api.StateKilled {
			return nil, fmt.Errorf("kill: broadcast %s ended %s, not killed: it finished before the kill (slow broadcasts down with --kill-latency)", id, st.State)
		}
		cid := queue.CollapseID(id)
		dels := s.Deliveries(func(d sim.Delivery) bool { return d.CollapseID == cid })
		out = append(out, max(0, lastDelivery(dels).Sub(sent)))
		for _, d := range dels {
			if d.Time.After(acked) {
				res.SentAfterKillAck++
			}
		}
		res.Duplicates += s.Stats().RawDuplicates
	}
	return out, nil
}

// tally counts the phones of want that got no delivery, and the deliveries
// beyond the first to a phone (and to phones outside want).
func tally(dels []sim.Delivery, want map[string]bool) (lost, dup int64) {
	got := make(map[string]int, len(dels))
	for _, d := range dels {
		got[d.Token]++
	}
	for tok := range want {
		if got[tok] == 0 {
			lost++
		}
	}
	for tok, n := range got {
		if want[tok] {
			n--
		}
		dup += int64(n)
	}
	return lost, dup
}

// lastDelivery is the time of the latest delivery.
func lastDelivery(dels []sim.Delivery) time.Time {
	var t time.Time
	for _, d := range dels {
		if d.Time.After(t) {
			t = d.Time
		}
	}
	return t
}

// percentileMs is the p-th percentile of ds (nearest rank), in
// milliseconds.
func percentileMs(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	i = min(max(i, 0), len(s)-1)
	return float64(s[i].Microseconds()) / 1000
}

// printBench writes the readable tables: the figures against their
// targets, the bare loop's passes, and each process's memory and CPU.
func printBench(w io.Writer, r *benchResult, d *benchDetail) {
	fmt.Fprintf(w, "pushgate bench: %d phones, %d worker processes, simulators at zero latency\n", r.Devices, d.workers)
	fmt.Fprintf(w, "gateway settings changed from the defaults: %s\n\n", strings.Join(d.settings, ", "))

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(name, value, target string) { fmt.Fprintf(tw, "%s\t%s\t%s\n", name, value, target) }
	row("figure", "value", "target")
	row("throughput", fmt.Sprintf("%.0f deliveries/s (%s)", r.DeliveriesPerSec, d.throughputWall.Round(time.Millisecond)), "")
	row("ceiling (bare SDK loop)", fmt.Sprintf("%.0f/s at concurrency %d", r.CeilingPerSec, d.ceilingBest), "")
	row("ratio", fmt.Sprintf("%.2f", r.Ratio), targetMark(r.Ratio >= 0.7, ">= 0.7"))
	row(fmt.Sprintf("latency, %d phones, p50 / p99", latencyPhones), fmt.Sprintf("%.1f / %.1f ms (%d broadcasts)", r.LatencyP50Ms, r.LatencyP99Ms, d.latencyRuns), "")
	row("kill to last delivery, p50 / p99", fmt.Sprintf("%.1f / %.1f ms (%d kills, simulator latency %s)", r.KillP50Ms, r.KillP99Ms, d.kills, d.killLatency), targetMark(r.KillP99Ms <= 50, "p99 <= 50 ms"))
	row("sent after kill acknowledged", strconv.FormatInt(r.SentAfterKillAck, 10), targetMark(r.SentAfterKillAck == 0, "0"))
	row("lost", strconv.FormatInt(r.Lost, 10), targetMark(r.Lost == 0, "0"))
	row("duplicates", strconv.FormatInt(r.Duplicates, 10), targetMark(r.Duplicates == 0, "0"))
	row("peak RSS, largest gateway process", fmt.Sprintf("%.1f MB", r.PeakRSSMB), targetMark(r.PeakRSSMB <= 200, "<= 200 MB"))
	row("gateway CPU per 1,000 deliveries", fmt.Sprintf("%.3f s", r.CPUSecPer1k), "")
	tw.Flush()

	if len(d.ceilingTries) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "bare loop, own process\trate\tCPU per 1,000\tsimulators' CPU per 1,000")
		for _, t := range d.ceilingTries {
			fmt.Fprintf(tw, "concurrency %d\t%.0f/s\t%.3f s\t%.3f s\n", t.concurrency, t.perSec, t.cpuPer1k, t.simCPUPer1k)
		}
		if t := d.inProcess; t.perSec > 0 {
			fmt.Fprintf(tw, "concurrency %d, in the simulators' process\t%.0f/s\t-\t-\n", t.concurrency, t.perSec)
		}
		tw.Flush()
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "process\tpeak RSS\tCPU during throughput")
	for _, p := range d.procs {
		rss, cpu := "-", "-"
		if p.peakRSSMB >= 0 {
			rss = fmt.Sprintf("%.1f MB", p.peakRSSMB)
		}
		if p.cpu >= 0 {
			cpu = p.cpu.Round(10 * time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", p.name, rss, cpu)
	}
	tw.Flush()
}

// targetMark says whether a target is met.
func targetMark(ok bool, target string) string {
	if ok {
		return target + "  ok"
	}
	return target + "  MISSED"
}

// clockTicks is the unit of utime and stime in /proc/PID/stat (USER_HZ,
// 100 on every Linux architecture Go supports).
const clockTicks = 100
