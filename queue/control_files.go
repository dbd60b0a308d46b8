package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"

	"github.com/redis/go-redis/v9"
	"golang.org/x/mod/sumdb/note"

	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/signing"
)

// mirror keeps a file that is an export of the log, appended as this
// process verifies new entries, for `pushgate log restore` after Redis
// loses the log.
type mirror struct {
	path   string
	logger interface{ Warn(string, ...any) }

	mu sync.Mutex
	f  *os.File
	w  *controllog.Writer
}

// openMirror checks the mirror file against the verified log and rewrites
// it from the log. A mirror that knows more than Redis (the log in Redis
// lost entries) is left alone and the view fails closed: restore from it.
func (c *Control) openMirror(ctx context.Context) (*mirror, error) {
	path := c.cfg.MirrorFile
	_, size := c.Head()
	if f, err := os.Open(path); err == nil {
		sum, rerr := controllog.ReadExport(f, c.cfg.LogKey, func(int64, []byte, *controllog.Entry) error { return nil })
		f.Close()
		switch {
		case rerr != nil:
			c.logger.Warn("control log mirror is damaged; rewriting it from the log in Redis", "path", path, "err", rerr)
		case sum.Checkpoint != nil && sum.Checkpoint.Size > size:
			c.fail(fmt.Errorf("the mirror %s holds %d entries and Redis %d: restore with `pushgate log restore %s`", path, sum.Checkpoint.Size, size, path))
			return nil, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control log mirror: %w", err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("control log mirror: %w", err)
	}
	if _, err := ExportLog(ctx, c.cfg.Redis, c.cfg.Keys, c.cfg.LogKey, f); err != nil {
		f.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("control log mirror: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("control log mirror: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("control log mirror: %w", err)
	}
	f, err = os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("control log mirror: %w", err)
	}
	// The export was read after the view: it may hold more than size
	// entries, and appends start after what it holds.
	n, err := countExportEntries(path, c.cfg.LogKey)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &mirror{path: path, logger: c.logger, f: f, w: controllog.NewWriter(f, n)}, nil
}

func countExportEntries(path string, v note.Verifier) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("control log mirror: %w", err)
	}
	defer f.Close()
	sum, err := controllog.ReadExport(f, v, func(int64, []byte, *controllog.Entry) error { return nil })
	if err != nil {
		return 0, fmt.Errorf("control log mirror: %w", err)
	}
	return sum.Entries, nil
}

// append writes newly verified entries, from index first, and their
// checkpoint. Entries the file already holds are skipped.
func (m *mirror) append(first int64, leaves [][]byte, signed []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.w == nil {
		return
	}
	wrote := false
	for i, l := range leaves {
		idx := first + int64(i)
		if idx < m.w.Next() {
			continue
		}
		if err := m.w.Entry(idx, l); err != nil {
			m.logger.Warn("control log mirror: append failed; the mirror stops here", "path", m.path, "err", err)
			m.w = nil
			return
		}
		wrote = true
	}
	if !wrote {
		return
	}
	if err := m.w.Checkpoint(signed); err == nil {
		err = m.w.Flush()
		if err == nil {
			err = m.f.Sync()
		}
		if err != nil {
			m.logger.Warn("control log mirror: write failed", "path", m.path, "err", err)
		}
	}
}

func (m *mirror) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.w != nil {
		m.w.Flush()
	}
	m.f.Close()
}

// ExportLog writes the control log in Redis to w as an export, with each
// stored checkpoint after the entries it covers and the newest at the end,
// and verifies what it wrote: the newest checkpoint's signature and that
// the entries hash to it.
func ExportLog(ctx context.Context, rdb redis.UniversalClient, keys Keys, logKey note.Verifier, w io.Writer) (*controllog.Summary, error) {
	s := &controlStore{rdb: rdb, keys: keys}
	signed, err := s.head(ctx)
	if err != nil {
		return nil, err
	}
	if signed == nil {
		return nil, errors.New("Redis holds no control log")
	}
	head, err := controllog.OpenCheckpoint(signed, logKey)
	if err != nil {
		return nil, err
	}
	stored, err := s.checkpoints(ctx)
	if err != nil {
		return nil, err
	}
	ew := controllog.NewWriter(w, 0)
	var tree controllog.Tree
	sum := &controllog.Summary{Checkpoint: head, Signed: signed}
	err = s.entries(ctx, 0, head.Size, func(first int64, leaves [][]byte) error {
		for j, l := range leaves {
			if err := ew.Entry(first+int64(j), l); err != nil {
				return err
			}
			if _, err := tree.Append(l); err != nil {
				return err
			}
			sum.Entries++
			if cp, ok := stored[tree.Size()]; ok && tree.Size() < head.Size {
				if c, err := controllog.OpenCheckpoint(cp, logKey); err == nil && c.Size == tree.Size() && c.Root == tree.Root() {
					if err := ew.Checkpoint(cp); err != nil {
						return err
					}
					sum.Checkpoints++
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if tree.Root() != head.Root {
		return nil, fmt.Errorf("%w: the entries in Redis do not hash to its checkpoint of size %d", errLogInconsistent, head.Size)
	}
	if err := ew.Checkpoint(signed); err != nil {
		return nil, err
	}
	sum.Checkpoints++
	return sum, ew.Flush()
}

// RestoreLog writes an export back into Redis, for a Redis that lost the
// log: the file is checked as controllog.ReadExport does (every checkpoint
// signed by the log key and matching the entries before it), every entry
// is verified again under the keyring in v (controllog.Check), and only
// the entries its newest checkpoint covers are restored, with their stored
// hashes and that checkpoint. Redis must hold no log entries. An entry
// signed by a key no longer in the keyring is restored and reported in
// the summary's Unknown (its stop stands; nothing else it asked for
// counts); any other entry that fails its check refuses the restore. Every
// process verifies the restored log again before it trusts it.
func RestoreLog(ctx context.Context, rdb redis.UniversalClient, keys Keys, logKey note.Verifier, v *signing.Verifier, w controllog.Window, r io.Reader) (*RestoreSummary, error) {
	var leaves [][]byte
	out := &RestoreSummary{}
	sum, err := controllog.ReadExport(r, logKey, func(i int64, leaf []byte, e *controllog.Entry) error {
		if _, err := controllog.Check(ctx, v, e, w); err != nil {
			var se *signing.Error
			if !errors.As(err, &se) || se.Code != signing.CodeUnknownKey {
				return err
			}
			out.Unknown = append(out.Unknown, i)
		}
		leaves = append(leaves, slices.Clone(leaf))
		return nil
	})
	out.Summary = sum
	if err != nil {
		return out, err
	}
	if sum.Checkpoint == nil {
		return out, errors.New("the file holds no signed checkpoint")
	}
	s := &controlStore{rdb: rdb, keys: keys}
	size := sum.Checkpoint.Size
	if err := s.restore(ctx, leaves[:size], map[int64][]byte{size: sum.Signed}, sum.Signed); err != nil {
		return out, err
	}
	return out, nil
}

// RestoreSummary is what RestoreLog restored.
type RestoreSummary struct {
	*controllog.Summary
	// Unknown lists the entries signed by keys no longer in the keyring.
	Unknown []int64
}
