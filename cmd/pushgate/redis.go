package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/pushgate/pushgate/internal/app"
)

// runRedis is pushgate redis: the deployment marker that tells the
// processes whether Redis lost data, and the operator's steps after a
// loss (README, "Redis persistence").
func runRedis(ctx context.Context, e *env, args []string) error {
	return runVerb(ctx, e, "redis", args, []verb{
		{"status", "[--config FILE]", "the deployment marker in Redis, the id remembered in control.state_dir, and Redis's persistence", runRedisStatus},
		{"restore-marker", "[--id ID] [--config FILE]", "after restoring Redis's data (a backup, pushgate log restore): put the remembered deployment id back", runRedisRestoreMarker},
		{"accept-loss", "[--replaces ID] [--config FILE]", "nothing to restore: start a new deployment id that the processes adopt", runRedisAcceptLoss},
	})
}

// redisFlags parses a redis subcommand's flags and loads the
// configuration; idFlag, when not empty, names a flag taking a deployment
// id, whose value it returns.
func redisFlags(e *env, name, idFlag, idHelp string, args []string) (*app.Config, string, error) {
	synopsis := "[--config FILE]"
	if idFlag != "" {
		synopsis = "[--" + idFlag + " ID] " + synopsis
	}
	fs := newFlagSet(e, name, synopsis)
	path := fs.String("config", e.getenv("PUSHGATE_CONFIG"), "YAML configuration file (env PUSHGATE_CONFIG): redis_url, key_prefix and control.state_dir are used")
	var id *string
	if idFlag != "" {
		id = fs.String(idFlag, "", idHelp)
	}
	rest, err := parseArgs(fs, args)
	if err != nil {
		return nil, "", err
	}
	if len(rest) != 0 {
		return nil, "", usagef("%s takes no arguments", name)
	}
	cfg, err := app.LoadConfig(*path, e.getenv)
	if err != nil {
		return nil, "", &usageError{err}
	}
	if id == nil {
		return cfg, "", nil
	}
	return cfg, *id, nil
}

func runRedisStatus(ctx context.Context, e *env, args []string) error {
	cfg, _, err := redisFlags(e, "redis status", "", "", args)
	if err != nil {
		return err
	}
	r, err := app.RedisStatus(ctx, cfg)
	if err != nil {
		return fmt.Errorf("redis status: %w", err)
	}
	w := e.stdout
	fmt.Fprintf(w, "redis:       %s\n", app.RedactURL(cfg.RedisURL))
	switch {
	case r.MarkerErr != nil:
		fmt.Fprintf(w, "marker:      %s is unreadable: %v\n", r.Key, r.MarkerErr)
	case r.Marker == nil:
		fmt.Fprintf(w, "marker:      %s is missing\n", r.Key)
	default:
		fmt.Fprintf(w, "marker:      %s holds deployment %s, created %s\n", r.Key, r.Marker.ID, r.Marker.Created.Format(time.RFC3339))
		if len(r.Marker.Replaces) > 0 {
			fmt.Fprintf(w, "             replacing %s\n", strings.Join(r.Marker.Replaces, ", "))
		}
	}
	switch {
	case r.StateDir == "":
		fmt.Fprintln(w, "remembered:  nothing: control.state_dir is not set")
	case r.Remembered == "":
		fmt.Fprintf(w, "remembered:  no deployment in %s\n", r.StateDir)
	default:
		fmt.Fprintf(w, "remembered:  deployment %s in %s\n", r.Remembered, r.StateDir)
	}
	if lost, why := r.Lost(); lost {
		fmt.Fprintf(w, "verdict:     Redis lost data: %s. Restore Redis from a backup (and pushgate log restore), then pushgate redis restore-marker; or accept the loss with pushgate redis accept-loss\n", why)
	} else {
		fmt.Fprintf(w, "verdict:     %s\n", why)
	}
	p := r.Persistence
	switch missing := p.Missing(); {
	case p.Err != nil:
		fmt.Fprintf(w, "persistence: can not be verified (%v): make sure Redis runs with appendonly yes and appendfsync everysec\n", p.Err)
	case len(missing) > 0:
		fmt.Fprintf(w, "persistence: MISSING: %s: set appendonly yes and appendfsync everysec\n", strings.Join(missing, "; "))
	default:
		fmt.Fprintf(w, "persistence: appendonly %s, appendfsync %s, save %q\n", p.AppendOnly, p.AppendFsync, p.Save)
	}
	return nil
}

func runRedisRestoreMarker(ctx context.Context, e *env, args []string) error {
	cfg, id, err := redisFlags(e, "redis restore-marker", "id",
		"the deployment id to put back (default: the one remembered in control.state_dir; the processes log it as \"expected\")", args)
	if err != nil {
		return err
	}
	m, wrote, err := app.RestoreMarker(ctx, cfg, id)
	if err != nil {
		return fmt.Errorf("redis restore-marker: %w", err)
	}
	if !wrote {
		fmt.Fprintf(e.stdout, "Redis already holds deployment %s: nothing to do\n", m.ID)
		return nil
	}
	fmt.Fprintf(e.stdout, "put deployment %s back%s\n", m.ID, replacing(m.Replaces))
	fmt.Fprintf(e.stdout, "every process that remembers it resumes within redis.loss_check_interval (%s); a control log that is gone needs pushgate log restore too\n",
		cfg.Redis.LossCheckInterval)
	return nil
}

func runRedisAcceptLoss(ctx context.Context, e *env, args []string) error {
	cfg, replaces, err := redisFlags(e, "redis accept-loss", "replaces",
		"the deployment id the processes remember (default: the one in control.state_dir; the processes log it as \"expected\")", args)
	if err != nil {
		return err
	}
	m, err := app.AcceptLoss(ctx, cfg, replaces)
	if err != nil {
		return fmt.Errorf("redis accept-loss: %w", err)
	}
	fmt.Fprintf(e.stdout, "new deployment %s%s\n", m.ID, replacing(m.Replaces))
	fmt.Fprintf(e.stdout, "every process that remembers a replaced id adopts it within redis.loss_check_interval (%s) and resumes.\n", cfg.Redis.LossCheckInterval)
	fmt.Fprintln(e.stdout, "What Redis lost stays lost: register the devices again (pushgate devices import), submit lost broadcasts again, and restore the control log if it is gone (pushgate log restore)")
	return nil
}

// replacing names the deployments a marker replaces.
func replacing(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	return ", replacing " + strings.Join(ids, ", ")
}
