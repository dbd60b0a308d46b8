package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/hibiken/asynq"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/signing/appsig"
)

// Ledger outcome letters, as stored (followed by the owning batch's
// sequence).
const (
	outSent      = "s"
	outFailed    = "f"
	outInvalid   = "i"
	outCancelled = "x"
	// outUnknown is a device whose outcome is unknown: its call was cut
	// short in flight, or a re-run found it claimed by an earlier run that
	// recorded nothing. The provider may have accepted it: it counts as
	// uncertain, and recalls include it.
	outUnknown   = "u"
	outThrottled = "t"
	// outHeld is a device not sent because the key's reach budget was
	// spent.
	outHeld = "h"
	// outUntried is not an outcome: a device handed on to a follow-up
	// batch without a call (deferred by a rate limit or a provider pause,
	// or held back by a stale view).
	outUntried = "d"
	// outRetried is not an outcome either: a device handed on to a retry
	// after a transient failure, counted in retries.
	outRetried = "r"
	// outRateLimited is outUntried for a device a rate limit deferred:
	// the first such deferral of a device counts it in
	// rate_limited_retries.
	outRateLimited = outUntried + ":rate"
	// outExpired is a device not reached before its broadcast expired:
	// its sends failed transiently until no retry was due in time, or its
	// batch ran after the expiry. Permanent errors are outFailed.
	outExpired = "e"
)

// claim results from claimScript: newly claimed, or claimed by this batch
// before (a retry or a re-run after a crash). Anything else is another
// batch's device or already final.
const (
	claimNew     = 1
	claimOwn     = 2
	claimCapped  = 4
	claimUntried = 5 // claimed by this batch before, handed on untried
)

// outcomes collects what one task learned about the devices of its batch,
// by their index in the batch, for one ledger write.
type outcomes struct {
	final   []final // devices with a final outcome
	invalid []int   // devices the provider says are gone: pruned from the registry
	retry   []int   // devices to try again after max(after, backoff)
	// refused are the devices of retry the provider answered with a
	// refusal (a 429 or 5xx): certainly not delivered, unlike a call cut
	// short by a timeout or a shutdown.
	refused  []int
	deferred []int // devices to send once the rate limit allows, after wait
	// stalled are devices not tried because the worker's view of the
	// control log went stale mid-batch: tried again, same attempt.
	stalled []int
	// paused are devices not tried because their provider is paused:
	// tried again at pauseUntil, same attempt (docs/ARCHITECTURE.md,
	// "Provider pauses").
	paused     []int
	pauseUntil time.Time
	after      time.Duration
	wait       time.Duration
	// limitedBy names the rate limit that deferred devices, "" when none
	// did.
	limitedBy string
	// why is the reason code ("<platform>/<code>", providers.Result.Code)
	// of a device's last refusal, by index: what a failure, an invalid
	// token, a retry or an expiry after retries is counted under.
	why map[int]string
}

// final is a device's final outcome: its index in the batch and the
// ledger letter.
type final struct {
	i      int
	letter string
}

func (o *outcomes) add(i int, letter string) { o.final = append(o.final, final{i, letter}) }

// addWhy records a final outcome with the reason of the device's last
// refusal, when it has one.
func (o *outcomes) addWhy(i int, letter string) {
	if why := o.why[i]; why != "" {
		letter += ":" + why
	}
	o.add(i, letter)
}

// refusal remembers the reason of device i's refusal.
func (o *outcomes) refusal(i int, platform providers.Platform, r providers.Result) {
	if o.why == nil {
		o.why = map[int]string{}
	}
	o.why[i] = string(platform) + "/" + r.Code()
}

