package queue

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/redis/go-redis/v9"
)

// recordRetention is how long a broadcast's record, envelope, ledger and
// timeline are kept.
const recordRetention = 7 * 24 * time.Hour

// BroadcastID derives a broadcast's id from the key that signed it and the
// signature's nonce. Because a worker recomputes it from the verified
// envelope, an envelope cannot be replayed under another broadcast's id.
func BroadcastID(keyID, nonce string) string {
	h := sha256.Sum256([]byte("pushgate broadcast id\x00" + keyID + "\x00" + nonce))
	return "b" + strings.ToLower(base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(h[:15]))
}

// CollapseID is the collapse identity every copy of a broadcast carries,
// recall replacements included.
func CollapseID(broadcastID string) string { return "pg-" + broadcastID }

// store reads and writes broadcast records, envelopes and timelines.
type store struct {
	rdb  redis.UniversalClient
	keys Keys
}

// newRecord is what a new broadcast's record starts with.
type newRecord struct {
	id, keyID, state, audience, topic, title, idemKey string
	ttl                                               time.Duration
	created                                           time.Time
	// approvalsRequired and approvalExpires are set for a broadcast that
	// starts awaiting approval.
	approvalsRequired int
	approvalExpires   time.Time
}

// errExists reports that a broadcast with the id already exists.
var errExists = errors.New("broadcast exists")

// create writes a new broadcast's record, envelope, first timeline event
// and index entry. It refuses to overwrite an existing record.
func (s *store) create(ctx context.Context, r newRecord, envelope []byte) error {
	now := strconv.FormatInt(r.created.UnixMilli(), 10)
	ok, err := s.rdb.HSetNX(ctx, s.keys.Broadcast(r.id), "id", r.id).Result()
	if err != nil {
		return fmt.Errorf("create broadcast: %w", err)
	}
	if !ok {
		return errExists
	}
	ev, _ := json.Marshal(api.Event{At: r.created.UnixMilli(), Event: r.state})
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		rec := s.keys.Broadcast(r.id)
		p.HSet(ctx, rec, "key_id", r.keyID, "state", r.state, "audience", r.audience, "topic", r.topic,
			"title", r.title, "idempotency_key", r.idemKey, "ttl_ms", r.ttl.Milliseconds(),
			"created_at", now, "updated_at", now)
		if r.approvalsRequired > 0 {
			p.HSet(ctx, rec, "approvals_required", r.approvalsRequired, "approval_expires_at", r.approvalExpires.UnixMilli())
		}
		p.Set(ctx, s.keys.Envelope(r.id), envelope, 0)
		p.RPush(ctx, s.keys.Timeline(r.id), ev)
		for _, k := range s.broadcastKeys(r.id) {
			p.Expire(ctx, k, recordRetention)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create broadcast: %w", err)
	}
	// A record outlives its retention a little when delivery renews it, so
	// the sender's index keeps entries for twice the retention: older ones
	// are trimmed here, and the set expires that long after its newest.
	// Listing drops the entries of records that expired sooner.
	z := redis.Z{Score: float64(r.created.UnixMilli()), Member: r.id}
	byKey := s.keys.SenderIndex(r.keyID)
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, s.keys.BroadcastIndex(), z)
		p.ZAdd(ctx, byKey, z)
		p.ZRemRangeByScore(ctx, byKey, "-inf", "("+strconv.FormatInt(r.created.Add(-2*recordRetention).UnixMilli(), 10))
		p.Expire(ctx, byKey, 2*recordRetention)
		return nil
	})
	if err != nil {
		return fmt.Errorf("index broadcast: %w", err)
	}
	return nil
}

// broadcastKeys are the keys of one broadcast that expire with its record.
func (s *store) broadcastKeys(id string) []string {
	return []string{s.keys.Broadcast(id), s.keys.Envelope(id), s.keys.Timeline(id), s.keys.Ledger(id),
		s.keys.Plan(id), s.keys.RecallLedger(id), s.keys.RecallPlan(id),
		s.keys.Planned(id), s.keys.Done(id), s.keys.Delayed(id), s.keys.RecallPlanned(id), s.keys.RecallDone(id)}
}

