package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/pushgate/pushgate/providers/sim"
)

// runSim is "pushgate sim": it runs the FCM and APNs simulators with a
// population of virtual phones until the context is cancelled, and writes
// what a gateway or a benchmark needs to use them into a directory.
func runSim(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "sim", "--dir DIR [flags]")
	dir := fs.String("dir", "", "directory to write ca.pem, credentials, devices.json, sim.json and pushgate.yaml into (required)")
	devices := fs.Int("devices", 1000, "number of virtual phones to create")
	share := fs.Float64("android-share", 0.6, "share of the phones that are Android (FCM), from 0 to 1")
	listen := fs.String("listen", "127.0.0.1:0", "host:port to listen on; port 0 picks free ports, port P uses P (FCM), P+1 (APNs) and P+2 (control)")
	latency := fs.Duration("latency", 0, "latency the providers add to every request")
	jitter := fs.Duration("jitter", 0, "random extra latency, up to this much")
	seed := fs.Int64("seed", 1, "seed for the phones' tokens and the fault generator")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return usagef("sim: unexpected arguments %q", fs.Args())
	case *dir == "":
		return usagef("sim: --dir is required")
	case *devices < 0:
		return usagef("sim: --devices must not be negative")
	case *share < 0 || *share > 1:
		return usagef("sim: --android-share must be between 0 and 1")
	case *latency < 0 || *jitter < 0:
		return usagef("sim: --latency and --jitter must not be negative")
	}

	logger := slog.New(slog.NewTextHandler(e.stderr, nil))
	s, err := sim.New(sim.Config{
		Listen: *listen,
		Logger: logger,
		Faults: sim.Faults{Latency: *latency, Jitter: *jitter, Seed: *seed},
	})
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	// Close on every path; its error matters only on the normal one.
	defer s.Close()

	start := time.Now()
	s.NewDevices(*devices, *share, *seed)
	files, err := s.WriteFiles(*dir)
	if err != nil {
		return err
	}
	st := s.Stats()
	logger.Info("phones ready",
		slog.Int64("fcm", st.Phones["fcm"]), slog.Int64("apns", st.Phones["apns"]),
		slog.Duration("took", time.Since(start).Round(time.Millisecond)))

	for _, l := range [][2]string{
		{"fcm endpoint", s.FCMEndpoint()},
		{"token url", s.TokenURL()},
		{"apns host", s.APNsHost()},
		{"control", s.ControlURL() + "/sim/stats"},
		{"files", files.Dir},
		// Printed last: a script may wait for this line.
		{"gateway config", files.GatewayYAML},
	} {
		fmt.Fprintf(e.stdout, "%-15s %s\n", l[0]+":", l[1])
	}

	<-ctx.Done()
	logger.Info("stopping simulators")
	return s.Close()
}