// deliver sends one batch: it verifies the broadcast, keeps only devices
// of its audience, claims them in the ledger, applies the kill-switch and
// the rate limits, sends, records every outcome and re-enqueues only what
// failed transiently or was deferred by a rate limit. It never sleeps on a
// provider.
func (w *Worker) deliver(ctx context.Context, t *asynq.Task) error {
	if err := w.fresh(); err != nil {
		return err
	}
	b, err := decodeBatch(t.Payload())
	if err != nil {
		w.securityEvent(ctx, TypeDeliver, "", err)
		return fmt.Errorf("%w: %v", asynq.SkipRetry, err)
	}
	vb, err := w.loadBroadcast(ctx, b.Broadcast)
	if err != nil {
		return w.refuseOrRetry(ctx, TypeDeliver, b.Broadcast, err)
	}
	sender := w.senders[b.Platform]
	if sender == nil {
		return fmt.Errorf("%w: no sender configured for platform %s", asynq.SkipRetry, b.Platform)
	}

	inAudience, err := w.inAudience(ctx, vb, b)
	if err != nil {
		return err
	}
	cap, _, err := w.deliveryCap(ctx, TypeDeliver, vb)
	if err != nil {
		return w.refuseOrRetry(ctx, TypeDeliver, vb.id, err)
	}
	claims, err := w.store.claim(ctx, vb.id, ledgerDelivery, b.Seq, cap, b.members, b.pos)
	if err != nil {
		return err
	}
	var out outcomes
	var fresh, send []int    // newly claimed devices; devices to send to
	unsent := map[int]bool{} // claimed devices no earlier run sent
	foreign := 0
	for i := range b.members {
		if claims[i] != claimNew && claims[i] != claimOwn && claims[i] != claimUntried {
			continue // another batch's device, or already done by this one
		}
		if claims[i] != claimOwn {
			unsent[i] = true
		}
		if !inAudience[i] {
			// A forged task, or a device removed since planning: never
			// send to it. Recording it as gone lets a genuine broadcast
			// complete.
			foreign++
			out.add(i, outInvalid)
			continue
		}
		if claims[i] == claimNew {
			fresh = append(fresh, i)
		}
		send = append(send, i)
	}
	if foreign > 0 {
		w.logger.Warn("batch names devices outside the audience; not sending to them",
			"broadcast_id", vb.id, "devices", foreign)
	}

	if killedBy, killed := w.ks.Killed(vb.scope()); killed {
		// A device this batch claimed before without handing it on untried
		// (a run that crashed, froze or lost Redis after its calls) may
		// have been reached: it counts as uncertain, which a recall
		// includes, not as cancelled. So does every device when Redis
		// restarted since delivery began: an earlier run's claim of it, or
		// the outcome of its call, may be what Redis lost.
		restarted, err := w.store.uncertain(ctx, vb.id)
		if err != nil {
			return err
		}
		for _, i := range send {
			if unsent[i] && !restarted {
				out.add(i, outCancelled)
			} else {
				out.add(i, outUnknown)
			}
		}
		return w.finishBatch(ctx, vb, b, &out, killedBy)
	}

	// A batch that runs after its broadcast expired (a retry, or a batch
	// delayed by a backlog or a rate limit) sends nothing: the message is
	// no longer worth showing. Limits and budgets are left untouched.
	if !w.now().Before(vb.expires) {
		w.expireDevices(vb, b, send, &out)
		return w.finishBatch(ctx, vb, b, &out, "")
	}

	// The per-device limit counts a device once per broadcast: when it is
	// first claimed, not when a retry or a deferral comes back.
	if len(fresh) > 0 {
		allowed, err := w.limits.allowDevices(ctx, b.pick(fresh))
		if err != nil {
			return err
		}
		throttled := make(map[int]bool)
		for j, i := range fresh {
			if !allowed[j] {
				throttled[i] = true
				out.add(i, outThrottled)
			}
		}
		if len(throttled) > 0 {
			kept := send[:0]
			for _, i := range send {
				if !throttled[i] {
					kept = append(kept, i)
				}
			}
			send = kept
		}
	}

	// The key's reach budget is taken device by device as they go out;
	// what is beyond it is held, never sent.
	if len(send) > 0 {
		allowed, err := w.limits.takeReach(ctx, vb.key, b.pick(send))
		if err != nil {
			return err
		}
		kept := send[:0]
		for j, i := range send {
			if allowed[j] {
				kept = append(kept, i)
			} else {
				out.add(i, outHeld)
			}
		}
		if held := len(send) - len(kept); held > 0 {
			w.logger.Warn("reach budget spent: devices held", "broadcast_id", vb.id, "key_id", vb.keyID, "devices", held)
		}
		send = kept
	}

	// A paused provider is not called, and its rate is not spent: the
	// batch waits, untried, for the pause to end.
	if len(send) > 0 {
		until, paused, err := w.pauses.sync(ctx, b.Platform)
		if err != nil {
			return err
		}
		if paused {
			out.paused, out.pauseUntil = send, until
			send = nil
		}
	}

	if len(send) > 0 {
		n, wait, by, err := w.limits.take(ctx, b.Platform, vb.keyID, vb.keyRate, len(send))
		if err != nil {
			return err
		}
		out.deferred, out.wait, out.limitedBy = send[n:], wait, by
		send = send[:n]
	}

	f := w.ks.begin(ctx, vb.scope())
	defer f.end()
	if len(send) > 0 {
		// vb.msg carries the broadcast's expiry: a retry sends the TTL
		// left, not the TTL signed.
		g := w.pauses.gate(f, b.Platform)
		msg := vb.msg
		msg.Seal = w.appSigning.seal(appsig.KindAlert, vb.req.Audience)
		results := sender.Send(f.ctx, g, &msg, b.tokens(send))
		w.health.observe(ctx, b.Platform, results)
		w.classify(b.Platform, send, results, f.killed() != "", f.stalled(), g.stopped.Load(), &out)
		w.afterSend(ctx, g, &out)
	}
	return w.finishBatch(ctx, vb, b, &out, f.killed())
}

