package main

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/internal/demo"
)

// runDemo is "pushgate demo": the whole story on this machine, see
// package demo.
func runDemo(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "demo", "[--script] [--devices N] [--redis URL] [--dir DIR] [--keep] [--verbose]")
	var o demo.Options
	fs.BoolVar(&o.Script, "script", false, "run the story without input (delivery, refused attacks, kill, recall); exit 0 only if every check holds")
	fs.StringVar(&o.RedisURL, "redis", "", "use this Redis (a database of its own) instead of the embedded, in-process one")
	fs.IntVar(&o.Devices, "devices", 1000, "number of simulated phones, about 60% Android")
	fs.StringVar(&o.Dir, "dir", "", "write keys, keyring and configuration into this new or empty directory, and keep it (default: a new temporary directory, removed on exit)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the temporary directory on exit")
	fs.BoolVar(&o.Verbose, "verbose", false, "log at info level to the demo's "+demo.LogName+" (default: warnings and errors only)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return usagef("demo: unexpected arguments %q", fs.Args())
	case o.Devices < 1 || o.Devices > 1_000_000:
		return usagef("demo: --devices must be 1 to 1000000")
	case o.Script && o.Devices < demo.MinScriptDevices:
		return usagef("demo: --script needs at least %d devices, to stop a broadcast part-way", demo.MinScriptDevices)
	}
	if o.RedisURL != "" {
		if _, err := redis.ParseURL(o.RedisURL); err != nil {
			return usagef("demo: --redis: %v", err)
		}
	}
	if o.Dir != "" {
		if err := demo.CheckEmptyDir(o.Dir); err != nil {
			return &usageError{fmt.Errorf("demo: --dir: %w", err)}
		}
	}
	o.Terminal, o.PlainEvery = e.stderrTerminal, e.plainEvery
	return demo.Run(ctx, o, e.stdout, e.stderr)
}
