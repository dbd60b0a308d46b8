package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"time"

	"github.com/pushgate/pushgate/internal/app"
)

// env is everything a subcommand may touch of the outside world. Commands
// take it instead of reaching for os.*, so tests run them in-process.
type env struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	// stderrTerminal says stderr is a terminal, as main found it: progress
	// is then drawn (bars, a line rewritten in place). Elsewhere it is
	// written as plain lines, one every plainEvery.
	stderrTerminal bool
	plainEvery     time.Duration
}

// defaultPlainEvery is how often progress written as plain lines (to a
// pipe or a file) gets a new line.
const defaultPlainEvery = 5 * time.Second

// newEnv returns the env of the given streams, none of them a terminal.
func newEnv(getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) *env {
	return &env{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr, plainEvery: defaultPlainEvery}
}

// command is one subcommand of the binary.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// commands lists every subcommand; help prints them in this order.
func commands() []command {
	return []command{
		{"serve", "run the HTTP API and a worker pool in one process", runServe},
		{"api", "run the HTTP API only", runAPI},
		{"worker", "run a worker pool only", runWorker},
		{"version", "print the version and exit", runVersion},
		{"keygen", "generate an Ed25519 key pair and its keyring entry", runKeygen},
		{"sign", "print the signature headers for a request, for curl -H", runSign},
		{"send", "sign and submit a broadcast; --wait follows it with a progress bar", runSend},
		{"status", "show a broadcast's state and counters", runStatus},
		{"cancel", "stop the rest of a broadcast's fan-out", runCancel},
		{"recall", "kill a broadcast, then replace or remove it on the phones it reached", runRecall},
		{"kill", "stop a scope (global, key:ID, broadcast:ID, topic:NAME) on every worker", runKill},
		{"resume", "lift a global, key or topic kill", runResume},
		{"approvals", "what waits for approvals: approvals list", runApprovals},
		{"approve", "co-sign a broadcast or an admin action that waits for approval", runApprove},
		{"keys", "manage sender keys: keys revoke ID", runKeys},
		{"devices", "manage the device registry: devices import FILE --topic T", runDevices},
		{"audit", "show the control log's newest entries, proven into its checkpoint; audit verify FILE checks an export offline", runAudit},
		{"log", "the control log: log keygen NAME --out FILE, log export FILE, log restore FILE", runLog},
		{"appkey", "the app-signing key that phones verify pushes with: appkey keygen ID --out FILE", runAppKey},
		{"redis", "Redis data loss: redis status, redis restore-marker [--id ID], redis accept-loss [--replaces ID]", runRedis},
		{"sim", "run local FCM and APNs simulators with virtual phones", runSim},
		{"demo", "run everything on this machine (embedded Redis, simulated phones); --script checks the whole story", runDemo},
		{"bench", "measure throughput against a bare SDK loop, latency, kill time, memory and CPU", runBench},
		{"help", "list the subcommands, show one's flags (pushgate help CMD), or the settings (pushgate help config)", nil},
	}
}

// usageError marks an error caused by the invocation itself: bad flags,
// bad arguments, unreadable input files. It exits with status 2.
type usageError struct{ err error }

func (u *usageError) Error() string { return u.err.Error() }
func (u *usageError) Unwrap() error { return u.err }

// usagef returns a usageError with a formatted message.
func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// run dispatches args to a subcommand, with streams that are not
// terminals.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	return dispatch(ctx, newEnv(getenv, stdin, stdout, stderr), args)
}

// dispatch runs the subcommand args name in e.
func dispatch(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		printHelp(e.stdout)
		return usagef("no subcommand given")
	}
	name, rest := args[0], args[1:]
	if name == "help" || name == "-h" || name == "--help" || name == "-help" {
		if len(rest) == 0 {
			printHelp(e.stdout)
			return nil
		}
		if rest[0] == "config" {
			app.PrintConfigHelp(e.stdout)
			return nil
		}
		name, rest = rest[0], []string{"-h"}
	}
	for _, c := range commands() {
		if c.name == name && c.run != nil {
			err := c.run(ctx, e, rest)
			if errors.Is(err, errHelp) {
				return nil
			}
			return err
		}
	}
	return usagef("unknown subcommand %q (run pushgate help)", name)
}

func printHelp(w io.Writer) {
	fmt.Fprintln(w, "pushgate: a push-notification gateway with signed broadcasts and a kill-switch")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: pushgate <subcommand> [flags]")
	fmt.Fprintln(w)
	cmds := commands()
	width := 0
	for _, c := range cmds {
		width = max(width, len(c.name))
	}
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-*s  %s\n", width, c.name, c.summary)
	}
}

// newFlagSet returns a flag set for a subcommand that reports errors instead
// of exiting, and prints its usage to e.stderr.
func newFlagSet(e *env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: pushgate %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and turns flag errors into usage errors; -h
// prints the usage and returns errHelp, which run treats as success.
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return errHelp
	}
	if err != nil {
		return &usageError{err}
	}
	return nil
}

// errHelp reports that the user asked for a command's usage.
var errHelp = errors.New("help requested")

// version is the module version stamped by the Go toolchain, with the VCS
// revision when the binary was built from a checkout.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	parts := []string{v}
	if rev != "" {
		parts = append(parts, rev[:min(12, len(rev))]+dirty)
	}
	parts = append(parts, info.GoVersion)
	return strings.Join(parts, " ")
}

func runVersion(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "version", "")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "pushgate", version())
	return nil
}
