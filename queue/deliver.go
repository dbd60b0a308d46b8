package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"

	"github.com/pushgate/pushgate/providers"
)

// Ledger outcome letters, as stored (followed by the owning batch's
// sequence).
const (
	outSent      = "s"
	outFailed    = "f"
	outInvalid   = "i"
	outCancelled = "x"
	// outUnknown is a call cancelled while in flight: the provider may have
	// accepted it, so it counts as cancelled but recalls include it.
	outUnknown   = "u"
	outThrottled = "t"
)

// claim results from claimScript: newly claimed, or claimed by this batch
// before (a retry or a re-run after a crash). Anything else is another
// batch's device or already final.
const (
	claimNew = 1
	claimOwn = 2
)

// outcomes collects per-device results of one task for one ledger write.
type outcomes struct {
	pairs    []any // member, letter, member, letter...
	invalid  []string
	retry    []string // tokens to try again after retryAfter
	deferred []string // tokens to send once the rate limit allows
	after    time.Duration
	wait     time.Duration
}

func (o *outcomes) add(member, letter string) { o.pairs = append(o.pairs, member, letter) }

// deliver sends one batch: it verifies the broadcast, keeps only devices
// of its audience, claims them in the ledger, applies the kill-switch and
// the rate limits, sends, records every outcome and re-enqueues only what
// failed transiently or was deferred by a rate limit. It never sleeps on a
// provider.
func (w *Worker) deliver(ctx context.Context, t *asynq.Task) error {
	p, err := decodeBatch(t.Payload())
	if err != nil {
		w.securityEvent(ctx, TypeDeliver, "", err)
		return fmt.Errorf("%w: %v", asynq.SkipRetry, err)
	}
	vb, err := w.loadBroadcast(ctx, p.Broadcast)
	if err != nil {
		return w.refuseOrRetry(ctx, TypeDeliver, p.Broadcast, err)
	}
	sender := w.senders[p.Platform]
	if sender == nil {
		return fmt.Errorf("%w: no sender configured for platform %s", asynq.SkipRetry, p.Platform)
	}

	members := p.members()
	inAudience, err := w.inAudience(ctx, vb, members)
	if err != nil {
		return err
	}
	claims, err := w.claim(ctx, w.keys.Ledger(vb.id), w.keys.Broadcast(vb.id), p.Seq, "targeted", "skipped_duplicate", members)
	if err != nil {
		return err
	}
	var out outcomes
	var fresh, send []string // members newly claimed; members to send to
	foreign := 0
	for i, m := range members {
		if claims[i] != claimNew && claims[i] != claimOwn {
			continue // another batch's device, or already done by this one
		}
		if !inAudience[i] {
			// A forged task, or a device removed since planning: never
			// send to it. Recording it as gone lets a genuine broadcast
			// complete.
			foreign++
			out.add(m, outInvalid)
			continue
		}
		if claims[i] == claimNew {
			fresh = append(fresh, m)
		}
		send = append(send, m)
	}
	if foreign > 0 {
		w.logger.Warn("batch names devices outside the audience; not sending to them",
			"broadcast_id", vb.id, "devices", foreign)
	}

	killedBy, killed := w.ks.Killed(vb.scope())
	if killed {
		for _, m := range send {
			out.add(m, outCancelled)
		}
		return w.finishBatch(ctx, vb, p, &out, killedBy)
	}

	// The per-device limit counts a device once per broadcast: when it is
	// first claimed, not when a retry or a deferral comes back.
	if len(fresh) > 0 {
		allowed, err := w.limits.allowDevices(ctx, fresh)
		if err != nil {
			return err
		}
		throttled := map[string]bool{}
		for i, m := range fresh {
			if !allowed[i] {
				throttled[m] = true
				out.add(m, outThrottled)
			}
		}
		if len(throttled) > 0 {
			kept := send[:0]
			for _, m := range send {
				if !throttled[m] {
					kept = append(kept, m)
				}
			}
			send = kept
		}
	}

	if len(send) > 0 {
		n, wait, err := w.limits.take(ctx, p.Platform, vb.keyID, vb.keyRate, len(send))
		if err != nil {
			return err
		}
		for _, m := range send[n:] {
			out.deferred = append(out.deferred, tokenOf(m))
		}
		out.wait = wait
		send = send[:n]
	}

	f := w.ks.begin(ctx, vb.scope())
	defer f.end()
	if len(send) > 0 {
		tokens := make([]string, len(send))
		for i, m := range send {
			tokens[i] = tokenOf(m)
		}
		results := sender.Send(f.ctx, f, &vb.msg, tokens)
		w.classify(p, send, results, f.killed() != "", &out)
	}
	return w.finishBatch(ctx, vb, p, &out, f.killed())
}

