package stack

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/pushgate/pushgate/providers/sim"
)

// SimOptions shape the simulators of pushgate sim.
type SimOptions struct {
	Dir          string // where ca.pem, credentials, devices.json, sim.json and pushgate.yaml go
	Devices      int
	AndroidShare float64
	Listen       string // host:port; port 0 picks free ports
	Hostname     string // name clients reach the simulators by (sim.Config.Hostname); empty: the listen address
	Latency      time.Duration
	Jitter       time.Duration
	Seed         int64
}

// RunSimulators runs the FCM and APNs simulators with a population of
// virtual phones until ctx is cancelled, after writing what a gateway or a
// benchmark needs to use them into o.Dir and printing where they listen on
// stdout.
func RunSimulators(ctx context.Context, o SimOptions, stdout io.Writer, logger *slog.Logger) error {
	s, err := sim.New(sim.Config{
		Listen:   o.Listen,
		Hostname: o.Hostname,
		Logger:   logger,
		Faults:   sim.Faults{Latency: o.Latency, Jitter: o.Jitter, Seed: o.Seed},
	})
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	// Close on every path; its error matters only on the normal one.
	defer s.Close()

	start := time.Now()
	s.NewDevices(o.Devices, o.AndroidShare, o.Seed)
	files, err := s.WriteFiles(o.Dir)
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
		fmt.Fprintf(stdout, "%-15s %s\n", l[0]+":", l[1])
	}

	<-ctx.Done()
	logger.Info("stopping simulators")
	return s.Close()
}
