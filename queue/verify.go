package queue

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/signing"
)

// errForged marks work refused because its stored envelope does not prove
// it: the signature does not verify, the key may not do it, or the envelope
// belongs to another broadcast. Such tasks are counted, logged as security
// events and never retried.
var errForged = errors.New("envelope does not verify")

// verifiedBroadcast is what a worker knows about a broadcast from its
// verified envelope and nothing else.
type verifiedBroadcast struct {
	id    string
	keyID string
	// key is the signing key's keyring entry: its topics, caps, reach
	// budget, rate and owner.
	key     *signing.Key
	keyRate signing.Rate
	// maxAudience is the signing key's cap on devices per broadcast.
	maxAudience int
	// digest is api.Digest of the signed body: what approvals name.
	digest string
	req    *api.BroadcastRequest
	// msg is what every send carries. Its Expires is the broadcast's
	// expiry, so a device reached late, by a retry, keeps it only for the
	// TTL left (android.ttl) and until the same apns-expiration.
	msg providers.Message
	// tokens maps the members of an explicit-token audience to their
	// index in the signed list: their audience position.
	tokens map[string]int64
	// created is the signature's created time, and expires created plus
	// the TTL: when the message is no longer worth showing. Both come
	// from the verified envelope, never from the record in Redis.
	created, expires time.Time
}

func (v *verifiedBroadcast) scope() Scope {
	return Scope{BroadcastID: v.id, KeyID: v.keyID, Topic: v.req.Audience.Topic}
}

// verifiedRecall is a verified recall request.
type verifiedRecall struct {
	// id is the broadcast the recall's signed path names.
	id      string
	adminID string
	admin   *signing.Key
	digest  string // api.Digest of the signed body
	// actionID is the action a recall with custom text was approved as.
	actionID string
	req      *api.RecallRequest
	// created is the recall signature's created time: its retries are
	// bounded from it.
	created time.Time
}

// envelopeVerifier verifies stored envelopes and remembers verdicts by
// envelope digest, so each process verifies a broadcast's signature once,
// not once per batch. A changed envelope has another digest and is
// verified afresh. A remembered verdict is bound to the broadcast it was
// given for and checked against the current revocations at every use: a
// copy of one broadcast's envelope under another, or an envelope whose
// key was revoked since, is refused from the cache as it would be afresh.
type envelopeVerifier struct {
	verifier *signing.Verifier
	// recorded verifies without clock or revocations: the check of the
	// broadcast a recall names (recallTarget).
	recorded    *signing.Verifier
	revocations signing.Revocations
	maxAge      time.Duration
	maxTTL      time.Duration

	mu    sync.Mutex
	cache map[[32]byte]*list.Element
	order *list.List // front: most recently used
	size  int
}

type cacheEntry struct {
	digest [32]byte
	value  any
}

// newEnvelopeVerifier returns a verifier of stored envelopes: v checks
// what is delivered (with rev, within maxAge), recorded the broadcasts
// recalls name (see recallTarget).
func newEnvelopeVerifier(v, recorded *signing.Verifier, rev signing.Revocations, maxAge, maxTTL time.Duration, size int) *envelopeVerifier {
	return &envelopeVerifier{verifier: v, recorded: recorded, revocations: rev, maxAge: maxAge, maxTTL: maxTTL,
		cache: map[[32]byte]*list.Element{}, order: list.New(), size: size}
}

func (ev *envelopeVerifier) cached(d [32]byte) (any, bool) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if e, ok := ev.cache[d]; ok {
		ev.order.MoveToFront(e)
		return e.Value.(*cacheEntry).value, true
	}
	return nil, false
}

func (ev *envelopeVerifier) remember(d [32]byte, v any) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if _, ok := ev.cache[d]; ok {
		return
	}
	ev.cache[d] = ev.order.PushFront(&cacheEntry{digest: d, value: v})
	for ev.order.Len() > ev.size {
		old := ev.order.Back()
		ev.order.Remove(old)
		delete(ev.cache, old.Value.(*cacheEntry).digest)
	}
}

// reverify checks a stored envelope's signature (revocation included) and
// that it was a request to path by a key holding role.
func (ev *envelopeVerifier) reverify(ctx context.Context, raw []byte, path string, role signing.Role) (*signing.Verified, *signing.Request, error) {
	return ev.reverifyAny(ctx, raw, path, []signing.Role{role})
}