// classify turns provider results into ledger outcomes and retries.
func (w *Worker) classify(p *batchPayload, members []string, results []providers.Result, killed bool, out *outcomes) {
	for i, r := range results {
		m := members[i]
		if w.metrics != nil {
			w.metrics.deliveries.WithLabelValues(string(p.Platform), r.Class.String()).Inc()
			if r.Latency > 0 {
				w.metrics.latency.WithLabelValues(string(p.Platform)).Observe(r.Latency.Seconds())
			}
		}
		switch r.Class {
		case providers.Sent:
			out.add(m, outSent)
		case providers.InvalidToken:
			out.add(m, outInvalid)
			out.invalid = append(out.invalid, m)
		case providers.Permanent:
			out.add(m, outFailed)
		case providers.Retryable:
			out.retry = append(out.retry, tokenOf(m))
			out.after = max(out.after, r.RetryAfter)
		case providers.Cancelled:
			if killed {
				if r.Latency > 0 {
					out.add(m, outUnknown)
				} else {
					out.add(m, outCancelled)
				}
			} else {
				// Shutdown or timeout, not a kill: the outcome is unknown,
				// so try again; the collapse identity hides a re-send.
				out.retry = append(out.retry, tokenOf(m))
			}
		default:
			out.add(m, outFailed)
		}
	}
}

// finishBatch prunes invalid tokens, enqueues follow-up tasks, then
// records outcomes — last, because recording may complete the broadcast,
// and a crash before it re-runs the batch rather than losing devices.
func (w *Worker) finishBatch(ctx context.Context, vb *verifiedBroadcast, p *batchPayload, out *outcomes, killedBy string) error {
	if killedBy != "" {
		for _, tok := range append(out.retry, out.deferred...) {
			out.add(string(p.Platform)+":"+tok, outCancelled)
		}
		out.retry, out.deferred = nil, nil
	}
	retried, err := w.followUp(ctx, TypeDeliver, QueueDeliver, p, out)
	if err != nil {
		return err
	}
	if retried > 0 {
		w.rdb.HIncrBy(ctx, w.keys.Broadcast(vb.id), "retries", int64(retried))
	}
	if n := len(out.deferred); n > 0 {
		w.rdb.HIncrBy(ctx, w.keys.Broadcast(vb.id), "rate_limited_retries", int64(n))
	}
	if len(out.pairs) > 0 || killedBy != "" {
		args := append([]any{p.Seq, w.now().UnixMilli(), killedBy}, out.pairs...)
		st, err := recordScript.Run(ctx, w.rdb,
			[]string{w.keys.Ledger(vb.id), w.keys.Broadcast(vb.id), w.keys.Timeline(vb.id)}, args...).Text()
		if err != nil {
			return fmt.Errorf("record outcomes: %w", err)
		}
		w.metrics.transition(st)
	}
	return nil
}

