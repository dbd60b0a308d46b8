// Command pushgate is the push-notification delivery gateway: its API
// server, its workers, the simulators, the demo, the benchmark and the
// signing client, as subcommands of one binary.
//
// main only wires: it hands the arguments, the environment and the standard
// streams (and whether stderr is a terminal) to dispatch, and exits in one
// place.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"

	"github.com/pushgate/pushgate/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	e := newEnv(os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	e.stderrTerminal = term.IsTerminal(int(os.Stderr.Fd()))
	err := dispatch(ctx, e, os.Args[1:])
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode prints err as one line and maps it to the process status: 0 for
// success, 2 for bad usage (flags, arguments, unreadable inputs, a
// configuration a process cannot start with), 3 and 4 for a broadcast
// followed with --wait that ended with devices not sent, or stopped
// (outcomeError), 1 for anything else.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "pushgate: %v\n", err)
	var u *usageError
	var c *app.ConfigError
	var o *outcomeError
	switch {
	case errors.As(err, &u) || errors.As(err, &c):
		return 2
	case errors.As(err, &o):
		return o.code
	}
	return 1
}
