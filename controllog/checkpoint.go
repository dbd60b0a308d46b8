package controllog

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Checkpoint is a signed statement of the log's size and root hash at a
// time, in the C2SP tlog-checkpoint format:
//
//	<origin>
//	<size>
//	<base64 root hash>
//	time <unix milliseconds>
//
// followed by the note signature of the log key (golang.org/x/mod's note).
// The origin is the log key's name. The time line is an extension: the
// integrator signs a fresh checkpoint every few hundred milliseconds even
// when nothing was appended, so a reader can tell a current view of the
// log from one that someone keeps serving it.
type Checkpoint struct {
	Origin string
	Size   int64
	Root   tlog.Hash
	Time   time.Time
}

// maxCheckpoint bounds a checkpoint note read from outside.
const maxCheckpoint = 4096

// text is the checkpoint's body, as signed.
func (c *Checkpoint) text() string {
	return fmt.Sprintf("%s\n%d\n%s\ntime %d\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Root[:]), c.Time.UnixMilli())
}

// Sign returns the signed note of c. c.Origin must be the signer's name.
func (c *Checkpoint) Sign(s note.Signer) ([]byte, error) {
	if c.Origin != s.Name() {
		return nil, fmt.Errorf("controllog: checkpoint origin %q is not the log key's name %q", c.Origin, s.Name())
	}
	msg, err := note.Sign(&note.Note{Text: c.text()}, s)
	if err != nil {
		return nil, fmt.Errorf("controllog: sign checkpoint: %w", err)
	}
	return msg, nil
}

// ErrBadCheckpoint marks a checkpoint that is malformed or not signed by
// the log key.
var ErrBadCheckpoint = errors.New("bad checkpoint")

// OpenCheckpoint verifies a signed checkpoint with the log's public key
// and parses it. Any failure wraps ErrBadCheckpoint.
func OpenCheckpoint(msg []byte, v note.Verifier) (*Checkpoint, error) {
	if len(msg) > maxCheckpoint {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadCheckpoint, len(msg))
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCheckpoint, err)
	}
	c, err := parseCheckpoint(n.Text)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCheckpoint, err)
	}
	if c.Origin != v.Name() {
		return nil, fmt.Errorf("%w: origin %q is not the log key's name %q", ErrBadCheckpoint, c.Origin, v.Name())
	}
	return c, nil
}

func parseCheckpoint(text string) (*Checkpoint, error) {
	lines := strings.Split(text, "\n")
	// Four lines and the empty string after the final newline.
	if len(lines) != 5 || lines[4] != "" {
		return nil, errors.New("want origin, size, root and time lines")
	}
	c := &Checkpoint{Origin: lines[0]}
	if c.Origin == "" {
		return nil, errors.New("empty origin")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return nil, fmt.Errorf("size %q is not a decimal count", lines[1])
	}
	c.Size = size
	root, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return nil, errors.New("root is not a base64 SHA-256 hash")
	}
	copy(c.Root[:], root)
	ms, ok := strings.CutPrefix(lines[3], "time ")
	t, err := strconv.ParseInt(ms, 10, 64)
	if !ok || err != nil || strconv.FormatInt(t, 10) != ms {
		return nil, fmt.Errorf("time line %q is not \"time <unix milliseconds>\"", lines[3])
	}
	c.Time = time.UnixMilli(t).UTC()
	return c, nil
}

// GenerateKey returns a new log key named name: the private key (note's
// "PRIVATE+KEY+..." form, to keep out of Redis and of logs) and the public
// key every reader of the log is configured with. A name is a host-like
// identifier such as "pushgate.example.org/control"; it is the
// checkpoints' origin.
func GenerateKey(name string) (private, public string, err error) {
	private, public, err = note.GenerateKey(rand.Reader, name)
	if err != nil {
		return "", "", fmt.Errorf("controllog: generate log key: %w", err)
	}
	// note checks the name only when the key is used.
	if _, err := note.NewSigner(private); err != nil {
		return "", "", fmt.Errorf("controllog: log key name %q: %w", name, err)
	}
	return private, public, nil
}

// PublicKey derives the public key of a private log key.
func PublicKey(private string) (string, error) {
	if _, err := note.NewSigner(private); err != nil {
		return "", fmt.Errorf("controllog: log key: %w", err)
	}
	// PRIVATE+KEY+<name>+<hash>+<base64(alg || seed)>, which NewSigner
	// checked; the base64 may itself hold '+'.
	rest := strings.TrimPrefix(private, "PRIVATE+KEY+")
	name, rest, _ := strings.Cut(rest, "+")
	_, key64, _ := strings.Cut(rest, "+")
	raw, _ := base64.StdEncoding.DecodeString(key64)
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	return note.NewEd25519VerifierKey(name, pub)
}
