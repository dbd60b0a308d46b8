package gateway_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/gateway/gatewaytest"
	"github.com/pushgate/pushgate/queue"
)

// stallHook holds the first command that creates a broadcast's record
// until release is closed, and closes reached when it gets there: a
// submission stopped between claiming its idempotency key and creating
// its broadcast.
type stallHook struct {
	stalled          atomic.Bool
	reached, release chan struct{}
}

func (h *stallHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *stallHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *stallHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		// Only the first such command stalls; others pass at once.
		if createsRecord(cmd) && h.stalled.CompareAndSwap(false, true) {
			close(h.reached)
			<-h.release
		}
		return next(ctx, cmd)
	}
}

// createsRecord reports whether cmd may create a broadcast's record: a
// write or a script on the keys of one broadcast ({bc:<id>}).
func createsRecord(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hsetnx", "evalsha", "eval":
	default:
		return false
	}
	for _, a := range cmd.Args() {
		if s, ok := a.(string); ok && strings.Contains(s, ":{bc:") {
			return true
		}
	}
	return false
}

// TestRepeatDuringSubmissionIsNotASecondBroadcast repeats a submission,
// same idempotency key and body, while the first is between claiming the
// key and creating its broadcast. The repeat must not take the key over
// and create a second broadcast (two sends of one alert): it is told to
// repeat in a moment, and then gets the first broadcast.
func TestRepeatDuringSubmissionIsNotASecondBroadcast(t *testing.T) {
	env := gatewaytest.Start(t)
	register(t, env, "citizens", 3)
	hook := &stallHook{reached: make(chan struct{}), release: make(chan struct{})}
	env.Redis.AddHook(hook)
	released := false
	defer func() {
		if !released {
			close(hook.release)
		}
	}()
	body := `{"idempotency_key":"siren-1","audience":{"topic":"citizens"},"message":{"title":"Siren test","body":"b"}}`

	first := make(chan response, 1)
	go func() { first <- sendQuiet(env, gatewaytest.Sender, body) }()
	select {
	case <-hook.reached:
	case <-time.After(time.Minute):
		t.Fatal("hung: the first submission never reached the creation of its broadcast")
	}

	repeat := call(t, env, gatewaytest.Sender, "POST", api.PathBroadcasts, body)
	if repeat.status != http.StatusConflict || repeat.problem(t).Code != api.CodeIdempotencyConflict || repeat.header.Get("Retry-After") == "" {
		t.Errorf("repeat during the submission: %d %s, want 409 %s with Retry-After", repeat.status, repeat.body, api.CodeIdempotencyConflict)
	}

	close(hook.release)
	released = true
	var a response
	select {
	case a = <-first:
	case <-time.After(time.Minute):
		t.Fatal("hung: the first submission did not answer")
	}
	if a.status != http.StatusAccepted {
		t.Fatalf("first submission: %d %s", a.status, a.body)
	}
	var got api.SubmitResponse
	a.decode(t, &got)

	again := call(t, env, gatewaytest.Sender, "POST", api.PathBroadcasts, body)
	var rep api.SubmitResponse
	if again.status != http.StatusOK {
		t.Fatalf("repeat after the submission: %d %s, want 200", again.status, again.body)
	}
	again.decode(t, &rep)
	if rep.ID != got.ID {
		t.Errorf("repeat after the submission names %s, want the first broadcast %s", rep.ID, got.ID)
	}
	page, err := env.Service.List(context.Background(), "", 10, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Broadcasts) != 1 || queuedTasks(t, env, queue.QueuePlan) != 1 {
		t.Errorf("%d broadcasts and %d plan tasks stored, want one of each", len(page.Broadcasts), queuedTasks(t, env, queue.QueuePlan))
	}
}

// sendQuiet signs and posts a broadcast from another goroutine, where the
// test may not fail; a transport error becomes status 0.
func sendQuiet(env *gatewaytest.Env, key, body string) response {
	req, err := http.NewRequest("POST", env.URL+api.PathBroadcasts, strings.NewReader(body))
	if err != nil {
		return response{}
	}
	req.Header.Set("Content-Type", "application/json")
	if err := env.Signers[key].Sign(req, []byte(body)); err != nil {
		return response{}
	}
	resp, err := env.Server.Client().Do(req)
	if err != nil {
		return response{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}
