package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// auditMaxLen bounds the audit stream (approximately, as XADD MAXLEN ~ does).
const auditMaxLen = 100000

// AuditEntry records one admin or sender action: who, what, when, why,
// and what came of it.
type AuditEntry struct {
	ID      string    `json:"id"`
	At      time.Time `json:"at"`
	Actor   string    `json:"actor"`
	Action  string    `json:"action"`
	Target  string    `json:"target"`
	Reason  string    `json:"reason,omitempty"`
	Outcome string    `json:"outcome,omitempty"`
}

// Audit is the append-only log of kills, resumes, recalls, revocations
// and cancellations, kept as a Redis stream.
type Audit struct {
	rdb  redis.UniversalClient
	keys Keys
	now  func() time.Time
}

// Record appends an entry; At and ID are filled in.
func (a *Audit) Record(ctx context.Context, e AuditEntry) error {
	e.At = a.now().UTC()
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	err = a.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: a.keys.Audit(), MaxLen: auditMaxLen, Approx: true, Values: []any{"e", b},
	}).Err()
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// List returns up to limit entries, newest first.
func (a *Audit) List(ctx context.Context, limit int) ([]AuditEntry, error) {
	msgs, err := a.rdb.XRevRangeN(ctx, a.keys.Audit(), "+", "-", int64(limit)).Result()
	if err != nil {
		return nil, fmt.Errorf("read audit: %w", err)
	}
	out := make([]AuditEntry, 0, len(msgs))
	for _, m := range msgs {
		var e AuditEntry
		raw, _ := m.Values["e"].(string)
		if json.Unmarshal([]byte(raw), &e) != nil {
			e = AuditEntry{Action: "unreadable"}
		}
		e.ID = m.ID
		out = append(out, e)
	}
	return out, nil
}
