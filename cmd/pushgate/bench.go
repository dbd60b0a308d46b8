package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/pushgate/pushgate/internal/bench"
)

// runBench is "pushgate bench": the gateway's main job measured beside its
// ceiling on this machine, see package bench and BENCHMARKS.md.
func runBench(ctx context.Context, e *env, args []string) error {
	const synopsis = "[--devices 100000] [--workers 2] [--redis URL] [--json]"
	fs := newFlagSet(e, "bench", synopsis)
	o := bench.Options{Settings: keyValues{}, Getenv: e.getenv}
	fs.IntVar(&o.Devices, "devices", 100000, "virtual phones to register and broadcast to")
	fs.IntVar(&o.Workers, "workers", 2, "worker processes")
	fs.StringVar(&o.RedisURL, "redis", "", "use this Redis database (it must be empty; it is emptied again at the end) instead of starting a redis-server")
	fs.BoolVar(&o.JSON, "json", false, "print one JSON object instead of a table")
	fs.IntVar(&o.LatencyRuns, "latency-runs", 50, "small broadcasts, one after another, timed for latency")
	fs.IntVar(&o.Kills, "kills", 20, "running broadcasts to kill")
	fs.DurationVar(&o.KillLatency, "kill-latency", 0, "simulator latency during the kill phase, to keep small broadcasts running until they are killed")
	fs.StringVar(&o.AppSigning, "app-signing", "", "sign every push for the app in this mode (sign or require; default off), to measure what signing costs")
	fs.StringVar(&o.Binary, "binary", "", "pushgate binary to run as API and workers (default: this one)")
	fs.StringVar(&o.PprofDir, "pprof", "", "write a CPU profile of every process into this directory")
	cpuProfile := fs.String("cpuprofile", "", "run the subcommand in the arguments with a CPU profile written to this file")
	fs.Var(keyValues(o.Settings), "set", "gateway setting as key=value (repeatable), such as worker.concurrency=16")
	phases := fs.String("phases", "", "run only these phases: comma-separated "+strings.Join(bench.Phases(), ", "))
	bareLoop := fs.String("bare-loop", "", "run one ceiling pass against the simulators this sim.json describes")
	bareConc := fs.Int("bare-concurrency", 64, "the pass's concurrency")
	bareTitle := fs.String("bare-title", "ceiling", "the pass's message title")
	bareOut := fs.String("bare-out", "", "file to write the pass's start time and CPU time to")
	hidden := map[string]bool{"binary": true, "pprof": true, "cpuprofile": true, "set": true, "phases": true,
		"bare-loop": true, "bare-concurrency": true, "bare-title": true, "bare-out": true}
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: pushgate bench %s\n\n", synopsis)
		fmt.Fprintf(w, "Measures throughput against a bare SDK loop, latency, kill time, memory and CPU\n"+
			"with the simulators at zero latency and the rate limits lifted.\n\nFlags:\n")
		visible := flag.NewFlagSet("bench", flag.ContinueOnError)
		visible.SetOutput(w)
		fs.VisitAll(func(f *flag.Flag) {
			if !hidden[f.Name] {
				visible.Var(f.Value, f.Name, f.Usage)
			}
		})
		visible.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		// The bench starts its children this way under --pprof. The
		// profile is complete when the subcommand returns, which SIGTERM
		// makes it do.
		stop, err := bench.StartCPUProfile(*cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
		return run(ctx, fs.Args(), e.getenv, e.stdin, e.stdout, e.stderr)
	}
	if *bareLoop != "" {
		return bench.RunBareLoop(ctx, *bareLoop, *bareConc, *bareTitle, *bareOut)
	}
	switch {
	case fs.NArg() > 0:
		return usagef("bench: unexpected argument %q", fs.Arg(0))
	case o.Devices < 100:
		return usagef("bench: --devices must be at least 100")
	case o.Workers < 1:
		return usagef("bench: --workers must be at least 1")
	case o.LatencyRuns < 1 || o.Kills < 1:
		return usagef("bench: --latency-runs and --kills must be at least 1")
	case o.KillLatency < 0:
		return usagef("bench: --kill-latency must not be negative")
	case o.AppSigning != "" && o.AppSigning != "sign" && o.AppSigning != "require":
		return usagef("bench: --app-signing must be sign or require, got %q", o.AppSigning)
	}
	if *phases != "" {
		o.Phases = map[string]bool{}
		for _, p := range strings.Split(*phases, ",") {
			if !slices.Contains(bench.Phases(), p) {
				return usagef("bench: --phases: unknown phase %q", p)
			}
			o.Phases[p] = true
		}
	}
	if o.Binary == "" {
		bin, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: find this binary: %w", err)
		}
		o.Binary = bin
	}
	return bench.Run(ctx, o, e.stdout, e.stderr)
}
