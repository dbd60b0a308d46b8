package providers

import (
	"context"
	"errors"
	"io"
	"net/http"
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
	c := &commitment{gate: b.gate}
	start := b.now()
	r := b.call(context.WithValue(ctx, commitKey{}, c), token)
	commits, refused := c.leave()
	if refused && commits == 0 {
		// The gate stopped the request before its body was sent: the
		// provider never saw it whole, whatever the SDK made of the reset.
		b.gate.Leave(commits)
		return Result{Class: Cancelled, Reason: "gate closed before the request was sent"}
	}
	r.Latency = b.now().Sub(start)
	// Observed before Leave, so that a gate that closes on this answer is
	// closed before anyone waiting for the call to leave moves on.
	if o, ok := b.gate.(Observer); ok {
		o.Observe(r)
	}
	b.gate.Leave(commits)
	return r
}

// commitKey is the context key of a call's *commitment.
type commitKey struct{}

// commitment asks the gate to commit each attempt of one call, from the
// transport's goroutine that writes the request body. Once the call has
// left, no further attempt may commit: an HTTP/2 transport may still be
// writing a request whose caller gave up, and that request must not
// complete.
type commitment struct {
	gate Gate

	mu      sync.Mutex
	left    bool
	commits int
	refused bool
}

func (c *commitment) commit() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.left || !c.gate.Commit() {
		c.refused = true
		return false
	}
	c.commits++
	return true
}

func (c *commitment) leave() (commits int, refused bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.left = true
	return c.commits, c.refused
}

// errNotCommitted fails a request body the gate refused to commit.
var errNotCommitted = errors.New("request stopped by the gate before it was sent")

// gateBody wraps a request body so that its first read asks the call's
// commitment; a refusal fails the read, and the transport resets the
// stream without completing the request.
func gateBody(req *http.Request) {
	c, _ := req.Context().Value(commitKey{}).(*commitment)
	if c == nil || req.Body == nil || req.Body == http.NoBody {
		return
	}
	req.Body = &gatedBody{ReadCloser: req.Body, c: c}
	if get := req.GetBody; get != nil {
		// A transport retrying the request asks for a new body: that
		// attempt must commit too.
		req.GetBody = func() (io.ReadCloser, error) {
			rc, err := get()
			if err != nil {
				return nil, err
			}
			return &gatedBody{ReadCloser: rc, c: c}, nil
		}
	}
}

type gatedBody struct {
	io.ReadCloser
	c         *commitment
	committed bool
}

func (b *gatedBody) Read(p []byte) (int, error) {
	if !b.committed {
		if !b.c.commit() {
			return 0, errNotCommitted
		}
		b.committed = true
	}
	return b.ReadCloser.Read(p)
}

// messageRefused starts the reason of a message refused before any call
// because a provider would refuse it (CodeMessage).
const messageRefused = "message refused: "

// refuseAll returns the same refusal for every token: used when the
// message itself cannot be sent, which is known before any call.
func refuseAll(n int, reason string) []Result {
	results := make([]Result, n)
	for i := range results {
		results[i] = Result{Class: Permanent, Reason: messageRefused + reason}
	}
	return results
}