// expireDevices records the devices at indices expired, unsent.
func (w *Worker) expireDevices(vb *verifiedBroadcast, b *batch, indices []int, out *outcomes) {
	for _, i := range indices {
		out.add(i, outExpired)
	}
	if len(indices) > 0 {
		w.metrics.expired(b.Platform, len(indices))
		w.logger.Warn("broadcast expired: devices not sent", "broadcast_id", vb.id, "platform", b.Platform,
			"devices", len(indices))
	}
}

// classify turns provider results for the devices sent (by index) into
// final outcomes and retries. killed, stalled and paused say why the gate
// refused calls, if it did.
func (w *Worker) classify(platform providers.Platform, sent []int, results []providers.Result, killed, stalled, paused bool, out *outcomes) {
	for j, r := range results {
		i := sent[j]
		if w.metrics != nil {
			w.metrics.deliveries.WithLabelValues(string(platform), r.Class.String()).Inc()
			if r.Latency > 0 {
				w.metrics.latency.WithLabelValues(string(platform)).Observe(r.Latency.Seconds())
			}
		}
		if r.Class != providers.Sent && r.Class != providers.Cancelled {
			out.refusal(i, platform, r)
			if w.metrics != nil {
				w.metrics.refusals.WithLabelValues(string(platform), r.Class.String(), r.Code()).Inc()
			}
		}
		switch r.Class {
		case providers.Sent:
			out.add(i, outSent)
		case providers.InvalidToken:
			out.addWhy(i, outInvalid)
			out.invalid = append(out.invalid, i)
		case providers.Permanent:
			out.addWhy(i, outFailed)
		case providers.Retryable:
			out.retry = append(out.retry, i)
			out.refused = append(out.refused, i)
			out.after = max(out.after, r.RetryAfter)
		case providers.Cancelled:
			switch {
			case killed && r.Latency > 0:
				out.add(i, outUnknown)
			case killed:
				out.add(i, outCancelled)
			case paused && r.Latency == 0:
				out.paused = append(out.paused, i)
			case stalled && r.Latency == 0:
				out.stalled = append(out.stalled, i)
			default:
				// Shutdown or timeout, not a kill: the outcome is unknown,
				// so try again; the collapse identity hides a re-send.
				out.retry = append(out.retry, i)
			}
		default:
			out.addWhy(i, outFailed)
		}
	}
}

