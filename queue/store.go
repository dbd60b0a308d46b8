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

// create writes a new broadcast's record, envelope and first timeline
// event at once (one script: a crash leaves all or none of them), then its
// index entries. It refuses to overwrite an existing record.
func (s *store) create(ctx context.Context, r newRecord, envelope []byte) error {
	now := strconv.FormatInt(r.created.UnixMilli(), 10)
	ev, _ := json.Marshal(api.Event{At: r.created.UnixMilli(), Event: r.state})
	args := []any{envelope, ev, recordRetention.Milliseconds(),
		"id", r.id, "key_id", r.keyID, "state", r.state, "audience", r.audience, "topic", r.topic,
		"title", r.title, "idempotency_key", r.idemKey, "ttl_ms", r.ttl.Milliseconds(),
		"created_at", now, "updated_at", now}
	if r.approvalsRequired > 0 {
		args = append(args, "approvals_required", r.approvalsRequired, "approval_expires_at", r.approvalExpires.UnixMilli())
	}
	created, err := createScript.Run(ctx, s.rdb,
		[]string{s.keys.Broadcast(r.id), s.keys.Envelope(r.id), s.keys.Timeline(r.id)}, args...).Int()
	if err != nil {
		return fmt.Errorf("create broadcast: %w", err)
	}
	if created != 1 {
		return errExists
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

// idempotency is what an idempotency key remembers: the broadcast it
// names, the hash of the body it was used with, and whether the binding is
// committed (its broadcast was created) or still a submission's claim.
type idempotency struct {
	id       string
	bodyHash string
	pending  bool
}

// value is the binding as stored: "<id> <hash> <c|p>".
func (b idempotency) value() string {
	state := "c"
	if b.pending {
		state = "p"
	}
	return b.id + " " + b.bodyHash + " " + state
}

// parseIdempotency reads a stored binding. Redis contents are untrusted:
// anything but the three fields is refused rather than guessed at.
func parseIdempotency(v string) (idempotency, error) {
	f := strings.Split(v, " ")
	if len(f) != 3 || f[0] == "" || f[1] == "" || (f[2] != "c" && f[2] != "p") {
		return idempotency{}, fmt.Errorf("idempotency key: malformed binding in Redis")
	}
	return idempotency{id: f[0], bodyHash: f[1], pending: f[2] == "p"}, nil
}

func bodyHash(body []byte) string {
	h := sha256.Sum256(body)
	return hex.EncodeToString(h[:])
}

// idempotencyLease is how long a submission's claim on an idempotency key
// lasts before it is committed: long enough for any submission to create
// its broadcast, short enough that a claim left by a crashed process
// refuses repeats only briefly.
const idempotencyLease = time.Minute

// idempotencyBinding reads what an idempotency key is bound to, without
// binding it. It reports a binding only when its broadcast exists: a
// claim whose submission has not created it yet binds nothing so far.
func (s *store) idempotencyBinding(ctx context.Context, keyID, idemKey string) (idempotency, bool, error) {
	cur, err := s.rdb.Get(ctx, s.keys.Idempotency(keyID, idemKey)).Result()
	if errors.Is(err, redis.Nil) {
		return idempotency{}, false, nil
	}
	if err != nil {
		return idempotency{}, false, fmt.Errorf("idempotency key: %w", err)
	}
	b, err := parseIdempotency(cur)
	if err != nil {
		return idempotency{}, false, err
	}
	n, err := s.rdb.Exists(ctx, s.keys.Broadcast(b.id)).Result()
	if err != nil {
		return idempotency{}, false, fmt.Errorf("idempotency key: %w", err)
	}
	return b, n == 1, nil
}

// claimIdempotency claims (keyID, idemKey) for a new broadcast for
// idempotencyLease, unless it is bound or claimed already: then it
// returns that binding, and whether its broadcast exists.
func (s *store) claimIdempotency(ctx context.Context, keyID, idemKey string, want idempotency) (got idempotency, fresh, exists bool, err error) {
	want.pending = true
	key := s.keys.Idempotency(keyID, idemKey)
	for range 3 {
		ok, err := s.rdb.SetNX(ctx, key, want.value(), idempotencyLease).Result()
		if err != nil {
			return idempotency{}, false, false, fmt.Errorf("idempotency key: %w", err)
		}
		if ok {
			return want, true, false, nil
		}
		b, found, err := s.idempotencyBinding(ctx, keyID, idemKey)
		if err != nil {
			return idempotency{}, false, false, err
		}
		if b.id != "" {
			return b, false, found, nil
		}
		// The binding lapsed between the two calls: claim again.
	}
	return idempotency{}, false, false, fmt.Errorf("idempotency key: contended")
}

// errIdempotencyLost reports that a submission's claim lapsed and another
// submission claimed the idempotency key.
var errIdempotencyLost = errors.New("idempotency claim lost")

// commitIdempotency turns a claim into a binding kept for ttl, once its
// broadcast exists. It also binds a key whose claim lapsed meanwhile, and
// fails with errIdempotencyLost when another submission claimed it.
func (s *store) commitIdempotency(ctx context.Context, keyID, idemKey string, b idempotency, ttl time.Duration) error {
	claim, done := b, b
	claim.pending, done.pending = true, false
	ok, err := commitIdempotencyScript.Run(ctx, s.rdb, []string{s.keys.Idempotency(keyID, idemKey)},
		claim.value(), done.value(), ttl.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("idempotency key: %w", err)
	}
	if ok != 1 {
		return errIdempotencyLost
	}
	return nil
}

// releaseIdempotency drops a submission's claim when the submission is
// refused, so that the key binds nothing; a claim that lapsed and was
// taken by another submission is left alone.
func (s *store) releaseIdempotency(ctx context.Context, keyID, idemKey string, b idempotency) error {
	b.pending = true
	if err := releaseIdempotencyScript.Run(ctx, s.rdb, []string{s.keys.Idempotency(keyID, idemKey)}, b.value()).Err(); err != nil {
		return fmt.Errorf("idempotency key: %w", err)
	}
	return nil
}

// discard deletes a broadcast that was created but never started, with
// its index entries.
func (s *store) discard(ctx context.Context, id string) error {
	keyID, err := s.rdb.HGet(ctx, s.keys.Broadcast(id), "key_id").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("discard broadcast: %w", err)
	}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.broadcastKeys(id)...)
		p.ZRem(ctx, s.keys.BroadcastIndex(), id)
		if keyID != "" {
			p.ZRem(ctx, s.keys.SenderIndex(keyID), id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("discard broadcast: %w", err)
	}
	return nil
}
