package controllog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/pushgate/pushgate/signing"
)

// An export is the log as a file, the same format whether written by
// `pushgate log export` or by an API process mirroring the log: one JSON
// object per line, either an entry
//
//	{"index":0,"entry":{...the leaf bytes...}}
//
// or a signed checkpoint covering every entry before it
//
//	{"checkpoint":"<origin>\n<size>\n..."}
//
// Entries come in index order from 0; the leaf bytes are copied verbatim,
// so their hashes can be recomputed.

// Writer writes an export.
type Writer struct {
	w    *bufio.Writer
	next int64
}

// NewWriter returns a Writer whose next entry has index next (0 for a new
// file, the number of entries already there to append).
func NewWriter(w io.Writer, next int64) *Writer {
	return &Writer{w: bufio.NewWriter(w), next: next}
}

// Next is the index the next entry must have.
func (w *Writer) Next() int64 { return w.next }

// Entry writes the leaf of entry index, which must be Next.
func (w *Writer) Entry(index int64, leaf []byte) error {
	if index != w.next {
		return fmt.Errorf("controllog: export: entry %d written where %d is next", index, w.next)
	}
	if !json.Valid(leaf) || bytes.ContainsAny(leaf, "\r\n") {
		return fmt.Errorf("controllog: export: entry %d is not one line of JSON", index)
	}
	fmt.Fprintf(w.w, `{"index":%d,"entry":`, index)
	w.w.Write(leaf)
	if _, err := w.w.WriteString("}\n"); err != nil {
		return fmt.Errorf("controllog: export: %w", err)
	}
	w.next++
	return nil
}

// Checkpoint writes a signed checkpoint of the entries written so far.
func (w *Writer) Checkpoint(signed []byte) error {
	b, _ := json.Marshal(struct {
		Checkpoint string `json:"checkpoint"`
	}{string(signed)})
	w.w.Write(b)
	if err := w.w.WriteByte('\n'); err != nil {
		return fmt.Errorf("controllog: export: %w", err)
	}
	return nil
}

// Flush writes out what is buffered.
func (w *Writer) Flush() error {
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("controllog: export: %w", err)
	}
	return nil
}

// exportLine is one line of an export.
type exportLine struct {
	Index      *int64          `json:"index"`
	Entry      json.RawMessage `json:"entry"`
	Checkpoint *string         `json:"checkpoint"`
}

// Summary describes a verified export.
type Summary struct {
	// Entries is how many entries the file holds.
	Entries int64
	// Checkpoint is the newest checkpoint in the file and Signed its note;
	// it covers the first Checkpoint.Size entries.
	Checkpoint *Checkpoint
	Signed     []byte
	// Checkpoints counts the checkpoints the file holds, each verified.
	Checkpoints int
}