// finishBatch prunes invalid tokens, enqueues follow-up tasks, then
// records outcomes — last, because recording may complete the broadcast,
// and a crash before it re-runs the batch rather than losing devices.
func (w *Worker) finishBatch(ctx context.Context, vb *verifiedBroadcast, b *batch, out *outcomes, killedBy string) error {
	if killedBy != "" {
		// A device to retry whose call was cut short (a timeout, a
		// shutdown) may have been delivered: uncertain. One the provider
		// refused, or that was never tried, is cancelled.
		refused := make(map[int]bool, len(out.refused))
		for _, i := range out.refused {
			refused[i] = true
		}
		for _, i := range out.retry {
			if refused[i] {
				out.add(i, outCancelled)
			} else {
				out.add(i, outUnknown)
			}
		}
		for _, i := range slices.Concat(out.deferred, out.stalled, out.paused) {
			out.add(i, outCancelled)
		}
		out.retry, out.refused, out.deferred, out.stalled, out.paused = nil, nil, nil, nil, nil
	}
	until := vb.expires
	if bound := vb.created.Add(w.policy.RetryFor); bound.Before(until) {
		until = bound
	}
	retried, err := w.followUp(ctx, TypeDeliver, QueueDeliver, b, out, until)
	if err != nil {
		return err
	}
	if err := w.notePaused(ctx, vb.id, b.Platform, out); err != nil {
		return err
	}
	// Devices handed on untried, or refused by the provider, are marked so
	// in the ledger: their follow-up knows no call delivered them.
	fs := out.final
	// Retried devices count in retries only while this batch still holds
	// them (the record script checks, before a refused one is marked
	// untried below): a batch whose work a copy did counts nothing.
	if retried > 0 {
		for _, i := range out.retry {
			letter := outRetried
			if why := out.why[i]; why != "" {
				letter += ":" + why
			}
			fs = append(fs, final{i, letter})
		}
	}
	untried := slices.Concat(out.stalled, out.paused)
	if retried > 0 {
		untried = append(untried, out.refused...)
	}
	for _, i := range untried {
		fs = append(fs, final{i, outUntried})
	}
	for _, i := range out.deferred {
		fs = append(fs, final{i, outRateLimited})
	}
	c := counts{limitedBy: out.limitedBy}
	st, err := w.store.recordOutcomes(ctx, vb.id, b.Seq, w.now(), killedBy, b.triples(fs), c)
	if err != nil {
		return err
	}
	w.noteTransition(ctx, vb.id, st)
	return nil
}

// followUp prunes a batch's invalid tokens and enqueues its follow-ups:
// the retryable devices after max(Retry-After, backoff) — or, when that
// retry would not be due before until, records them expired — the
// rate-limited ones after the limiter's wait, and those of a paused
// provider at the pause's end. It returns how many devices it retries.
func (w *Worker) followUp(ctx context.Context, typ, queue string, b *batch, out *outcomes, until time.Time) (int, error) {
	if len(out.invalid) > 0 {
		if _, err := w.registry.Delete(ctx, b.devices(out.invalid)...); err != nil {
			w.logger.Warn("prune invalid tokens", "broadcast_id", b.Broadcast, "err", err)
		}
	}
	if len(out.retry)+len(out.deferred)+len(out.stalled)+len(out.paused) > 0 && w.takenOver(ctx) {
		// A reaper resumed this batch elsewhere while it ran: what was not
		// sent here is the copy's to send, retry and count — calls that
		// were in flight when this worker froze and failed when it woke
		// are no retries of the broadcast (docs/ARCHITECTURE.md, "Dead
		// workers").
		return 0, nil
	}
	retried := 0
	if len(out.retry) > 0 {
		// A provider's Retry-After is a lower bound on the backoff.
		at := dueAt(w.now(), max(out.after, w.backoff(b.Attempt)))
		if !at.Before(until) {
			for _, i := range out.retry {
				out.addWhy(i, outExpired)
			}
			w.metrics.expired(b.Platform, len(out.retry))
			w.logger.Warn("retries ran out of time: devices expired", "broadcast_id", b.Broadcast,
				"platform", b.Platform, "devices", len(out.retry), "attempts", b.Attempt+1)
		} else {
			if err := w.enqueueBatchAt(ctx, typ, queue, b.next(b.Attempt+1, out.retry), at); err != nil {
				return 0, err
			}
			retried = len(out.retry)
		}
	}
	if len(out.deferred) > 0 {
		if err := w.enqueueBatch(ctx, typ, queue, b.next(b.Attempt, out.deferred), out.wait); err != nil {
			return 0, err
		}
	}
	// Devices stalled by a view of the control log that was not fresh go
	// on in a second (a batch taken over returned above).
	if len(out.stalled) > 0 {
		if err := w.enqueueBatch(ctx, typ, queue, b.next(b.Attempt, out.stalled), time.Second); err != nil {
			return 0, err
		}
	}
	if len(out.paused) > 0 {
		if err := w.enqueueBatch(ctx, typ, queue, b.next(b.Attempt, out.paused), max(out.pauseUntil.Sub(w.now()), 0)); err != nil {
			return 0, err
		}
	}
	return retried, nil
}

