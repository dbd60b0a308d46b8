package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/redis/go-redis/v9"
)

// auditMaxLen bounds the audit stream (approximately, as XADD MAXLEN ~ does).
const auditMaxLen = 100000

// Audit is the append-only log of kills, resumes, recalls, revocations
// and cancellations, kept as a Redis stream.
type Audit struct {
	rdb  redis.UniversalClient
	keys Keys
	now  func() time.Time
}

// Record appends an entry; At and ID are filled in.
func (a *Audit) Record(ctx context.Context, e api.AuditEntry) error {
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
func (a *Audit) List(ctx context.Context, limit int) ([]api.AuditEntry, error) {
	msgs, err := a.rdb.XRevRangeN(ctx, a.keys.Audit(), "+", "-", int64(limit)).Result()
	if err != nil {
		return nil, fmt.Errorf("read audit: %w", err)
	}
	out := make([]api.AuditEntry, 0, len(msgs))
	for _, m := range msgs {
		var e api.AuditEntry
		raw, _ := m.Values["e"].(string)
		if json.Unmarshal([]byte(raw), &e) != nil {
			e = api.AuditEntry{Action: "unreadable"}
		}
		e.ID = m.ID
		out = append(out, e)
	}
	return out, nil
}