// followUp prunes a batch's invalid tokens and enqueues its follow-ups:
// the retryable devices after max(Retry-After, backoff) — or, once their
// attempts are spent, records them failed — and the rate-limited ones
// after the limiter's wait. It returns how many devices it retries.
func (w *Worker) followUp(ctx context.Context, typ, queue string, p *batchPayload, out *outcomes) (int, error) {
	if len(out.invalid) > 0 {
		if _, err := w.registry.Delete(ctx, out.invalid...); err != nil {
			w.logger.Warn("prune invalid tokens", "broadcast_id", p.Broadcast, "err", err)
		}
	}
	retried := 0
	if len(out.retry) > 0 {
		if p.Attempt+1 >= w.policy.MaxAttempts {
			for _, tok := range out.retry {
				out.add(string(p.Platform)+":"+tok, outFailed)
			}
		} else {
			next := &batchPayload{Broadcast: p.Broadcast, Seq: p.Seq, Gen: p.Gen + 1, Attempt: p.Attempt + 1,
				Platform: p.Platform, Tokens: out.retry}
			if err := w.enqueueBatch(ctx, typ, queue, next, max(out.after, w.backoff(p.Attempt))); err != nil {
				return 0, err
			}
			retried = len(out.retry)
		}
	}
	if len(out.deferred) > 0 {
		next := &batchPayload{Broadcast: p.Broadcast, Seq: p.Seq, Gen: p.Gen + 1, Attempt: p.Attempt,
			Platform: p.Platform, Tokens: out.deferred}
		if err := w.enqueueBatch(ctx, typ, queue, next, out.wait); err != nil {
			return 0, err
		}
	}
	return retried, nil
}

// enqueueBatch schedules a follow-up batch after at least delay.
func (w *Worker) enqueueBatch(ctx context.Context, typ, queue string, p *batchPayload, delay time.Duration) error {
	payload, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode batch: %w", err)
	}
	opts := []asynq.Option{asynq.Queue(queue), asynq.TaskID(batchTaskID(typ, p)), asynq.MaxRetry(w.taskRetries)}
	if delay > 0 {
		// asynq keeps due times in whole seconds and truncates them; round
		// up so a provider's Retry-After is never cut short.
		at := w.now().Add(delay)
		if frac := at.Sub(at.Truncate(time.Second)); frac > 0 {
			at = at.Add(time.Second - frac)
		}
		opts = append(opts, asynq.ProcessAt(at))
	}
	return w.enqueue(ctx, typ, payload, opts...)
}

// backoff is the delay before retry attempt+1: exponential from RetryBase,
// capped at RetryMax, with up to 20% jitter so retries of many devices
// spread out.
func (w *Worker) backoff(attempt int) time.Duration {
	d := w.policy.RetryBase << min(attempt, 20)
	if d <= 0 || d > w.policy.RetryMax {
		d = w.policy.RetryMax
	}
	return d + rand.N(d/5+1)
}

// inAudience reports, per member, whether it belongs to the broadcast's
// audience as its verified envelope defines it.
func (w *Worker) inAudience(ctx context.Context, vb *verifiedBroadcast, members []string) ([]bool, error) {
	if vb.tokens != nil {
		return containsAll(vb.tokens, members), nil
	}
	return w.registry.contains(ctx, vb.req.Audience.Topic, members)
}

// claim runs claimScript for a batch.
func (w *Worker) claim(ctx context.Context, ledger, record string, seq int64, newField, dupField string, members []string) ([]int64, error) {
	if len(members) == 0 {
		return nil, nil
	}
	args := make([]any, 0, 4+len(members))
	args = append(args, seq, newField, dupField, int64(recordRetention/time.Second))
	for _, m := range members {
		args = append(args, m)
	}
	res, err := claimScript.Run(ctx, w.rdb, []string{ledger, record}, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("claim devices: %w", err)
	}
	if len(res) != len(members) {
		return nil, errors.New("claim devices: short reply")
	}
	return res, nil
}

func tokenOf(member string) string {
	for i := 0; i < len(member); i++ {
		if member[i] == ':' {
			return member[i+1:]
		}
	}
	return member
}
