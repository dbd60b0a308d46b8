package main

import (
	"context"

	"github.com/pushgate/pushgate/internal/app"
)

func runServe(ctx context.Context, e *env, args []string) error {
	return runProcess(ctx, e, args, "serve", app.Roles{API: true, Worker: true})
}

func runAPI(ctx context.Context, e *env, args []string) error {
	return runProcess(ctx, e, args, "api", app.Roles{API: true})
}

func runWorker(ctx context.Context, e *env, args []string) error {
	return runProcess(ctx, e, args, "worker", app.Roles{Worker: true})
}

// runProcess is serve, api and worker: it loads the configuration and runs
// the process's parts until ctx is cancelled (SIGINT, SIGTERM).
func runProcess(ctx context.Context, e *env, args []string, name string, r app.Roles) error {
	fs := newFlagSet(e, name, "[--config FILE]")
	path := fs.String("config", e.getenv("PUSHGATE_CONFIG"), "YAML configuration file (env PUSHGATE_CONFIG); settings also come from PUSHGATE_* variables, see pushgate help config")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("%s takes no arguments", name)
	}
	cfg, err := app.LoadConfig(*path, e.getenv)
	if err != nil {
		return &usageError{err}
	}
	logger := app.NewLogger(e.stderr, cfg)
	app.RouteRedisLogs(logger)
	a, err := app.New(ctx, cfg, logger, r)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}