// ReadExport reads an export, checking it as it goes: every line parses,
// entries are numbered from 0 without gaps, every checkpoint is signed by
// the log key and its root is the root of the entries before it. visit is
// called for each entry (leaf bytes and decoded entry) in order; an error
// from it stops the read. Errors name the line and the entry.
//
// Entries after the last checkpoint are read and visited but not covered
// by any signature; Summary says how many are covered.
func ReadExport(r io.Reader, logKey note.Verifier, visit func(index int64, leaf []byte, e *Entry) error) (*Summary, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxEntryBytes+256)
	var tree Tree
	sum := &Summary{}
	good := int64(0) // entries covered by the last matching checkpoint
	for line := 1; sc.Scan(); line++ {
		var l exportLine
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			return sum, fmt.Errorf("line %d: not an export line: %v", line, err)
		}
		switch {
		case l.Checkpoint != nil && l.Index == nil && l.Entry == nil:
			c, err := OpenCheckpoint([]byte(*l.Checkpoint), logKey)
			if err != nil {
				return sum, fmt.Errorf("line %d: %w", line, err)
			}
			if c.Size != tree.Size() {
				return sum, fmt.Errorf("line %d: checkpoint of size %d follows %d entries", line, c.Size, tree.Size())
			}
			if c.Root != tree.Root() {
				return sum, fmt.Errorf("line %d: checkpoint of size %d does not match the entries before it: "+
					"an entry from index %d to %d was altered, added or removed", line, c.Size, good, c.Size-1)
			}
			if sum.Checkpoint != nil && c.Size < sum.Checkpoint.Size {
				return sum, fmt.Errorf("line %d: checkpoint of size %d after one of size %d", line, c.Size, sum.Checkpoint.Size)
			}
			good = c.Size
			sum.Checkpoint, sum.Signed = c, []byte(*l.Checkpoint)
			sum.Checkpoints++
		case l.Index != nil && l.Entry != nil && l.Checkpoint == nil:
			if *l.Index != tree.Size() {
				return sum, fmt.Errorf("line %d: entry %d where entry %d is next", line, *l.Index, tree.Size())
			}
			e, err := Decode(l.Entry)
			if err != nil {
				return sum, fmt.Errorf("line %d: entry %d: %w", line, *l.Index, err)
			}
			if _, err := tree.Append(l.Entry); err != nil {
				return sum, fmt.Errorf("line %d: entry %d: %w", line, *l.Index, err)
			}
			if err := visit(*l.Index, l.Entry, e); err != nil {
				return sum, fmt.Errorf("line %d: entry %d: %w", line, *l.Index, err)
			}
			sum.Entries++
		default:
			return sum, fmt.Errorf("line %d: want either index and entry, or checkpoint", line)
		}
	}
	if err := sc.Err(); err != nil {
		return sum, fmt.Errorf("read export: %w", err)
	}
	return sum, nil
}

// ErrUncovered marks an export whose last entries no checkpoint signs.
var ErrUncovered = errors.New("entries not covered by a signed checkpoint")

// Verify checks a whole export offline with only the log's public key and
// the keyring (in v): the structure and every checkpoint as ReadExport
// does, every entry as Check does, that no request appears twice, and
// that a checkpoint covers every entry. It returns the first problem,
// naming the entry.
func Verify(ctx context.Context, r io.Reader, logKey note.Verifier, v *signing.Verifier, w Window) (*Summary, error) {
	seen := map[string]int64{}
	sum, err := ReadExport(r, logKey, func(i int64, _ []byte, e *Entry) error {
		c, err := Check(ctx, v, e, w)
		if err != nil {
			return err
		}
		id := c.Verified.Key.ID + "\x00" + c.Verified.Nonce
		if first, ok := seen[id]; ok {
			return fmt.Errorf("replays the request of entry %d", first)
		}
		seen[id] = i
		return nil
	})
	if err != nil {
		return sum, err
	}
	if sum.Checkpoint == nil {
		return sum, fmt.Errorf("%w: the file has %d entries and no checkpoint", ErrUncovered, sum.Entries)
	}
	if sum.Checkpoint.Size < sum.Entries {
		return sum, fmt.Errorf("%w: entries %d to %d", ErrUncovered, sum.Checkpoint.Size, sum.Entries-1)
	}
	return sum, nil
}

// CheckInclusion checks that leaf is entry index of the log a checkpoint
// signed by the log key covers, by its RFC 6962 inclusion proof (base64
// hashes, as GET /v1/audit serves them). It returns the checkpoint.
func CheckInclusion(signed []byte, logKey note.Verifier, index int64, leaf []byte, proof []string) (*Checkpoint, error) {
	c, err := OpenCheckpoint(signed, logKey)
	if err != nil {
		return nil, err
	}
	p := make(tlog.RecordProof, 0, len(proof))
	for _, s := range proof {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) != tlog.HashSize {
			return nil, fmt.Errorf("entry %d: proof hash %q is not base64 SHA-256", index, quote(s, 64))
		}
		p = append(p, tlog.Hash(b))
	}
	if err := tlog.CheckRecord(p, c.Size, c.Root, index, tlog.RecordHash(leaf)); err != nil {
		return nil, fmt.Errorf("entry %d is not in the log the checkpoint of size %d signs: %v", index, c.Size, err)
	}
	return c, nil
}
