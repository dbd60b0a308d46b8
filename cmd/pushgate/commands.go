package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"slices"
	"strings"
	"text/tabwriter"
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
		{"health", "probe a running process's /healthz or /readyz (a container's HEALTHCHECK)", runHealth},
		{"keygen", "generate an Ed25519 key pair and its keyring entry", runKeygen},
		{"sign", "print the signature headers for a request, for curl -H", runSign},
		{"send", "sign and submit a broadcast; --wait follows it with a progress bar", runSend},
		{"status", "show a broadcast's state and counters", runStatus},
		{"cancel", "stop the rest of a broadcast's fan-out", runCancel},
		{"recall", "kill a broadcast, then replace or remove it on the phones it reached", runRecall},
		{"broadcasts", "look up broadcasts: broadcasts list [--state S] [--limit N] [--json]", runBroadcasts},
		{"kill", "stop a scope (global, key:ID, broadcast:ID, topic:NAME) on every worker", runKill},
		{"resume", "lift a global, key or topic kill", runResume},
		{"kills", "look up the active kills: kills list [--json]", runKills},
		{"approvals", "what waits for approvals: approvals list", runApprovals},
		{"approve", "co-sign a broadcast or an admin action that waits for approval", runApprove},
		{"keys", "the keyring: keys list (roles, topics, budgets, revocations), keys revoke ID", runKeys},
		{"devices", "manage the device registry: devices import FILE --topic T", runDevices},
		{"audit", "show the control log's newest entries, proven into its checkpoint; audit verify FILE checks an export offline", runAudit},
		{"log", "the control log: log keygen NAME --out FILE, log export FILE, log restore FILE", runLog},
		{"appkey", "the app-signing key that phones verify pushes with: appkey keygen ID --out FILE", runAppKey},
		{"redis", "Redis data loss: redis status, redis restore-marker [--id ID], redis accept-loss [--replaces ID]", runRedis},
		{"sim", "run local FCM and APNs simulators with virtual phones", runSim},
		{"demo", "run everything on this machine (embedded Redis, simulated phones); --script checks the whole story", runDemo},
		{"bench", "measure throughput against a bare SDK loop, latency, kill time, memory and CPU", runBench},
		{"help", "list the subcommands, show one's flags (pushgate help CMD), or the settings (pushgate help config)", runHelp},
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
	switch name {
	case "-h", "-help", "--help":
		name = "help"
	}
	c, ok := lookupCommand(name)
	if !ok {
		return usagef("unknown subcommand %q (run pushgate help)", name)
	}
	err := c.run(ctx, e, rest)
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}

// lookupCommand finds a subcommand by name.
func lookupCommand(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// runHelp is pushgate help: the subcommands, one subcommand's usage
// (pushgate help CMD [VERB] is pushgate CMD [VERB] --help), or the
// settings.
func runHelp(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "help", "[CMD [VERB] | config]")
	fs.Usage = func() { printHelp(fs.Output()) }
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) == 0 || rest[0] == "help" {
		printHelp(e.stdout)
		return nil
	}
	if rest[0] == "config" {
		app.PrintConfigHelp(e.stdout)
		return nil
	}
	c, ok := lookupCommand(rest[0])
	if !ok {
		return usagef("help: unknown subcommand %q (run pushgate help)", rest[0])
	}
	return c.run(ctx, e, append(slices.Clone(rest[1:]), "-h"))
}

func printHelp(w io.Writer) {
	fmt.Fprintln(w, "pushgate: a push-notification gateway with signed broadcasts and a kill-switch")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: pushgate <subcommand> [flags]")
	fmt.Fprintln(w, "       pushgate <subcommand> --help   (or pushgate help <subcommand>) shows its flags")
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

// newFlagSet returns a flag set for a subcommand. Its usage, asked for with
// -h or --help, goes to e.stdout; a flag that is unknown or badly given is
// one line on stderr, not the usage (parseFlags).
func newFlagSet(e *env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stdout)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintln(w, strings.TrimSpace("Usage: pushgate "+name+" "+synopsis))
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprint(w, "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses args, with the flag package kept silent: -h prints the
// usage (to e.stdout, see newFlagSet) and returns errHelp, which run
// treats as success; a flag error becomes a usage error of one line that
// points at --help.
func parseFlags(fs *flag.FlagSet, args []string) error {
	usage, out := fs.Usage, fs.Output()
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.Usage = usage
	fs.SetOutput(out)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return errHelp
	case err != nil:
		return usagef("%s: %v (see pushgate %s --help)", fs.Name(), err, fs.Name())
	}
	return nil
}

// errHelp reports that the user asked for a command's usage.
var errHelp = errors.New("help requested")

// verb is one action of a command with verbs, like "keys revoke".
type verb struct {
	name     string
	synopsis string // its arguments and flags, as in its usage line
	summary  string
	run      func(ctx context.Context, e *env, args []string) error
}

// runVerb dispatches "CMD VERB ARGS" to the verb's run. "CMD --help" (or
// "CMD help") lists the verbs; "CMD VERB --help" is the verb's own usage.
func runVerb(ctx context.Context, e *env, cmd string, args []string, verbs []verb) error {
	fs := newFlagSet(e, cmd, "VERB [flags]")
	names := make([]string, len(verbs))
	for i, v := range verbs {
		names[i] = v.name
	}
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: pushgate %s VERB [flags]\n\nVerbs:\n", cmd)
		tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
		for _, v := range verbs {
			fmt.Fprintf(tw, "  %s\t%s\n", strings.TrimSpace(cmd+" "+v.name+" "+v.synopsis), v.summary)
		}
		tw.Flush()
		fmt.Fprintf(w, "\npushgate %s VERB --help shows a verb's flags.\n", cmd)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	rest := fs.Args()
	want := "want " + orList(names)
	if len(rest) == 0 {
		return usagef("%s: no verb given: %s (see pushgate %s --help)", cmd, want, cmd)
	}
	if rest[0] == "help" {
		fs.Usage()
		return errHelp
	}
	for _, v := range verbs {
		if v.name == rest[0] {
			return v.run(ctx, e, rest[1:])
		}
	}
	return usagef("%s: unknown verb %q: %s (see pushgate %s --help)", cmd, rest[0], want, cmd)
}

// orList joins names as "a, b or c".
func orList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// stampedVersion is the version a release build stamps with
// -ldflags "-X main.stampedVersion=v1.2.3" (the Dockerfile's VERSION
// argument). It is set by the linker only, never at run time.
var stampedVersion string

// version is the stamped version, else the module version the Go
// toolchain recorded (a tag for go install ...@v1.2.3, "(devel)" for a
// checkout), with the VCS revision when the binary was built from a
// checkout with go build.
func version() string {
	info, _ := debug.ReadBuildInfo()
	return versionOf(stampedVersion, info)
}

// versionOf spells the version from a stamp and the build information.
func versionOf(stamped string, info *debug.BuildInfo) string {
	var parts []string
	if stamped != "" {
		parts = append(parts, stamped)
	}
	if info == nil {
		if len(parts) == 0 {
			return "unknown"
		}
		return parts[0]
	}
	if stamped == "" {
		parts = append(parts, info.Main.Version)
	}
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