// reverifyAny is reverify for a key holding any of roles.
func (ev *envelopeVerifier) reverifyAny(ctx context.Context, raw []byte, path string, roles []signing.Role) (*signing.Verified, *signing.Request, error) {
	var req signing.Request
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, nil, fmt.Errorf("%w: envelope is not JSON", errForged)
	}
	v, err := ev.verifier.Reverify(ctx, &req, ev.maxAge)
	if err != nil {
		return nil, nil, forgedIfRefused(err)
	}
	if err := checkRequest(v, &req, path, roles); err != nil {
		return nil, nil, err
	}
	return v, &req, nil
}

// forgedIfRefused marks a signature refusal as errForged and passes other
// errors (Redis) on.
func forgedIfRefused(err error) error {
	var se *signing.Error
	if errors.As(err, &se) {
		return fmt.Errorf("%w: %s", errForged, se.Code)
	}
	return err
}

// checkRequest checks that a verified envelope was a POST to path, the
// canonical path the API accepted it at (api.CanonicalPath), by a key
// holding one of roles.
func checkRequest(v *signing.Verified, req *signing.Request, path string, roles []signing.Role) error {
	if req.Method != "POST" || req.Path != path {
		return fmt.Errorf("%w: envelope is a %s %s", errForged, req.Method, req.Path)
	}
	if !slices.ContainsFunc(roles, v.Key.Has) {
		return fmt.Errorf("%w: key %s lacks the role %v", errForged, v.Key.ID, roles)
	}
	return nil
}

// broadcast verifies a broadcast's envelope (or recalls the verdict) and
// returns its content. id is the broadcast the task claims to be about.
func (ev *envelopeVerifier) broadcast(ctx context.Context, id string, raw []byte) (*verifiedBroadcast, error) {
	d := sha256.Sum256(raw)
	if v, ok := ev.cached(d); ok {
		vb, ok := v.(*verifiedBroadcast)
		if !ok {
			return nil, fmt.Errorf("%w: not a broadcast envelope", errForged)
		}
		if vb.id != id {
			return nil, fmt.Errorf("%w: envelope belongs to broadcast %s", errForged, vb.id)
		}
		if err := ev.stillValid(ctx, vb.keyID); err != nil {
			return nil, err
		}
		return vb, nil
	}
	v, req, err := ev.reverify(ctx, raw, api.PathBroadcasts, signing.RoleBroadcast)
	if err != nil {
		return nil, err
	}
	if got := BroadcastID(v.Key.ID, v.Nonce); got != id {
		return nil, fmt.Errorf("%w: envelope belongs to broadcast %s", errForged, got)
	}
	br, err := api.ParseBroadcastRequest(req.Body, ev.maxTTL)
	if err != nil {
		return nil, fmt.Errorf("%w: body: %v", errForged, err)
	}
	if err := authorize(v.Key, &br.Audience); err != nil {
		return nil, fmt.Errorf("%w: %v", errForged, err)
	}
	vb := ev.verified(id, v, req, br)
	ev.remember(d, vb)
	return vb, nil
}

// broadcastMessage is what broadcast id, requested as br and signed at
// created, sends: the API measures it, the workers send it.
func broadcastMessage(id string, br *api.BroadcastRequest, ttl time.Duration, created time.Time) providers.Message {
	return providers.Message{
		BroadcastID: id,
		Title:       br.Message.Title,
		Body:        br.Message.Body,
		Data:        br.Message.Data,
		TTL:         ttl,
		Priority:    priorityOf(br.Message.Priority),
		CollapseID:  CollapseID(id),
		Expires:     created.Add(ttl),
	}
}

// verified is what a verified broadcast envelope tells.
func (ev *envelopeVerifier) verified(id string, v *signing.Verified, req *signing.Request, br *api.BroadcastRequest) *verifiedBroadcast {
	ttl, _ := br.Message.ParseTTL(ev.maxTTL)
	vb := &verifiedBroadcast{
		id:          id,
		keyID:       v.Key.ID,
		key:         v.Key,
		keyRate:     v.Key.Rate,
		maxAudience: v.Key.MaxAudience,
		digest:      api.Digest(req.Body),
		req:         br,
		msg:         broadcastMessage(id, br, ttl, v.Created),
		created:     v.Created,
		expires:     v.Created.Add(ttl),
	}
	if br.Audience.Tokens != nil {
		vb.tokens = make(map[string]int64, len(br.Audience.Tokens))
		for i, d := range br.Audience.Tokens {
			vb.tokens[member(d)] = int64(i)
		}
	}
	return vb
}