// enqueueBatch schedules a follow-up batch after at least delay.
func (w *Worker) enqueueBatch(ctx context.Context, typ, queue string, p *batchPayload, delay time.Duration) error {
	var at time.Time
	if delay > 0 {
		at = dueAt(w.now(), delay)
	}
	return w.enqueueBatchAt(ctx, typ, queue, p, at)
}

// enqueueBatchAt schedules a follow-up batch due at at (a whole second,
// from dueAt), or at once when at is zero.
func (w *Worker) enqueueBatchAt(ctx context.Context, typ, queue string, p *batchPayload, at time.Time) error {
	payload, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode batch: %w", err)
	}
	opts := []asynq.Option{asynq.Queue(queue), asynq.TaskID(batchTaskID(typ, p)), asynq.MaxRetry(w.taskRetries)}
	if !at.IsZero() {
		opts = append(opts, asynq.ProcessAt(at))
	}
	return w.enqueue(ctx, typ, payload, opts...)
}

// dueAt is when a task delayed by delay from now is due. asynq keeps due
// times in whole seconds and truncates them: rounding up means a
// provider's Retry-After is never cut short, and that the time compared
// with a broadcast's expiry is the one asynq will keep.
func dueAt(now time.Time, delay time.Duration) time.Time {
	at := now.Add(delay)
	if frac := at.Sub(at.Truncate(time.Second)); frac > 0 {
		at = at.Add(time.Second - frac)
	}
	return at
}

// backoff is the delay before retry attempt+1: RetryBase doubled per
// attempt and capped at RetryMax, less a random share of up to a fifth of
// it (proportional jitter), so that retries of many batches spread out
// and none waits longer than RetryMax. The caller takes a provider's
// Retry-After as a lower bound on it.
func (w *Worker) backoff(attempt int) time.Duration {
	d, limit := w.policy.RetryBase, w.policy.RetryMax
	for range attempt {
		if d >= limit/2 {
			d = limit
			break
		}
		d *= 2
	}
	d = min(d, limit)
	return d - rand.N(d/5+1)
}

// inAudience reports, per device of the batch, whether it belongs to the
// broadcast's audience as its verified envelope defines it, and sets the
// batch's audience positions (device numbers for a topic, indices into
// the signed list for tokens). A device of a tokens audience must also
// still be in the signing key's scope: registered, and subscribed to a
// topic the key may send to.
func (w *Worker) inAudience(ctx context.Context, vb *verifiedBroadcast, b *batch) ([]bool, error) {
	if vb.tokens == nil {
		in, nums, err := w.registry.contains(ctx, vb.req.Audience.Topic, b.members)
		b.pos = nums
		return in, err
	}
	out := make([]bool, len(b.members))
	b.pos = make([]int64, len(b.members))
	listed := make([]int, 0, len(b.members))
	for i, m := range b.members {
		b.pos[i] = -1
		if at, ok := vb.tokens[m]; ok {
			listed = append(listed, i)
			b.pos[i] = at
		}
	}
	scoped, err := w.registry.inScope(ctx, vb.key, b.devices(listed))
	if err != nil {
		return nil, err
	}
	for j, i := range listed {
		out[i] = scoped[j]
	}
	return out, nil
}

// errUnapproved marks a task for a broadcast that needs approvals it does
// not have, as this process verifies them: it was enqueued by someone who
// can write to the queue. Refused, counted and never retried.
var errUnapproved = errors.New("the broadcast needs approvals it does not have")

// deliveryCap is the most devices a broadcast's ledger may hold: its key's
// max_audience, and without verified approvals its key's approval
// threshold. A broadcast that may not be sent at all without approvals
// (to all devices, or more listed tokens than the threshold) is refused.
// approved reports whether the cap is max_audience because approvals, or
// no need for them, allow it.
func (w *Worker) deliveryCap(ctx context.Context, task string, vb *verifiedBroadcast) (cap int, approved bool, err error) {
	cap = vb.maxAudience
	t := w.approvalThreshold(vb.key)
	kind := vb.req.Audience.Kind()
	if kind != api.AudienceAll && t == 0 {
		return cap, true, nil
	}
	ok, err := w.approved(ctx, task, vb)
	if err != nil || ok {
		return cap, ok, err
	}
	if kind == api.AudienceAll || kind == api.AudienceTokens && len(vb.tokens) > t {
		return 0, false, fmt.Errorf("%w: broadcast %s", errUnapproved, vb.id)
	}
	return min(cap, t), false, nil
}