// touchExpiry renews the retention of keys created after the record (the
// ledger and plan appear only when delivery starts).
func (s *store) touchExpiry(ctx context.Context, p redis.Pipeliner, id string) {
	for _, k := range s.broadcastKeys(id) {
		p.Expire(ctx, k, recordRetention)
	}
}

// envelope returns the stored signed request of a broadcast.
func (s *store) envelope(ctx context.Context, key string) ([]byte, error) {
	b, err := s.rdb.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, api.Errorf(api.CodeNotFound, "no envelope")
	}
	if err != nil {
		return nil, fmt.Errorf("read envelope: %w", err)
	}
	return b, nil
}

// submitter returns the id of the key that submitted a broadcast; "" when
// there is no such broadcast.
func (s *store) submitter(ctx context.Context, id string) (string, error) {
	keyID, err := s.rdb.HGet(ctx, s.keys.Broadcast(id), "key_id").Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read broadcast: %w", err)
	}
	return keyID, nil
}

// get returns a broadcast's status, with its timeline when asked.
func (s *store) get(ctx context.Context, id string, timeline bool) (*api.Status, error) {
	var rec *redis.MapStringStringCmd
	var tl *redis.StringSliceCmd
	var health []*redis.MapStringStringCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		rec = p.HGetAll(ctx, s.keys.Broadcast(id))
		if timeline {
			tl = p.LRange(ctx, s.keys.Timeline(id), 0, 999)
			for _, pl := range []api.Platform{api.FCM, api.APNs} {
				health = append(health, p.HGetAll(ctx, s.keys.ProviderHealth(string(pl))))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read broadcast: %w", err)
	}
	fields := rec.Val()
	if fields["state"] == "" {
		return nil, api.Errorf(api.CodeNotFound, "no broadcast %q", id)
	}
	st := statusFromRecord(id, fields)
	if timeline {
		if !st.Terminal() {
			for i, pl := range []api.Platform{api.FCM, api.APNs} {
				if reason := health[i].Val()["reason"]; reason != "" && len(reason) <= 64 {
					if st.ProviderDegraded == nil {
						st.ProviderDegraded = map[api.Platform]string{}
					}
					st.ProviderDegraded[pl] = reason
				}
			}
		}
		for _, raw := range tl.Val() {
			var ev api.Event
			if json.Unmarshal([]byte(raw), &ev) == nil {
				st.Timeline = append(st.Timeline, ev)
			}
		}
	}
	return st, nil
}

// statusFromRecord reads a record hash. Redis contents are not trusted:
// malformed numbers read as zero rather than failing the whole view.
func statusFromRecord(id string, f map[string]string) *api.Status {
	num := func(k string) int64 {
		n, _ := strconv.ParseInt(f[k], 10, 64)
		return n
	}
	ms := func(k string) time.Time {
		if n := num(k); n > 0 {
			return time.UnixMilli(n).UTC()
		}
		return time.Time{}
	}
	required, expires := approvalsSummary(f)
	var paused map[api.Platform]time.Time
	for _, p := range []api.Platform{api.FCM, api.APNs} {
		if t := ms(pausedField(p)); !t.IsZero() {
			if paused == nil {
				paused = map[api.Platform]time.Time{}
			}
			paused[p] = t
		}
	}
	return &api.Status{
		Reasons:           reasonsFromRecord(f),
		LimitedBy:         f["limited_by"],
		LimitedAt:         ms("limited_at"),
		PausedUntil:       paused,
		ApprovalsRequired: required,
		ApprovalExpiresAt: expires,
		ID:                id,
		State:             f["state"],
		KeyID:             f["key_id"],
		Audience:          f["audience"],
		Topic:             f["topic"],
		Title:             f["title"],
		TTL:               (time.Duration(num("ttl_ms")) * time.Millisecond).String(),
		CreatedAt:         ms("created_at"),
		UpdatedAt:         ms("updated_at"),
		FinishedAt:        ms("finished_at"),
		KilledBy:          f["killed_by"],
		RecallMode:        f["recall_mode"],
		Counters: api.Counters{
			Targeted:           num("targeted"),
			Planned:            num("planned"),
			Sent:               num("sent"),
			Failed:             num("failed"),
			Expired:            num("expired"),
			InvalidToken:       num("invalid_token"),
			SkippedDuplicate:   num("skipped_duplicate"),
			RateLimitedRetries: num("rate_limited_retries"),
			Retries:            num("retries"),
			Cancelled:          num("cancelled"),
			Uncertain:          num("uncertain"),
			Throttled:          num("throttled"),
			Held:               num("held"),
			Capped:             num("capped"),
			Recalled:           num("recalled"),
			RecallFailed:       num("recall_failed"),
			ProviderPaused:     num("provider_paused"),
		},
	}
}

// reasonsFromRecord reads the record's "why:<letter>:<reason>" fields
// (recordScript), nil when there are none. The record comes from Redis:
// a field of another shape or a count that is not positive is skipped.
func reasonsFromRecord(f map[string]string) *api.Reasons {
	var r *api.Reasons
	for k, v := range f {
		rest, ok := strings.CutPrefix(k, "why:")
		if !ok {
			continue
		}
		letter, reason, ok := strings.Cut(rest, ":")
		n, err := strconv.ParseInt(v, 10, 64)
		if !ok || reason == "" || err != nil || n <= 0 {
			continue
		}
		if r == nil {
			r = &api.Reasons{}
		}
		var m *map[string]int64
		switch letter {
		case outFailed:
			m = &r.Failed
		case outInvalid:
			m = &r.InvalidToken
		case outExpired:
			m = &r.Expired
		case "r":
			m = &r.Retried
		default:
			continue
		}
		if *m == nil {
			*m = map[string]int64{}
		}
		(*m)[reason] += n
	}
	if r.Empty() {
		return nil
	}
	return r
}

// list returns broadcasts newest first, optionally only those in a state,
// after the cursor `after` (from a previous page's Next; "" starts at the
// newest). A cursor is the creation time in ms and the id of the last
// broadcast seen, so broadcasts created in the same millisecond are
// neither skipped nor repeated.
func (s *store) list(ctx context.Context, state string, limit int, after string) (*api.ListPage, error) {
	return s.listIndex(ctx, s.keys.BroadcastIndex(), "", state, limit, after)
}

// listIndex returns a page of the broadcasts of an index, newest first:
// of every broadcast, or, with keyID, of the sender index of that key,
// whose records must name it (the index is Redis's word, not proof).
func (s *store) listIndex(ctx context.Context, index, keyID, state string, limit int, after string) (*api.ListPage, error) {
	maxScore, lastID := "+inf", ""
	if after != "" {
		ms, id, ok := strings.Cut(after, "-")
		if _, err := strconv.ParseInt(ms, 10, 64); !ok || err != nil || !api.ValidBroadcastID(id) {
			return nil, api.Errorf(api.CodeInvalidQuery, "cursor %q is not one this API returned", after)
		}
		maxScore, lastID = ms, id
	}
	page := &api.ListPage{Broadcasts: []*api.Status{}}
	offset := int64(0)
	// Filtering by state happens after reading, so read the index in
	// chunks until the page is full or the index runs out.
	for len(page.Broadcasts) < limit {
		zs, err := s.rdb.ZRevRangeByScoreWithScores(ctx, index, &redis.ZRangeBy{
			Max: maxScore, Min: "-inf", Offset: offset, Count: int64(limit) * 2,
		}).Result()
		if err != nil {
			return nil, fmt.Errorf("list broadcasts: %w", err)
		}
		if len(zs) == 0 {
			return page, nil
		}
		offset += int64(len(zs))
		cmds := make([]*redis.MapStringStringCmd, len(zs))
		_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, z := range zs {
				cmds[i] = p.HGetAll(ctx, s.keys.Broadcast(z.Member.(string)))
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list broadcasts: %w", err)
		}
		for i, z := range zs {
			id := z.Member.(string)
			score := strconv.FormatInt(int64(z.Score), 10)
			// Members of equal score come in descending id order; skip
			// those at or before the cursor.
			if lastID != "" && score == maxScore && id >= lastID {
				continue
			}
			f := cmds[i].Val()
			if f["state"] == "" {
				// An expired record still indexed: drop the index entry.
				s.rdb.ZRem(ctx, index, id)
				continue
			}
			if keyID != "" && f["key_id"] != keyID {
				continue
			}
			if state != "" && f["state"] != state {
				continue
			}
			page.Broadcasts = append(page.Broadcasts, statusFromRecord(id, f))
			if len(page.Broadcasts) == limit {
				page.Next = score + "-" + id
				return page, nil
			}
		}
	}
	return page, nil
}

// transition moves a broadcast to state `to` if it is in one of `from`,
// noting detail in the timeline and setting flag (when not "") to 1. It
// returns whether it moved and the state it was in.
func (s *store) transition(ctx context.Context, id, to, detail, flag string, now time.Time, from ...string) (bool, string, error) {
	args := []any{to, now.UnixMilli(), detail, flag}
	for _, f := range from {
		args = append(args, f)
	}
	res, err := transitionScript.Run(ctx, s.rdb, []string{s.keys.Broadcast(id), s.keys.Timeline(id)}, args...).Slice()
	if err != nil {
		return false, "", fmt.Errorf("change broadcast state: %w", err)
	}
	if len(res) != 2 {
		return false, "", fmt.Errorf("change broadcast state: unexpected reply %v", res)
	}
	ok, _ := res[0].(int64)
	prev, _ := res[1].(string)
	return ok == 1, prev, nil
}

// idempotency is what an idempotency key remembers.
type idempotency struct {
	id       string
	bodyHash string
}

func bodyHash(body []byte) string {
	h := sha256.Sum256(body)
	return hex.EncodeToString(h[:])
}

// idempotencyBinding reads what an idempotency key is bound to, without
// binding it.
func (s *store) idempotencyBinding(ctx context.Context, keyID, idemKey string) (idempotency, bool, error) {
	cur, err := s.rdb.Get(ctx, s.keys.Idempotency(keyID, idemKey)).Result()
	if errors.Is(err, redis.Nil) {
		return idempotency{}, false, nil
	}
	if err != nil {
		return idempotency{}, false, fmt.Errorf("idempotency key: %w", err)
	}
	id, hash, _ := strings.Cut(cur, " ")
	n, err := s.rdb.Exists(ctx, s.keys.Broadcast(id)).Result()
	if err != nil {
		return idempotency{}, false, fmt.Errorf("idempotency key: %w", err)
	}
	// A binding whose broadcast is gone (a crash between binding and
	// creating) binds nothing.
	return idempotency{id: id, bodyHash: hash}, n == 1, nil
}

// claimIdempotency binds (keyID, idemKey) to a new broadcast unless it is
// bound already, in which case it returns the existing binding. A binding
// whose broadcast record is missing (a crash between binding and creating)
// is taken over.
func (s *store) claimIdempotency(ctx context.Context, keyID, idemKey string, want idempotency, ttl time.Duration) (idempotency, bool, error) {
	key := s.keys.Idempotency(keyID, idemKey)
	val := want.id + " " + want.bodyHash
	for range 3 {
		ok, err := s.rdb.SetNX(ctx, key, val, ttl).Result()
		if err != nil {
			return idempotency{}, false, fmt.Errorf("idempotency key: %w", err)
		}
		if ok {
			return want, true, nil
		}
		cur, err := s.rdb.Get(ctx, key).Result()
		if errors.Is(err, redis.Nil) {
			continue // expired between the two calls
		}
		if err != nil {
			return idempotency{}, false, fmt.Errorf("idempotency key: %w", err)
		}
		id, hash, _ := strings.Cut(cur, " ")
		n, err := s.rdb.Exists(ctx, s.keys.Broadcast(id)).Result()
		if err != nil {
			return idempotency{}, false, fmt.Errorf("idempotency key: %w", err)
		}
		if n == 1 {
			return idempotency{id: id, bodyHash: hash}, false, nil
		}
		// Orphaned binding: replace it only if nobody else did meanwhile.
		swapped, err := swapScript.Run(ctx, s.rdb, []string{key}, cur, val, ttl.Milliseconds()).Int()
		if err != nil {
			return idempotency{}, false, fmt.Errorf("idempotency key: %w", err)
		}
		if swapped == 1 {
			return want, true, nil
		}
	}
	return idempotency{}, false, fmt.Errorf("idempotency key: contended")
}
