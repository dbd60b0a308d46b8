package queue

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/controllog"
)

// The audit trail is the control log: every kill, resume, revocation,
// cancel, recall, approval and accepted submission, as signed.

// AuditLog returns up to limit entries of the control log, newest first,
// each with its inclusion proof against the newest checkpoint this
// process verified. Every entry and proof read from Redis is checked
// against that checkpoint before it is served; one that does not check
// means the log in Redis changed under a verified checkpoint, and fails
// the view closed.
func (s *Service) AuditLog(ctx context.Context, limit int) (*api.AuditPage, error) {
	head, size := s.control.Head()
	if err := s.controlOK(); err != nil {
		return nil, err
	}
	page := &api.AuditPage{Entries: []api.AuditEntry{}}
	if head == nil {
		return page, nil
	}
	page.Checkpoint = string(s.control.signedHead())
	from := max(size-int64(limit), 0)
	var leaves [][]byte
	err := s.control.store.entries(ctx, from, size, func(_ int64, ls [][]byte) error {
		leaves = append(leaves, ls...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	hashes := s.control.store.hashReader(ctx)
	for j := len(leaves) - 1; j >= 0; j-- {
		i := from + int64(j)
		proof, err := tlog.ProveRecord(size, i, hashes)
		if err == nil {
			err = tlog.CheckRecord(proof, size, head.Root, i, tlog.RecordHash(leaves[j]))
		}
		if err != nil {
			err = s.control.fail(fmt.Errorf("entry %d in Redis does not prove into the verified checkpoint of size %d: %v", i, size, err))
			return nil, api.Errorf(api.CodeControlLogInconsistent, "%v", err)
		}
		e, err := s.auditEntry(ctx, i, leaves[j])
		if err != nil {
			return nil, err
		}
		for _, h := range proof {
			e.Proof = append(e.Proof, base64.StdEncoding.EncodeToString(h[:]))
		}
		page.Entries = append(page.Entries, *e)
	}
	return page, nil
}

// auditEntry describes one verified entry for people.
func (s *Service) auditEntry(ctx context.Context, index int64, leaf []byte) (*api.AuditEntry, error) {
	e, err := controllog.Decode(leaf)
	if err != nil {
		return nil, api.Errorf(api.CodeControlLogInconsistent, "%v", s.control.fail(fmt.Errorf("entry %d: %v", index, err)))
	}
	out := &api.AuditEntry{Index: index, At: e.Time.UTC(), Action: string(e.Decision.Kind), Target: e.Decision.Target,
		Outcome: e.Decision.Outcome, Entry: json.RawMessage(leaf)}
	c, err := controllog.Check(ctx, s.control.verifier, e, s.control.window)
	if err != nil {
		out.Outcome = "does not verify now: " + err.Error()
		return out, nil
	}
	out.Actor = c.Verified.Key.ID
	out.Reason = reasonOf(c.Kind, e.Request.Body)
	return out, nil
}

// reasonOf reads the reason (or, for a recall, the mode) of a control
// request's body.
func reasonOf(kind controllog.Kind, body []byte) string {
	var r struct {
		Reason string `json:"reason"`
		Mode   string `json:"mode"`
	}
	if json.Unmarshal(body, &r) != nil {
		return ""
	}
	if kind == controllog.KindRecall {
		return r.Mode
	}
	return strings.ToValidUTF8(r.Reason, "?")
}
