package app

import (
	"context"
	"io"

	"github.com/redis/go-redis/v9"
	"golang.org/x/mod/sumdb/note"

	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/queue"
	"github.com/pushgate/pushgate/signing"
)

// ExportLog writes the control log in the configured Redis to w as an
// export (see controllog), verified as it is written.
func ExportLog(ctx context.Context, cfg *Config, w io.Writer) (*controllog.Summary, error) {
	rdb, logKey, err := logStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer rdb.Close()
	return queue.ExportLog(ctx, rdb, queue.NewKeys(cfg.KeyPrefix), logKey, w)
}

// RestoreLog writes an export back into the configured Redis, which must
// hold no control log entries: for a Redis that lost the log (flushed, or
// restarted without persistence). Every process verifies the restored log
// against the newest checkpoint it remembers before it trusts it.
func RestoreLog(ctx context.Context, cfg *Config, r io.Reader) (*queue.RestoreSummary, error) {
	if cfg.KeyringFile == "" {
		return nil, configErrorf("config: keyring_file: required: every entry is verified again before it is restored")
	}
	kr, err := signing.LoadKeyring(cfg.KeyringFile)
	if err != nil {
		return nil, configErrorf("config: keyring_file: %w", err)
	}
	rdb, logKey, err := logStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer rdb.Close()
	v := signing.NewVerifier(signing.VerifierConfig{Profile: cfg.SigningProfile(), Keys: kr})
	return queue.RestoreLog(ctx, rdb, queue.NewKeys(cfg.KeyPrefix), logKey, v, entryWindow(cfg.Policy), r)
}

// entryWindow is how long before its integration a control log entry's
// request may have been signed.
func entryWindow(p queue.Policy) controllog.Window {
	return controllog.Window{Skew: signing.DefaultSkew, MaxAge: p.EnvelopeMaxAge}
}

func logStore(ctx context.Context, cfg *Config) (*redis.Client, note.Verifier, error) {
	logKey, err := note.NewVerifier(cfg.Control.LogPublicKey)
	if err != nil {
		return nil, nil, configErrorf("config: control.log_public_key: %w", err)
	}
	rdb, err := openRedis(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	return rdb, logKey, nil
}

// VerifyExport checks an export offline with only the log's public key
// and the keyring file, under the default policy's window for how long
// after signing a request may be integrated: see controllog.Verify. It has
// no public_authorities to check entries' authorities against; the
// integrator checked them when it took each entry into the log.
func VerifyExport(ctx context.Context, r io.Reader, logPublicKey, keyringFile string) (*controllog.Summary, error) {
	v, err := note.NewVerifier(logPublicKey)
	if err != nil {
		return nil, configErrorf("log key: %w", err)
	}
	kr, err := signing.LoadKeyring(keyringFile)
	if err != nil {
		return nil, configErrorf("keyring: %w", err)
	}
	verifier := signing.NewVerifier(signing.VerifierConfig{Profile: signing.DefaultProfile(), Keys: kr})
	return controllog.Verify(ctx, r, v, verifier, entryWindow(queue.DefaultPolicy()))
}
