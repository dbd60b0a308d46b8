package providers

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// batch is one Send: a bounded pool of goroutines that each take the next
// device, ask the gate, call the provider and record the result.
type batch struct {
	gate        Gate
	concurrency int
	now         func() time.Time
	// refuse returns a result without calling the provider when the device
	// cannot be delivered to; ok is false when the call may be made.
	refuse func(token string) (r Result, ok bool)
	// call makes one provider call. It must return when ctx is done.
	call func(ctx context.Context, token string) Result
}

// run sends to every token and returns one result per token, in order. It
// returns only after every goroutine it started has returned.
func (b *batch) run(ctx context.Context, tokens []string) []Result {
	results := make([]Result, len(tokens))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(b.concurrency, len(tokens)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(tokens) {
					return
				}
				results[i] = b.one(ctx, tokens[i])
			}
		})
	}
	wg.Wait()
	return results
}

// one delivers to one device. The context and the gate are checked right
// before the call, not once per batch, so that a kill-switch stops a batch
// between any two calls.
func (b *batch) one(ctx context.Context, token string) Result {
	if b.refuse != nil {
		if r, ok := b.refuse(token); ok {
			return r
		}
	}
	if ctx.Err() != nil {
		return Result{Class: Cancelled, Reason: "context done before the call"}
	}
	if !b.gate.Enter() {
		return Result{Class: Cancelled, Reason: "gate closed"}
	}
	start := b.now()
	r := b.call(ctx, token)
	b.gate.Leave()
	r.Latency = b.now().Sub(start)
	return r
}

// refuseAll returns the same refusal for every token: used when the
// message itself cannot be sent, which is known before any call.
func refuseAll(n int, reason string) []Result {
	results := make([]Result, n)
	for i := range results {
		results[i] = Result{Class: Permanent, Reason: reason}
	}
	return results
}
