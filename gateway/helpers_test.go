package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"go.uber.org/goleak"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/gateway/gatewaytest"
	"github.com/pushgate/pushgate/providers"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// go-redis keeps a connection-pool reaper per client for its life;
		// clients are closed at cleanup, after goleak looks.
		goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"),
		goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/maintnotifications.(*CircuitBreakerManager).cleanupLoop"),
	)
}

// response is an answer read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

// problem decodes the answer as a problem document, checking its shape
// and content type.
func (r response) problem(t *testing.T) api.Problem {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != api.ProblemContentType {
		t.Fatalf("Content-Type = %q, want %q; body %s", ct, api.ProblemContentType, r.body)
	}
	var fields map[string]any
	if err := json.Unmarshal(r.body, &fields); err != nil {
		t.Fatalf("problem is not JSON: %v: %s", err, r.body)
	}
	for name := range fields {
		switch name {
		case "type", "title", "status", "detail", "code":
		default:
			t.Errorf("problem has unexpected member %q", name)
		}
	}
	var p api.Problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem: %v", err)
	}
	if p.Status != r.status {
		t.Errorf("problem status %d, HTTP status %d", p.Status, r.status)
	}
	if p.Type != api.ProblemTypeBase+p.Code || p.Title == "" || p.Code == "" {
		t.Errorf("problem = %+v, want type %s<code>, a title and a code", p, api.ProblemTypeBase)
	}
	return p
}

// decode decodes a JSON answer into v.
func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json; body %s", ct, r.body)
	}
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// newRequest builds a request with a JSON body (when not nil), lets opts
// change it, and signs it as key ("" leaves it unsigned).
func newRequest(t *testing.T, env *gatewaytest.Env, key, method, path string, body []byte, opts ...func(*http.Request)) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, env.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, o := range opts {
		o(req)
	}
	if key != "" {
		if err := env.Signers[key].Sign(req, body); err != nil {
			t.Fatalf("sign: %v", err)
		}
	}
	return req
}

// send sends req and reads the answer.
func send(t *testing.T, env *gatewaytest.Env, req *http.Request) response {
	t.Helper()
	resp, err := env.Server.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// call signs and sends one request.
func call(t *testing.T, env *gatewaytest.Env, key, method, path, body string) response {
	t.Helper()
	var b []byte
	if body != "" {
		b = []byte(body)
	}
	return send(t, env, newRequest(t, env, key, method, path, b))
}

// submit submits a broadcast and returns its id, failing unless created.
func submit(t *testing.T, env *gatewaytest.Env, key, body string) string {
	t.Helper()
	r := call(t, env, key, "POST", "/v1/broadcasts", body)
	if r.status != http.StatusAccepted {
		t.Fatalf("submit: %d %s", r.status, r.body)
	}
	var got struct{ ID string }
	r.decode(t, &got)
	return got.ID
}

// register puts n FCM devices into topic through the registry.
func register(t *testing.T, env *gatewaytest.Env, topic string, n int) []api.Device {
	t.Helper()
	var out []api.Device
	for i := range n {
		d := api.Device{Platform: providers.FCM, Token: fmt.Sprintf("tok-%s-%05d", topic, i)}
		if err := env.Service.Registry().Put(context.Background(), d, []string{topic}); err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// broadcastBody is a valid broadcast body with the given audience JSON.
func broadcastBody(audience string) string {
	return `{"audience":` + audience + `,"message":{"title":"Flood warning","body":"Avoid Manggarai.","ttl":"15m","priority":"high"}}`
}

// tokensJSON is an explicit-token audience of n FCM devices, the first of
// those register puts into topic citizens.
func tokensJSON(n int) string {
	var b strings.Builder
	b.WriteString(`{"tokens":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"platform":"fcm","token":"tok-citizens-%05d"}`, i)
	}
	b.WriteString(`]}`)
	return b.String()
}

// assertNothingStored fails when any broadcast is indexed or any task is
// queued.
func assertNothingStored(t *testing.T, env *gatewaytest.Env) {
	t.Helper()
	page, err := env.Service.List(context.Background(), "", 10, "")
	if err != nil {
		t.Fatal(err)
	}
	list := page.Broadcasts
	if len(list) != 0 {
		t.Errorf("%d broadcasts stored, want none (first %s)", len(list), list[0].ID)
	}
	insp := asynq.NewInspectorFromRedisClient(env.Redis)
	queues, err := insp.Queues()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range queues {
		info, err := insp.GetQueueInfo(q)
		if err != nil {
			t.Fatal(err)
		}
		if info.Size != 0 {
			t.Errorf("queue %s holds %d tasks, want none", q, info.Size)
		}
	}
}

// queuedTasks counts the tasks in an asynq queue.
func queuedTasks(t *testing.T, env *gatewaytest.Env, queue string) int {
	t.Helper()
	info, err := asynq.NewInspectorFromRedisClient(env.Redis).GetQueueInfo(queue)
	if err != nil {
		return 0 // never used
	}
	return info.Size
}