// recallTarget verifies the envelope of a broadcast a recall names. Only
// the recall's own text reaches phones, and the recall is verified on its
// own (fresh, by an admin not revoked); the broadcast's envelope only says
// whom it reached and under which collapse identity. So it must be a
// genuine broadcast of this id, signed by a key of the keyring, but it is
// not refused for its age or for its key's revocation — a broadcast sent
// with a key revoked since is what a recall is for. How old it may be is
// recallable's rule, the same at the API and in the worker
// (docs/ARCHITECTURE.md, "Recalls of old broadcasts").
func (ev *envelopeVerifier) recallTarget(ctx context.Context, id string, raw []byte) (*verifiedBroadcast, error) {
	d := sha256.Sum256(raw)
	if v, ok := ev.cached(d); ok { // verified for delivery: more than enough
		if vb, ok := v.(*verifiedBroadcast); ok && vb.id == id {
			return vb, nil
		}
	}
	rd := sha256.Sum256(append([]byte("recall target\x00"), raw...))
	if v, ok := ev.cached(rd); ok {
		vb, ok := v.(*verifiedBroadcast)
		if !ok || vb.id != id {
			return nil, fmt.Errorf("%w: envelope does not belong to broadcast %s", errForged, id)
		}
		return vb, nil
	}
	var req signing.Request
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, fmt.Errorf("%w: envelope is not JSON", errForged)
	}
	v, err := ev.recorded.VerifyRecorded(ctx, &req)
	if err != nil {
		return nil, forgedIfRefused(err)
	}
	if err := checkRequest(v, &req, api.PathBroadcasts, []signing.Role{signing.RoleBroadcast}); err != nil {
		return nil, err
	}
	if got := BroadcastID(v.Key.ID, v.Nonce); got != id {
		return nil, fmt.Errorf("%w: envelope belongs to broadcast %s", errForged, got)
	}
	br, err := api.ParseBroadcastRequest(req.Body, ev.maxTTL)
	if err != nil {
		return nil, fmt.Errorf("%w: body: %v", errForged, err)
	}
	vb := ev.verified(id, v, &req, br)
	// Remembered apart from delivery verdicts: a digest of other bytes,
	// never found by broadcast.
	ev.remember(rd, vb)
	return vb, nil
}

// recall verifies a recall envelope for broadcast id.
func (ev *envelopeVerifier) recall(ctx context.Context, id string, raw []byte) (*verifiedRecall, error) {
	d := sha256.Sum256(raw)
	if v, ok := ev.cached(d); ok {
		vr, ok := v.(*verifiedRecall)
		if !ok {
			return nil, fmt.Errorf("%w: not a recall envelope", errForged)
		}
		if vr.id != id {
			return nil, fmt.Errorf("%w: recall envelope belongs to broadcast %s", errForged, vr.id)
		}
		if err := ev.stillValid(ctx, vr.adminID); err != nil {
			return nil, err
		}
		return vr, nil
	}
	v, req, err := ev.reverify(ctx, raw, api.RecallPath(id), signing.RoleAdmin)
	if err != nil {
		return nil, err
	}
	rr, err := api.ParseRecallRequest(req.Body)
	if err != nil {
		return nil, fmt.Errorf("%w: body: %v", errForged, err)
	}
	vr := &verifiedRecall{id: id, adminID: v.Key.ID, admin: v.Key, digest: api.Digest(req.Body),
		actionID: ActionID(v.Key.ID, v.Nonce), req: rr, created: v.Created}
	ev.remember(d, vr)
	return vr, nil
}

// stillValid refuses a remembered verdict whose key has been revoked
// since.
func (ev *envelopeVerifier) stillValid(ctx context.Context, keyID string) error {
	if ev.revocations == nil {
		return nil
	}
	revoked, err := ev.revocations.Revoked(ctx, keyID)
	if err != nil {
		return err
	}
	if revoked {
		return fmt.Errorf("%w: %s", errForged, signing.CodeRevokedKey)
	}
	return nil
}

// authorize checks that a key may send to an audience: the topic matches
// one of its patterns, "all" needs the pattern "*", and an explicit list
// fits its audience cap. The size of a topic is checked by the caller,
// which can count it.
func authorize(k *signing.Key, a *api.Audience) error {
	switch a.Kind() {
	case "topic":
		if !k.AllowsTopic(a.Topic) {
			return api.Errorf(api.CodeTopicNotAllowed, "key %s may not send to topic %q", k.ID, a.Topic)
		}
	case "all":
		if !k.AllowsAll() {
			return api.Errorf(api.CodeTopicNotAllowed, "key %s may not send to every device", k.ID)
		}
	case "tokens":
		if len(a.Tokens) > k.MaxAudience {
			return api.Errorf(api.CodeAudienceOverCap, "%d devices exceed key %s's max_audience of %d", len(a.Tokens), k.ID, k.MaxAudience)
		}
	}
	return nil
}

func priorityOf(s string) providers.Priority {
	if strings.EqualFold(s, string(providers.PriorityNormal)) {
		return providers.PriorityNormal
	}
	return providers.PriorityHigh
}
