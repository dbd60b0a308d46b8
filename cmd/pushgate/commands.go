package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// env is everything a subcommand may touch of the outside world. Commands
// take it instead of reaching for os.*, so tests run them in-process.
type env struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
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
		{"version", "print the version and exit", runVersion},
		{"help", "list the subcommands, or show one's flags: pushgate help CMD", nil},
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

// run dispatches args to a subcommand.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := &env{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
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
