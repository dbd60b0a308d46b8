// Package controllog is the format of pushgate's control log, the one
// source of kill, resume, revocation and approval state
// (docs/ARCHITECTURE.md, "The control log").
//
// Every control action and every accepted broadcast submission is an Entry:
// the signed request exactly as received, what the API decided, and when
// it was integrated. Entries are the leaves of an append-only Merkle tree
// hashed as RFC 6962 defines (golang.org/x/mod/sumdb/tlog); a Checkpoint
// signs the tree's size, root and time with a log key that is never stored
// in Redis (golang.org/x/mod/sumdb/note, in the C2SP checkpoint format).
//
// The package holds what every reader of the log needs and nothing that
// needs Redis: the entry and checkpoint codecs, the Tree a reader keeps to
// check that each new checkpoint extends the one before, the per-entry
// Check (signature, role, time), and the export file format with its
// offline Verify. How entries are folded into kill and approval state is
// the queue package's, which owns the log's storage too.
//
// It imports api and signing of pushgate, and no Redis client.
package controllog
