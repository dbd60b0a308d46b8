package main

import (
	"context"
	"log/slog"

	"github.com/pushgate/pushgate/internal/stack"
)

// runSim is "pushgate sim": it runs the FCM and APNs simulators with a
// population of virtual phones until the context is cancelled, and writes
// what a gateway or a benchmark needs to use them into a directory.
func runSim(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "sim", "--dir DIR [flags]")
	var o stack.SimOptions
	fs.StringVar(&o.Dir, "dir", "", "directory to write ca.pem, credentials, devices.json, sim.json and pushgate.yaml into (required)")
	fs.IntVar(&o.Devices, "devices", 1000, "number of virtual phones to create")
	fs.Float64Var(&o.AndroidShare, "android-share", 0.6, "share of the phones that are Android (FCM), from 0 to 1")
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:0", "host:port to listen on; port 0 picks free ports, port P uses P (FCM), P+1 (APNs) and P+2 (control)")
	fs.StringVar(&o.Hostname, "hostname", "", "name or IP address the gateway reaches the simulators by (in a container, its service name): used in the URLs and files they write and named by their TLS certificate (default the listen address)")
	fs.DurationVar(&o.Latency, "latency", 0, "latency the providers add to every request")
	fs.DurationVar(&o.Jitter, "jitter", 0, "random extra latency, up to this much")
	fs.Int64Var(&o.Seed, "seed", 1, "seed for the phones' tokens and the fault generator")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return usagef("sim: unexpected arguments %q", fs.Args())
	case o.Dir == "":
		return usagef("sim: --dir is required")
	case o.Devices < 0:
		return usagef("sim: --devices must not be negative")
	case o.AndroidShare < 0 || o.AndroidShare > 1:
		return usagef("sim: --android-share must be between 0 and 1")
	case o.Latency < 0 || o.Jitter < 0:
		return usagef("sim: --latency and --jitter must not be negative")
	}
	return stack.RunSimulators(ctx, o, e.stdout, slog.New(slog.NewTextHandler(e.stderr, nil)))
}
