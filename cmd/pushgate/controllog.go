package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/internal/app"
)

// runLog is pushgate log: the control log's key, export and restore.
func runLog(ctx context.Context, e *env, args []string) error {
	return runVerb(ctx, e, "log", args, []verb{
		{"keygen", "NAME --out FILE", "make the control log's key: the private key into FILE, the public key on stdout", runLogKeygen},
		{"export", "FILE [--config FILE]", "write the whole log and its checkpoints to FILE", runLogExport},
		{"restore", "FILE [--config FILE]", "write an export back into Redis", runLogRestore},
	})
}

// runLogKeygen makes a log key: the private key into a file for the API
// processes (control.log_key_file), the public key on stdout for every
// process (control.log_public_key).
func runLogKeygen(_ context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "log keygen", "NAME --out FILE")
	out := fs.String("out", "", "file for the private key, written with mode 0600; it must not exist (required)")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usagef("log keygen: want one name, such as pushgate.example.org/control")
	}
	if *out == "" {
		return usagef("log keygen: --out is required")
	}
	private, public, err := controllog.GenerateKey(rest[0])
	if err != nil {
		return usagef("log keygen: %q is not a key name: letters, digits and . / - _ +, no spaces", rest[0])
	}
	f, err := os.OpenFile(*out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return usagef("log keygen: %v", err)
	}
	if _, err := fmt.Fprintln(f, private); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote the control log's private key to %s: give it to the API processes only, as PUSHGATE_CONTROL_LOG_KEY_FILE\n", *out)
	fmt.Fprintf(e.stdout, "public key, for every process (control.log_public_key) and for pushgate audit verify:\n%s\n", public)
	return nil
}

// logConfig loads the configuration log export and restore run with.
func logConfig(e *env, name string, args []string) (*app.Config, string, error) {
	fs := newFlagSet(e, name, "FILE [--config FILE]")
	path := fs.String("config", e.getenv("PUSHGATE_CONFIG"), "YAML configuration file (env PUSHGATE_CONFIG): redis_url, key_prefix, control.log_public_key and, to restore, keyring_file are used")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return nil, "", err
	}
	if len(rest) != 1 {
		return nil, "", usagef("%s: want one file", name)
	}
	cfg, err := app.LoadConfig(*path, e.getenv)
	if err != nil {
		return nil, "", &usageError{err}
	}
	return cfg, rest[0], nil
}

func runLogExport(ctx context.Context, e *env, args []string) error {
	cfg, file, err := logConfig(e, "log export", args)
	if err != nil {
		return err
	}
	tmp := file + ".partial"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return usagef("log export: %v", err)
	}
	sum, err := app.ExportLog(ctx, cfg, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("log export: %w", err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "exported %d entries and %d checkpoints to %s; %s\n", sum.Entries, sum.Checkpoints, file, describeCheckpoint(sum.Checkpoint))
	return nil
}

func runLogRestore(ctx context.Context, e *env, args []string) error {
	cfg, file, err := logConfig(e, "log restore", args)
	if err != nil {
		return err
	}
	f, err := os.Open(file)
	if err != nil {
		return usagef("log restore: %v", err)
	}
	defer f.Close()
	sum, err := app.RestoreLog(ctx, cfg, f)
	if err != nil {
		return fmt.Errorf("log restore %s: %w", file, err)
	}
	fmt.Fprintf(e.stdout, "restored %d entries from %s, each verified again; %s\n", sum.Checkpoint.Size, file, describeCheckpoint(sum.Checkpoint))
	if len(sum.Unknown) > 0 {
		fmt.Fprintf(e.stdout, "%d entries are signed by keys no longer in the keyring (first: entry %d): their stops stand, nothing else they asked for counts\n",
			len(sum.Unknown), sum.Unknown[0])
	}
	if extra := sum.Entries - sum.Checkpoint.Size; extra > 0 {
		fmt.Fprintf(e.stdout, "left out %d entries at the end of the file that no checkpoint signs\n", extra)
	}
	fmt.Fprintln(e.stdout, "every process checks the restored log against the newest checkpoint it remembers, then resumes")
	return nil
}

func describeCheckpoint(c *controllog.Checkpoint) string {
	return fmt.Sprintf("newest checkpoint: %d entries at %s, signed by %s", c.Size, c.Time.Format(time.RFC3339), c.Origin)
}

// runAuditVerify checks an export offline with only the log's public key
// and the keyring.
func runAuditVerify(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "audit verify", "FILE --log-key KEY --keyring FILE")
	logKey := fs.String("log-key", e.getenv("PUSHGATE_CONTROL_LOG_PUBLIC_KEY"), "the control log's public key (env PUSHGATE_CONTROL_LOG_PUBLIC_KEY)")
	keyring := fs.String("keyring", e.getenv("PUSHGATE_KEYRING_FILE"), "the keyring the entries were signed under (env PUSHGATE_KEYRING_FILE)")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(rest) != 1:
		return usagef("audit verify: want one export file (pushgate log export, or a control.mirror_file)")
	case strings.TrimSpace(*logKey) == "":
		return usagef("audit verify: --log-key (or PUSHGATE_CONTROL_LOG_PUBLIC_KEY) is required")
	case strings.TrimSpace(*keyring) == "":
		return usagef("audit verify: --keyring (or PUSHGATE_KEYRING_FILE) is required")
	}
	f, err := os.Open(rest[0])
	if err != nil {
		return usagef("audit verify: %v", err)
	}
	defer f.Close()
	sum, err := app.VerifyExport(ctx, f, *logKey, *keyring)
	var ce *app.ConfigError
	if errors.As(err, &ce) {
		return usagef("audit verify: %v", err)
	}
	if err != nil {
		if errors.Is(err, controllog.ErrBadCheckpoint) {
			return fmt.Errorf("%s: %w (is --log-key this log's?)", filepath.Base(rest[0]), err)
		}
		return fmt.Errorf("%s: %w", filepath.Base(rest[0]), err)
	}
	fmt.Fprintf(e.stdout, "%s: %d entries, %d checkpoints; every checkpoint is signed by %s and matches the entries before it, every entry verifies under the keyring and none repeats another; %s\n",
		rest[0], sum.Entries, sum.Checkpoints, sum.Checkpoint.Origin, describeCheckpoint(sum.Checkpoint))
	return nil
}
