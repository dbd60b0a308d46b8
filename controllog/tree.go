package controllog

import (
	"fmt"

	"golang.org/x/mod/sumdb/tlog"
)

// Tree is the right edge of a Merkle tree of entries, hashed as RFC 6962
// (and RFC 9162) define: the hashes of the complete subtrees that make up a
// tree of Size leaves, at most one per level. That is all it takes to
// append leaves and to compute the root, so a reader that remembers a
// verified tree checks a newer checkpoint by appending the new entries and
// comparing roots: the new tree then provably extends the old one (the
// consistency proof, computed locally from the entries themselves), and
// the entries are the ones the checkpoint signs.
//
// The zero Tree is the empty tree. The hashing is golang.org/x/mod's tlog.
type Tree struct {
	size int64
	// edge maps tlog stored-hash indexes to hashes: the subtrees of size.
	edge map[int64]tlog.Hash
}

// Size is the number of leaves.
func (t *Tree) Size() int64 { return t.size }

// ReadHashes implements tlog.HashReader over the edge; it fails for any
// hash not on it.
func (t *Tree) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		h, ok := t.edge[idx]
		if !ok {
			return nil, fmt.Errorf("controllog: stored hash %d is not on the tree's edge", idx)
		}
		out[i] = h
	}
	return out, nil
}

// Append adds a leaf and returns the stored hashes it creates, in tlog's
// storage order starting at tlog.StoredHashIndex(0, size before).
func (t *Tree) Append(leaf []byte) ([]tlog.Hash, error) {
	hs, err := tlog.StoredHashes(t.size, leaf, t)
	if err != nil {
		return nil, err
	}
	if t.edge == nil {
		t.edge = map[int64]tlog.Hash{}
	}
	base := tlog.StoredHashIndex(0, t.size)
	for i, h := range hs {
		t.edge[base+int64(i)] = h
	}
	t.size++
	t.prune()
	return hs, nil
}

// Root is the tree's root hash (the RFC 6962 hash of the empty string for
// the empty tree).
func (t *Tree) Root() tlog.Hash {
	h, err := tlog.TreeHash(t.size, t)
	if err != nil {
		// The edge always holds what TreeHash reads: Append keeps it so.
		panic("controllog: tree edge incomplete: " + err.Error())
	}
	return h
}

// Clone returns an independent copy.
func (t *Tree) Clone() *Tree {
	c := &Tree{size: t.size, edge: make(map[int64]tlog.Hash, len(t.edge))}
	for k, v := range t.edge {
		c.edge[k] = v
	}
	return c
}

// prune keeps only the subtrees of the current size.
func (t *Tree) prune() {
	keep := edgeIndexes(t.size)
	for idx := range t.edge {
		if !keep[idx] {
			delete(t.edge, idx)
		}
	}
}

// edgeIndexes returns the stored-hash indexes of the complete subtrees
// that make up a tree of n leaves, largest first.
func edgeIndexes(n int64) map[int64]bool {
	keep := map[int64]bool{}
	start := int64(0)
	for level := 62; level >= 0; level-- {
		if n>>level&1 == 1 {
			keep[tlog.StoredHashIndex(level, start>>level)] = true
			start += 1 << level
		}
	}
	return keep
}
